/**
 * fragment=min_len:max_len:min_delay:max_delay (issue 21 item 1;
 * src/tls/fragment-spec.ts, src/net/tls-fragment.ts): the value as upstream
 * reads it (four non-zero whole numbers, delays in microseconds) with a
 * one-line error where upstream would silently split nothing; on the wire, the
 * first TLS record leaves as socket writes of the drawn lengths, each at least
 * a pause after the last, and a raw TCP front of a real TLS server
 * (test/helpers/clienthello-capture.ts) gets those bytes cut only where pieces
 * meet (its reads merge pieces when the process is slow: counted at the
 * writes); after it, writes pass unchanged; the handshake and
 * tunnels complete through our wssserver, also for a resumed session and for
 * pooled connections; one teardown path (a pause cancelled, the socket closed).
 */
import net from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveServer } from '../src/client/connect.js';
import { connectUpgraded, dialTunnel, type ServerEndpoint } from '../src/client/dial.js';
import { TlsSessionCache } from '../src/client/tls-session.js';
import { WsClient } from '../src/client/wsclient.js';
import { Dialer } from '../src/dial/dialer.js';
import { ErrorCodes } from '../src/errors.js';
import { buildLink, parseLink } from '../src/link.js';
import { FirstRecordSplitter, pauseMicros, type PauseFn } from '../src/net/tls-fragment.js';
import { Ext } from '../src/tls/clienthello.js';
import { formatFragmentSpec, MAX_FRAGMENT_DELAY_US, parseFragmentSpec, planPieces, type TlsFragmentSpec } from '../src/tls/fragment-spec.js';
import { BROOK_MODE } from '../src/protocol/mode.js';
import { type CapturedHello, type CapturedWss, type HelloCapture, startCapturedWss } from './helpers/clienthello-capture.js';
import { type Closable, closeAll, exchangeThroughSocks, LOOPBACK, oneLineError, PASSWORD, startExchangeServer, waitFor } from './helpers/net.js';

const NAME = 'brook.test';
/** Pauses of milliseconds on the wire tests, so that each piece is read alone at the front. */
const WIRE: TlsFragmentSpec = { minLength: 40, maxLength: 90, minDelay: 4000, maxDelay: 6000 };
const started: Closable[] = [];
let wss: CapturedWss;
let cap: HelloCapture;
let ca: string;

beforeAll(async () => {
  wss = await startCapturedWss(NAME);
  ({ cap, ca } = wss);
  recordTcpWrites();
});

afterAll(async () => {
  net.Socket.prototype.write = socketWrite;
  await closeAll(started);
  await wss?.close();
});

const endpoint = (o: Partial<ServerEndpoint> = {}) => wss.endpoint({ fragment: WIRE, ...o });

/** Every write on a plain TCP socket of this process (TLS sockets' own writes left out). */
interface TcpWrite {
  sock: net.Socket;
  n: number;
  atNs: bigint;
  /** The socket's local port, once connected. */
  port?: number;
}
const tcpWrites: TcpWrite[] = [];
const socketWrite = net.Socket.prototype.write;
function recordTcpWrites(): void {
  net.Socket.prototype.write = function (this: net.Socket, ...args: unknown[]) {
    const chunk = args[0];
    if (!(this instanceof tls.TLSSocket) && Buffer.isBuffer(chunk)) tcpWrites.push({ sock: this, n: chunk.length, atNs: process.hrtime.bigint(), port: this.localPort });
    return (socketWrite as (...a: unknown[]) => boolean).apply(this, args);
  } as typeof socketWrite;
}

/** The writes of the client socket whose port the front saw. */
function writesOf(c: CapturedHello): TcpWrite[] {
  const socks = new Set(tcpWrites.filter((w) => w.port === c.peerPort).map((w) => w.sock));
  return tcpWrites.filter((w) => socks.has(w.sock));
}

/**
 * The client wrote the hello's record as pieces of the spec's lengths, each write at least a
 * pause after the last; the front got those bytes, cut only where pieces meet (a read can hold
 * several pieces when this process was slow to read, so the pieces are counted at the writes).
 */
function expectSplit(c: CapturedHello, s: TlsFragmentSpec): number[] {
  const writes = writesOf(c);
  const pieces: TcpWrite[] = [];
  for (let sum = 0; sum < c.hello.recordBytes && pieces.length < writes.length; sum += pieces.at(-1)!.n) pieces.push(writes[pieces.length]!);
  const sizes = pieces.map((w) => w.n);
  expect(sizes.reduce((a, b) => a + b, 0)).toBe(c.hello.recordBytes);
  expect(sizes.length).toBeGreaterThanOrEqual(Math.ceil(c.hello.recordBytes / (s.maxLength - 1)));
  sizes.slice(0, -1).forEach((n) => expect(n).toBeGreaterThanOrEqual(s.minLength));
  sizes.forEach((n) => expect(n).toBeLessThan(s.maxLength));
  for (let i = 1; i < pieces.length; i++) expect(Number(pieces[i]!.atNs - pieces[i - 1]!.atNs) / 1000).toBeGreaterThanOrEqual(s.minDelay);
  const cuts = new Set(sizes.map((_, i) => sizes.slice(0, i + 1).reduce((a, b) => a + b, 0)));
  let at = 0;
  for (const r of c.reads) expect(cuts.has((at += r.bytes.length))).toBe(true);
  return sizes;
}

