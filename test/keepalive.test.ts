/**
 * --keepalive (issue 12 item 1): an empty Brook fragment (payload length 0) sent on
 * a TCP tunnel whose sending direction has been idle.
 *
 * - The empty fragment through our encoder and decoder, both AEAD backends (the
 *   native addon's batch open included), checked against the independent
 *   implementation in helpers/noble.ts: 34 bytes, a no-op for a stream decoder,
 *   one empty datagram for a datagram decoder, the nonce kept in step.
 * - The codecs: never before the first fragment, null on UDP, absent without the
 *   Brook protocol.
 * - The relay: one timer, a keepalive only when idle, none behind unsent bytes,
 *   none after our FIN, no timer at all when off.
 * - Our client against a server that reads exactly as upstream's StreamServer.Read
 *   does (18-byte sealed length, then length + 16, write the payload on), and our
 *   server's tunnel against a client that reads as upstream's StreamClient.Read:
 *   both see the empty fragments and take them as nothing.
 * The reverse-proxy test (nginx with a 2 s idle timeout) is test/keepalive-nginx.test.ts.
 */
import { createHash } from 'node:crypto';
import net, { type Server, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { WsClient } from '../src/client/wsclient.js';
import { loadNativeBackend } from '../src/crypto/index.js';
import { BrookError, ErrorCodes } from '../src/errors.js';
import { PLAIN_TRANSFORM, Relay, type TunnelTransform } from '../src/net/relay.js';
import { BrookCipher, DEFAULT_HKDF_INFO, nodeCryptoBackend, type AeadBackend } from '../src/protocol/cipher.js';
import { FragmentDecoder, FragmentEncoder } from '../src/protocol/fragment.js';
import { passwordCredential } from '../src/protocol/credential.js';
import { BROOK_MODE } from '../src/protocol/mode.js';
import { createClientCodec, createServerCodec } from '../src/protocol/session.js';
import { FRAGMENT_OVERHEAD, MAX_TCP_PAYLOAD, MAX_UDP_PAYLOAD, NONCE_SIZE, SEALED_LENGTH_SIZE, TAG_SIZE } from '../src/protocol/sizes.js';
import { checkKeepalive } from '../src/net/tunnel-transform.js';
import { serveTunnel, type TunnelHandle } from '../src/server/tunnel.js';
import { type Closable, closeAll, LOOPBACK, PASSWORD, readHttpHead, sleep, socksConnect, upgradeRequest, withTimeout } from './helpers/net.js';
import { concat, NobleDirection, nobleFirstPayload } from './helpers/noble.js';

const started: Closable[] = [];
const cleanup: Array<() => void> = [];
afterEach(async () => {
  for (const c of cleanup.splice(0)) c();
  await closeAll(started);
});

const nativeLoad = loadNativeBackend();
const NATIVE_SKIP = nativeLoad.native ? '' : ` [SKIPPED: addon not available: ${nativeLoad.reason}]`;
const BACKENDS: { label: string; backend: AeadBackend; available: boolean }[] = [
  { label: 'node:crypto', backend: nodeCryptoBackend, available: true },
  { label: `native${NATIVE_SKIP}`, backend: nativeLoad.backend, available: nativeLoad.native },
];

const NONCE = Buffer.from('0102030405060708090a0b0c', 'hex');
const EMPTY = new Uint8Array(0);

function expectCode(fn: () => unknown, code: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(BrookError);
  expect((err as BrookError).code).toBe(code);
}

function pattern(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** Everything a decoder emits, as the list of payloads. */
function decodeAll(dec: FragmentDecoder, chunks: Uint8Array[]): Buffer[] {
  const out: Buffer[] = [];
  for (const c of chunks) dec.push(c, (p) => out.push(Buffer.from(p)));
  dec.end();
  return out;
}

function byteAtATime(b: Uint8Array): Uint8Array[] {
  return Array.from(b, (_, i) => b.subarray(i, i + 1));
}

// ---- the empty fragment through the codec -------------------------------------------------

describe.each(BACKENDS)('the empty fragment (keepalive), $label', ({ backend, available }) => {
  const cipher = () => BrookCipher.fromPassword(Buffer.from(PASSWORD), NONCE, DEFAULT_HKDF_INFO, { backend });

  it.skipIf(!available)('is 34 bytes: the sealed length 0 (18), then the tag of an empty payload (16); noble opens it to nothing', () => {
    const ka = new FragmentEncoder(cipher(), MAX_TCP_PAYLOAD).encodeOne(EMPTY);
    expect(ka.length).toBe(FRAGMENT_OVERHEAD);
    expect(FRAGMENT_OVERHEAD).toBe(SEALED_LENGTH_SIZE + TAG_SIZE);
    // the same bytes as an independent implementation's
    const noble = new NobleDirection(PASSWORD, NONCE);
    expect(Buffer.from(noble.fragment(EMPTY)).toString('hex')).toBe(ka.toString('hex'));
    const back = new NobleDirection(PASSWORD, NONCE).unfragment(ka);
    expect(back.map((p) => p.length)).toEqual([0]);
  });

  it.skipIf(!available)('a stream decoder takes it as a no-op between, before and after data, whole and byte at a time', () => {
    const noble = new NobleDirection(PASSWORD, NONCE);
    const a = pattern(5000, 1);
    const b = pattern(7, 2);
    const wire = concat([noble.fragment(EMPTY), noble.stream(a, MAX_TCP_PAYLOAD), noble.fragment(EMPTY), noble.fragment(EMPTY), noble.fragment(b), noble.fragment(EMPTY)]);
    for (const chunks of [[wire], byteAtATime(wire), [wire.subarray(0, 40), wire.subarray(40, 2100), wire.subarray(2100)]]) {
      const out = decodeAll(new FragmentDecoder(cipher(), { maxPayload: MAX_TCP_PAYLOAD, coalesce: true }), chunks);
      expect(out.every((p) => p.length > 0)).toBe(true);
      expect(Buffer.concat(out).equals(Buffer.concat([a, b]))).toBe(true);
    }
  });

  it.skipIf(!available)('a chunk of nothing but empty fragments emits nothing and keeps the nonce in step', () => {
    const noble = new NobleDirection(PASSWORD, NONCE);
    const dec = new FragmentDecoder(cipher(), { maxPayload: MAX_TCP_PAYLOAD, coalesce: true });
    const out: Buffer[] = [];
    // one alone (34 bytes), then three in one chunk (long enough for the batch open)
    dec.push(noble.fragment(EMPTY), (p) => out.push(p));
    dec.push(concat([noble.fragment(EMPTY), noble.fragment(EMPTY), noble.fragment(EMPTY)]), (p) => out.push(p));
    expect(out).toEqual([]);
    expect(dec.atBoundary).toBe(true);
    const c = pattern(3000, 3);
    dec.push(noble.stream(c, MAX_TCP_PAYLOAD), (p) => out.push(Buffer.from(p)));
    expect(Buffer.concat(out).equals(c)).toBe(true);
  });

  it.skipIf(!available)('a datagram decoder (UDP over the stream) hands it on as one empty datagram, as upstream would', () => {
    const noble = new NobleDirection(PASSWORD, NONCE);
    const out = decodeAll(new FragmentDecoder(cipher(), { maxPayload: MAX_UDP_PAYLOAD }), [concat([noble.fragment(EMPTY), noble.fragment(pattern(9, 4))])]);
    expect(out.map((p) => p.length)).toEqual([0, 9]);
  });

  it.skipIf(!available)('a bad tag on an empty fragment is still AUTH_FAILED', () => {
    const noble = new NobleDirection(PASSWORD, NONCE);
    const ka = Buffer.from(noble.fragment(EMPTY));
    ka[ka.length - 1] = ka[ka.length - 1]! ^ 1;
    expectCode(() => new FragmentDecoder(cipher(), { maxPayload: MAX_TCP_PAYLOAD, coalesce: true }).push(ka, () => undefined), ErrorCodes.AUTH_FAILED);
  });
});

describe(`the native batch open and len 0${NATIVE_SKIP}`, () => {
  it.skipIf(!nativeLoad.native)('openFragments consumes empty fragments, writes nothing for them and advances the nonce twice each', () => {
    const noble = new NobleDirection(PASSWORD, NONCE);
    const d = pattern(100, 5);
    const input = concat([noble.fragment(EMPTY), noble.fragment(d), noble.fragment(EMPTY)]);
    const c = BrookCipher.fromPassword(Buffer.from(PASSWORD), NONCE, DEFAULT_HKDF_INFO, { backend: nativeLoad.backend });
    const out = Buffer.alloc(input.length);
    const r = c.engine.openFragments!(c.nonce, input, MAX_TCP_PAYLOAD, out, 0);
    expect(r).toEqual({ consumed: input.length, written: d.length });
    expect(out.subarray(0, d.length).equals(d)).toBe(true);
    expect(c.nonce.readUInt32LE(0) - NONCE.readUInt32LE(0)).toBe(6);
    // only empty fragments: all consumed, nothing written, into a zero-length output
    const more = concat([noble.fragment(EMPTY), noble.fragment(EMPTY)]);
    expect(c.engine.openFragments!(c.nonce, more, MAX_TCP_PAYLOAD, Buffer.alloc(0), 0)).toEqual({ consumed: more.length, written: 0 });
  });
});

// ---- the session codecs ---------------------------------------------------------------

describe('session codecs: keepalive()', () => {
  const dst = { type: 'ipv4' as const, host: '127.0.0.1', port: 80 };

  it('client: refused before hello() (it would be the first fragment); after it, a no-op for our server', () => {
    const client = createClientCodec({ password: PASSWORD, network: 'tcp', destination: dst });
    expectCode(() => client.keepalive!(), ErrorCodes.INTERNAL);
    const hello = client.hello();
    const ka = client.keepalive!()!;
    expect(ka.length).toBe(FRAGMENT_OVERHEAD);
    const server = createServerCodec({ password: PASSWORD });
    const got: Buffer[] = [];
    const data = client.seal(Buffer.from('data'));
    const ka2 = client.keepalive!()!;
    const h = server.push(Buffer.concat([hello, ka, data, ka2]), (p) => got.push(Buffer.from(p)));
    expect(h?.network).toBe('tcp');
    expect(Buffer.concat(got).toString()).toBe('data');
    expect(got.every((p) => p.length > 0)).toBe(true);
  });

  it('server: refused before accept(); after it, a no-op for our client', () => {
    const client = createClientCodec({ password: PASSWORD, network: 'tcp', destination: dst });
    const server = createServerCodec({ password: PASSWORD });
    server.push(client.hello(), () => undefined);
    expectCode(() => server.keepalive!(), ErrorCodes.INTERNAL);
    const nonce = server.accept();
    const wire = Buffer.concat([nonce, server.keepalive!()!, server.seal(Buffer.from('back')), server.keepalive!()!]);
    const got: Buffer[] = [];
    for (const c of byteAtATime(wire)) client.push(Buffer.from(c), (p) => got.push(Buffer.from(p)));
    client.end();
    expect(Buffer.concat(got).toString()).toBe('back');
  });

  it('UDP tunnels have none (it would be an empty datagram); withoutBrookProtocol has no framing for one', () => {
    const udp = createClientCodec({ password: PASSWORD, network: 'udp', destination: dst });
    const server = createServerCodec({ password: PASSWORD });
    server.push(udp.hello(), () => undefined);
    server.accept();
    expect(udp.keepalive!()).toBeNull();
    expect(server.keepalive!()).toBeNull();
    expect(createClientCodec({ password: PASSWORD, network: 'tcp', destination: dst, withoutBrookProtocol: true }).keepalive).toBeUndefined();
    expect(createServerCodec({ password: PASSWORD, withoutBrookProtocol: true }).keepalive).toBeUndefined();
  });

  it('the option: refused with withoutBrookProtocol, and not a number of seconds', () => {
    expect(() => checkKeepalive(1, false)).not.toThrow();
    expect(() => checkKeepalive(0, true)).not.toThrow();
    expect(() => checkKeepalive(undefined, true)).not.toThrow();
    expectCode(() => checkKeepalive(1, true), ErrorCodes.CONFIG);
    expectCode(() => checkKeepalive(-1, false), ErrorCodes.CONFIG);
    expectCode(() => checkKeepalive(Number.NaN, false), ErrorCodes.CONFIG);
    const make = () =>
      new WsClient({ endpoint: { secure: false, hostPort: 'x:1', hostname: 'x', port: 1, path: '/ws' }, password: PASSWORD, withoutBrookProtocol: true, keepalive: 5 });
    expectCode(make, ErrorCodes.CONFIG);
  });
});

// ---- the relay ----------------------------------------------------------------------------

/** Two connected sockets on 127.0.0.1. */
async function socketPair(): Promise<{ a: Socket; b: Socket }> {
  const server: Server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, LOOPBACK, r));
  const port = (server.address() as net.AddressInfo).port;
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const a = net.connect({ host: LOOPBACK, port, allowHalfOpen: true });
  await new Promise<void>((r) => a.once('connect', () => r()));
  const b = await accepted;
  server.close();
  cleanup.push(() => {
    a.destroy();
    b.destroy();
  });
  return { a, b };
}

