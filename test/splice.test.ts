/**
 * The zero-copy relay (src/net/splice.ts, native/src/splice_relay.c) and its JS fallback, run
 * through the same cases: a relay host accepts a client c, dials a destination whose accepted
 * socket is d, and relays c <-> d with startRelay({ splice: true }). Byte-exact transfers both
 * ways (SHA-256, including bytes Node had already read before the hand-off), half-close both
 * ways, resets both ways, a slow reader (bounded: the relay holds at most its pipes), 1,000
 * short tunnels with no descriptor left behind, the idle timeout, closing with relays open,
 * a destroy() by someone else while the worker owns the socket, and a withoutBrookProtocol
 * pair (client and server both spliced).
 */
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, type BrookError } from '../src/errors.js';
import { PLAIN_TRANSFORM, Relay, type RelayStats } from '../src/net/relay.js';
import { setSpliceEnabled, SpliceRelay, spliceAvailability, splicedRelays, startRelay, type RelayLike } from '../src/net/splice.js';
import { LOOPBACK, readAll, readAllHashed, readExactly, sendRandom, sha256, sleep, socksConnect, startPair, waitFor, withTimeout } from './helpers/net.js';

const avail = spliceAvailability();
const NATIVE_SKIP = avail.available ? '' : ` [SKIPPED: ${avail.reason}]`;

interface Ended {
  err: BrookError | null;
  stats: RelayStats;
}

interface Host {
  port: number;
  relays: RelayLike[];
  ended: Ended[];
  /** A client connected through the relay host, and the destination's side of it. */
  connect(early?: Buffer): Promise<{ c: net.Socket; d: net.Socket; relay: () => RelayLike | undefined; x: () => net.Socket | undefined }>;
  close(): Promise<void>;
}

const fdCount = (): number => readdirSync('/proc/self/fd').length;

async function listen(srv: net.Server): Promise<number> {
  await new Promise<void>((r) => srv.listen(0, LOOPBACK, r));
  return (srv.address() as net.AddressInfo).port;
}

