/**
 * Shared pieces of the hostile tools (bench/fuzz.ts, bench/soak.ts, bench/attack.ts):
 * a seeded random source, the CLI child processes and their /proc figures,
 * and raw-socket clients written here, independently of src/ and test/
 * (HTTP upgrade, SOCKS5, a Brook first fragment sealed with node:crypto).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createCipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/** The CLI under test; BROOK_TS_CLI points the tools at another build (e.g. an older tree, for comparison). */
export const BROOK = process.env['BROOK_TS_CLI'] ?? join(ROOT, 'dist', 'cmd', 'brook-ts.js');
export const RESULTS = join(ROOT, 'bench', 'results');
export const PASSWORD = 'hostile-password';
export const WS_PATH = '/ws';
const READY_TIMEOUT_MS = 15_000;
const CONNECT_TIMEOUT_MS = 10_000;

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

// ---------------------------------------------------------------- seeded random

/** sfc32: small, fast, seedable; every run is reproduced by its seed. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }

  /** Mostly small lengths, sometimes large ones. */
  length(max: number): number {
    const r = this.int(10);
    if (r < 5) return this.int(Math.min(max, 16) + 1);
    if (r < 8) return this.int(Math.min(max, 256) + 1);
    return this.int(max + 1);
  }
}

/** A valid input changed the ways a fuzzer does: flip, set, insert, delete, truncate, extend, splice. */
export function mutate(rng: Rng, valid: Buffer, maxLen = 70_000): Buffer {
  let b = Buffer.from(valid);
  const rounds = 1 + rng.int(4);
  for (let r = 0; r < rounds; r++) {
    switch (rng.int(8)) {
      case 0: // flip bits
        if (b.length) b[rng.int(b.length)]! ^= 1 << rng.int(8);
        break;
      case 1: // set a byte to an interesting value
        if (b.length) b[rng.int(b.length)] = rng.pick([0, 1, 0x7f, 0x80, 0xff, 0x0d, 0x0a, 0x20, 0x3a, rng.int(256)]);
        break;
      case 2: // truncate
        b = b.subarray(0, rng.int(b.length + 1));
        break;
      case 3: // extend with random bytes
        b = Buffer.concat([b, rng.bytes(rng.length(512))]);
        break;
      case 4: // insert random bytes
      {
        const at = rng.int(b.length + 1);
        b = Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(8)), b.subarray(at)]);
        break;
      }
      case 5: // delete a run
      {
        const at = rng.int(b.length + 1);
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + rng.int(8))]);
        break;
      }
      case 6: // duplicate a run
      {
        const at = rng.int(b.length + 1);
        const n = rng.int(Math.min(64, b.length - at) + 1);
        b = Buffer.concat([b.subarray(0, at + n), b.subarray(at, at + n), b.subarray(at + n)]);
        break;
      }
      default: // write a big-endian u16 somewhere (lengths)
        if (b.length >= 2) b.writeUInt16BE(rng.pick([0, 1, 0xff, 0x100, 2014, 2048, 0x7fff, 0xffff, rng.int(0x10000)]), rng.int(b.length - 1));
    }
  }
  return b.length > maxLen ? b.subarray(0, maxLen) : b;
}

/** Split a buffer at random points (1 to 6 pieces, sometimes one byte at a time). */
export function split(rng: Rng, b: Buffer): Buffer[] {
  if (b.length <= 1) return [b];
  if (b.length < 64 && rng.chance(0.05)) return Array.from(b, (_, i) => b.subarray(i, i + 1));
  const cuts = new Set<number>();
  const n = rng.int(6);
  for (let i = 0; i < n; i++) cuts.add(1 + rng.int(b.length - 1));
  const sorted = [...cuts].sort((x, y) => x - y);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of sorted) {
    out.push(b.subarray(prev, c));
    prev = c;
  }
  out.push(b.subarray(prev));
  return out;
}

// ---------------------------------------------------------------- processes and /proc

export { fdCount, rssKiB, socketCount, tree } from './proc.js';
import { tree } from './proc.js';