/** A plain pipe whose keepalive is the byte "K" (data in the tests is never a "K"). */
const K_TRANSFORM: TunnelTransform = { ...PLAIN_TRANSFORM, keepalive: () => Buffer.from('K') };

const count = (s: string, ch: string): number => s.split(ch).length - 1;

describe('Relay keepalive', () => {
  it('sends one per period on an idle tunnel, none while data flows, none after our FIN; one timer, cleared at teardown', async () => {
    const plain = await socketPair();
    const tunnel = await socketPair();
    let seen = '';
    tunnel.b.on('data', (d: Buffer) => (seen += d.toString('latin1')));
    const ended = new Promise<void>((r) => tunnel.b.once('end', () => r()));
    const relay = new Relay(plain.b, tunnel.a, K_TRANSFORM, { keepaliveMs: 100 });
    await sleep(550);
    const idleK = count(seen, 'K');
    expect(idleK).toBeGreaterThanOrEqual(2);
    expect(idleK).toBeLessThanOrEqual(6);
    // traffic every 30 ms: a keepalive only where a gap of a whole period happened (a loaded machine)
    const before = seen.length;
    let gaps = 0;
    let last = performance.now();
    for (let i = 0; i < 15; i++) {
      plain.a.write('d');
      await sleep(30);
      const now = performance.now();
      if (now - last >= 95) gaps++;
      last = now;
    }
    await sleep(20);
    expect(count(seen.slice(before), 'K')).toBeLessThanOrEqual(gaps);
    expect(count(seen.slice(before), 'd')).toBe(15);
    // our FIN: nothing more may follow it
    plain.a.end();
    await withTimeout(ended, 2000, 'FIN on the tunnel');
    const atFin = relay.keepalivesSent;
    expect((relay as unknown as { keepaliveTimer: unknown }).keepaliveTimer).toBeNull();
    await sleep(300);
    expect(relay.keepalivesSent).toBe(atFin);
    relay.close();
  });

  it('no timer at all when off, or when the transform has no keepalive (withoutBrookProtocol)', async () => {
    const plain = await socketPair();
    const tunnel = await socketPair();
    const off = new Relay(plain.b, tunnel.a, K_TRANSFORM, {});
    expect((off as unknown as { keepaliveTimer: unknown }).keepaliveTimer).toBeNull();
    const p2 = await socketPair();
    const t2 = await socketPair();
    const none = new Relay(p2.b, t2.a, PLAIN_TRANSFORM, { keepaliveMs: 50 });
    expect((none as unknown as { keepaliveTimer: unknown }).keepaliveTimer).toBeNull();
    await sleep(150);
    expect(off.keepalivesSent + none.keepalivesSent).toBe(0);
    off.close();
    none.close();
  });

  it('stops for good when the transform has nothing to send (a UDP tunnel)', async () => {
    const plain = await socketPair();
    const tunnel = await socketPair();
    const relay = new Relay(plain.b, tunnel.a, { ...PLAIN_TRANSFORM, keepalive: () => null }, { keepaliveMs: 30 });
    await sleep(120);
    expect(relay.keepalivesSent).toBe(0);
    expect((relay as unknown as { keepaliveTimer: unknown }).keepaliveTimer).toBeNull();
    relay.close();
  });

  it('does not queue keepalives behind a full socket (backpressure)', async () => {
    const plain = await socketPair();
    // a tunnel that never finishes a write: everything after the first stays queued
    const writes: Buffer[] = [];
    const stuck = new Duplex({
      read() {},
      write(chunk: Buffer, _enc, _cb) {
        writes.push(chunk);
      },
    });
    cleanup.push(() => stuck.destroy());
    const relay = new Relay(plain.b, stuck, K_TRANSFORM, { keepaliveMs: 30 });
    await sleep(250);
    expect(relay.keepalivesSent).toBe(1);
    expect(writes.map((w) => w.toString())).toEqual(['K']);
    relay.close();
  });

  it('teardown clears the timer', async () => {
    const plain = await socketPair();
    const tunnel = await socketPair();
    const relay = new Relay(plain.b, tunnel.a, K_TRANSFORM, { keepaliveMs: 1000 });
    expect((relay as unknown as { keepaliveTimer: unknown }).keepaliveTimer).not.toBeNull();
    relay.close();
    expect((relay as unknown as { keepaliveTimer: unknown }).keepaliveTimer).toBeNull();
  });
});