async function startHost(o: { idleTimeoutMs?: number } = {}): Promise<Host> {
  const accepted: net.Socket[] = [];
  const waiters: Array<(s: net.Socket) => void> = [];
  const all = new Set<net.Socket>();
  const dst = net.createServer({ allowHalfOpen: true }, (d) => {
    all.add(d);
    d.on('close', () => all.delete(d));
    d.on('error', () => {});
    const w = waiters.shift();
    if (w) w(d);
    else accepted.push(d);
  });
  const dstPort = await listen(dst);
  const relays: RelayLike[] = [];
  const ended: Ended[] = [];
  const byLocalPort = new Map<number, { r: RelayLike; x: net.Socket }>();
  const host = net.createServer({ allowHalfOpen: true }, (x) => {
    all.add(x);
    x.on('close', () => all.delete(x));
    x.on('error', () => {});
    const y = net.connect({ host: LOOPBACK, port: dstPort, allowHalfOpen: true });
    all.add(y);
    y.on('close', () => all.delete(y));
    const early = () => x.destroy();
    y.on('error', early);
    y.once('connect', () => {
      y.off('error', early);
      y.on('error', () => {});
      y.setNoDelay(true);
      const r = startRelay(x, y, PLAIN_TRANSFORM, {
        splice: true,
        idleTimeoutMs: o.idleTimeoutMs,
        onClose: (err, stats) => ended.push({ err, stats }),
      });
      relays.push(r);
      byLocalPort.set(x.remotePort!, { r, x });
    });
  });
  const port = await listen(host);
  const nextAccepted = () => new Promise<net.Socket>((r) => (accepted.length > 0 ? r(accepted.shift()!) : waiters.push(r)));
  return {
    port,
    relays,
    ended,
    async connect(early) {
      const c = net.connect({ host: LOOPBACK, port, allowHalfOpen: true });
      if (early) c.write(early); // read by the relay host before its relay exists
      all.add(c);
      c.on('close', () => all.delete(c));
      await new Promise<void>((r, j) => c.once('connect', () => r()).once('error', j));
      const d = await withTimeout(nextAccepted(), 5000, 'destination accept');
      const local = c.localPort!;
      await waitFor(() => byLocalPort.has(local), 5000, 'relay started');
      return { c, d, relay: () => byLocalPort.get(local)?.r, x: () => byLocalPort.get(local)?.x };
    },
    async close() {
      for (const r of relays) r.close();
      for (const s of all) s.destroy();
      await Promise.all([dst, host].map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}

function errorOf(s: net.Socket): Promise<string | null> {
  return new Promise((r) => {
    s.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? e.message));
    s.once('close', () => r(null));
    s.resume();
  });
}

const hosts: Host[] = [];
afterEach(async () => {
  for (const h of hosts.splice(0)) await h.close();
  setSpliceEnabled(true);
});
afterAll(() => setSpliceEnabled(true));

const MODES = [
  { name: `native splice${NATIVE_SKIP}`, splice: true, skip: !avail.available },
  { name: 'JS fallback (forced)', splice: false, skip: false },
];

describe.each(MODES)('relay: $name', ({ splice, skip }) => {
  const setup = async (o: { idleTimeoutMs?: number } = {}) => {
    setSpliceEnabled(splice);
    const h = await startHost(o);
    hosts.push(h);
    return h;
  };
  const expectKind = (r: RelayLike | undefined) => {
    expect(r).toBeDefined();
    if (splice) expect(r).toBeInstanceOf(SpliceRelay);
    else expect(r).toBeInstanceOf(Relay);
  };

  it.skipIf(skip)('byte-exact both ways at once, including bytes sent before the relay began', async () => {
    const h = await setup();
    const { c, d, relay } = await h.connect();
    expectKind(relay());
    const UP = 6 * 1024 * 1024 + 123;
    const DOWN = 5 * 1024 * 1024 + 7;
    const [sentUp, sentDown, gotUp, gotDown] = await withTimeout(
      Promise.all([sendRandom(c, UP, { end: true, chunk: 100_000 }), sendRandom(d, DOWN, { end: true }), readAllHashed(d), readAllHashed(c)]),
      30_000,
      'transfer',
    );
    expect(gotUp).toEqual({ hash: sentUp.hash, bytes: UP, gotEnd: true });
    expect(gotDown).toEqual({ hash: sentDown.hash, bytes: DOWN, gotEnd: true });
    await waitFor(() => h.ended.length === 1, 5000, 'relay end');
    expect(h.ended[0]!.err).toBeNull();
    expect(h.ended[0]!.stats).toEqual({ up: UP, down: DOWN, aborted: false });
    if (splice) expect((relay() as SpliceRelay).spliced).toBe(false); // released at the end
  });

  it.skipIf(skip)('bytes already read by Node before the hand-off go first, in order', async () => {
    const h = await setup();
    const first = randomBytes(200_000);
    const { c, d } = await h.connect(first);
    const got = readAll(d);
    const rest = randomBytes(300_000);
    c.end(rest);
    const all = await withTimeout(got, 10_000, 'read');
    expect(sha256(all)).toBe(sha256(Buffer.concat([first, rest])));
  });

  it.skipIf(skip)('half-close, client first: the destination still answers after the client FIN', async () => {
    const h = await setup();
    const { c, d } = await h.connect();
    const upDone = readAllHashed(d);
    const sent = await sendRandom(c, 200_000, { end: true });
    const up = await withTimeout(upDone, 10_000, 'client FIN at destination');
    expect(up).toEqual({ hash: sent.hash, bytes: 200_000, gotEnd: true });
    const downDone = readAllHashed(c);
    const back = await sendRandom(d, 300_000, { end: true });
    expect(await withTimeout(downDone, 10_000, 'answer after FIN')).toEqual({ hash: back.hash, bytes: 300_000, gotEnd: true });
    await waitFor(() => h.ended.length === 1, 5000, 'relay end');
    expect(h.ended[0]!.err).toBeNull();
  });

  it.skipIf(skip)('half-close, destination first: the client still sends after the destination FIN', async () => {
    const h = await setup();
    const { c, d } = await h.connect();
    const downDone = readAllHashed(c);
    const back = await sendRandom(d, 100_000, { end: true });
    expect(await withTimeout(downDone, 10_000, 'destination FIN at client')).toEqual({ hash: back.hash, bytes: 100_000, gotEnd: true });
    const upDone = readAllHashed(d);
    const sent = await sendRandom(c, 400_000, { end: true });
    expect(await withTimeout(upDone, 10_000, 'client bytes after FIN')).toEqual({ hash: sent.hash, bytes: 400_000, gotEnd: true });
    await waitFor(() => h.ended.length === 1, 5000, 'relay end');
    expect(h.ended[0]!.err).toBeNull();
  });

  it.skipIf(skip)('a reset by the client reaches the destination as a reset', async () => {
    const h = await setup();
    const { c, d, relay } = await h.connect();
    await sendRandom(c, 10_000);
    await waitFor(() => (relay()?.stats.up ?? 0) === 10_000, 5000, 'bytes through');
    const dErr = errorOf(d);
    c.resetAndDestroy();
    expect(await withTimeout(dErr, 5000, 'destination error')).toBe('ECONNRESET');
    await waitFor(() => h.ended.length === 1, 5000, 'relay end');
    expect(h.ended[0]!.stats.aborted).toBe(true);
    expect(h.ended[0]!.err?.code).toBe(ErrorCodes.CLOSED);
  });

  it.skipIf(skip)('a reset by the destination with unread bytes reaches the client as a reset', async () => {
    const h = await setup();
    const { c, d, relay } = await h.connect();
    d.pause();
    await sendRandom(c, 50_000); // unread at d: its close is an RST in any case
    await waitFor(() => (relay()?.stats.up ?? 0) === 50_000, 5000, 'bytes through');
    const cErr = errorOf(c);
    d.resetAndDestroy();
    expect(await withTimeout(cErr, 5000, 'client error')).toBe('ECONNRESET');
    await waitFor(() => h.ended.length === 1, 5000, 'relay end');
    expect(h.ended[0]!.stats.aborted).toBe(true);
  });

  it.skipIf(skip)('a slow reader: the relay holds a bounded amount, then everything arrives intact', async () => {
    const h = await setup();
    const { c, d, relay } = await h.connect();
    d.pause();
    const TOTAL = 48 * 1024 * 1024;
    const sending = sendRandom(c, TOTAL, { end: true });
    // wait until the relay stops taking bytes (kernel buffers and its pipe are full)
    let last = -1;
    for (let i = 0; i < 100; i++) {
      await sleep(100);
      const up = relay()!.stats.up;
      if (up === last) break;
      last = up;
    }
    const taken = relay()!.stats.up;
    // taken from c = what sits in the destination's kernel buffers + at most one pipe (64 KiB, grown
    // to at most 1 MiB for a busy direction: splice_internal.h), not the whole stream
    expect(taken).toBeLessThan(TOTAL / 2);
    const got = readAllHashed(d);
    const sent = await withTimeout(sending, 30_000, 'send');
    expect(await withTimeout(got, 30_000, 'slow reader')).toEqual({ hash: sent.hash, bytes: TOTAL, gotEnd: true });
    c.destroy();
  });

  it.skipIf(skip)('1,000 short tunnels, no descriptor left behind', async () => {
    const h = await setup();
    const before = fdCount();
    const N = 1000;
    const CONCURRENCY = 50;
    let next = 0;
    const one = async () => {
      const { c, d } = await h.connect();
      d.on('data', (b: Buffer) => d.write(b));
      d.on('end', () => d.end());
      const msg = Buffer.from(`tunnel ${next}`.padEnd(1000, '.'));
      const got = new Promise<Buffer>((r) => {
        const parts: Buffer[] = [];
        c.on('data', (b: Buffer) => parts.push(b));
        c.on('end', () => r(Buffer.concat(parts)));
      });
      c.end(msg);
      expect(sha256(await withTimeout(got, 10_000, 'echo'))).toBe(sha256(msg));
      c.destroy();
    };
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < N) {
          next++;
          await one();
        }
      }),
    );
    await waitFor(() => h.ended.length === N, 15_000, 'every relay ended');
    expect(h.ended.every((e) => e.err === null && !e.stats.aborted)).toBe(true);
    expect(splicedRelays()).toBe(0);
    await waitFor(() => fdCount() <= before, 5000, `descriptors back to ${before} (now ${fdCount()})`);
  });

  it.skipIf(skip)('idle timeout: traffic keeps it open, silence closes both sides with a FIN', async () => {
    const h = await setup({ idleTimeoutMs: 400 });
    const { c, d } = await h.connect();
    d.on('data', (b: Buffer) => d.write(b));
    const cEnd = new Promise<number>((r) => c.once('end', () => r(Date.now())));
    const dEnd = new Promise<void>((r) => d.once('end', () => r()));
    c.resume();
    d.resume();
    let quiet = 0;
    for (let i = 0; i < 6; i++) {
      c.write('ping');
      quiet = Date.now();
      await sleep(150);
    }
    expect(h.ended.length).toBe(0); // 900 ms of traffic, idle never 400 ms
    const at = await withTimeout(cEnd, 5000, 'client FIN after idle');
    await withTimeout(dEnd, 5000, 'destination FIN after idle');
    expect(at - quiet).toBeGreaterThanOrEqual(300);
    await waitFor(() => h.ended.length === 1, 5000, 'relay end');
    expect(h.ended[0]!.err?.code).toBe(ErrorCodes.TIMEOUT);
    expect(h.ended[0]!.stats.aborted).toBe(false);
  });

  it.skipIf(skip)('close() with relays open: every socket closed with a FIN, nothing left', async () => {
    const h = await setup();
    const before = fdCount();
    const pairs = await Promise.all(Array.from({ length: 20 }, () => h.connect()));
    for (const p of pairs) {
      p.c.write('x');
      p.d.resume();
    }
    await waitFor(() => h.relays.length === 20 && h.relays.every((r) => r.stats.up === 1), 5000, 'relays running');
    if (splice) expect(splicedRelays()).toBe(20);
    const ends = pairs.map((p) => new Promise<void>((r) => p.c.once('end', () => r())));
    for (const p of pairs) p.c.resume();
    for (const r of h.relays) r.close();
    const seen: string[] = pairs.map(() => 'nothing');
    pairs.forEach((p, i) => { p.c.on('end', () => (seen[i] = 'end')); p.c.on('error', (e: NodeJS.ErrnoException) => (seen[i] = `error ${e.code}`)); });
    await withTimeout(Promise.all(ends), 5000, 'FIN at every client').catch((e) => {
      throw new Error(`${e.message}: ${JSON.stringify(seen)} ended=${h.ended.length} spliced=${splicedRelays()} ${JSON.stringify(h.ended.map((x) => x.err?.message))}`);
    });
    await waitFor(() => h.ended.length === 20, 5000, 'every relay ended');
    expect(splicedRelays()).toBe(0);
    for (const p of pairs) {
      p.c.destroy();
      p.d.destroy();
    }
    await waitFor(() => fdCount() <= before, 5000, 'descriptors back');
  });

  it.skipIf(skip)('a destroy() of a relayed socket by someone else ends the relay without harm', async () => {
    const h = await setup();
    const { c, d, x } = await h.connect();
    c.write('abc');
    const got = await new Promise<Buffer>((r) => d.once('data', r));
    expect(got.toString()).toBe('abc');
    // the relay host's own socket for c is destroyed (e.g. the SOCKS5 server closing)
    const cClosed = new Promise<void>((r) => c.once('end', () => r()));
    const dErr = errorOf(d);
    c.resume();
    if (splice) expect(splicedRelays()).toBe(1);
    x()!.destroy();
    // as the JS Relay does: the destroyed side gets its FIN, the other side (cut off) an RST
    await withTimeout(cClosed, 5000, 'FIN at the client');
    expect(await withTimeout(dErr, 5000, 'destination reset')).toBe('ECONNRESET');
    await waitFor(() => h.ended.length === 1, 5000, 'relay end');
    expect(splicedRelays()).toBe(0);
  });
});

