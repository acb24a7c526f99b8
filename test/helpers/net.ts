/**
 * Shared helpers for the end-to-end tests: loopback servers, a SOCKS5 client
 * on raw bytes, a wsserver + wsclient pair, byte exchange with SHA-256 on both
 * ends, raw HTTP over a socket and curl via execFile (never execFileSync: it
 * would block the event loop that hosts the servers under test).
 *
 * Everything binds 127.0.0.1 or ::1 only, and every wait is bounded.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import { WsClient, type WsClientOptions } from '../../src/client/wsclient.js';
import type { LogEntry, Logger } from '../../src/log.js';
import { WsServer, type WsServerOptions } from '../../src/server/wsserver.js';

export const LOOPBACK = '127.0.0.1';
export const LOOPBACK6 = '::1';
export const PASSWORD = 'hello';

/** Reject after `ms` with a message naming what was awaited. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `cond` every 20 ms until true, at most `ms`. */
export async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

// ---- servers ---------------------------------------------------------------

export interface Closable {
  close(): Promise<void>;
}

/** Close a net.Server and destroy its open connections. */
function closer(servers: net.Server[], sockets: Set<net.Socket>): () => Promise<void> {
  return async () => {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((srv) => new Promise<void>((r) => srv.close(() => r()))));
  };
}

function listenOn(server: net.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.removeListener('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

/** A port on 127.0.0.1 that was free a moment ago (nothing listens on it). */
export async function freePort(host = LOOPBACK): Promise<number> {
  const s = net.createServer();
  const port = await listenOn(s, host, 0);
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export interface HttpTestServer extends Closable {
  port: number;
  requests: { method: string; url: string; headers: IncomingMessage['headers'] }[];
}

/** A local HTTP server (127.0.0.1): `/hello` answers "hello from origin <url>", `/bytes?n=N` N bytes. */
export async function startHttpServer(host = LOOPBACK): Promise<HttpTestServer> {
  const requests: HttpTestServer['requests'] = [];
  const sockets = new Set<net.Socket>();
  const srv = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
    requests.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname === '/bytes') {
      const n = Math.min(Number(u.searchParams.get('n') ?? '0'), 16 * 1024 * 1024);
      const body = Buffer.alloc(n, 0x61);
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(n) });
      res.end(body);
      return;
    }
    const body = `hello from origin ${req.url}\n`;
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': String(Buffer.byteLength(body)) });
    res.end(body);
  });
  srv.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const port = await listenOn(srv, host, 0);
  return { port, requests, close: closer([srv], sockets) };
}

/** What one connection to an exchange server saw. */
export interface ExchangeRecord {
  /** SHA-256 of every byte received until the peer's FIN. */
  receivedHash: string;
  receivedBytes: number;
  /** SHA-256 of every byte sent. */
  sentHash: string;
  sentBytes: number;
  /** The peer's FIN arrived (not a reset). */
  gotEnd: boolean;
}

export type ExchangeOrder =
  /** Send and receive at the same time, FIN after our bytes. */
  | 'concurrent'
  /** Wait for the peer's FIN, then send our bytes and FIN (reply after the client's half-close). */
  | 'after-end'
  /** Send our bytes and FIN at once, then keep reading until the peer's FIN. */
  | 'first';

export interface ExchangeServer extends Closable {
  port: number;
  /** Resolved records, one per finished connection, in finishing order. */
  records: ExchangeRecord[];
  /** Resolves when `n` connections have finished (bounded by `ms`). */
  waitRecords(n: number, ms: number): Promise<ExchangeRecord[]>;
}

/**
 * A TCP server that, on every connection, sends `downBytes` random bytes and
 * hashes what it receives, in the given order; half-closes (allowHalfOpen).
 * Listens on every host in `hosts` with the same port number.
 */
