/**
 * The hostile tools' common ground (bench/hostile.ts re-exports it): where the CLI is, flags,
 * timing, a free port, and the table/quantile helpers of their reports.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The CLI under test; BROOK_TS_CLI points the tools at another build (e.g. an older tree, for comparison). */
export const BROOK = process.env['BROOK_TS_CLI'] ?? join(ROOT, 'dist', 'cmd', 'brook-ts.js');
export const RESULTS = join(ROOT, 'bench', 'results');
export const PASSWORD = 'hostile-password';
export const WS_PATH = '/ws';
export const READY_TIMEOUT_MS = 15_000;
export const CONNECT_TIMEOUT_MS = 10_000;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const now = () => performance.now();

// ---------------------------------------------------------------- flags

export function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
export function numFlag(name: string, dflt: number): number {
  const v = flag(name);
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) {
    process.stderr.write(`--${name}: not a number: ${v}\n`);
    process.exit(2);
  }
  return n;
}
export function boolFlag(name: string): boolean {
  return process.argv.includes(`--${name}`);
}

/**
 * Wait until something listens on 127.0.0.1:`port`, polling every 100 ms for READY_TIMEOUT_MS;
 * `gone()` names why the process that should listen cannot any more (it exited), else null.
 */
export async function waitListening(port: number, name: string, gone: () => string | null): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < READY_TIMEOUT_MS) {
    const why = gone();
    if (why !== null) throw new Error(`${name} exited before listening on ${port}${why}`);
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`${name}: nothing listening on ${port} after ${READY_TIMEOUT_MS} ms`);
}

/** A port free for both TCP and UDP on 127.0.0.1. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((r) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => r(p));
      });
    });
    const udpOk = await new Promise<boolean>((r) => {
      const u = dgram.createSocket('udp4');
      u.once('error', () => r(false));
      u.bind(port, '127.0.0.1', () => u.close(() => r(true)));
    });
    if (udpOk) return port;
  }
}

// ---------------------------------------------------------------- output

export function table(headers: string[], rows: Array<Array<string | number>>): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const w = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => '| ' + r.map((c, i) => c.padEnd(w[i]!)).join(' | ') + ' |';
  return [line(cells[0]!), '|' + w.map((n) => '-'.repeat(n + 2)).join('|') + '|', ...cells.slice(1).map(line)].join('\n');
}

export const mib = (kib: number) => (kib / 1024).toFixed(1);

/** Run `n` tasks with at most `concurrency` at once. */
export async function pool(n: number, concurrency: number, task: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= n) return;
      await task(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

export function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}
