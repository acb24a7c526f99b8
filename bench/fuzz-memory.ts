/**
 * The memory figures of `make fuzz`'s live part (bench/fuzz.ts): each CLI child runs with
 * --expose-gc and bench/fuzz-memprobe.mjs preloaded; a probe signals it, and it answers with
 * its heap after two full collections (plus RSS and its live handles by kind), so the check
 * compares what the process still holds, not pages the allocator has not given back yet.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Child, fdCount, mib, type NodeRun, ROOT, rssKiB, sleep, table } from './hostile.js';

const PRELOAD = join(ROOT, 'bench', 'fuzz-memprobe.mjs');
const PROBE_SIGNAL = 'SIGUSR2';
/** How long a child may take to collect and answer (a heap snapshot takes seconds on a loaded machine). */
const PROBE_TIMEOUT_MS = 60_000;
const PROBE_POLL_MS = 20;
/** Settling: how often descriptors are counted, and the quiet time after they are back before the sample. */
const SETTLE_POLL_MS = 500;
const SETTLE_QUIET_MS = 1000;

export interface Sample {
  fds: number;
  /** VmRSS as the process was (rawRssKiB) and after the collections (rssKiB). */
  rawRssKiB: number;
  rssKiB: number;
  /** After two full GCs: V8 heap used, and memory outside it held by JS objects (Buffers: arrayBuffers). */
  heapUsedKiB: number;
  externalKiB: number;
  arrayBuffersKiB: number;
  /** Live libuv handles and requests by kind (process.getActiveResourcesInfo()). */
  handles: Record<string, number>;
}

interface ProbeAnswer {
  at: number;
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  handles: Record<string, number>;
}

/** One probe folder per run; `snapshots`: also a heap snapshot per sample, into that folder; `nodeArgs`: more node flags. */
export class MemoryProbe {
  private readonly dir = mkdtempSync(join(tmpdir(), 'brook-fuzz-mem-'));

  constructor(private readonly o: { snapshots?: string; nodeArgs?: string[] } = {}) {}

  /** How to start a child so this probe can ask it. */
  run(name: string): NodeRun {
    const env: Record<string, string> = { BROOK_FUZZ_MEMPROBE: this.file(name) };
    if (this.o.snapshots) env['BROOK_FUZZ_SNAPSHOTS'] = this.o.snapshots;
    return { nodeArgs: [...(this.o.nodeArgs ?? []), '--expose-gc', '--import', PRELOAD], env };
  }

  private file(name: string): string {
    return join(this.dir, `${name}.json`);
  }

  /** Collect and measure `c` (started with run(c.name)). */
  async sample(c: Child): Promise<Sample> {
    const file = this.file(c.name);
    rmSync(file, { force: true });
    const rawRssKiB = rssKiB(c.pid);
    const t0 = Date.now();
    process.kill(c.pid, PROBE_SIGNAL);
    while (!existsSync(file)) {
      if (c.exited) throw new Error(`${c.name} exited before answering the memory probe`);
      if (Date.now() - t0 > PROBE_TIMEOUT_MS) throw new Error(`${c.name}: no memory probe answer in ${PROBE_TIMEOUT_MS} ms`);
      await sleep(PROBE_POLL_MS);
    }
    const a = JSON.parse(readFileSync(file, 'utf8')) as ProbeAnswer;
    return {
      fds: fdCount(c.pid),
      rawRssKiB,
      rssKiB: rssKiB(c.pid),
      heapUsedKiB: a.heapUsed / 1024,
      externalKiB: a.external / 1024,
      arrayBuffersKiB: a.arrayBuffers / 1024,
      handles: a.handles,
    };
  }

