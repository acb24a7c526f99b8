/**
 * Raw-socket clients and destinations of the hostile tools, written here independently of
 * src/ and test/: TCP, the HTTP upgrade, a Brook opening sealed with node:crypto, SOCKS5.
 */
import { createCipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { CONNECT_TIMEOUT_MS, now, sleep, WS_PATH } from './base.js';

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

/**
 * A refused upgrade (`req`, answered 404/405/400), `trailing` bytes `trailingDelayMs` after the answer,
 * then a FIN or an RST `hangUpDelayMs` later; the socket is destroyed a second after that.
 * Resolves with the answer's status code ('none': no answer).
 */
export async function refusedUpgrade(
  port: number,
  req: Buffer,
  o: { answerTimeoutMs: number; trailing: Buffer | string; trailingDelayMs: number; hangUpDelayMs: number; rst: boolean },
): Promise<string> {
  const s = await connectTcp(port, '127.0.0.1', 5000, true);
  s.on('error', () => {});
  s.write(req);
  const r = await readUntil(s, (b) => b.includes(HEAD_END), o.answerTimeoutMs);
  await sleep(o.trailingDelayMs);
  if (!s.destroyed) s.write(o.trailing);
  await sleep(o.hangUpDelayMs);
  hangUp(s, o.rst);
  setTimeout(() => s.destroy(), 1000);
  return /^HTTP\/1\.1 (\d{3})/.exec(r.data.toString('latin1'))?.[1] ?? 'none';
}

// ---------------------------------------------------------------- slowloris

/** The head of an upgrade request a slowloris connection drips, one byte at a time (then 'a' forever). */
export const SLOW_HEAD = Buffer.from(`GET ${WS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: `);

/**
 * One slowloris connection: SLOW_HEAD one byte every `intervalMs`, a header that never ends.
 * `opened(s)` when it connects; `closed(s, openedAt)` when it closes (`openedAt` 0: the connect failed).
 */
export function slowlorisConnection(
  port: number,
  intervalMs: number,
  on: { opened: (s: net.Socket) => void; closed: (s: net.Socket, openedAt: number) => void },
): net.Socket {
  const s = net.connect({ host: '127.0.0.1', port });
  let openedAt = 0;
  let sent = 0;
  let timer: NodeJS.Timeout | undefined;
  s.on('connect', () => {
    openedAt = now();
    on.opened(s);
    const drip = () => {
      if (s.destroyed) return;
      s.write(sent < SLOW_HEAD.length ? SLOW_HEAD.subarray(sent, sent + 1) : 'a');
      sent++;
      timer = setTimeout(drip, intervalMs);
    };
    drip();
  });
  s.on('data', () => {});
  s.on('error', () => {});
  s.on('close', () => {
    clearTimeout(timer);
    on.closed(s, openedAt);
  });
  return s;
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

/** HTTP CONNECT to 127.0.0.1:`dstPort` through an HTTP proxy: the answer's status code (0: none) and the open socket. */
export async function httpConnectSocket(httpPort: number, dstPort: number, timeoutMs = CONNECT_TIMEOUT_MS): Promise<{ status: number; s: net.Socket }> {
  const s = await connectTcp(httpPort, '127.0.0.1', timeoutMs);
  s.on('error', () => {});
  s.write(`CONNECT 127.0.0.1:${dstPort} HTTP/1.1\r\nHost: 127.0.0.1:${dstPort}\r\n\r\n`);
  const r = await readUntil(s, (b) => b.includes(HEAD_END), timeoutMs);
  const end = r.data.indexOf(HEAD_END);
  if (end >= 0 && end + HEAD_END.length < r.data.length) s.unshift(r.data.subarray(end + HEAD_END.length));
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(r.data.toString('latin1'))?.[1] ?? 0), s };
}

/** HTTP CONNECT through an HTTP proxy, then closed; resolves with the answer's status code (0: none). */
export async function httpConnect(httpPort: number, dstPort: number, timeoutMs = CONNECT_TIMEOUT_MS): Promise<number> {
  const { status, s } = await httpConnectSocket(httpPort, dstPort, timeoutMs);
  s.destroy();
  return status;
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
