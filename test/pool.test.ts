/**
 * Prewarmed tunnels (src/client/pool.ts, issue 11 item 1): a warm pool makes a
 * CONNECT send only its preamble on a connection upgraded before it; idle
 * connections are retired at their maximum age and replaced; a server that
 * closes idle connections never makes a tunnel fail; an unreachable server is
 * retried with a bounded backoff; pool 0 is the plain dial; close() leaves no
 * descriptor behind.
 *
 * A counting forwarder between client and server records, per TCP connection,
 * when it was accepted and what the client sent and when.
 */
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { WsClient } from '../src/client/wsclient.js';
import { TunnelPool } from '../src/client/pool.js';
import type { UpgradedConnection } from '../src/client/dial.js';
import { runCli } from './helpers/cli.js';
import {
  type Closable,
  closeAll,
  exchangeThroughSocks,
  freePort,
  LOOPBACK,
  PASSWORD,
  sleep,
  startExchangeServer,
  startPair,
  waitFor,
} from './helpers/net.js';

const started: Closable[] = [];
afterEach(() => closeAll(started));

interface Forwarded {
  acceptedAt: number;
  /** Client-to-server chunks with the time they passed. */
  up: { at: number; data: Buffer }[];
}

/** A TCP forwarder to `port` that records every connection (see the top of this file). */
async function startForwarder(port: number): Promise<{ port: number; conns: Forwarded[] } & Closable> {
  const conns: Forwarded[] = [];
  const sockets = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (c) => {
    const rec: Forwarded = { acceptedAt: performance.now(), up: [] };
    conns.push(rec);
    const t = net.connect({ host: LOOPBACK, port, allowHalfOpen: true });
    for (const s of [c, t]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    c.on('data', (d: Buffer) => {
      rec.up.push({ at: performance.now(), data: d });
      t.write(d);
    });
    t.on('data', (d: Buffer) => c.write(d));
    c.on('end', () => t.end());
    t.on('end', () => c.end());
    // a reset on one side is passed on as a reset
    c.on('error', () => t.resetAndDestroy());
    t.on('error', () => c.resetAndDestroy());
    c.on('close', () => t.destroy());
    t.on('close', () => c.destroy());
  });
  await new Promise<void>((r) => srv.listen(0, LOOPBACK, () => r()));
  return {
    port: (srv.address() as net.AddressInfo).port,
    conns,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

/** A client of the pair's server through a forwarder. */
async function clientVia(fwdPort: number, o: Partial<ConstructorParameters<typeof WsClient>[0]> = {}): Promise<WsClient> {
  const client = new WsClient({
    endpoint: { secure: false, hostPort: `${LOOPBACK}:${fwdPort}`, hostname: LOOPBACK, port: fwdPort, path: '/ws' },
    password: PASSWORD,
    socks5: `${LOOPBACK}:0`,
    log: () => undefined,
    ...o,
  });
  await client.listen();
  started.push({ close: () => client.close() });
  return client;
}

async function serverAndForwarder(server: Parameters<typeof startPair>[0] = {}) {
  const pair = await startPair(server);
  started.push(pair);
  const fwd = await startForwarder(pair.serverPort);
  started.push(fwd);
  const dst = await startExchangeServer({ downBytes: 1000 });
  started.push(dst);
  return { pair, fwd, dst };
}

const isUpgrade = (b: Buffer) => b.subarray(0, 4).toString('latin1') === 'GET ';

describe('prewarmed tunnels', () => {
  it('a CONNECT through a warm pool sends only its preamble, on a connection upgraded before it', async () => {
    const { fwd, dst } = await serverAndForwarder();
    const client = await clientVia(fwd.port, { pool: { size: 2 } });
    await waitFor(() => client.pool!.size === 2, 5000, 'a warm pool');
    expect(fwd.conns).toHaveLength(2);
    for (const c of fwd.conns) expect(c.up.length > 0 && isUpgrade(c.up[0]!.data)).toBe(true);
    const mark = performance.now();
    const r = await exchangeThroughSocks(client.socks.address().port, { type: 'ipv4', host: LOOPBACK, port: dst.port }, 5000);
    expect(r.received.bytes).toBe(1000);
    expect(client.pool!.stats.hits).toBe(1);
    // the connection that carried the tunnel: accepted and upgraded before the CONNECT, nothing but Brook bytes after it
    const used = fwd.conns.filter((c) => c.acceptedAt < mark && c.up.some((u) => u.at > mark));
    expect(used).toHaveLength(1);
    const after = used[0]!.up.filter((u) => u.at > mark);
    expect(after.some((u) => isUpgrade(u.data))).toBe(false);
    // the refill: one new connection, upgraded, idle
    await waitFor(() => client.pool!.size === 2, 5000, 'the refill');
    expect(fwd.conns).toHaveLength(3);
  });

  it('pool 0 (and no pool option) dials per tunnel, as without a pool', async () => {
    const { fwd, dst } = await serverAndForwarder();
    for (const o of [{}, { pool: { size: 0 } }]) {
      fwd.conns.length = 0;
      const client = await clientVia(fwd.port, o);
      expect(client.pool).toBeNull();
      await sleep(100);
      expect(fwd.conns).toHaveLength(0);
      const r = await exchangeThroughSocks(client.socks.address().port, { type: 'ipv4', host: LOOPBACK, port: dst.port }, 100);
      expect(r.received.bytes).toBe(1000);
      expect(fwd.conns).toHaveLength(1);
      expect(isUpgrade(fwd.conns[0]!.up[0]!.data)).toBe(true);
    }
  });

  it('idle connections older than the maximum age are replaced; never more than the pool size', async () => {
    const { fwd, dst } = await serverAndForwarder();
    const client = await clientVia(fwd.port, { pool: { size: 2, maxIdleMs: 200 } });
    let most = 0;
    const deadline = Date.now() + 1000;
    while (Date.now() < deadline) {
      most = Math.max(most, client.pool!.size + client.pool!.pending);
      await sleep(10);
    }
    expect(most).toBeLessThanOrEqual(2);
    expect(client.pool!.stats.expired).toBeGreaterThanOrEqual(4);
    expect(fwd.conns.length).toBeGreaterThanOrEqual(6);
    const r = await exchangeThroughSocks(client.socks.address().port, { type: 'ipv4', host: LOOPBACK, port: dst.port }, 100);
    expect(r.received.bytes).toBe(1000);
  });

  it('a server that closes idle connections (short --probeTimeout) never makes a tunnel fail', async () => {
    const { pair, fwd, dst } = await serverAndForwarder({ server: { probeTimeoutMs: 600 } });
    const client = await clientVia(fwd.port, { pool: { size: 2, maxIdleMs: 10_000 } });
    await waitFor(() => client.pool!.size === 2, 5000, 'a warm pool');
    // tunnels at irregular times around the server's closes (pooled connections live about 600 ms)
    const deadline = Date.now() + 3000;
    let n = 0;
    while (Date.now() < deadline) {
      const r = await exchangeThroughSocks(client.socks.address().port, { type: 'ipv4', host: LOOPBACK, port: dst.port }, 100);
      expect(r.received.bytes).toBe(1000);
      n++;
      await sleep(150 + (n % 7) * 53);
    }
    expect(client.pool!.stats.lost).toBeGreaterThanOrEqual(2);
    expect(client.pool!.stats.hits).toBeGreaterThanOrEqual(3);
    expect(client.stats.tunnelFailures).toBe(0);
    expect(pair.serverLog.filter((e) => e['code'] && e['dst'])).toEqual([]);
  });

  it('an unreachable server: a bounded number of attempts (exponential backoff), tunnels still tried as without a pool', async () => {
    const port = await freePort();
    const client = await clientVia(port, { pool: { size: 4, backoffMinMs: 50, backoffMaxMs: 200 } });
    await sleep(1200);
    // first fill: 4 at once; then one at a time after 50, 100, 200, 200, ... ms: about 4 + 7
    const f = client.pool!.stats.failed;
    expect(f).toBeGreaterThanOrEqual(6);
    expect(f).toBeLessThanOrEqual(14);
    expect(client.pool!.size).toBe(0);
    await expect(exchangeThroughSocks(client.socks.address().port, { type: 'ipv4', host: LOOPBACK, port: 9 }, 1)).rejects.toThrow(/SOCKS reply code/);
    expect(client.pool!.stats.misses).toBe(1);
  });

  it('close() leaves no descriptor: idle connections and connects under way', async () => {
    const { fwd } = await serverAndForwarder();
    // a server that accepts and never answers the upgrade: connects stay under way
    const silent = new Set<net.Socket>();
    const mute = net.createServer((s) => {
      silent.add(s);
      s.on('close', () => silent.delete(s));
      s.on('end', () => s.destroy());
      s.on('error', () => s.destroy());
      s.resume();
    });
    await new Promise<void>((r) => mute.listen(0, LOOPBACK, () => r()));
    started.push({ close: () => new Promise<void>((r) => mute.close(() => r())) });
    const fds = () => readdirSync('/proc/self/fd').length;
    await sleep(50);
    const before = fds();
    const warm = new WsClient({
      endpoint: { secure: false, hostPort: `${LOOPBACK}:${fwd.port}`, hostname: LOOPBACK, port: fwd.port, path: '/ws' },
      password: PASSWORD,
      socks5: `${LOOPBACK}:0`,
      log: () => undefined,
      pool: { size: 3 },
    });
    const mutePort = (mute.address() as net.AddressInfo).port;
    const stuck = new WsClient({
      endpoint: { secure: false, hostPort: `${LOOPBACK}:${mutePort}`, hostname: LOOPBACK, port: mutePort, path: '/ws' },
      password: PASSWORD,
      socks5: `${LOOPBACK}:0`,
      log: () => undefined,
      pool: { size: 3 },
    });
    await warm.listen();
    await stuck.listen();
    await waitFor(() => warm.pool!.size === 3 && silent.size === 3, 5000, 'a warm pool and three stuck connects');
    expect(stuck.pool!.pending).toBe(3);
    expect(fds()).toBeGreaterThan(before);
    await warm.close();
    await stuck.close();
    await waitFor(() => fds() <= before, 5000, `descriptors back to ${before} (now ${fds()})`);
    expect(silent.size).toBe(0);
  });
});

describe('TunnelPool', () => {
  /** A connect that fails at once, counting its calls. */
  function failing(): { calls: number[]; connect: () => Promise<UpgradedConnection> } {
    const calls: number[] = [];
    return {
      calls,
      connect: () => {
        calls.push(Date.now());
        return Promise.reject(new Error('refused'));
      },
    };
  }

  it('backs off exponentially, bounded, one attempt at a time', async () => {
    const f = failing();
    const pool = new TunnelPool({ size: 3, connect: f.connect, backoffMinMs: 20, backoffMaxMs: 80 });
    pool.start();
    await sleep(700);
    pool.close();
    const n = f.calls.length;
    // 3 at once, then after 20, 40, 80, 80, ... ms: about 3 + 9 in 700 ms (a loaded machine makes fewer)
    expect(n).toBeGreaterThanOrEqual(5);
    expect(n).toBeLessThanOrEqual(13);
    const gaps = f.calls.slice(3).map((t, i) => t - f.calls[2 + i]!);
    for (const g of gaps) expect(g).toBeGreaterThanOrEqual(15);
    await sleep(200);
    expect(f.calls.length).toBe(n);
  });

  it('refuses a size below 1; take() on a closed pool is null', () => {
    expect(() => new TunnelPool({ size: 0, connect: failing().connect })).toThrow(RangeError);
    const pool = new TunnelPool({ size: 1, connect: failing().connect });
    pool.close();
    expect(pool.take()).toBeNull();
  });

  it('dormant: no refill after dormantMs without a take, woken by the next take', async () => {
    let now = 0;
    const f = failing();
    const pool = new TunnelPool({ size: 1, connect: f.connect, backoffMinMs: 10, backoffMaxMs: 10, dormantMs: 1000, now: () => now });
    pool.start();
    await sleep(60);
    const active = f.calls.length;
    expect(active).toBeGreaterThanOrEqual(2);
    now = 5000;
    await sleep(60);
    const dormant = f.calls.length;
    expect(dormant - active).toBeLessThanOrEqual(1);
    await sleep(60);
    expect(f.calls.length).toBe(dormant);
    expect(pool.take()).toBeNull();
    await sleep(60);
    expect(f.calls.length).toBeGreaterThan(dormant);
    pool.close();
  });
});

describe('client flags', () => {
  it.each([
    ['--pool', '-1'],
    ['--pool', 'two'],
    ['--pool', '65'],
    ['--poolMaxIdle', '0'],
    ['--poolMaxIdle', '1.5'],
  ])('%s %s: one line on stderr, exit 1', async (flag, value) => {
    const r = await runCli(['wsclient', '--wsserver', 'ws://127.0.0.1:9', '--password', 'x', '--socks5', '127.0.0.1:0', flag, value]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(flag);
  });

  it('--noTlsResume is a wssclient / connect flag, not a wsclient one', async () => {
    const r = await runCli(['wsclient', '--wsserver', 'ws://127.0.0.1:9', '--password', 'x', '--noTlsResume']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('--noTlsResume');
  });
});
