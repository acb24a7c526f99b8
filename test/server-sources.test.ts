/**
 * Issue 22, item 1: the pending-connection cap sheds by source. Pending connections are charged to an
 * IPv4 /24 or IPv6 /64 (the PROXY header's source, a trusted X-Forwarded-For once known); at the cap the
 * oldest connection of the source holding most goes, strangers before sources that had a tunnel lately.
 * So a slow real handshake survives a flood from one source (closing the oldest of all lost it), and a
 * known client's survives a flood from many.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { makeAddress } from '../src/protocol/address.js';
import { createClientCodec } from '../src/protocol/session.js';
import { KnownSources, NON_IP_SOURCE, SourceLedger, sourceOf } from '../src/server/sources.js';
import { WsServer, type WsServerOptions } from '../src/server/wsserver.js';
import { LOOPBACK, PASSWORD, readHttpHead, sleep, upgradeRequest, waitFor, withTimeout } from './helpers/net.js';

describe('sourceOf: an IPv4 /24, an IPv6 /64', () => {
  it.each([
    ['198.51.100.7', '198.51.100.0/24'],
    ['198.51.100.250', '198.51.100.0/24'],
    ['::ffff:198.51.100.7', '198.51.100.0/24'],
    ['::FFFF:10.0.0.1', '10.0.0.0/24'],
    ['2001:db8:0:1::5', '2001:db8:0:1::/64'],
    ['2001:db8:0:1:ffff:ffff:ffff:ffff', '2001:db8:0:1::/64'],
    ['2001:db8::1', '2001:db8:0:0::/64'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['1:2:3:4:5:6:1.2.3.4', '1:2:3:4::/64'],
    ['', NON_IP_SOURCE],
    [undefined, NON_IP_SOURCE],
    ['not an address', NON_IP_SOURCE],
    ['999.1.1.1', NON_IP_SOURCE],
  ])('%s -> %s', (a, key) => {
    expect(sourceOf(a)).toBe(key);
  });
});

describe('SourceLedger', () => {
  it('gives the oldest item of the source holding most; ties go to the source that got there first', () => {
    const l = new SourceLedger<string>();
    l.add('a1', 'A');
    l.add('b1', 'B');
    l.add('b2', 'B');
    l.add('a2', 'A');
    expect(l.heaviestOldest()).toBe('b1'); // B reached 2 first
    l.add('a3', 'A');
    expect(l.heaviestOldest()).toBe('a1');
    l.delete('a1');
    l.delete('a2');
    expect(l.heaviestOldest()).toBe('b1');
    expect([l.size, l.sourceCount, l.countOf('A'), l.countOf('B'), l.countOf('C')]).toEqual([3, 2, 1, 2, 0]);
    expect([l.maxCount, l.oldest()]).toEqual([2, 'b1']);
  });

  it('moves an item charged elsewhere (it becomes the newest there); the same source is a no-op', () => {
    const l = new SourceLedger<string>();
    l.add('x', 'A');
    l.add('y', 'B');
    l.add('z', 'B');
    l.add('x', 'B');
    expect([l.countOf('A'), l.countOf('B'), l.keyOf('x'), l.sourceCount]).toEqual([0, 3, 'B', 1]);
    l.add('x', 'B');
    expect(l.countOf('B')).toBe(3);
    expect(l.heaviestOldest()).toBe('y');
    expect(l.oldest()).toBe('y');
  });

  it('matches a brute-force count under 5,000 random operations, and forgets emptied sources', () => {
    const l = new SourceLedger<number>();
    const model = new Map<number, string>();
    let seed = 7;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
    for (let i = 0; i < 5_000; i++) {
      const item = rnd(300);
      if (rnd(3) === 0) {
        l.delete(item);
        model.delete(item);
      } else {
        const key = `s${rnd(rnd(2) ? 5 : 60)}`;
        l.add(item, key);
        if (model.get(item) !== key) model.delete(item); // moved: the newest in its new source
        model.set(item, key);
      }
      const counts = new Map<string, number>();
      for (const k of model.values()) counts.set(k, (counts.get(k) ?? 0) + 1);
      const top = Math.max(0, ...counts.values());
      const h = l.heaviestOldest();
      if (top === 0) expect(h).toBeUndefined();
      else expect(counts.get(model.get(h!)!)).toBe(top);
      expect(l.maxCount).toBe(top);
      expect(l.oldest()).toBe(model.keys().next().value);
      expect(l.size).toBe(model.size);
      expect(l.sourceCount).toBe(counts.size);
    }
  });
});

describe('KnownSources', () => {
  it('keeps a source for the TTL after its last tunnel, and at most `max` of them, least recent dropped first', () => {
    let t = 0;
    const k = new KnownSources({ max: 2, ttlMs: 1000, now: () => t });
    k.add('A');
    t = 500;
    k.add('B');
    k.add('A'); // A seen again: B is now the least recent
    k.add('C');
    expect([k.has('A'), k.has('B'), k.has('C'), k.size]).toEqual([true, false, true, 2]);
    t = 1600;
    expect(k.has('A')).toBe(false);
    expect(k.size).toBe(1);
  });
});

// ---------------------------------------------------------------- the gate on real sockets

const CAP = 20;
const FLOOD = 80;
/** A real client's address block, and a second one that never had a tunnel. */
const REAL = '127.0.9.1';
const STRANGER = '127.0.12.1';