// ---- against upstream-framed peers ------------------------------------------------------

/** Reads exact byte counts from a socket, as Go's io.ReadFull does. */
class ExactReader {
  private buf: Buffer;
  private waiting: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private ended = false;

  constructor(s: Socket, initial: Buffer = Buffer.alloc(0)) {
    this.buf = initial;
    s.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.serve();
    });
    s.on('close', () => {
      this.ended = true;
      this.serve();
    });
  }

  readFull(n: number): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      this.waiting = { n, resolve, reject };
      this.serve();
    });
  }

  private serve(): void {
    const w = this.waiting;
    if (!w) return;
    if (this.buf.length >= w.n) {
      this.waiting = null;
      const out = this.buf.subarray(0, w.n);
      this.buf = this.buf.subarray(w.n);
      w.resolve(Buffer.from(out));
    } else if (this.ended) {
      this.waiting = null;
      w.reject(new Error('EOF'));
    }
  }
}

/** Upstream's Read(): the 18-byte sealed length, open it, then length + 16 bytes, open them. */
async function upstreamRead(r: ExactReader, dir: NobleDirection): Promise<Uint8Array> {
  const lenPlain = dir.open(await r.readFull(SEALED_LENGTH_SIZE));
  const l = (lenPlain[0]! << 8) | lenPlain[1]!;
  return dir.open(await r.readFull(l + TAG_SIZE));
}

