/**
 * Resets travel (protocol/resets.md), over real loopback sockets through a
 * WsServer + WsClient pair, Brook and withoutBrookProtocol, SOCKS5 and HTTP
 * proxy CONNECT:
 *   destination RST -> the application reads ECONNRESET (not an end);
 *   application RST -> the destination reads ECONNRESET;
 *   a reset while the relay still holds unread bytes from the resetting side
 *   (Node reports such an RST as an 'end') travels as a reset too;
 *   a clean FIN each way stays a clean end with every byte (SHA-256);
 *   a tunnel beside them is unaffected.
 * And item 6: a failed client tunnel is logged once; per-connection lines a
 * local application can cause in bulk are rate-limited.
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  closeAll,
  type Closable,
  connectRaw,
  exchangeThroughSocks,
  freePort,
  LOOPBACK,
  type Pair,
  readHttpHead,
  sendRandom,
  socksConnect,
  startExchangeServer,
  startPair,
  waitFor,
  withTimeout,
} from './helpers/net.js';
import type { LogEntry } from '../src/log.js';
import { WsClient } from '../src/client/wsclient.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const started: Closable[] = [];
afterEach(async () => {
  await closeAll(started);
});

/** A destination whose every connection is handed to the test. */
async function startDest(): Promise<Closable & { port: number; next(): Promise<net.Socket> }> {
  const waiting: net.Socket[] = [];
  const sockets = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => undefined);
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    waiting.push(s);
  });
  await new Promise<void>((r) => srv.listen(0, LOOPBACK, () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  const d = {
    port,
    async next() {
      await waitFor(() => waiting.length > 0, 5000, 'a connection at the destination');
      return waiting.shift()!;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
  started.push(d);
  return d;
}

type Outcome = { how: 'reset'; code: string } | { how: 'end' };

/** How `s` ended as its reader sees it: the first of 'error' and 'end' (bytes counted into `got`). */
function readOutcome(s: net.Socket, got: { n: number } = { n: 0 }): Promise<Outcome> {
  return withTimeout(
    new Promise<Outcome>((resolve) => {
      s.on('data', (d: Buffer) => (got.n += d.length));
      s.once('error', (e: NodeJS.ErrnoException) => resolve({ how: 'reset', code: e.code ?? '?' }));
      s.once('end', () => resolve({ how: 'end' }));
      s.resume();
    }),
    10_000,
    'an end or a reset',
  );
}

/**
 * Like readOutcome, but an 'end' is checked by writing one byte, as an
 * application would find out: Node reports an RST that arrives while bytes are
 * still unread as an 'end' (protocol/resets.md); a write then fails.
 */
async function probedOutcome(s: net.Socket, got: { n: number } = { n: 0 }): Promise<Outcome> {
  const o = await readOutcome(s, got);
  if (o.how === 'reset') return o;
  const err = await withTimeout(
    new Promise<NodeJS.ErrnoException | null | undefined>((r) => s.write(Buffer.from([0]), (e) => r(e as NodeJS.ErrnoException))),
    5000,
    'a write after the end',
  );
  return err ? { how: 'reset', code: err.code ?? '?' } : o;
}

async function pair(wob: boolean, client: Record<string, unknown> = {}): Promise<Pair> {
  const p = await startPair({ withoutBrookProtocol: wob, client });
  started.push(p);
  return p;
}

/** A long transfer through its own tunnel, to check that resets beside it leave it alone. */
async function bystander(p: Pair): Promise<() => Promise<void>> {
  const ex = await startExchangeServer({ downBytes: 2 * MiB });
  started.push(ex);
  const run = exchangeThroughSocks(p.socksPort, { type: 'ipv4', host: LOOPBACK, port: ex.port }, 2 * MiB);
  return async () => {
    const { sent, received } = await withTimeout(run, 20_000, 'the bystander exchange');
    const [rec] = await ex.waitRecords(1, 10_000);
    expect(received.gotEnd).toBe(true);
    expect(received.hash).toBe(rec!.sentHash);
    expect(rec!.receivedHash).toBe(sent.hash);
    expect(rec!.gotEnd).toBe(true);
  };
}

/** An HTTP proxy CONNECT to 127.0.0.1:port through the client's --http port. */
async function httpConnect(p: Pair, port: number): Promise<net.Socket> {
  const a = p.client.httpAddress()!;
  const s = await connectRaw(a.port, a.host);
  s.write(`CONNECT ${LOOPBACK}:${port} HTTP/1.1\r\nHost: ${LOOPBACK}:${port}\r\n\r\n`);
  const { head, rest } = await readHttpHead(s);
  expect(head).toMatch(/^HTTP\/1\.1 200 /);
  if (rest.length > 0) s.unshift(rest);
  return s;
}

type Path = 'socks5' | 'http';
const open = (p: Pair, path: Path, port: number) =>
  path === 'socks5' ? socksConnect(p.socksPort, { type: 'ipv4', host: LOOPBACK, port }) : httpConnect(p, port);

describe.each([
  { wob: false, path: 'socks5' as Path },
  { wob: true, path: 'socks5' as Path },
  { wob: false, path: 'http' as Path },
  { wob: true, path: 'http' as Path },
])('resets travel (withoutBrookProtocol=$wob, $path)', ({ wob, path }) => {
  it('the destination resets mid-download: the application reads ECONNRESET, not an end', async () => {
    const p = await pair(wob, { http: `${LOOPBACK}:0` });
    const checkBystander = await bystander(p);
    const dest = await startDest();
    const app = await open(p, path, dest.port);
    const d = await dest.next();
    const got = { n: 0 };
    const outcome = readOutcome(app, got);
    await sendRandom(d, 256 * KiB);
    await waitFor(() => got.n === 256 * KiB, 10_000, 'the application to read what was sent');
    d.resetAndDestroy();
    expect(await outcome).toEqual({ how: 'reset', code: 'ECONNRESET' });
    await checkBystander();
  });

  it('the application resets mid-upload: the destination reads ECONNRESET, not an end', async () => {
    const p = await pair(wob, { http: `${LOOPBACK}:0` });
    const checkBystander = await bystander(p);
    const dest = await startDest();
    const app = await open(p, path, dest.port);
    const d = await dest.next();
    const got = { n: 0 };
    const outcome = readOutcome(d, got);
    await sendRandom(app, 256 * KiB);
    await waitFor(() => got.n === 256 * KiB, 10_000, 'the destination to read what was sent');
    app.resetAndDestroy();
    expect(await outcome).toEqual({ how: 'reset', code: 'ECONNRESET' });
    await checkBystander();
  });

  it('a destination reset while the server still holds unread bytes from it is passed on as a reset', async () => {
    const p = await pair(wob, { http: `${LOOPBACK}:0` });
    const dest = await startDest();
    const app = await open(p, path, dest.port);
    app.pause(); // the tunnel backs up, so the server stops reading the destination
    const d = await dest.next();
    d.write(Buffer.alloc(8 * MiB, 0x61));
    await new Promise((r) => setTimeout(r, 300));
    d.resetAndDestroy(); // RST while bytes wait, unread, in the server's socket
    await new Promise((r) => setTimeout(r, 100));
    expect(await probedOutcome(app)).toMatchObject({ how: 'reset' });
  });

  it('an application reset while the client still holds unread bytes from it is passed on as a reset', async () => {
    const p = await pair(wob, { http: `${LOOPBACK}:0` });
    const dest = await startDest();
    const app = await open(p, path, dest.port);
    const d = await dest.next();
    d.pause(); // the tunnel backs up, so the client stops reading the application
    app.write(Buffer.alloc(8 * MiB, 0x61));
    await new Promise((r) => setTimeout(r, 300));
    app.resetAndDestroy();
    await new Promise((r) => setTimeout(r, 100));
    expect(await probedOutcome(d)).toMatchObject({ how: 'reset' });
  });

  it('a clean FIN each way stays a clean end with every byte', async () => {
    const p = await pair(wob, { http: `${LOOPBACK}:0` });
    const dest = await startDest();
    const app = await open(p, path, dest.port);
    const d = await dest.next();
    const appGot = { n: 0 };
    const destGot = { n: 0 };
    const appEnd = readOutcome(app, appGot);
    const destEnd = readOutcome(d, destGot);
    const [up, down] = await Promise.all([sendRandom(app, MiB, { end: true }), sendRandom(d, MiB, { end: true })]);
    expect(await appEnd).toEqual({ how: 'end' });
    expect(await destEnd).toEqual({ how: 'end' });
    expect(appGot.n).toBe(down.bytes);
    expect(destGot.n).toBe(up.bytes);
    await Promise.all([app, d].map((s) => withTimeout(new Promise((r) => (s.destroyed ? r(0) : s.once('close', r))), 5000, 'close')));
  });
});

describe.each([false, true])('clean ends keep every byte (withoutBrookProtocol=%s)', (wob) => {
  it.each(['concurrent', 'after-end', 'first'] as const)('exchange order %s: FIN both ways, SHA-256 equal', async (order) => {
    const p = await pair(wob);
    const ex = await startExchangeServer({ downBytes: MiB, order });
    started.push(ex);
    const { sent, received } = await exchangeThroughSocks(p.socksPort, { type: 'ipv4', host: LOOPBACK, port: ex.port }, MiB, order);
    const [rec] = await ex.waitRecords(1, 10_000);
    expect(received).toEqual({ hash: rec!.sentHash, bytes: MiB, gotEnd: true });
    expect(rec).toMatchObject({ receivedHash: sent.hash, receivedBytes: MiB, gotEnd: true });
  });
});

describe('client logging', () => {
  it('a failed client tunnel is logged once, with {from, dst, network, error, code}', async () => {
    const dead = await freePort();
    const log: LogEntry[] = [];
    const client = new WsClient({
      endpoint: { secure: false, hostPort: `${LOOPBACK}:${dead}`, hostname: LOOPBACK, port: dead, path: '/ws' },
      password: 'hello',
      socks5: `${LOOPBACK}:0`,
      log: (e) => log.push(e),
    });
    await client.listen();
    started.push(client);
    await expect(socksConnect(client.socks.address().port, { type: 'ipv4', host: LOOPBACK, port: 9 })).rejects.toThrow(/SOCKS reply code 5/);
    await new Promise((r) => setTimeout(r, 200));
    expect(log).toHaveLength(1);
    expect(log[0]).toMatchObject({ dst: `${LOOPBACK}:9`, network: 'tcp', code: 'BROOK_ERR_CONNECTION_REFUSED' });
    expect(String(log[0]!.from)).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(typeof log[0]!.error).toBe('string');
    expect(client.stats.tunnelFailures).toBe(1);
  });

  it('per-connection lines a local application can cause in bulk are rate-limited, the rest counted', async () => {
    const p = await pair(false, { logIntervalMs: 60_000 });
    const N = 40;
    for (let i = 0; i < N; i++) {
      const s = await connectRaw(p.socksPort);
      s.write(Buffer.from([0x04, 0x01, 0x00])); // not SOCKS5: closed without a reply, one line each before
      await withTimeout(new Promise((r) => s.once('end', r).resume()), 5000, 'the server closing');
      s.destroy();
    }
    await waitFor(() => p.client.socks.stats.handshakeFailures === N, 5000, 'every handshake failure');
    expect(p.clientLog.filter((e) => e.code === 'BROOK_ERR_SOCKS_VERSION')).toHaveLength(1);
    await p.client.close();
    const suppressed = p.clientLog.filter((e) => e.msg === 'suppressed');
    expect(suppressed).toHaveLength(1);
    expect(suppressed[0]).toMatchObject({ count: N - 1 });
  });
});

describe('server logging', () => {
  it('dial failures a dead destination causes in bulk are rate-limited, the rest counted (issue 22)', async () => {
    const p = await startPair();
    const closed = await freePort();
    const N = 40;
    for (let i = 0; i < N; i++) {
      // the pooled tunnel answers the application at once; the server's dial fails and resets it
      const s = await socksConnect(p.socksPort, { type: 'ipv4', host: LOOPBACK, port: closed }).catch(() => null);
      if (s) await withTimeout(new Promise((r) => s.once('close', r).resume()), 5000, 'the reset tunnel');
    }
    await waitFor(() => p.server.openTunnels <= 4 && p.serverLog.length > 0, 5000, 'the failed tunnels closed');
    await p.close();
    const lines = p.serverLog.filter((e) => e.code === 'BROOK_ERR_CONNECTION_REFUSED');
    const held = p.serverLog.filter((e) => e.msg === 'suppressed' && e.key === 'tcp|BROOK_ERR_CONNECTION_REFUSED');
    expect(lines.length).toBeLessThan(5);
    expect(lines.length + held.reduce((n, e) => n + Number(e.count), 0)).toBe(N);
    expect(lines[0]).toMatchObject({ dst: `${LOOPBACK}:${closed}`, network: 'tcp' });
  });
});