export interface Child {
  name: string;
  cp: ChildProcess;
  pid: number;
  /** Lines the process wrote to stdout (the JSON log), all of them. */
  lines: string[];
  /** Lines written to stdout so far (counted even when not kept). */
  lineCount: number;
  stderr: string;
  exited: { code: number | null; signal: NodeJS.Signals | null } | null;
}

const children = new Set<Child>();

/**
 * Start a brook-ts command. With `nofile` it runs under `ulimit -n nofile`
 * (bash execs node, so the pid is node's).
 */
export function startBrook(
  name: string,
  args: string[],
  o: { nofile?: number; keepLines?: boolean; onLine?: (line: string) => void } = {},
): Child {
  const cmd = o.nofile ? 'bash' : process.execPath;
  const argv = o.nofile
    ? ['-c', `ulimit -n ${o.nofile} && exec "$0" "$@"`, process.execPath, BROOK, ...args]
    : [BROOK, ...args];
  const cp = spawn(cmd, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const c: Child = { name, cp, pid: cp.pid!, lines: [], lineCount: 0, stderr: '', exited: null };
  children.add(c);
  let partial = '';
  cp.stdout!.on('data', (d: Buffer) => {
    partial += d.toString();
    const parts = partial.split('\n');
    partial = parts.pop()!;
    c.lineCount += parts.length;
    if (o.keepLines !== false) for (const l of parts) c.lines.push(l);
    if (o.onLine) for (const l of parts) o.onLine(l);
  });
  cp.stderr!.on('data', (d: Buffer) => {
    c.stderr = (c.stderr + d.toString()).slice(-8000);
  });
  cp.on('exit', (code, signal) => {
    c.exited = { code, signal };
    children.delete(c);
  });
  return c;
}

/** Any child process (a destination, a helper). */
export function startProcess(name: string, cmd: string, args: string[]): Child {
  const cp = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const c: Child = { name, cp, pid: cp.pid!, lines: [], lineCount: 0, stderr: '', exited: null };
  children.add(c);
  let partial = '';
  cp.stdout!.on('data', (d: Buffer) => {
    partial += d.toString();
    const parts = partial.split('\n');
    partial = parts.pop()!;
    c.lineCount += parts.length;
    for (const l of parts) c.lines.push(l);
  });
  cp.stderr!.on('data', (d: Buffer) => (c.stderr = (c.stderr + d.toString()).slice(-8000)));
  cp.on('exit', (code, signal) => {
    c.exited = { code, signal };
    children.delete(c);
  });
  return c;
}

/** SIGTERM, then SIGKILL of the tree after `graceMs` (only processes this run started). */
export async function stopChild(c: Child | undefined, graceMs = 2000): Promise<void> {
  if (!c || c.exited) return;
  const gone = new Promise<void>((r) => c.cp.once('exit', () => r()));
  const pids = tree(c.pid);
  try {
    process.kill(c.pid, 'SIGTERM');
  } catch {
    /* gone */
  }
  await Promise.race([gone, sleep(graceMs)]);
  for (const p of pids.reverse()) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await Promise.race([gone, sleep(3000)]);
}

process.on('exit', () => {
  for (const c of children) {
    for (const p of tree(c.pid).reverse()) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
});
for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => process.exit(130));

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

export async function waitPort(port: number, c: Child): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < READY_TIMEOUT_MS) {
    if (c.exited) throw new Error(`${c.name} exited before listening on ${port}: ${c.stderr.slice(-500)}`);
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
  throw new Error(`${c.name}: nothing listening on ${port} after ${READY_TIMEOUT_MS} ms`);
}

export interface Pair {
  server: Child;
  client?: Child;
  serverPort: number;
  socksPort: number;
  /** Set when the client was started with an HTTP proxy port. */
  httpPort?: number;
}

