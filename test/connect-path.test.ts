/**
 * The connect path (issue 11, connect latency): what a new tunnel does before its first
 * answer, on both ends.
 *
 * - Client: a hand-out from the pool does not refill in its own tick; the refill waits for
 *   the tunnel's first answer (settled()) or refillDeferMs, and the hand-out that empties the
 *   pool refills at once (src/client/pool.ts).
 * - Client: on a pooled connection the SOCKS5 method reply and the success reply leave in one
 *   write, before the preamble.
 * - Server: fragments that arrive while the destination is being dialled are read and reach it
 *   the moment it connects (with a FIN sent meanwhile); more than MAX_EARLY_PAYLOAD pauses the
 *   socket, nothing is lost.
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { TunnelPool, type PooledConnection } from '../src/client/pool.js';
import { Dialer, type DialTimeout, type Endpoint } from '../src/dial/index.js';
import { makeAddress } from '../src/protocol/address.js';
import { createClientCodec } from '../src/protocol/session.js';
import { NONCE_SIZE } from '../src/protocol/sizes.js';
import { MAX_EARLY_PAYLOAD } from '../src/server/tunnel.js';
import { readHttpHead, upgradeRequest } from './helpers/http.js';
import { type Closable, closeAll, LOOPBACK, PASSWORD, sleep, startPair, waitFor } from './helpers/net.js';
import { socksRequestBytes } from './helpers/socks.js';

const started: Closable[] = [];
afterEach(() => closeAll(started));

function listen(srv: net.Server): Promise<number> {
  return new Promise((r) => srv.listen(0, LOOPBACK, () => r((srv.address() as net.AddressInfo).port)));
}

describe('TunnelPool: the refill after a hand-out', () => {
  /** A pool over plain loopback connections (stand-ins for upgraded ones), counting connects. */
  async function poolOf(size: number, refillDeferMs?: number) {
    const peers = new Set<net.Socket>();
    const srv = net.createServer((s) => {
      peers.add(s);
      s.on('error', () => undefined);
      s.on('close', () => peers.delete(s));
    });
    const port = await listen(srv);
    let connects = 0;
    const pool = new TunnelPool({
      size,
      refillDeferMs,
      connect: () => {
        connects++;
        return new Promise((resolve, reject) => {
          const s = net.connect({ host: LOOPBACK, port });
          s.once('connect', () => resolve({ socket: s, leftover: Buffer.alloc(0) }));
          s.once('error', reject);
        });
      },
    });
    const taken: PooledConnection[] = [];
    started.push({
      close: async () => {
        pool.close();
        for (const t of taken) t.socket.destroy();
        for (const s of peers) s.destroy();
        await new Promise<void>((r) => srv.close(() => r()));
      },
    });
    pool.start();
    await waitFor(() => pool.size === size, 5000, 'a full pool');
    return { pool, taken, connects: () => connects };
  }

  it('not in the take\'s own tick: once the tunnel is under way (settled), once only', async () => {
    const { pool, taken, connects } = await poolOf(3, 10_000);
    const before = connects();
    const c = pool.take()!;
    taken.push(c);
    expect(c).not.toBeNull();
    await sleep(50);
    expect(connects()).toBe(before);
    c.settled();
    expect(connects()).toBe(before + 1);
    c.settled();
    expect(connects()).toBe(before + 1);
    await waitFor(() => pool.size === 3, 5000, 'the refill');
  });

  it('without a first answer: refillDeferMs after the hand-out', async () => {
    const { pool, taken, connects } = await poolOf(2, 40);
    const before = connects();
    taken.push(pool.take()!);
    expect(connects()).toBe(before);
    await waitFor(() => connects() === before + 1, 5000, 'the deferred refill');
    await waitFor(() => pool.size === 2, 5000, 'a full pool again');
  });

  it('the hand-out that empties the pool refills at once; refillDeferMs 0 always does', async () => {
    const a = await poolOf(1, 10_000);
    const before = a.connects();
    a.taken.push(a.pool.take()!);
    expect(a.connects()).toBe(before + 1);
    const b = await poolOf(3, 0);
    const n = b.connects();
    b.taken.push(b.pool.take()!);
    expect(b.connects()).toBe(n + 1);
  });
});

/** The default dialer, `delayMs` late: a destination that takes its time to connect. */
class SlowDialer extends Dialer {
  constructor(private readonly delayMs: number) {
    super();
  }