function sha1Accept(key: string): string {
  return createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
}

interface UpstreamEchoServer extends Closable {
  port: number;
  /** Payload lengths read after the first fragment, in order (0 = an empty fragment). */
  reads: number[];
}

/**
 * A server framed like upstream's StreamServer and written only with helpers/noble.ts:
 * answers the upgrade, reads the client nonce and fragments as upstream's Read() does
 * and "writes each payload on" to an echo: the payload comes back in one fragment, with
 * an empty fragment in front of it (so our client meets them too).
 */
async function startUpstreamEchoServer(): Promise<UpstreamEchoServer> {
  const reads: number[] = [];
  const sockets = new Set<Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('error', () => undefined);
    const r = new ExactReader(s);
    void (async () => {
      let head = Buffer.alloc(0);
      while (!head.includes('\r\n\r\n')) head = Buffer.concat([head, await r.readFull(1)]);
      const key = /Sec-WebSocket-Key: (\S+)\r\n/i.exec(head.toString('latin1'))![1]!;
      s.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${sha1Accept(key)}\r\n\r\n`);
      const up = new NobleDirection(PASSWORD, await r.readFull(NONCE_SIZE));
      await upstreamRead(r, up); // the first fragment: time + address
      const serverNonce = Buffer.alloc(NONCE_SIZE, 9);
      const down = new NobleDirection(PASSWORD, serverNonce);
      s.write(serverNonce);
      for (;;) {
        const p = await upstreamRead(r, up);
        reads.push(p.length);
        // upstream: remote.Write(payload) -- 0 bytes for an empty fragment; our echo answers only data
        if (p.length > 0) s.write(concat([down.fragment(EMPTY), down.fragment(p)]));
      }
    })().catch(() => s.destroy());
  });
  await new Promise<void>((r) => srv.listen(0, LOOPBACK, r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    reads,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

/** Read until `n` bytes have arrived on `s`. */
function readN(s: Socket, n: number, ms = 5000): Promise<Buffer> {
  return withTimeout(
    new Promise((resolve) => {
      let got = Buffer.alloc(0);
      const on = (d: Buffer) => {
        got = Buffer.concat([got, d]);
        if (got.length >= n) {
          s.off('data', on);
          resolve(got);
        }
      };
      s.on('data', on);
      s.resume();
    }),
    ms,
    `${n} bytes`,
  );
}

describe('against upstream-framed peers', () => {
  it('our client with keepalive: the upstream-framed server reads empty fragments between the data and goes on', async () => {
    const srv = await startUpstreamEchoServer();
    started.push(srv);
    const client = new WsClient({
      endpoint: { secure: false, hostPort: `${LOOPBACK}:${srv.port}`, hostname: LOOPBACK, port: srv.port, path: '/ws' },
      password: PASSWORD,
      socks5: `${LOOPBACK}:0`,
      keepalive: 0.15,
      log: () => undefined,
    });
    await client.listen();
    started.push(client);
    const s = await socksConnect(client.socks.address().port, { type: 'ipv4', host: '10.0.0.1', port: 80 });
    cleanup.push(() => s.destroy());
    const first = readN(s, 5);
    s.write('hello');
    expect((await first).toString()).toBe('hello');
    await sleep(700);
    const second = readN(s, 5);
    s.write('again');
    expect((await second).toString()).toBe('again');
    // [5, 0, 0, 0, ..., 5]: data, keepalives while idle, data
    expect(srv.reads[0]).toBe(5);
    expect(srv.reads.at(-1)).toBe(5);
    const empties = srv.reads.slice(1, -1);
    expect(empties.length).toBeGreaterThanOrEqual(2);
    expect(empties.every((n) => n === 0)).toBe(true);
  });

  it('our server tunnel with keepalive: an upstream-framed client reads empty fragments while the destination is silent', async () => {
    // the destination: says "hi" when asked, else nothing
    const dst = net.createServer((c) => {
      c.on('error', () => undefined);
      c.on('data', () => c.write('hi'));
    });
    await new Promise<void>((r) => dst.listen(0, LOOPBACK, r));
    const dstPort = (dst.address() as net.AddressInfo).port;
    const handles: TunnelHandle[] = [];
    // a bare upgrade in front of serveTunnel, as WsServer does
    const front = net.createServer({ allowHalfOpen: true }, (sock) => {
      sock.on('error', () => undefined);
      void readHttpHead(sock).then(({ head, rest }) => {
        const key = /Sec-WebSocket-Key: (\S+)\r\n/i.exec(head)![1]!;
        sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${sha1Accept(key)}\r\n\r\n`);
        handles.push(
          serveTunnel(sock, rest, 'test', {
            mode: BROOK_MODE,
            credential: passwordCredential(PASSWORD),
            tcpTimeout: 0,
            udpTimeout: 60,
            keepaliveMs: 150,
            probeTimeoutMs: 5000,
            probeByteBudget: 65536,
            dialTimeoutMs: 5000,
            udpQueueLimit: 65536,
            log: () => undefined,
          }),
        );
        sock.resume();
      });
    });
    await new Promise<void>((r) => front.listen(0, LOOPBACK, r));
    started.push({
      close: async () => {
        for (const h of handles) h.destroy();
        await new Promise<void>((r) => front.close(() => r()));
        await new Promise<void>((r) => dst.close(() => r()));
      },
    });
    const port = (front.address() as net.AddressInfo).port;
    const s = net.connect({ host: LOOPBACK, port });
    cleanup.push(() => s.destroy());
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write(upgradeRequest(port));
    const { head, rest } = await readHttpHead(s);
    expect(head).toMatch(/^HTTP\/1\.1 101/);
    const r = new ExactReader(s, rest);
    s.resume();
    const clientNonce = Buffer.alloc(NONCE_SIZE, 3);
    const up = new NobleDirection(PASSWORD, clientNonce);
    const first = nobleFirstPayload(Math.floor(Date.now() / 1000), 'tcp', { ipv4: [127, 0, 0, 1], port: dstPort });
    s.write(concat([clientNonce, up.fragment(first)]));
    const down = new NobleDirection(PASSWORD, await withTimeout(r.readFull(NONCE_SIZE), 5000, 'server nonce'));
    s.write(up.fragment(Buffer.from('ask')));
    const reads: number[] = [];
    const got: Buffer[] = [];
    const deadline = Date.now() + 900;
    while (Date.now() < deadline) {
      const p = await withTimeout(upstreamRead(r, down), 2000, 'a fragment');
      reads.push(p.length);
      if (p.length > 0) got.push(Buffer.from(p));
    }
    expect(Buffer.concat(got).toString()).toBe('hi');
    // after "hi": only empty fragments, about one per 150 ms
    const after = reads.slice(reads.indexOf(2) + 1);
    expect(after.length).toBeGreaterThanOrEqual(2);
    expect(after.every((n) => n === 0)).toBe(true);
  });
});