describe('fragment: the value', () => {
  it('four non-zero whole numbers, delays in microseconds; "+n" as Go reads it; a max not above its min is the min', () => {
    expect(parseFragmentSpec('50:100:10:50')).toEqual({ minLength: 50, maxLength: 100, minDelay: 10, maxDelay: 50 });
    expect(parseFragmentSpec('+5:+6:1:2')).toEqual({ minLength: 5, maxLength: 6, minDelay: 1, maxDelay: 2 });
    expect(formatFragmentSpec(parseFragmentSpec('100:50:9:3'))).toBe('100:50:9:3');
    const fixed = [7, 7, 7];
    expect(planPieces(20, parseFragmentSpec('7:7:1:1'), () => fixed.shift() ?? 7)).toEqual([7, 7, 6]);
    expect(planPieces(264, WIRE, (min) => min)).toEqual([...Array(6).fill(40), 24]);
  });

  it('anything upstream would silently ignore is a one-line error naming the format', () => {
    const bad = ['', '50:100:10', '50:100:10:50:1', '0:100:10:50', '50:0:10:50', '50:100:0:50', '50:100:10:0', '-50:100:10:50', 'a:100:10:50', '1.5:100:10:50', '50:100:10:5e3', ' 50:100:10:50', `1:2:3:${MAX_FRAGMENT_DELAY_US + 1}`, `${2 ** 31}:1:1:1`];
    for (const v of bad) expect(oneLineError(() => parseFragmentSpec(v), ErrorCodes.CONFIG)).toContain('min_length:max_length:min_delay:max_delay');
    expect(() => parseFragmentSpec('1:2:3', ErrorCodes.LINK_INVALID)).toThrow(expect.objectContaining({ code: ErrorCodes.LINK_INVALID }));
  });

  it('a wssserver link carries it; a wsserver link keeps it unread (as upstream); a bad one is LINK_INVALID; buildLink refuses one it could not read', () => {
    const link = buildLink('wssserver', 'wss://d.test:443/ws', 'pw', { fragment: '50:100:10:50' });
    expect(link).toContain('fragment=50%3A100%3A10%3A50');
    expect(parseLink(link).fragment).toEqual({ minLength: 50, maxLength: 100, minDelay: 10, maxDelay: 50 });
    expect(resolveServer(link).endpoint.fragment).toEqual({ minLength: 50, maxLength: 100, minDelay: 10, maxDelay: 50 });
    const ws = parseLink(buildLink('wsserver', 'ws://d.test:80', 'pw', { fragment: '1:2' }));
    expect(ws.fragment).toBeUndefined();
    expect(ws.options.fragment).toBe('1:2');
    expect(resolveServer('brook://wssserver?fragment=&password=pw&wssserver=wss%3A%2F%2Fd.test%3A443').endpoint.fragment).toBeUndefined();
    expect(() => parseLink('brook://wssserver?fragment=50%3A100&password=pw&wssserver=wss%3A%2F%2Fd.test%3A443')).toThrow(expect.objectContaining({ code: ErrorCodes.LINK_INVALID }));
    expect(() => buildLink('wssserver', 'wss://d.test:443', 'pw', { fragment: '0:0:0:0' })).toThrow(expect.objectContaining({ code: ErrorCodes.LINK_INVALID }));
  });

  it('library options replace the link\'s (object or text), are checked, and need a wss:// server', () => {
    const link = buildLink('wssserver', 'wss://d.test:443/ws', 'pw', { fragment: '50:100:10:50' });
    expect(resolveServer(link, { fragment: '1:2:3:4' }).endpoint.fragment).toEqual({ minLength: 1, maxLength: 2, minDelay: 3, maxDelay: 4 });
    expect(resolveServer('wss://d.test:443/ws', { password: 'pw', fragment: WIRE }).endpoint.fragment).toEqual(WIRE);
    expect(() => resolveServer('wss://d.test:443/ws', { password: 'pw', fragment: { ...WIRE, minDelay: 0 } })).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
    expect(() => resolveServer('ws://d.test:80/ws', { password: 'pw', fragment: WIRE })).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
    expect(resolveServer('wss://d.test:443/ws', { password: 'pw' }).endpoint.fragment).toBeUndefined();
  });
});