export async function startExchangeServer(opts: {
  downBytes: number;
  order?: ExchangeOrder;
  hosts?: string[];
}): Promise<ExchangeServer> {
  const order = opts.order ?? 'concurrent';
  const records: ExchangeRecord[] = [];
  const sockets = new Set<net.Socket>();
  const onConn = (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    const recv = createHash('sha256');
    let receivedBytes = 0;
    let gotEnd = false;
    let sent: Promise<{ hash: string; bytes: number }> | null = null;
    const send = () => (sent ??= sendRandom(s, opts.downBytes, { end: true }));
    const ended = new Promise<void>((resolve) => {
      s.on('data', (d: Buffer) => {
        receivedBytes += d.length;
        recv.update(d);
      });
      s.on('end', () => {
        gotEnd = true;
        resolve();
      });
      s.on('close', () => resolve());
    });
    if (order !== 'after-end') void send();
    void ended
      .then(() => (order === 'after-end' && gotEnd ? send() : sent))
      .then(async (x) => {
        const out = x ?? (await sent) ?? { hash: sha256(Buffer.alloc(0)), bytes: 0 };
        records.push({ receivedHash: recv.digest('hex'), receivedBytes, sentHash: out.hash, sentBytes: out.bytes, gotEnd });
      })
      .catch(() => undefined);
  };
  const hosts = opts.hosts ?? [LOOPBACK];
  const servers: net.Server[] = [];
  let port = 0;
  for (const h of hosts) {
    const srv = net.createServer({ allowHalfOpen: true }, onConn);
    port = await listenOn(srv, h, port);
    servers.push(srv);
  }
  return {
    port,
    records,
    close: closer(servers, sockets),
    async waitRecords(n, ms) {
      await waitFor(() => records.length >= n, ms, `${n} exchange records (have ${records.length})`);
      return records;
    },
  };
}

/** Write `total` random bytes in 64 KiB chunks respecting backpressure; optional FIN after. */
export async function sendRandom(s: net.Socket, total: number, o: { end?: boolean; chunk?: number } = {}): Promise<{ hash: string; bytes: number }> {
  const chunk = o.chunk ?? 64 * 1024;
  const h = createHash('sha256');
  let sentBytes = 0;
  while (sentBytes < total) {
    if (s.destroyed) throw new Error(`socket destroyed after ${sentBytes} of ${total} bytes`);
    const b = randomBytes(Math.min(chunk, total - sentBytes));
    h.update(b);
    sentBytes += b.length;
    if (!s.write(b)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          s.off('close', onClose);
          resolve();
        };
        const onClose = () => {
          s.off('drain', onDrain);
          reject(new Error(`socket closed while writing (${sentBytes} of ${total})`));
        };
        s.once('drain', onDrain);
        s.once('close', onClose);
      });
    }
  }
  if (o.end) s.end();
  return { hash: h.digest('hex'), bytes: sentBytes };
}

/** Hash everything read from `s` until its FIN (or close). */
export function readAllHashed(s: net.Socket): Promise<{ hash: string; bytes: number; gotEnd: boolean }> {
  return new Promise((resolve) => {
    const h = createHash('sha256');
    let bytes = 0;
    let gotEnd = false;
    let done = false;
    const fin = () => {
      if (done) return;
      done = true;
      resolve({ hash: h.digest('hex'), bytes, gotEnd });
    };
    s.on('data', (d: Buffer) => {
      bytes += d.length;
      h.update(d);
    });
    s.on('end', () => {
      gotEnd = true;
      fin();
    });
    s.on('close', fin);
    s.resume();
  });
}

/** Everything read from `s` until FIN/close, as one buffer. */
export function readAll(s: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let done = false;
    const fin = () => {
      if (done) return;
      done = true;
      resolve(Buffer.concat(parts));
    };
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('end', fin);
    s.on('close', fin);
    s.resume();
  });
}

/** Read exactly `n` bytes (or fewer if the socket ends first); leftovers are unshifted back. */
export function readExactly(s: net.Socket, n: number, ms = 5000): Promise<Buffer> {
  return withTimeout(
    new Promise<Buffer>((resolve) => {
      let buf = Buffer.alloc(0);
      const onData = (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= n) {
          cleanup();
          s.pause();
          if (buf.length > n) s.unshift(buf.subarray(n));
          resolve(buf.subarray(0, n));
        }
      };
      const onEnd = () => {
        cleanup();
        resolve(buf);
      };
      const cleanup = () => {
        s.off('data', onData);
        s.off('end', onEnd);
        s.off('close', onEnd);
      };
      s.on('data', onData);
      s.on('end', onEnd);
      s.on('close', onEnd);
      s.resume();
    }),
    ms,
    `${n} bytes`,
  );
}

/** Read until `\r\n\r\n`; returns the head text and the bytes after it. */
export function readHttpHead(s: net.Socket, ms = 5000): Promise<{ head: string; rest: Buffer }> {
  return withTimeout(
    new Promise((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const onData = (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        const i = buf.indexOf('\r\n\r\n');
        if (i >= 0) {
          cleanup();
          s.pause();
          resolve({ head: buf.subarray(0, i + 4).toString('latin1'), rest: buf.subarray(i + 4) });
        }
      };
      const onEnd = () => {
        cleanup();
        reject(new Error(`connection ended before an HTTP head (${buf.length} bytes: ${JSON.stringify(buf.toString('latin1').slice(0, 80))})`));
      };
      const cleanup = () => {
        s.off('data', onData);
        s.off('end', onEnd);
        s.off('close', onEnd);
      };
      s.on('data', onData);
      s.on('end', onEnd);
      s.on('close', onEnd);
      s.resume();
    }),
    ms,
    'HTTP head',
  );
}

