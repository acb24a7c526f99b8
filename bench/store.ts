/**
 * What the fleet's store adds to a connect (protocol/fleet.md#cost): the replay
 * check of src/store/replay.ts against a Redis on loopback, next to a loopback TCP
 * dial (the server's dial of the destination, the thing the check overlaps).
 *
 *   npx tsx bench/store.ts [--url redis://127.0.0.1:P] [--samples N] [--json]
 *   (without --url: starts its own redis-server on a free loopback port, and stops it)
 *
 * measureStoreConnect() is the function `make bench` calls. Rows, p50 / p99 in µs:
 *   hit          a replay to the same instance: the local cache answers (no round trip)
 *   miss         a fresh nonce: the local cache, then SET NX PX (one round trip)
 *   dial         a loopback TCP connect to a listening socket
 *   serial       miss, then dial (the check before the dial)
 *   overlapped   miss and dial started together, both awaited (the check during the dial)
 *   miss x16     16 checks in flight at once (ioredis pipelines them): the p50 of one
 *   far dial, far overlapped   the same with a dial that waits 2 ms (a destination
 *                over the internet, the process idle meanwhile: a timer stands in)
 * On loopback the dial and the check are both CPU in this one process, so they
 * cannot overlap much; a real dial waits on the network, and the check hides in it.
 * Each sample alternates with the others (same load for all rows); the machine is
 * shared, so the figures move with what else runs.
 */
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { resolveStoreEndpoint } from '../src/store/config.js';
import { FleetReplayGuard } from '../src/store/replay.js';
import { FleetStore } from '../src/store/store.js';
import { startRedis } from '../test/helpers/redis.js';

export interface StoreBenchRow {
  name: string;
  p50us: number;
  p99us: number;
}

export interface StoreBenchResult {
  samples: number;
  rows: StoreBenchRow[];
  /** p50 of overlapped minus dial: what the check adds to a connect when it runs during the dial. */
  addsToConnectUs: number;
  /** The same with the 2 ms dial. */
  addsToFarConnectUs: number;
  /** p50 of serial minus dial: what it adds when the server waits for it before dialling. */
  addsSerialUs: number;
}

const CONCURRENT = 16;
/** The stand-in for a dial over the internet. */
const FAR_DIAL_MS = 2;
const WARMUP = 200;

function quantileUs(ns: number[], q: number): number {
  const s = [...ns].sort((a, b) => a - b);
  return Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))]! / 100) / 10;
}

async function time(f: () => unknown): Promise<number> {
  const t0 = process.hrtime.bigint();
  await f();
  return Number(process.hrtime.bigint() - t0);
}

let counter = 0;
function freshNonce(): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(process.pid, 0);
  b.writeDoubleLE(++counter + Date.now() * 1000, 4);
  return b;
}

/** Measure against the Redis at `url` (a FleetStore of its own, instance "bench"). */
export async function measureStoreConnect(url: string, samples = 2000): Promise<StoreBenchResult> {
  const store = await FleetStore.open({ endpoint: resolveStoreEndpoint({ url, urlFrom: 'api' }), instanceId: `bench-${process.pid}` });
  const target = net.createServer((c) => c.destroy());
  await new Promise<void>((r) => target.listen(0, '127.0.0.1', () => r()));
  const port = (target.address() as net.AddressInfo).port;
  try {
    const end = Date.now() + 5000;
    while (store.state !== 'up') {
      if (Date.now() > end) throw new Error(`the store at ${store.display} is not up`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const guard = new FleetReplayGuard({ store });
    const sec = () => Math.floor(Date.now() / 1000);
    const dial = () =>
      new Promise<void>((resolve, reject) => {
        const s = net.connect(port, '127.0.0.1', () => (s.destroy(), resolve()));
        s.once('error', reject);
      });
    const farDial = () => new Promise<void>((r) => setTimeout(r, FAR_DIAL_MS));
    const check = () => guard.check(freshNonce(), sec());
    const seen = freshNonce();
    await guard.check(seen, sec());
    const rows: Record<string, number[]> = { hit: [], miss: [], dial: [], serial: [], overlapped: [], [`miss x${CONCURRENT}`]: [], 'far dial': [], 'far overlapped': [] };
    for (let i = 0; i < WARMUP + samples; i++) {
      const keep = i >= WARMUP;
      const add = (name: string, ns: number) => keep && rows[name]!.push(ns);
      add('hit', await time(() => guard.check(seen, sec())));
      add('miss', await time(check));
      add('dial', await time(dial));
      add('serial', await time(async () => (await check(), await dial())));
      add('overlapped', await time(() => Promise.all([check(), dial()])));
      if (i % 4 === 0) {
        add('far dial', await time(farDial));
        add('far overlapped', await time(() => Promise.all([farDial(), check()])));
      }
      if (i % 8 === 0) {
        const t0 = process.hrtime.bigint();
        const each = await Promise.all(Array.from({ length: CONCURRENT }, async () => (await check(), Number(process.hrtime.bigint() - t0))));
        for (const ns of each) add(`miss x${CONCURRENT}`, ns);
      }
    }
    const out = Object.entries(rows).map(([name, ns]) => ({ name, p50us: quantileUs(ns, 0.5), p99us: quantileUs(ns, 0.99) }));
    const p50 = (name: string) => out.find((r) => r.name === name)!.p50us;
    return {
      samples,
      rows: out,
      addsToConnectUs: Math.round((p50('overlapped') - p50('dial')) * 10) / 10,
      addsSerialUs: Math.round((p50('serial') - p50('dial')) * 10) / 10,
      addsToFarConnectUs: Math.round((p50('far overlapped') - p50('far dial')) * 10) / 10,
    };
  } finally {
    target.close();
    await store.close();
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const opt = (name: string) => {
    const i = argv.indexOf(name);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const own = opt('--url') === undefined ? await startRedis() : null;
  try {
    const r = await measureStoreConnect(opt('--url') ?? own!.url, Number(opt('--samples') ?? 2000));
    if (argv.includes('--json')) {
      console.log(JSON.stringify(r));
      return;
    }
    console.log(`store replay check, Redis on loopback, ${r.samples} samples each (µs)`);
    console.log('| row | p50 | p99 |\n| --- | ---: | ---: |');
    for (const row of r.rows) console.log(`| ${row.name} | ${row.p50us} | ${row.p99us} |`);
    console.log(`adds to a connect (p50): ${r.addsToConnectUs} µs overlapped with a loopback dial, ${r.addsSerialUs} µs before it, ${r.addsToFarConnectUs} µs overlapped with a ${FAR_DIAL_MS} ms dial`);
  } finally {
    await own?.stop();
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