  close(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Wait until every child is back to its descriptors of `start` (+ `tolerance`): every connection
 * gone, the server's 30 s probe deadline included. At most `maxS`. Says how long it took.
 */
export async function settleDescriptors(children: Child[], start: { server: Sample; client: Sample }, tolerance: number, maxS: number): Promise<string> {
  process.stderr.write(`[fuzz] live: settling (at most ${maxS} s)\n`);
  const t = Date.now();
  const limits = [start.server.fds, start.client.fds];
  const back = () => children.every((c, i) => fdCount(c.pid) <= limits[i]! + tolerance);
  while (!back() && Date.now() - t < maxS * 1000) await sleep(SETTLE_POLL_MS);
  const s = ((Date.now() - t) / 1000).toFixed(0);
  if (!back()) return `not back after ${s} s`;
  await sleep(SETTLE_QUIET_MS);
  return `${s} s`;
}

const handlesText = (h: Record<string, number>) =>
  Object.entries(h)
    .sort((a, b) => b[1] - a[1])
    .map(([k, n]) => `${k} ${n}`)
    .join(', ') || 'none';

const flatOr = (flat: boolean) => (flat ? 'flat' : 'GROWTH');
const signed = (n: number | string) => (Number(n) >= 0 ? `+${n}` : String(n));

export type Samples = Record<string, { server: Sample; client: Sample }>;

/**
 * Held memory (V8 heap used + external, after the collections) may grow by this between the two
 * settled samples: 4 MiB over the 75,000 connections between them is 56 bytes a connection, less
 * than any object a connection could leave behind (a closure, a Buffer, a socket are more), so a
 * leak of one object per connection, or of a 1 KiB one every 18 connections, is seen. What it does
 * allow: code compiled late, the replay cache's table growing with the nonces of the last minute,
 * Node's parser free list (heap snapshots of a run: +0.4 MiB of these, nothing per connection).
 */
export const HELD_TOLERANCE_KIB = 4 * 1024;

/**
 * RSS after the collections may grow by this between the two settled samples: what glibc's malloc
 * keeps of memory freed after the load's peak differs from one idle point to the next (gdb on a
 * settled wsserver after 100,000 connections: 34 MiB in its arenas, 6 MiB of it in use;
 * malloc_trim(0) gave 20 MiB of RSS back; measured growth between the settled samples +9.3, +2.2,
 * -0.2 MiB in three runs). Memory held outside V8 (the native addon, libuv, OpenSSL) shows only
 * here: a leak of 450 bytes or more a connection crosses it.
 */
export const RSS_TOLERANCE_KIB = 32 * 1024;

/**
 * The samples as a table, then the verdicts: descriptors of the end settled sample against before
 * the load (within `fdTolerance`); held memory and RSS after GC of the end settled sample against
 * the warm-up settled one (the first quarter compiles most code: +2 MiB of it there). Both settled
 * samples are idle with every connection gone; `connections` were made between them. RSS as it
 * was is shown, not judged: an idle process does not collect, so it holds the load's garbage
 * (40-56 MiB of the server's RSS at a settled sample went at the forced GC).
 */
export function resourceReport(
  samples: Samples,
  connections: number,
  o: { fdTolerance: number; judgeRss: boolean },
): { lines: string[]; verdicts: number; ok: boolean } {
  const names = Object.keys(samples);
  const figures = (x: Sample) => [x.fds, mib(x.rawRssKiB), mib(x.rssKiB), mib(x.heapUsedKiB), mib(x.externalKiB)];
  const heads = (p: string) => [`${p} fds`, `${p} RSS`, `${p} RSS after GC`, `${p} heap after GC`, `${p} external after GC`];
  const lines = [
    'Memory (MiB): RSS as it was; then, after two full GCs in the process, RSS, V8 heap used, external (Buffers included)\n',
    table(['sample', ...heads('wsserver'), ...heads('wsclient')], names.map((n) => [n, ...figures(samples[n]!.server), ...figures(samples[n]!.client)])),
    ...names.map((n) => `handles ${n}: wsserver ${handlesText(samples[n]!.server.handles)}; wsclient ${handlesText(samples[n]!.client.handles)}`),
  ];
  const before = samples[names[0]!]!;
  const warm = samples[names.find((n) => n.startsWith('warm-up settled'))!]!;
  const end = samples[names[names.length - 1]!]!;
  const verdicts: string[] = [];
  let ok = true;
  for (const p of ['server', 'client'] as const) {
    const fds = end[p].fds - before[p].fds;
    const fdFlat = fds <= o.fdTolerance;
    const held = end[p].heapUsedKiB + end[p].externalKiB - (warm[p].heapUsedKiB + warm[p].externalKiB);
    const heldFlat = held <= HELD_TOLERANCE_KIB;
    const rss = end[p].rssKiB - warm[p].rssKiB;
    const rssFlat = !o.judgeRss || rss <= RSS_TOLERANCE_KIB;
    ok &&= fdFlat && heldFlat && rssFlat;
    const perConnection = signed(((held * 1024) / connections).toFixed(1));
    verdicts.push(
      `ws${p}: descriptors end settled - before ${signed(fds)} -> ${flatOr(fdFlat)} (tolerance ${o.fdTolerance}); ` +
        `end settled - warm-up settled: held memory (heap + external after GC) ${signed(mib(held))} MiB (${perConnection} bytes a connection over ${connections}) ` +
        `-> ${flatOr(heldFlat)} (tolerance ${HELD_TOLERANCE_KIB / 1024} MiB); RSS after GC ${signed(mib(rss))} MiB -> ` +
        `${o.judgeRss ? `${flatOr(rssFlat)} (tolerance ${RSS_TOLERANCE_KIB / 1024} MiB)` : 'not judged (heap snapshots taken)'}; RSS as it was ${signed(mib(end[p].rawRssKiB - warm[p].rawRssKiB))} MiB (not judged)`,
    );
  }
  return { lines: [...lines, ...verdicts], verdicts: verdicts.length, ok };
}