export function connectRaw(port: number, host = LOOPBACK): Promise<net.Socket> {
  return withTimeout(
    new Promise((resolve, reject) => {
      const s = net.connect({ host, port, allowHalfOpen: true }, () => {
        s.off('error', reject);
        s.on('error', () => undefined); // a reset shows up as 'close'; tests assert on that
        resolve(s);
      });
      s.once('error', reject);
    }),
    5000,
    `connect ${host}:${port}`,
  );
}

/** Resolves with the ms elapsed when `s` closes (bounded by `ms`, then rejects). */
export function closedWithin(s: net.Socket, ms: number): Promise<number> {
  const t0 = Date.now();
  if (s.destroyed) return Promise.resolve(0);
  return withTimeout(new Promise((r) => s.once('close', () => r(Date.now() - t0))), ms, 'socket close');
}

/** Resolves with the ms elapsed when `s` sees the peer's FIN or closes (bounded by `ms`). */
export function endedWithin(s: net.Socket, ms: number): Promise<number> {
  const t0 = Date.now();
  if (s.readableEnded || s.destroyed) return Promise.resolve(0);
  s.resume();
  return withTimeout(
    new Promise((r) => {
      const done = () => r(Date.now() - t0);
      s.once('end', done);
      s.once('close', done);
    }),
    ms,
    'socket end',
  );
}

export interface HttpAnswer {
  status: number;
  headers: Map<string, string>;
  body: Buffer;
}

/**
 * Send a raw HTTP request on a fresh connection and read one response: the
 * head, then Content-Length bytes (or until close when there is none).
 */
export async function rawHttp(port: number, request: string, host = LOOPBACK): Promise<HttpAnswer> {
  const s = await connectRaw(port, host);
  try {
    s.write(request);
    const { head, rest } = await readHttpHead(s);
    const lines = head.slice(0, -4).split('\r\n');
    const m = /^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? '');
    if (!m) throw new Error(`bad status line ${lines[0]}`);
    const headers = new Map<string, string>();
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      headers.set(l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim());
    }
    const cl = headers.get('content-length');
    let body: Buffer;
    if (cl !== undefined) {
      const n = Number(cl);
      body = rest.length >= n ? rest.subarray(0, n) : Buffer.concat([rest, await readExactly(s, n - rest.length)]);
    } else {
      s.unshift(rest);
      body = await withTimeout(readAll(s), 5000, 'HTTP body until close');
    }
    return { status: Number(m[1]), headers, body };
  } finally {
    s.destroy();
  }
}

/** The upgrade request exactly as upstream's client writes it. */
export function upgradeRequest(port: number, path = '/ws', key = randomBytes(16).toString('base64')): string {
  return (
    `GET ${path} HTTP/1.1\r\nHost: ${LOOPBACK}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`
  );
}

// ---- SOCKS5 client on raw bytes ---------------------------------------------

export type SocksTarget = { type: 'ipv4' | 'ipv6' | 'domain'; host: string; port: number };

export function socksRequestBytes(t: SocksTarget, cmd = 0x01): Buffer {
  let addr: Buffer;
  if (t.type === 'ipv4') addr = Buffer.from([0x01, ...t.host.split('.').map(Number)]);
  else if (t.type === 'ipv6') {
    const b = Buffer.alloc(17);
    b[0] = 0x04;
    // ::1 and other short forms: expand via URL parsing of a bracketed literal
    const groups = expandIpv6(t.host);
    groups.forEach((g, i) => b.writeUInt16BE(g, 1 + i * 2));
    addr = b;
  } else addr = Buffer.concat([Buffer.from([0x03, Buffer.byteLength(t.host)]), Buffer.from(t.host)]);
  const port = Buffer.alloc(2);
  port.writeUInt16BE(t.port);
  return Buffer.concat([Buffer.from([0x05, cmd, 0x00]), addr, port]);
}

function expandIpv6(h: string): number[] {
  const [head, tail] = h.includes('::') ? h.split('::') : [h, undefined];
  const a = head ? head.split(':').filter(Boolean) : [];
  const b = tail !== undefined && tail ? tail.split(':').filter(Boolean) : [];
  const fill = tail !== undefined ? 8 - a.length - b.length : 0;
  return [...a, ...Array<string>(fill).fill('0'), ...b].map((x) => parseInt(x, 16));
}