/** A CLI wsserver (optionally under a descriptor limit) and, unless `noClient`, a wsclient in front of it. */
export async function startPair(o: {
  nofile?: number;
  serverArgs?: string[];
  clientArgs?: string[];
  noClient?: boolean;
  http?: boolean;
  password?: string;
  keepLines?: boolean;
  onServerLine?: (line: string) => void;
  onClientLine?: (line: string) => void;
}): Promise<Pair> {
  const serverPort = await freePort();
  const server = startBrook('wsserver', ['wsserver', '--listen', `127.0.0.1:${serverPort}`, '--password', PASSWORD, ...(o.serverArgs ?? [])], {
    nofile: o.nofile,
    keepLines: o.keepLines,
    onLine: o.onServerLine,
  });
  await waitPort(serverPort, server);
  const socksPort = await freePort();
  if (o.noClient) return { server, serverPort, socksPort };
  const httpPort = o.http ? await freePort() : undefined;
  const client = startBrook('wsclient', [
    'wsclient', '--wsserver', `ws://127.0.0.1:${serverPort}${WS_PATH}`, '--password', o.password ?? PASSWORD,
    '--socks5', `127.0.0.1:${socksPort}`, ...(httpPort ? ['--http', `127.0.0.1:${httpPort}`] : []), ...(o.clientArgs ?? []),
  ], { keepLines: o.keepLines, onLine: o.onClientLine });
  await waitPort(socksPort, client);
  if (httpPort) await waitPort(httpPort, client);
  return { server, client, serverPort, socksPort, httpPort };
}

export async function stopPair(p: Pair | undefined): Promise<void> {
  if (!p) return;
  await stopChild(p.client);
  await stopChild(p.server);
}

/** Parsed JSON log lines of a child (lines that are not JSON are skipped). */
export function logEntries(c: Child, from = 0): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const l of c.lines.slice(from)) {
    try {
      out.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      /* not JSON */
    }
  }
  return out;
}

// ---------------------------------------------------------------- sockets

