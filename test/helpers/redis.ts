/**
 * Runs Debian's `redis-server` for a test: its own instance on a free loopback
 * port, no persistence (`--save '' --appendonly no`), its files in a temporary
 * directory, spawned without a shell and stopped by its own PID. A system Redis on
 * 6379 (the package starts one on some machines) is never touched.
 *
 *   const r = await startRedis({ requirepass: 'pw' });
 *   r.url            // redis://127.0.0.1:<port>
 *   r.pause() / r.resume()   // SIGSTOP / SIGCONT: a stall
 *   await r.kill()           // SIGKILL
 *   await r.restart()        // same port, empty
 *   await r.stop()
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import net from 'node:net';
import { resolveStoreEndpoint } from '../../src/store/config.js';
import { noStoreMetrics, type StoreCallResult, type StoreOp } from '../../src/store/metrics.js';
import { FleetStore, type FleetStoreOptions } from '../../src/store/store.js';

const HOST = '127.0.0.1';
const START_TIMEOUT_MS = 10_000;
const POLL_MS = 25;

export interface RedisOptions {
  port?: number;
  requirepass?: string;
  /** TLS only (the plain port off): files of the server's certificate, key and CA. */
  tls?: { cert: string; key: string; ca: string };
  /** More redis-server arguments. */
  args?: string[];
}

export interface TestRedis {
  port: number;
  url: string;
  readonly pid: number;
  pause(): void;
  resume(): void;
  kill(): Promise<void>;
  /** Start again on the same port, with nothing in it. */
  restart(): Promise<void>;
  stop(): Promise<void>;
  /** One command over a fresh connection (RESP), the raw reply. */
  command(...args: string[]): Promise<string>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) if (c.exitCode === null && c.signalCode === null && c.pid) c.kill('SIGKILL');
});

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, HOST, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function encode(args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

/** Send one command to a plain port and return the first reply line(s) received. */
export function rawCommand(port: number, args: string[], password?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, HOST);
    let buf = '';
    const want = password ? 2 : 1;
    sock.setTimeout(2000, () => sock.destroy(new Error('redis did not answer')));
    sock.on('connect', () => sock.write((password ? encode(['AUTH', password]) : '') + encode(args)));
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      const lines = buf.split('\r\n').filter((l) => l !== '');
      if (lines.length >= want) {
        sock.destroy();
        resolve(password ? buf.slice(buf.indexOf('\r\n') + 2) : buf);
      }
    });
    sock.on('error', reject);
  });
}

export async function startRedis(o: RedisOptions = {}): Promise<TestRedis> {
  const port = o.port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), 'brook-redis-'));
  let child: ChildProcess | null = null;
  const log: string[] = [];

  const launch = async () => {
    const args = ['--bind', HOST, '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no', '--protected-mode', 'no', '--loglevel', 'warning'];
    if (o.tls) args.push('--port', '0', '--tls-port', String(port), '--tls-cert-file', o.tls.cert, '--tls-key-file', o.tls.key, '--tls-ca-cert-file', o.tls.ca, '--tls-auth-clients', 'no');
    else args.push('--port', String(port));
    if (o.requirepass) args.push('--requirepass', o.requirepass);
    args.push(...(o.args ?? []));
    const c = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(c);
    c.once('exit', () => running.delete(c));
    const keep = (d: Buffer) => {
      log.push(d.toString());
      if (log.length > 100) log.shift();
    };
    c.stdout!.on('data', keep);
    c.stderr!.on('data', keep);
    child = c;
    const deadline = Date.now() + START_TIMEOUT_MS;
    for (;;) {
      if (c.exitCode !== null) throw new Error(`redis-server exited (${c.exitCode}): ${log.join('')}`);
      const up = await new Promise<boolean>((res) => {
        const s = net.connect(port, HOST);
        s.once('connect', () => (s.destroy(), res(true)));
        s.once('error', () => res(false));
      });
      if (up) return;
      if (Date.now() > deadline) throw new Error(`redis-server did not listen on ${port}: ${log.join('')}`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  };

  const kill = async (signal: NodeJS.Signals) => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((res) => c.once('exit', () => res()));
    process.kill(c.pid!, 'SIGCONT'); // a paused process must run to handle SIGTERM
    process.kill(c.pid!, signal);
    await exited;
  };

  await launch();
  return {
    port,
    url: `${o.tls ? 'rediss' : 'redis'}://${HOST}:${port}`,
    get pid() {
      return child!.pid!;
    },
    pause: () => process.kill(child!.pid!, 'SIGSTOP'),
    resume: () => process.kill(child!.pid!, 'SIGCONT'),
    kill: () => kill('SIGKILL'),
    restart: async () => {
      await kill('SIGKILL');
      await launch();
    },
    stop: async () => {
      await kill('SIGTERM');
      rmSync(dir, { recursive: true, force: true });
    },
    command: (...args: string[]) => rawCommand(port, args, o.requirepass),
  };
}

export interface CutProxy {
  port: number;
  /** The next bytes Redis sends back are dropped and both sides of that connection are closed. */
  cutNextReply(): void;
  close(): Promise<void>;
}

/** A TCP relay to a Redis port that can lose a reply: the call reached Redis, its answer never arrives. */
export async function startCutProxy(targetPort: number): Promise<CutProxy> {
  let cut = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, HOST);
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('data', (d) => upstream.write(d));
    upstream.on('data', (d) => {
      if (cut) {
        cut = false;
        drop();
        return;
      }
      client.write(d);
    });
    for (const s of [client, upstream]) {
      s.on('error', drop);
      s.on('close', () => {
        sockets.delete(s);
        drop();
      });
    }
  });
  await new Promise<void>((r) => server.listen(0, HOST, () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    cutNextReply: () => (cut = true),
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A FleetStore with quick intervals (a test sees several beats, stalls and reconnects in a second or two) and its calls recorded. */
export async function openTestStore(url: string, o: Partial<FleetStoreOptions> & { password?: string } = {}) {
  const calls: Array<[StoreOp, StoreCallResult]> = [];
  let late = 0;
  const s = await FleetStore.open({
    endpoint: { ...resolveStoreEndpoint({ url, urlFrom: 'api' }), password: o.password },
    instanceId: o.instanceId ?? 'a',
    heartbeatMs: 100,
    stallMs: 600,
    logIntervalMs: 200,
    reconnectMinMs: 20,
    reconnectMaxMs: 100,
    metrics: { ...noStoreMetrics, call: (op, result) => calls.push([op, result]), lateReplays: (n) => (late += n) },
    ...o,
  });
  return { s, calls, late: () => late };
}

export async function until(cond: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** What a store test file starts and stops: Redis instances and stores, all stopped by cleanup() (afterEach). */
export function storeKit() {
  const stops: Array<() => Promise<void> | void> = [];
  return {
    redis: async (o: RedisOptions = {}): Promise<TestRedis> => {
      const r = await startRedis(o);
      stops.push(() => r.stop());
      return r;
    },
    store: async (url: string, o: Partial<FleetStoreOptions> & { password?: string } = {}) => {
      const t = await openTestStore(url, o);
      stops.push(() => t.s.close());
      return t;
    },
    /** Run at the end of each test (later starts stop first). */
    defer: (f: () => Promise<void> | void) => void stops.push(f),
    cleanup: async () => {
      for (const f of stops.splice(0).reverse()) await f();
    },
  };
}
