/**
 * Issue 3, bad input: every probe gets the behaviour upstream shows (silence and
 * a bounded drain for bad streams, nginx-looking HTTP answers, SOCKS5 reply
 * codes), and a tunnel running at the same time keeps transferring.
 */
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { makeAddress } from '../src/protocol/address.js';
import { createClientCodec } from '../src/protocol/session.js';
import {
  type Closable,
  closeAll,
  endedWithin,
  connectRaw,
  type ExchangeServer,
  exchangeThroughSocks,
  LOOPBACK,
  type Pair,
  PASSWORD,
  rawHttp,
  readAll,
  readExactly,
  readHttpHead,
  readSocksReply,
  sleep,
  socksRequestBytes,
  startExchangeServer,
  startPair,
  upgradeRequest,
  waitFor,
  withTimeout,
} from './helpers/net.js';

const PROBE_TIMEOUT_MS = 700;
const PROBE_BYTE_BUDGET = 64 * 1024;
const TRANSFER = 1024 * 1024;
/**
 * Server clock ahead of the client's. Upstream refuses a time more than 60 s old;
 * the client may add 1 s to fix the parity, so 61 s is stale only half the time:
 * 62 s always is.
 */
const SKEW_MS = 62_000;

/** A 1 MiB exchange through the pair, checked at both ends. */
async function assertTransfers(pair: Pair, dst: ExchangeServer): Promise<void> {
  const r = await withTimeout(exchangeThroughSocks(pair.socksPort, { type: 'ipv4', host: LOOPBACK, port: dst.port }, TRANSFER), 15_000, 'parallel tunnel');
  await waitFor(() => dst.records.some((x) => x.receivedHash === r.sent.hash), 5000, 'the destination record of the parallel tunnel');
  const rec = dst.records.find((x) => x.receivedHash === r.sent.hash);
  expect(rec, 'destination got the bytes sent through the parallel tunnel').toBeDefined();
  expect(rec!.receivedBytes).toBe(TRANSFER);
  expect(r.received.bytes).toBe(TRANSFER);
  expect(r.received.hash).toBe(rec!.sentHash);
}

/** Upgrade on a raw socket; resolves once the 101 has been read (nothing may follow it). */
async function upgraded(port: number): Promise<net.Socket> {
  const s = await connectRaw(port);
  s.write(upgradeRequest(port));
  const { head, rest } = await readHttpHead(s);
  expect(head).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/);
  expect(rest.length).toBe(0);
  return s;
}

/** Collect every byte the peer sends (there must be none). */
function collect(s: net.Socket): { bytes: () => number } {
  let n = 0;
  s.on('data', (d: Buffer) => (n += d.length));
  s.resume();
  return { bytes: () => n };
}

/**
 * The anti-probing contract: no byte back; the connection stays open while a
 * parallel tunnel transfers; then it is closed near probeTimeoutMs.
 */
async function assertSilentDrain(s: net.Socket, pair: Pair, dst: ExchangeServer, t0: number): Promise<void> {
  const got = collect(s);
  const closed = endedWithin(s, PROBE_TIMEOUT_MS + 3000);
  await assertTransfers(pair, dst);
  const stillOpenAt = Date.now() - t0;
  if (stillOpenAt < PROBE_TIMEOUT_MS - 100) expect(s.destroyed, `closed early, after ${stillOpenAt} ms`).toBe(false);
  await closed;
  const elapsed = Date.now() - t0;
  expect(elapsed).toBeGreaterThanOrEqual(PROBE_TIMEOUT_MS - 50);
  expect(elapsed).toBeLessThan(PROBE_TIMEOUT_MS + 2500);
  expect(got.bytes()).toBe(0);
}

const MODES = [
  { name: 'Brook', wob: false, badCode: ErrorCodes.AUTH_FAILED },
  { name: 'withoutBrookProtocol', wob: true, badCode: ErrorCodes.WOB_PASSWORD },
] as const;

