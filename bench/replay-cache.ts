/**
 * The replay cache (src/server/replay.ts) at capacity: memory and the cost of
 * one check. Not a test (speed and memory are never asserted in timed tests).
 *
 *   node --expose-gc --import tsx bench/replay-cache.ts [--capacity N] [--rate PER_MINUTE] [--seconds S]
 *
 * A simulated clock advances one second per rate/60 handshakes (default 100,000 a
 * minute, for 600 simulated seconds). Reported: live entries and table bytes at
 * the end, the heap/arrayBuffers growth of the process, ns per fresh check (each
 * a new nonce, remembered) and per replayed check (a nonce already held).
 */
import { randomBytes } from 'node:crypto';
import { ReplayCache, DEFAULT_REPLAY_CACHE_SIZE } from '../src/server/replay.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
}

const capacity = arg('--capacity', DEFAULT_REPLAY_CACHE_SIZE);
const perMinute = arg('--rate', 100_000);
const seconds = arg('--seconds', 600);
const perSecond = Math.ceil(perMinute / 60);
const T0 = 1_700_000_000;
let sec = T0;
const cache = new ReplayCache({ capacity, now: () => sec * 1000 });

// nonces drawn from one random pool (their generation is not what is measured)
const POOL = 1 << 20;
const pool = randomBytes(POOL * 12 + 12);
const nonceAt = (i: number) => pool.subarray((i % POOL) * 12, (i % POOL) * 12 + 12);

global.gc?.();
const before = process.memoryUsage();
let n = 0;
let refused = 0;
const t0 = process.hrtime.bigint();
for (let s = 0; s < seconds; s++) {
  sec = T0 + s;
  for (let k = 0; k < perSecond; k++) if (cache.check(nonceAt(n++), sec) !== 'fresh') refused++;
}
const freshNs = Number(process.hrtime.bigint() - t0) / n;

// replays of the last second's nonces (all still held)
const R = Math.min(perSecond, 100_000);
const t1 = process.hrtime.bigint();
let replays = 0;
for (let rep = 0; rep < 10; rep++) for (let k = n - R; k < n; k++) if (cache.check(nonceAt(k), sec) === 'replay') replays++;
const replayNs = Number(process.hrtime.bigint() - t1) / (10 * R);

// let the old tables' backing stores go (freed after GC, off the main thread)
for (let i = 0; i < 3; i++) {
  global.gc?.();
  await new Promise((r) => setTimeout(r, 50));
}
const after = process.memoryUsage();
const mib = (b: number) => (b / 1024 / 1024).toFixed(1) + ' MiB';
console.log(
  JSON.stringify(
    {
      capacity,
      handshakesPerMinute: perMinute,
      simulatedSeconds: seconds,
      checks: n,
      refusedFresh: refused,
      live: cache.size,
      floorBehindNow: sec - cache.floor,
      tableBytes: mib(cache.tableBytes),
      arrayBuffersGrowth: mib(after.arrayBuffers - before.arrayBuffers),
      heapGrowth: mib(after.heapUsed - before.heapUsed),
      nsPerFreshCheck: Math.round(freshNs),
      nsPerReplayCheck: Math.round(replayNs),
      replaysRefused: `${replays}/${10 * R}`,
    },
    null,
    1,
  ),
);