let server: WsServer | null = null;
const opened: net.Socket[] = [];
let echo: net.Server | null = null;

afterEach(async () => {
  for (const s of opened.splice(0)) s.destroy();
  await server?.close();
  server = null;
  echo?.close();
  echo = null;
});

async function start(o: Partial<WsServerOptions> = {}): Promise<number> {
  server = new WsServer({ listen: `${LOOPBACK}:0`, password: PASSWORD, maxPending: CAP, headTimeoutMs: 30_000, ...o });
  return (await server.listen()).port;
}

/** A connection from `localAddress` (undefined: 127.0.0.1) that has sent `bytes`. */
function connectFrom(port: number, localAddress: string | undefined, bytes: string | Buffer): Promise<net.Socket> {
  return withTimeout(
    new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: LOOPBACK, port, allowHalfOpen: true, ...(localAddress ? { localAddress } : {}) }, () => {
        s.off('error', reject);
        s.on('error', () => undefined);
        if (bytes.length > 0) s.write(bytes);
        resolve(s);
      });
      s.once('error', reject);
      opened.push(s);
    }),
    5000,
    `connect from ${localAddress ?? LOOPBACK}`,
  );
}

const PARTIAL = 'GET /ws HTTP/1.1\r\nHost: x\r\n';

/** `n` partial heads from `source(i)`, one after another (each is admitted before the next). */
async function flood(port: number, n: number, source: (i: number) => string | undefined, prefix = (_i: number) => ''): Promise<void> {
  for (let i = 0; i < n; i++) await connectFrom(port, source(i), prefix(i) + PARTIAL);
  await waitFor(() => server!.pendingConnections <= CAP, 5000, 'the cap holds');
}

async function echoPort(): Promise<number> {
  echo = net.createServer((c) => c.pipe(c));
  await new Promise<void>((r) => echo!.listen(0, LOOPBACK, () => r()));
  return (echo.address() as net.AddressInfo).port;
}

/** Finish an upgrade on `s` (its head is sent from `rest`), then a Brook opening: resolves once the destination echoed. */
async function tunnelOn(s: net.Socket, rest: string, dstPort: number): Promise<void> {
  s.write(rest);
  const { head } = await readHttpHead(s, 5000);
  expect(head).toMatch(/^HTTP\/1\.1 101 /);
  await openBrook(s, dstPort);
}

async function openBrook(s: net.Socket, dstPort: number): Promise<void> {
  const c = createClientCodec({ password: PASSWORD, network: 'tcp', destination: makeAddress(LOOPBACK, dstPort) });
  s.write(Buffer.concat([c.hello(), c.seal(Buffer.from('ping'))]));
  let got = 0;
  await withTimeout(
    new Promise<void>((r) => {
      s.on('data', (d: Buffer) => (got += d.length) > 12 && r());
      s.resume();
    }),
    5000,
    'the echo through the tunnel',
  );
}

const isOpen = (s: net.Socket) => !s.destroyed && !s.readableEnded;