describe.each(MODES)('wsserver under probing, $name mode', ({ wob, badCode }) => {
  const started: Closable[] = [];
  let pair: Pair;
  let dst: ExchangeServer;

  beforeAll(async () => {
    dst = await startExchangeServer({ downBytes: TRANSFER });
    started.push(dst);
    pair = await startPair({ withoutBrookProtocol: wob, server: { probeTimeoutMs: PROBE_TIMEOUT_MS, probeByteBudget: PROBE_BYTE_BUDGET } });
    started.push(pair);
  });
  afterAll(async () => {
    await closeAll(started);
  });

  const wrongHello = () => {
    const c = createClientCodec({ password: 'not-' + PASSWORD, withoutBrookProtocol: wob, network: 'tcp', destination: makeAddress(LOOPBACK, dst.port) });
    return Buffer.concat([c.hello(), c.seal(Buffer.from('GET / HTTP/1.0\r\n\r\n'))]);
  };

  it('wrong password: answers nothing, keeps reading until the probe time, then closes', async () => {
    const logBefore = pair.serverLog.length;
    const s = await upgraded(pair.serverPort);
    const t0 = Date.now();
    s.write(wrongHello());
    await assertSilentDrain(s, pair, dst, t0);
    expect(pair.serverLog.slice(logBefore).filter((e) => e.code === badCode)).toHaveLength(1);
    expect(dst.records.length).toBe(dst.records.filter((r) => r.receivedBytes === TRANSFER).length); // never dialled
  });

  it('wrong password: closes once the byte budget is spent, still silent', async () => {
    const s = await upgraded(pair.serverPort);
    const got = collect(s);
    s.on('error', () => undefined);
    const t0 = Date.now();
    s.write(wrongHello());
    for (let sent = 0; sent <= PROBE_BYTE_BUDGET && !s.destroyed; sent += 16 * 1024) s.write(randomBytes(16 * 1024));
    await endedWithin(s, PROBE_TIMEOUT_MS + 3000);
    expect(Date.now() - t0).toBeLessThan(PROBE_TIMEOUT_MS - 100);
    expect(got.bytes()).toBe(0);
    await assertTransfers(pair, dst);
  });

  it('garbage after the upgrade is drained silently (separate write and with the upgrade)', async () => {
    const s = await upgraded(pair.serverPort);
    const t0 = Date.now();
    s.write(randomBytes(700));
    await assertSilentDrain(s, pair, dst, t0);

    const s2 = await connectRaw(pair.serverPort);
    const t1 = Date.now();
    s2.write(Buffer.concat([Buffer.from(upgradeRequest(pair.serverPort)), randomBytes(300)]));
    const { head, rest } = await readHttpHead(s2);
    expect(head).toMatch(/^HTTP\/1\.1 101 /);
    expect(rest.length).toBe(0);
    await assertSilentDrain(s2, pair, dst, t1);
  });

  it('a client that upgrades and then says nothing is closed after the probe time', async () => {
    const s = await upgraded(pair.serverPort);
    const t0 = Date.now();
    await assertSilentDrain(s, pair, dst, t0);
  });

  it('a truncated preamble (half a nonce / half a hash) is held silently, then closed', async () => {
    const s = await upgraded(pair.serverPort);
    const t0 = Date.now();
    s.write(randomBytes(wob ? 16 : 6));
    await assertSilentDrain(s, pair, dst, t0);
  });

  it('answers a wrong path with 404, an empty body and Server: nginx (plain and upgrade)', async () => {
    for (const req of [
      'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /ws/ HTTP/1.1\r\nHost: x\r\n\r\n',
      'POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n',
      upgradeRequest(pair.serverPort, '/wrong'),
      upgradeRequest(pair.serverPort, '/WS'),
    ]) {
      const a = await rawHttp(pair.serverPort, req);
      expect(a.status, req).toBe(404);
      expect(a.body.length, req).toBe(0);
      expect(a.headers.get('server'), req).toBe('nginx');
    }
    await assertTransfers(pair, dst);
  });

  it('answers another method on the path with 405 and Server: nginx (plain and upgrade)', async () => {
    for (const req of [
      'POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n',
      'PUT /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n',
      upgradeRequest(pair.serverPort).replace(/^GET /, 'POST '),
    ]) {
      const a = await rawHttp(pair.serverPort, req);
      expect(a.status, req).toBe(405);
      expect(a.headers.get('server'), req).toBe('nginx');
    }
    await assertTransfers(pair, dst);
  });

  it('answers GET on the path without an upgrade with 400 and Server: nginx', async () => {
    for (const req of [
      'GET /ws HTTP/1.1\r\nHost: x\r\n\r\n',
      'GET /ws?x=1 HTTP/1.1\r\nHost: x\r\n\r\n',
      // Upgrade header but no Connection: Upgrade
      `GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    ]) {
      const a = await rawHttp(pair.serverPort, req);
      expect(a.status, req).toBe(400);
      expect(a.headers.get('server'), req).toBe('nginx');
    }
    await assertTransfers(pair, dst);
  });

  it('answers a bad handshake (Sec-WebSocket-Key, version, Upgrade token) with 400', async () => {
    const good = upgradeRequest(pair.serverPort);
    const cases: [string, string][] = [
      ['short key', good.replace(/Sec-WebSocket-Key: \S+/, 'Sec-WebSocket-Key: c2hvcnQ=')],
      ['non-base64 key', good.replace(/Sec-WebSocket-Key: \S+/, 'Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!!')],
      ['missing key', good.replace(/Sec-WebSocket-Key: \S+\r\n/, '')],
      ['version 8', good.replace('Sec-WebSocket-Version: 13', 'Sec-WebSocket-Version: 8')],
      ['missing version', good.replace('Sec-WebSocket-Version: 13\r\n', '')],
      ['Upgrade: h2c', good.replace('Upgrade: websocket', 'Upgrade: h2c')],
    ];
    for (const [what, req] of cases) {
      const a = await rawHttp(pair.serverPort, req);
      expect(a.status, what).toBe(400);
      expect(a.headers.get('server'), what).toBe('nginx');
      if (what.startsWith('version') || what.startsWith('missing version')) expect(a.headers.get('sec-websocket-version'), what).toBe('13');
    }
    // a request that is not HTTP at all
    const s = await connectRaw(pair.serverPort);
    s.on('error', () => undefined);
    s.write('\x16\x03\x01 not http at all\r\n\r\n');
    const raw = await withTimeout(readAll(s), 5000, 'answer to garbage');
    s.destroy();
    expect(raw.toString('latin1')).toMatch(/^HTTP\/1\.1 400 /);
    await assertTransfers(pair, dst);
  });

  it('refuses a stale time silently (server clock 62 s ahead) while an in-sync client works', async () => {
    const started2: Closable[] = [];
    try {
      const skewed = await startPair({
        withoutBrookProtocol: wob,
        server: { probeTimeoutMs: PROBE_TIMEOUT_MS, now: () => Date.now() + SKEW_MS },
        client: { now: () => Date.now() + SKEW_MS },
      });
      started2.push(skewed);
      const s = await upgraded(skewed.serverPort);
      const t0 = Date.now();
      const c = createClientCodec({ password: PASSWORD, withoutBrookProtocol: wob, network: 'tcp', destination: makeAddress(LOOPBACK, dst.port) });
      s.write(Buffer.concat([c.hello(), c.seal(Buffer.from('hello'))]));
      await assertSilentDrain(s, skewed, dst, t0);
      expect(skewed.serverLog.filter((e) => e.code === ErrorCodes.TIME_STALE)).toHaveLength(1);
      expect(skewed.serverLog.filter((e) => e.error && e.code !== ErrorCodes.TIME_STALE)).toEqual([]);
    } finally {
      await closeAll(started2);
    }
  });

  it('keeps serving after all of that: no tunnel left open', async () => {
    await assertTransfers(pair, dst);
    await waitFor(() => pair.server.openTunnels === 0, 3000, 'no open tunnels');
  });
});

describe('wsserver --xForwardedFor', () => {
  it('logs the first X-Forwarded-For address as "from" (and the peer address without the flag)', async () => {
    const started: Closable[] = [];
    try {
      const withFlag = await startPair({ server: { xForwardedFor: true, probeTimeoutMs: 200 } });
      started.push(withFlag);
      const without = await startPair({ server: { probeTimeoutMs: 200 } });
      started.push(without);
      for (const p of [withFlag, without]) {
        const s = await connectRaw(p.serverPort);
        s.write(upgradeRequest(p.serverPort).replace('\r\n\r\n', '\r\nX-Forwarded-For: 203.0.113.9, 10.0.0.1\r\n\r\n'));
        await readHttpHead(s);
        await endedWithin(s, 3000); // silent client: closed after the probe time, with a log line
        s.destroy();
        await waitFor(() => p.serverLog.some((e) => e.code === ErrorCodes.TIMEOUT), 3000, 'probe timeout log line');
      }
      expect(withFlag.serverLog.find((e) => e.code === ErrorCodes.TIMEOUT)!.from).toBe('203.0.113.9');
      expect(String(without.serverLog.find((e) => e.code === ErrorCodes.TIMEOUT)!.from)).toMatch(/^127\.0\.0\.1:\d+$/);
    } finally {
      await closeAll(started);
    }
  });
});

describe('wsclient SOCKS5 side under malformed input', () => {
  const started: Closable[] = [];
  let pair: Pair;
  let authPair: Pair;
  let dst: ExchangeServer;

  beforeAll(async () => {
    dst = await startExchangeServer({ downBytes: TRANSFER });
    started.push(dst);
    pair = await startPair({});
    started.push(pair);
    authPair = await startPair({ client: { socks5Auth: { username: 'u', password: 'p' } } });
    started.push(authPair);
  });
  afterAll(async () => {
    await closeAll(started);
  });

  /** Send `bytes` to the SOCKS port; return everything received until the server closes. */
  async function exchangeRaw(port: number, ...writes: Buffer[]): Promise<Buffer> {
    const s = await connectRaw(port);
    s.on('error', () => undefined);
    const all = withTimeout(readAll(s), 5000, 'SOCKS server to close');
    for (const w of writes) {
      s.write(w);
      await sleep(10);
    }
    const got = await all;
    s.destroy();
    return got;
  }

  const greet = Buffer.from([0x05, 0x01, 0x00]);
  const target = () => ({ type: 'ipv4' as const, host: LOOPBACK, port: dst.port });

  it('a SOCKS4 greeting: closed without a reply', async () => {
    const got = await exchangeRaw(pair.socksPort, Buffer.from([0x04, 0x01, 0x00, 0x50, 127, 0, 0, 1, 0x00]));
    expect(got.length).toBe(0);
    await assertTransfers(pair, dst);
  });

  it('no acceptable method: 05 FF, then closed', async () => {
    expect((await exchangeRaw(pair.socksPort, Buffer.from([0x05, 0x01, 0x02]))).toString('hex')).toBe('05ff');
    expect((await exchangeRaw(pair.socksPort, Buffer.from([0x05, 0x00]))).toString('hex')).toBe('05ff');
    // auth required but not offered
    expect((await exchangeRaw(authPair.socksPort, greet)).toString('hex')).toBe('05ff');
  });

  it('unsupported command (BIND, 0x09): reply 07', async () => {
    for (const cmd of [0x02, 0x09]) {
      const got = await exchangeRaw(pair.socksPort, greet, socksRequestBytes(target(), cmd));
      expect(got.subarray(0, 2).toString('hex')).toBe('0500');
      expect(got[2]).toBe(0x05);
      expect(got[3], `cmd ${cmd}`).toBe(0x07);
    }
    await assertTransfers(pair, dst);
  });

  it('unknown address type: reply 08', async () => {
    const got = await exchangeRaw(pair.socksPort, greet, Buffer.from([0x05, 0x01, 0x00, 0x05, 1, 2, 3, 4, 0, 80]));
    expect(got.subarray(0, 2).toString('hex')).toBe('0500');
    expect(got[3]).toBe(0x08);
  });

  it('malformed request (empty domain, wrong request version): reply 01', async () => {
    const empty = await exchangeRaw(pair.socksPort, greet, Buffer.from([0x05, 0x01, 0x00, 0x03, 0x00, 0x00, 0x50]));
    expect(empty.subarray(0, 2).toString('hex')).toBe('0500');
    expect(empty[3]).toBe(0x01);
    const badVer = await exchangeRaw(pair.socksPort, greet, Buffer.from([0x04, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0, 80]));
    expect(badVer.subarray(0, 2).toString('hex')).toBe('0500');
    expect(badVer[3]).toBe(0x01);
    await assertTransfers(pair, dst);
  });

  it('username/password: wrong credentials get status 01 and close; right ones tunnel', async () => {
    const up = (u: string, p: string) => Buffer.concat([Buffer.from([0x01, u.length]), Buffer.from(u), Buffer.from([p.length]), Buffer.from(p)]);
    const bad = await exchangeRaw(authPair.socksPort, Buffer.from([0x05, 0x01, 0x02]), up('u', 'wrong'));
    expect(bad.toString('hex')).toBe('05020101');
    // right credentials: CONNECT goes through the tunnel
    const s = await connectRaw(authPair.socksPort);
    s.write(Buffer.from([0x05, 0x01, 0x02]));
    expect((await readExactly(s, 2)).toString('hex')).toBe('0502');
    s.write(up('u', 'p'));
    expect((await readExactly(s, 2)).toString('hex')).toBe('0100');
    s.write(socksRequestBytes(target()));
    expect(await readSocksReply(s)).toBe(0x00);
    const echoedEnd = withTimeout(readAll(s), 10_000, 'auth tunnel');
    s.end(Buffer.from('through auth'));
    const back = await echoedEnd;
    expect(back.length).toBe(TRANSFER);
    s.destroy();
    await dst.waitRecords(1, 5000);
    expect(dst.records.some((r) => r.receivedBytes === 'through auth'.length)).toBe(true);
  });

  it('a request split into single bytes still works, and bytes pipelined after it reach the destination', async () => {
    const s = await connectRaw(pair.socksPort);
    const req = Buffer.concat([greet, socksRequestBytes(target())]);
    for (const b of req) {
      s.write(Buffer.from([b]));
      await sleep(2);
    }
    s.write('pipelined');
    const got = await withTimeout(readAll(s), 10_000, 'pipelined exchange');
    expect(got.subarray(0, 2).toString('hex')).toBe('0500');
    expect(got[3]).toBe(0x00);
    s.destroy();
    await waitFor(() => dst.records.some((r) => r.receivedBytes === 'pipelined'.length), 5000, 'pipelined bytes at the destination');
  });
});