/** Read one SOCKS5 reply (whole, by its ATYP). Returns the reply code. */
export async function readSocksReply(s: net.Socket, ms = 5000): Promise<number> {
  const head = await readExactly(s, 5, ms);
  if (head.length < 5) throw new Error(`SOCKS reply truncated: ${head.toString('hex')}`);
  const atyp = head[3];
  const rest = atyp === 0x01 ? 4 + 2 - 1 : atyp === 0x04 ? 16 + 2 - 1 : head[4]! + 2;
  await readExactly(s, rest, ms);
  return head[1]!;
}

/** SOCKS5 CONNECT (no auth) through `socksPort`; resolves with the socket once the reply says success. */
export async function socksConnect(socksPort: number, t: SocksTarget): Promise<net.Socket> {
  const s = await connectRaw(socksPort);
  s.write(Buffer.from([0x05, 0x01, 0x00]));
  const m = await readExactly(s, 2);
  if (m[0] !== 0x05 || m[1] !== 0x00) {
    s.destroy();
    throw new Error(`SOCKS method reply ${m.toString('hex')}`);
  }
  s.write(socksRequestBytes(t));
  const rep = await readSocksReply(s);
  if (rep !== 0x00) {
    s.destroy();
    throw new Error(`SOCKS reply code ${rep}`);
  }
  return s;
}

/**
 * One full exchange through SOCKS: send `upBytes`, receive until FIN, with an
 * order mirroring the exchange server's ('after-end' server: we FIN first;
 * 'first' server: we send only after its FIN).
 */
export async function exchangeThroughSocks(
  socksPort: number,
  t: SocksTarget,
  upBytes: number,
  order: ExchangeOrder = 'concurrent',
): Promise<{ sent: { hash: string; bytes: number }; received: { hash: string; bytes: number; gotEnd: boolean } }> {
  const s = await socksConnect(socksPort, t);
  try {
    const received = readAllHashed(s);
    let sent;
    if (order === 'first') {
      await received; // the destination ended first; our write side is still open
      sent = await sendRandom(s, upBytes, { end: true });
      await new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r())));
    } else {
      sent = await sendRandom(s, upBytes, { end: true });
    }
    return { sent, received: await received };
  } finally {
    s.destroy();
  }
}

// ---- the pair ----------------------------------------------------------------

export interface Pair extends Closable {
  server: WsServer;
  client: WsClient;
  serverPort: number;
  socksPort: number;
  serverLog: LogEntry[];
  clientLog: LogEntry[];
}

export function collectLog(into: LogEntry[]): Logger {
  return (e) => {
    into.push(e);
  };
}

/** Start a WsServer and a WsClient pointing at it, both on 127.0.0.1 ephemeral ports. */
export async function startPair(o: {
  withoutBrookProtocol?: boolean;
  password?: string;
  server?: Partial<WsServerOptions>;
  client?: Partial<WsClientOptions>;
} = {}): Promise<Pair> {
  const serverLog: LogEntry[] = [];
  const clientLog: LogEntry[] = [];
  const password = o.password ?? PASSWORD;
  const server = new WsServer({
    listen: `${LOOPBACK}:0`,
    password,
    withoutBrookProtocol: o.withoutBrookProtocol,
    log: collectLog(serverLog),
    ...o.server,
  });
  const addr = await server.listen();
  const client = new WsClient({
    endpoint: { secure: false, hostPort: `${LOOPBACK}:${addr.port}`, hostname: LOOPBACK, port: addr.port, path: o.server?.path ?? '/ws' },
    password,
    withoutBrookProtocol: o.withoutBrookProtocol,
    socks5: `${LOOPBACK}:0`,
    log: collectLog(clientLog),
    ...o.client,
  });
  await client.listen();
  return {
    server,
    client,
    serverPort: addr.port,
    socksPort: client.socks.address().port,
    serverLog,
    clientLog,
    async close() {
      await client.close();
      await server.close();
    },
  };
}

// ---- curl ----------------------------------------------------------------------

export function curl(args: string[], ms = 15_000): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', String(Math.ceil(ms / 1000)), ...args], { timeout: ms + 2000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      resolve({ stdout: String(stdout), stderr: String(stderr), code });
    });
  });
}

/** Stop everything in `list` (reverse order), ignoring errors; clears the list. */
export async function closeAll(list: Closable[]): Promise<void> {
  const items = list.splice(0).reverse();
  for (const c of items) {
    try {
      await c.close();
    } catch {
      // already closed
    }
  }
}
