/**
 * Preloaded into the CLI children of `make fuzz` (node --expose-gc --import this file), never into
 * a user's process: on SIGUSR2, two full garbage collections, then the process's memory figures
 * and its live handles written (synchronously, whole) to the file named by BROOK_FUZZ_MEMPROBE.
 * bench/fuzz.ts signals, waits for the file, and compares heap after GC, which RSS cannot tell
 * apart from pages the allocator keeps (see bench/results/fuzz.txt).
 */
import { renameSync, writeFileSync } from 'node:fs';
import v8 from 'node:v8';

const OUT = process.env.BROOK_FUZZ_MEMPROBE;
/** Set (a folder): a heap snapshot is written there too, after the collections (slow: seconds). */
const SNAPSHOTS = process.env.BROOK_FUZZ_SNAPSHOTS;
const SIGNAL = 'SIGUSR2';
let n = 0;

if (OUT && typeof globalThis.gc === 'function') {
  const gc = globalThis.gc;
  process.on(SIGNAL, () => {
    // two: the first may only move survivors and run finalizers that free more
    gc();
    gc();
    const m = process.memoryUsage();
    const handles = {};
    for (const r of process.getActiveResourcesInfo()) handles[r] = (handles[r] ?? 0) + 1;
    const spaces = Object.fromEntries(v8.getHeapSpaceStatistics().map((s) => [s.space_name, s.space_used_size]));
    const snapshot = SNAPSHOTS ? v8.writeHeapSnapshot(`${SNAPSHOTS}/${process.pid}-${++n}.heapsnapshot`) : undefined;
    const tmp = `${OUT}.tmp`;
    writeFileSync(tmp, JSON.stringify({ at: Date.now(), ...m, spaces, handles, snapshot }));
    renameSync(tmp, OUT);
  });
}