/** `allowHalfOpen`: keep our side writable after the peer's FIN (an attacker does). */
export function connectTcp(port: number, host = '127.0.0.1', timeoutMs = CONNECT_TIMEOUT_MS, allowHalfOpen = false): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, noDelay: true, allowHalfOpen });
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect ${host}:${port} timed out`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(t);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

/** Bytes arriving on a socket, gathered until `done(buffer)` says enough, the end, an error or a timeout. */
export function readUntil(s: net.Socket, done: (b: Buffer) => boolean, timeoutMs: number): Promise<{ data: Buffer; ended: boolean; error?: string }> {
  return new Promise((resolve) => {
    let data = Buffer.alloc(0);
    const finish = (ended: boolean, error?: string) => {
      clearTimeout(t);
      s.removeListener('data', onData);
      s.removeListener('end', onEnd);
      s.removeListener('error', onError);
      s.removeListener('close', onClose);
      resolve({ data, ended, error });
    };
    const onData = (d: Buffer) => {
      data = Buffer.concat([data, d]);
      if (done(data)) finish(false);
    };
    const onEnd = () => finish(true);
    const onClose = () => finish(true);
    const onError = (e: NodeJS.ErrnoException) => finish(true, e.code ?? e.message);
    const t = setTimeout(() => finish(false, 'timeout'), timeoutMs);
    s.on('data', onData);
    s.on('end', onEnd);
    s.on('error', onError);
    s.on('close', onClose);
    if (s.isPaused()) s.resume();
  });
}

export type CloseWay = 'fin' | 'rst' | 'open';

/** How and when the peer closes: 'fin' (end), 'rst' (ECONNRESET), or 'open' at the cap. Resolves with ms since `t0`. */
export function watchClose(s: net.Socket, t0: number, capMs: number): Promise<{ way: CloseWay; ms: number }> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (way: CloseWay) => {
      if (settled) return;
      settled = true;
      clearTimeout(t);
      resolve({ way, ms: now() - t0 });
    };
    const t = setTimeout(() => done('open'), capMs);
    s.on('data', () => {});
    s.on('end', () => done('fin'));
    s.on('error', (e: NodeJS.ErrnoException) => done(e.code === 'ECONNRESET' || e.code === 'EPIPE' ? 'rst' : 'rst'));
    s.on('close', () => done('fin'));
    s.resume();
  });
}

/** Close a socket with a FIN or with an RST. */
export function hangUp(s: net.Socket, rst: boolean): void {
  if (rst) s.resetAndDestroy();
  else s.end();
}

// ---------------------------------------------------------------- HTTP upgrade, written independently

export function wsKey(): string {
  return randomBytes(16).toString('base64');
}

/** Upstream's request, byte for byte. */
export function upgradeRequest(port: number, o: { path?: string; method?: string; version?: string; key?: string } = {}): Buffer {
  return Buffer.from(
    `${o.method ?? 'GET'} ${o.path ?? WS_PATH} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${o.key ?? wsKey()}\r\nSec-WebSocket-Version: ${o.version ?? '13'}\r\n\r\n`,
    'latin1',
  );
}

const HEAD_END = Buffer.from('\r\n\r\n');

/** Connect, send the upgrade request, read the response head. `rest` holds bytes after it. */
export async function upgrade(port: number, timeoutMs = CONNECT_TIMEOUT_MS): Promise<{ s: net.Socket; status: number; rest: Buffer }> {
  const s = await connectTcp(port);
  s.on('error', () => {});
  s.write(upgradeRequest(port));
  const r = await readUntil(s, (b) => b.includes(HEAD_END), timeoutMs);
  const end = r.data.indexOf(HEAD_END);
  if (end < 0) {
    s.destroy();
    throw new Error(`no upgrade response (${r.error ?? (r.ended ? 'closed' : '?')})`);
  }
  const m = /^HTTP\/1\.1 (\d{3})/.exec(r.data.subarray(0, end).toString('latin1'));
  return { s, status: m ? Number(m[1]) : 0, rest: r.data.subarray(end + 4) };
}

// ---------------------------------------------------------------- Brook first fragment, written independently

const NONCE_SIZE = 12;
const TAG_SIZE = 16;

function seal(key: Buffer, nonce: Buffer, plain: Buffer): Buffer {
  const c = createCipheriv('aes-256-gcm', key, nonce);
  const out = Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
  // the nonce's first 8 bytes, little-endian, advance after every seal
  nonce.writeBigUInt64LE((nonce.readBigUInt64LE(0) + 1n) & 0xffff_ffff_ffff_ffffn, 0);
  return out;
}

/** SOCKS5-style IPv4 address: ATYP 1, 4 bytes, port. */
export function ipv4Address(host: string, port: number): Buffer {
  const b = Buffer.alloc(7);
  b[0] = 1;
  host.split('.').forEach((x, i) => (b[1 + i] = Number(x)));
  b.writeUInt16BE(port, 5);
  return b;
}

/**
 * A client stream opening: nonce + first fragment (time + address), then `data`
 * as more fragments. `timeSec` defaults to now with the TCP parity.
 */
export function brookHello(password: string, dst: Buffer, o: { udp?: boolean; timeSec?: number; data?: Buffer } = {}): Buffer {
  const nonce = randomBytes(NONCE_SIZE);
  const key = Buffer.from(hkdfSync('sha256', Buffer.from(password), nonce, Buffer.from('brook'), 32));
  const n = Buffer.from(nonce);
  let t = o.timeSec ?? Math.floor(Date.now() / 1000);
  if ((t % 2 === 1) !== (o.udp === true)) t += 1;
  const first = Buffer.concat([Buffer.alloc(4), dst]);
  first.writeUInt32BE(t >>> 0, 0);
  const frag = (p: Buffer) => {
    const l = Buffer.alloc(2);
    l.writeUInt16BE(p.length, 0);
    return Buffer.concat([seal(key, n, l), seal(key, n, p)]);
  };
  const parts = [nonce, frag(first)];
  if (o.data) for (let i = 0; i < o.data.length; i += 2014) parts.push(frag(o.data.subarray(i, i + 2014)));
  return Buffer.concat(parts);
}
export const BROOK_OVERHEAD = { NONCE_SIZE, TAG_SIZE };

// ---------------------------------------------------------------- SOCKS5, written independently

/** SOCKS5 CONNECT to 127.0.0.1:`dstPort` through `socksPort`; resolves once the reply says success. */
export async function socksConnect(socksPort: number, dstPort: number, timeoutMs = CONNECT_TIMEOUT_MS): Promise<net.Socket> {
  const s = await connectTcp(socksPort, '127.0.0.1', timeoutMs);
  s.on('error', () => {});
  s.write(Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0]), ipv4Address('127.0.0.1', dstPort)]));
  const r = await readUntil(s, (b) => b.length >= 2 + 10, timeoutMs);
  if (r.data.length < 12 || r.data[1] !== 0 || r.data[3] !== 0) {
    s.destroy();
    throw new Error(`socks5 connect failed: ${r.data.toString('hex') || r.error || 'closed'}`);
  }
  if (r.data.length > 12) s.unshift(r.data.subarray(12));
  return s;
}

/** SOCKS5 UDP ASSOCIATE; returns the control socket and the relay port. */
export async function socksAssociate(socksPort: number, timeoutMs = CONNECT_TIMEOUT_MS): Promise<{ s: net.Socket; relayPort: number }> {
  const s = await connectTcp(socksPort, '127.0.0.1', timeoutMs);
  s.on('error', () => {});
  s.write(Buffer.concat([Buffer.from([5, 1, 0, 5, 3, 0]), ipv4Address('0.0.0.0', 0)]));
  const r = await readUntil(s, (b) => b.length >= 12, timeoutMs);
  if (r.data.length < 12 || r.data[3] !== 0 || r.data[5] !== 1) {
    s.destroy();
    throw new Error(`socks5 associate failed: ${r.data.toString('hex') || r.error || 'closed'}`);
  }
  return { s, relayPort: r.data.readUInt16BE(10) };
}

/** One real tunnel: SOCKS5 CONNECT to an echo server, a round trip of `payload`. */
export async function tunnelRoundTrip(socksPort: number, echoPort: number, timeoutMs = 5000, payload = randomBytes(32)): Promise<boolean> {
  let s: net.Socket | undefined;
  try {
    s = await socksConnect(socksPort, echoPort, timeoutMs);
    s.write(payload);
    const r = await readUntil(s, (b) => b.length >= payload.length, timeoutMs);
    return r.data.subarray(0, payload.length).equals(payload);
  } catch {
    return false;
  } finally {
    s?.destroy();
  }
}

// ---------------------------------------------------------------- destinations

export function listenTcp(handler: (c: net.Socket) => void, o: net.ServerOpts = {}): Promise<{ srv: net.Server; port: number }> {
  return new Promise((resolve) => {
    const srv = net.createServer({ noDelay: true, ...o }, handler);
    srv.listen({ host: '127.0.0.1', port: 0, backlog: 4096 }, () => resolve({ srv, port: (srv.address() as net.AddressInfo).port }));
  });
}

/** An echo server that counts its connections. */
export async function echoServer(): Promise<{ srv: net.Server; port: number; connections: () => number; close: () => void }> {
  let n = 0;
  const open = new Set<net.Socket>();
  const { srv, port } = await listenTcp((c) => {
    n++;
    open.add(c);
    c.on('data', (d: Buffer) => c.write(d));
    c.on('end', () => c.end());
    c.on('error', () => c.destroy());
    c.on('close', () => open.delete(c));
  });
  return {
    srv,
    port,
    connections: () => n,
    close: () => {
      for (const c of open) c.destroy();
      srv.close();
    },
  };
}

/** A UDP echo socket. */
export async function udpEcho(): Promise<{ sock: dgram.Socket; port: number }> {
  const sock = dgram.createSocket('udp4');
  sock.on('message', (m, r) => sock.send(m, r.port, r.address));
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  return { sock, port: sock.address().port };
}

export function sha256(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
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
