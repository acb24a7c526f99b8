/**
 * Shared helpers for the end-to-end tests: loopback servers (HTTP, the exchange
 * server) and a wsserver + wsclient pair. It re-exports the other helpers, one file
 * per role: io.ts (bounded socket reads and writes, ports, hashing), http.ts (raw
 * HTTP, curl), socks.ts (a SOCKS5 client on raw bytes).
 *
 * Everything binds 127.0.0.1 or ::1 only, and every wait is bounded.
 */
import { createHash } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type ServerResponse } from 'node:http';
import net from 'node:net';
import { WsClient, type WsClientOptions } from '../../src/client/wsclient.js';
import type { LogEntry, Logger } from '../../src/log.js';
import { WsServer, type WsServerOptions } from '../../src/server/wsserver.js';
import { type Closable, closer, listenOn, LOOPBACK, PASSWORD, sendRandom, sha256, waitFor } from './io.js';

export * from './io.js';
export * from './http.js';
export * from './socks.js';

// ---- servers ---------------------------------------------------------------

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
