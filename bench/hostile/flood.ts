/**
 * A pending-connection flood for `make attack` (the pendingflood row): `rate` cheap partial requests a
 * second (an upgrade head that never ends), each held until the server closes it, from one address or
 * spread over many /24s of 127/8 (all of it is loopback on Linux). Run as its own process, so that the
 * flood does not share the event loop of the process that measures the real client:
 *
 *   node --import tsx bench/hostile/flood.ts --port P --rate 1000 --seconds 20 [--spread N]
 *     --spread N   sources 127.1.0.1, 127.1.1.1, ... (N /24s, one address each); without it 127.0.0.1
 *
 * Prints {"flooding":true} once it has run for STARTED_AFTER_MS (the parent measures from then on), and one
 * JSON line when done: {"opened","failed","closedByServer","maxOpen","sources"}.
 */
import net from 'node:net';
import { numFlag, sleep } from './base.js';

/** The partial request: a valid start, never finished. */
const PARTIAL = Buffer.from('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n');
const TICK_MS = 10;
/** Never more sockets than this open at once (the flooder's own descriptors). */
const MAX_OPEN = 8000;
/** When the flood counts as under way. */
export const STARTED_AFTER_MS = 1000;

/** The n-th source of a spread flood: one address in each of n /24s. */
export function spreadSource(i: number): string {
  return `127.${1 + Math.floor(i / 256)}.${i % 256}.1`;
}

export interface FloodReport {
  opened: number;
  failed: number;
  closedByServer: number;
  maxOpen: number;
  sources: number;
}

export async function flood(o: { port: number; rate: number; seconds: number; sources: Array<string | null>; onStarted?: () => void }): Promise<FloodReport> {
  const open = new Set<net.Socket>();
  const r: FloodReport = { opened: 0, failed: 0, closedByServer: 0, maxOpen: 0, sources: o.sources.length };
  let running = true;
  let next = 0;
  const one = () => {
    const localAddress = o.sources[next++ % o.sources.length];
    const s = net.connect({ host: '127.0.0.1', port: o.port, ...(localAddress ? { localAddress } : {}) });
    let connected = false;
    s.on('connect', () => {
      connected = true;
      r.opened++;
      open.add(s);
      r.maxOpen = Math.max(r.maxOpen, open.size);
      s.write(PARTIAL);
    });
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('close', () => {
      open.delete(s);
      if (!connected) r.failed++;
      else if (running) r.closedByServer++;
    });
  };
  const t0 = performance.now();
  let due = 0;
  let started = false;
  while (performance.now() - t0 < o.seconds * 1000) {
    if (!started && performance.now() - t0 >= STARTED_AFTER_MS) {
      started = true;
      o.onStarted?.();
    }
    due += (o.rate * TICK_MS) / 1000;
    for (; due >= 1; due--) if (open.size < MAX_OPEN) one();
    await sleep(TICK_MS);
  }
  running = false;
  for (const s of open) s.destroy();
  return r;
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const spread = numFlag('spread', 0);
  const sources = spread > 0 ? Array.from({ length: spread }, (_, i) => spreadSource(i)) : [null];
  const onStarted = () => process.stdout.write(JSON.stringify({ flooding: true }) + '\n');
  flood({ port: numFlag('port', 0), rate: numFlag('rate', 1000), seconds: numFlag('seconds', 20), sources, onStarted }).then(
    (r) => {
      process.stdout.write(JSON.stringify(r) + '\n');
      process.exit(0);
    },
    (e: unknown) => {
      process.stderr.write(`flood: ${String(e)}\n`);
      process.exit(2);
    },
  );
}