describe('fragment: on the wire', () => {
  it('the ClientHello reaches the TLS server as separate reads of the drawn lengths, paced; the handshake and the upgrade complete', async () => {
    const next = cap.next();
    const u = await connectUpgraded({ endpoint: endpoint(), timeoutMs: 10_000 });
    const c = await next;
    expect((u.socket as TLSSocket).getProtocol()).toBe('TLSv1.3');
    u.socket.destroy();
    expect(c.hello.serverName).toBe(NAME);
    expect(expectSplit(c, WIRE).length).toBeGreaterThan(1);
  });

  it('exact pieces and pauses (drawn by injected sources), each write awaited; writes after the hello pass unchanged', async () => {
    const lengths = [45, 80, 41, 89, 60];
    const delays = [4100, 5900, 4000, 4500];
    const asked: number[] = [];
    let drawn = 0;
    const random = (min: number, max: number) => {
      const v = min === WIRE.minLength ? lengths[drawn++ % lengths.length]! : delays[asked.length % delays.length]!;
      expect(v).toBeGreaterThanOrEqual(min);
      expect(v).toBeLessThan(max);
      return v;
    };
    const pause: PauseFn = (us, done) => {
      asked.push(us);
      return pauseMicros(us, done);
    };
    const tcp = net.connect({ host: LOOPBACK, port: cap.port });
    const writes: Array<{ n: number; atNs: bigint }> = [];
    const write = tcp.write.bind(tcp) as (b: Buffer, cb?: (e?: Error | null) => void) => boolean;
    (tcp as unknown as { write: typeof write }).write = (b, cb) => {
      writes.push({ n: b.length, atNs: process.hrtime.bigint() });
      return write(b, cb);
    };
    const wrapper = new FirstRecordSplitter(tcp, { spec: WIRE, random, pause });
    const toWrapper: number[] = [];
    const inner = wrapper._write.bind(wrapper);
    wrapper._write = (chunk, enc, cb) => {
      toWrapper.push(chunk.length);
      inner(chunk, enc, cb);
    };
    const next = cap.next();
    const socket = tls.connect({ socket: wrapper, servername: NAME, ca, ALPNProtocols: ['http/1.1'] });
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    const c = await next;
    const pieces = expectSplit(c, WIRE);
    const cycle = Array.from({ length: pieces.length }, (_, i) => lengths[i % lengths.length]!);
    expect(pieces.slice(0, -1)).toEqual(cycle.slice(0, -1));
    expect(pieces.at(-1)).toBeLessThanOrEqual(cycle.at(-1)!);
    expect(pieces.reduce((a, b) => a + b, 0)).toBe(c.hello.recordBytes);
    expect(asked).toEqual(Array.from({ length: pieces.length - 1 }, (_, i) => delays[i % delays.length]));
    for (let i = 1; i < pieces.length; i++) {
      expect(Number(writes[i]!.atNs - writes[i - 1]!.atNs) / 1000).toBeGreaterThanOrEqual(asked[i - 1]!);
    }
    // after the hello: what TLS wrote to the wrapper is what reached the socket, write for write
    socket.write(Buffer.alloc(100_000, 1));
    await new Promise((r) => setTimeout(r, 100));
    expect(writes.slice(pieces.length).map((w) => w.n)).toEqual(toWrapper.slice(1));
    socket.destroy();
    await waitFor(() => tcp.destroyed && wrapper.destroyed, 2000, 'the socket under the TLS socket closed');
  });
});

describe('fragment: with sessions, the pool and tunnels', () => {
  it('a resumed ClientHello (pre_shared_key) is split the same way', async () => {
    const cache = new TlsSessionCache();
    const e = endpoint();
    const open = async () => {
      const next = cap.next();
      const t = await dialTunnel({ endpoint: e, password: PASSWORD, mode: BROOK_MODE, network: 'tcp', destination: { type: 'ipv4', host: LOOPBACK, port: 9 }, timeoutMs: 10_000, tlsSessions: cache });
      const reused = (t.socket as TLSSocket).isSessionReused();
      t.socket.destroy();
      return { reused, c: await next };
    };
    const first = await open();
    expect(first.reused).toBe(false);
    await waitFor(() => cache.size === 1, 5000, 'a session kept');
    const second = await open();
    expect(second.reused).toBe(true);
    expect(second.c.hello.extensions.at(-1)?.type).toBe(Ext.PRE_SHARED_KEY);
    expect(second.c.hello.recordBytes).toBeGreaterThan(first.c.hello.recordBytes);
    expectSplit(second.c, WIRE);
  });

  it('pooled connections are split too, and tunnels through them (and through tlsfingerprint=chrome) carry data intact', async () => {
    const dst = await startExchangeServer({ downBytes: 200_000 });
    started.push(dst);
    const before = cap.captured.length;
    const client = new WsClient({ endpoint: endpoint({ tlsFingerprint: 'chrome' }), password: PASSWORD, socks5: `${LOOPBACK}:0`, log: () => undefined, pool: { size: 2 }, tlsResume: true });
    await client.listen();
    started.push({ close: () => client.close() });
    await waitFor(() => client.pool!.size === 2, 10_000, 'a warm pool');
    for (let i = 0; i < 3; i++) {
      const r = await exchangeThroughSocks(client.socks.address().port, { type: 'ipv4', host: LOOPBACK, port: dst.port }, 30_000);
      expect(r.received.bytes).toBe(200_000);
    }
    const mine = cap.captured.slice(before);
    expect(mine.length).toBeGreaterThanOrEqual(2);
    for (const c of mine) expectSplit(c, WIRE);
    const records = await dst.waitRecords(3, 10_000);
    expect(records.every((r) => r.gotEnd)).toBe(true);
    expect(client.stats.tunnelFailures).toBe(0);
  });
});