  override async connectTcp(dst: Endpoint, t: DialTimeout): Promise<net.Socket> {
    await sleep(this.delayMs);
    return super.connectTcp(dst, t);
  }
}

describe('server: the first fragments while the destination is dialled', () => {
  /**
   * A raw Brook client on a wsserver whose dials take `delayMs`: upgrade, preamble, then `payload`
   * in fragments and a FIN, all while the dial is under way. The destination hashes what it got
   * and answers the digest when our FIN arrives. Returns the digest and the answer's first chunk.
   */
  async function tunnelDuringDial(delayMs: number, payload: Buffer) {
    const got = createHash('sha256');
    const dst = net.createServer({ allowHalfOpen: true }, (c) => {
      c.on('error', () => undefined);
      c.on('data', (d: Buffer) => got.update(d));
      c.on('end', () => c.end(got.digest()));
    });
    const dstPort = await listen(dst);
    started.push({ close: () => new Promise<void>((r) => dst.close(() => r())) });
    const pair = await startPair({ server: { dialer: new SlowDialer(delayMs) } });
    started.push(pair);
    const s = net.connect({ host: LOOPBACK, port: pair.serverPort, allowHalfOpen: true });
    started.push({ close: async () => void s.destroy() });
    await new Promise<void>((r) => s.once('connect', () => r()));
    s.write(upgradeRequest(pair.serverPort));
    const { head, rest } = await readHttpHead(s);
    expect(head).toMatch(/^HTTP\/1\.1 101/);
    expect(rest.length).toBe(0);
    const codec = createClientCodec({ password: PASSWORD, network: 'tcp', destination: makeAddress(LOOPBACK, dstPort) });
    s.write(codec.hello());
    for (let off = 0; off < payload.length; off += 16 * 1024) s.write(codec.seal(payload.subarray(off, off + 16 * 1024)));
    s.end();
    const chunks: Buffer[] = [];
    const plain: Buffer[] = [];
    s.on('data', (d: Buffer) => {
      chunks.push(d);
      codec.push(d, (p) => plain.push(Buffer.from(p)));
    });
    s.resume();
    await new Promise<void>((r, j) => {
      s.once('end', () => r());
      s.once('error', j);
    });
    codec.end();
    return { digest: Buffer.concat(plain), first: chunks[0]!, expected: createHash('sha256').update(payload).digest() };
  }

  it('fragments and a FIN sent during the dial reach the destination', async () => {
    const r = await tunnelDuringDial(150, randomBytes(3000));
    expect(r.digest.equals(r.expected)).toBe(true);
    expect(r.first.length).toBeGreaterThanOrEqual(NONCE_SIZE);
  });

  it(`more than MAX_EARLY_PAYLOAD (${MAX_EARLY_PAYLOAD} bytes) during the dial: read up to the bound, nothing lost`, async () => {
    const r = await tunnelDuringDial(200, randomBytes(MAX_EARLY_PAYLOAD * 3 + 123));
    expect(r.digest.equals(r.expected)).toBe(true);
  });
});

describe('client: the SOCKS5 answer on a pooled connection', () => {
  it('method reply and success leave in one write, before the tunnel is used', async () => {
    const echo = net.createServer((c) => {
      c.on('error', () => undefined);
      c.on('data', (d: Buffer) => c.write(d));
    });
    const echoPort = await listen(echo);
    started.push({ close: () => new Promise<void>((r) => echo.close(() => r())) });
    const pair = await startPair({ client: { pool: { size: 2 } } });
    started.push(pair);
    await waitFor(() => pair.client.pool!.size === 2, 5000, 'a warm pool');
    const s = net.connect({ host: LOOPBACK, port: pair.socksPort });
    started.push({ close: async () => void s.destroy() });
    await new Promise<void>((r) => s.once('connect', () => r()));
    // greeting and CONNECT together, as the benchmark's probe sends them
    s.write(Buffer.concat([Buffer.from([5, 1, 0]), socksRequestBytes({ type: 'ipv4', host: LOOPBACK, port: echoPort })]));
    const first = await new Promise<Buffer>((r) => s.once('data', r));
    expect(first.toString('hex')).toBe('0500' + '05000001' + '00000000' + '0000');
    expect(pair.client.pool!.stats.hits).toBe(1);
    s.write('ping');
    const back = await new Promise<Buffer>((r) => s.once('data', r));
    expect(back.toString()).toBe('ping');
  });
});