describe('startRelay: what is never spliced', () => {
  it('splicing turned off, no splice option, or a keepalive: the JS Relay', async () => {
    const h = await startHost();
    hosts.push(h);
    const { c, d, relay } = await h.connect();
    expect(relay()).toBeInstanceOf(avail.available ? SpliceRelay : Relay);
    const other = startRelay(c, d, PLAIN_TRANSFORM, {}); // no splice option
    expect(other).toBeInstanceOf(Relay);
    other.abort();
  });
});

describe(`withoutBrookProtocol pair, spliced at both ends${NATIVE_SKIP}`, () => {
  it.skipIf(!avail.available)('SHA-256 both ways through client and server, both relays spliced', async () => {
    const echo = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.pipe(s);
    });
    const echoPort = await listen(echo);
    const pair = await startPair({ withoutBrookProtocol: true });
    try {
      const s = await socksConnect(pair.socksPort, { type: 'ipv4', host: LOOPBACK, port: echoPort });
      s.write('first');
      expect((await readExactly(s, 5)).toString()).toBe('first');
      await waitFor(() => splicedRelays() === 2, 5000, 'client and server relays spliced');
      const got = readAllHashed(s);
      const sent = await withTimeout(sendRandom(s, 4 * 1024 * 1024, { end: true }), 30_000, 'send');
      expect(await withTimeout(got, 30_000, 'echo')).toEqual({ hash: sent.hash, bytes: sent.bytes, gotEnd: true });
      await waitFor(() => splicedRelays() === 0, 5000, 'released');
    } finally {
      await pair.close();
      await new Promise<void>((r) => echo.close(() => r()));
    }
  });
});