describe('fragment: through a --dialWith* dialer', () => {
  it('a connection the dialer made (--dialWithIP4) is split the same way', async () => {
    const dialer = new Dialer({ ip4: LOOPBACK });
    expect(dialer.isDefault).toBe(false);
    const next = cap.next();
    const u = await connectUpgraded({ endpoint: endpoint(), timeoutMs: 10_000, dialer });
    const c = await next;
    u.socket.destroy();
    expect(expectSplit(c, WIRE).length).toBeGreaterThan(1);
  });
});

describe('fragment: teardown', () => {
  it('destroyed during a pause: the pause is cancelled and the TCP socket closed', async () => {
    let cancelled = 0;
    let asked = 0;
    const pause: PauseFn = () => {
      asked++;
      return () => void cancelled++;
    };
    const tcp = net.connect({ host: LOOPBACK, port: cap.port });
    const wrapper = new FirstRecordSplitter(tcp, { spec: WIRE, pause });
    const socket = tls.connect({ socket: wrapper, servername: NAME, ca });
    socket.on('error', () => undefined);
    await waitFor(() => asked === 1, 5000, 'the first piece written, the pause begun');
    expect(tcp.bytesWritten).toBeLessThan(WIRE.maxLength);
    socket.destroy();
    await waitFor(() => tcp.destroyed && wrapper.destroyed, 2000, 'the socket closed');
    expect(cancelled).toBe(1);
  });

  it('a server that never answers: the connect timeout ends it mid-split (TIMEOUT), nothing left open', async () => {
    const held = new Set<net.Socket>();
    const silent = net.createServer((s) => {
      held.add(s);
      s.resume();
      s.on('close', () => held.delete(s));
    });
    await new Promise<void>((r) => silent.listen(0, LOOPBACK, r));
    const port = (silent.address() as net.AddressInfo).port;
    const slow = { minLength: 10, maxLength: 11, minDelay: MAX_FRAGMENT_DELAY_US, maxDelay: MAX_FRAGMENT_DELAY_US };
    const started = Date.now();
    await expect(connectUpgraded({ endpoint: endpoint({ address: { host: LOOPBACK, port }, fragment: slow }), timeoutMs: 300 })).rejects.toMatchObject({ code: ErrorCodes.TIMEOUT });
    expect(Date.now() - started).toBeLessThan(5000);
    await waitFor(() => held.size === 0, 5000, 'the server saw the close');
    silent.close();
  });

  it('a refused connection is CONNECTION_REFUSED, as without fragment', async () => {
    const free = net.createServer();
    await new Promise<void>((r) => free.listen(0, LOOPBACK, r));
    const port = (free.address() as net.AddressInfo).port;
    await new Promise<void>((r) => free.close(() => r()));
    await expect(connectUpgraded({ endpoint: endpoint({ address: { host: LOOPBACK, port } }), timeoutMs: 5000 })).rejects.toMatchObject({ code: ErrorCodes.CONNECTION_REFUSED });
  });
});

describe('pauseMicros', () => {
  it('waits at least the asked microseconds, below and above a millisecond; cancel stops it', async () => {
    for (const us of [50, 300, 2500]) {
      const t0 = process.hrtime.bigint();
      await new Promise<void>((r) => pauseMicros(us, r));
      expect(Number(process.hrtime.bigint() - t0) / 1000).toBeGreaterThanOrEqual(us);
    }
    let fired = false;
    const cancel = pauseMicros(1500, () => (fired = true));
    cancel();
    await new Promise((r) => setTimeout(r, 20));
    expect(fired).toBe(false);
  });
});