describe('the pending cap sheds by source', () => {
  it(`a slow handshake from another /24 survives ${FLOOD} partial heads from one address (cap ${CAP}) and becomes a tunnel`, async () => {
    const port = await start();
    const dst = await echoPort();
    const req = upgradeRequest(port);
    const real = await connectFrom(port, REAL, req.slice(0, 20));
    await flood(port, FLOOD, () => undefined);
    expect(isOpen(real), 'the oldest pending connection, but not from the source holding most').toBe(true);
    await tunnelOn(real, req.slice(20), dst);
  });

  it('an upgraded connection waiting for its first fragment (a prewarmed one) survives the same flood', async () => {
    const port = await start();
    const dst = await echoPort();
    const real = await connectFrom(port, REAL, upgradeRequest(port));
    expect((await readHttpHead(real, 5000)).head).toMatch(/^HTTP\/1\.1 101 /);
    await flood(port, FLOOD, () => undefined);
    expect(isOpen(real)).toBe(true);
    await openBrook(real, dst);
  });

  it('a source within the allowance is not taken first: among a few connections each, the oldest goes', async () => {
    const port = await start();
    const req = upgradeRequest(port);
    const first = await connectFrom(port, REAL, req.slice(0, 20));
    const second = await connectFrom(port, REAL, req.slice(0, 20));
    // 5 connections from each of 10 sources: nobody above the allowance (8), so the oldest goes
    await flood(port, 50, (i) => `127.2.${i % 10}.1`);
    expect(isOpen(first)).toBe(false);
    expect(isOpen(second)).toBe(false);
  });

  it('a flood from many /24s sheds itself before a source that had a tunnel; a source that never had one is not spared', async () => {
    const port = await start();
    const dst = await echoPort();
    // REAL becomes known: one tunnel from it
    await tunnelOn(await connectFrom(port, REAL, ''), upgradeRequest(port), dst);
    const req = upgradeRequest(port);
    const known = await connectFrom(port, REAL, req.slice(0, 20));
    const stranger = await connectFrom(port, STRANGER, req.slice(0, 20));
    await flood(port, FLOOD, (i) => `127.1.${i}.1`);
    expect(isOpen(stranger), 'one pending connection among many one-connection sources: the oldest goes').toBe(false);
    expect(isOpen(known)).toBe(true);
    await tunnelOn(known, req.slice(20), dst);
  });

  it('--proxyProtocol: connections are charged to the PROXY source, not to the proxy', async () => {
    const port = await start({ proxyProtocol: true });
    const dst = await echoPort();
    const proxyLine = (src: string) => `PROXY TCP4 ${src} 192.0.2.1 40000 443\r\n`;
    const req = upgradeRequest(port);
    const real = await connectFrom(port, undefined, proxyLine('203.0.113.9') + req.slice(0, 20));
    await sleep(50);
    await flood(port, FLOOD, () => undefined, () => proxyLine('198.51.100.7'));
    expect(isOpen(real)).toBe(true);
    await tunnelOn(real, req.slice(20), dst);
  });

  it('--trustedProxies: an upgraded connection is charged to its X-Forwarded-For client once its head is read', async () => {
    const port = await start({ trustedProxies: LOOPBACK });
    const dst = await echoPort();
    const req = upgradeRequest(port).replace('\r\n\r\n', '\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n');
    const real = await connectFrom(port, undefined, req);
    expect((await readHttpHead(real, 5000)).head).toMatch(/^HTTP\/1\.1 101 /);
    await flood(port, FLOOD, () => undefined);
    expect(isOpen(real)).toBe(true);
    await openBrook(real, dst);
  });

  it('X-Forwarded-For without --trustedProxies charges nothing (anyone can write it)', async () => {
    const port = await start({ xForwardedFor: true });
    const req = upgradeRequest(port).replace('\r\n\r\n', '\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n');
    const real = await connectFrom(port, undefined, req);
    expect((await readHttpHead(real, 5000)).head).toMatch(/^HTTP\/1\.1 101 /);
    await flood(port, FLOOD, () => undefined);
    await waitFor(() => !isOpen(real), 5000, 'the oldest connection of the one source is closed');
  });
});
