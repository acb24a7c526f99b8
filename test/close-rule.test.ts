/**
 * Issue 10, item 2: one close rule for every connection that has not produced
 * an accepted header (protocol/probing.md). Over real sockets, for 0..100 random
 * bytes, prefixes of a valid preamble, a wrong password, a stale time, a time
 * too far ahead and (Brook) a replayed stream, each with and without the
 * client's FIN:
 * - the server sends nothing;
 * - with or without FIN alike: the server resets the connection at the deadline
 *   (probeTimeoutMs after the 101; the client sees ECONNRESET).
 * All connections of a mode run in parallel, so the file takes about two probe
 * timeouts. Tolerances leave room for a loaded 2-core machine.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import type { LogEntry } from '../src/log.js';
import { makeAddress } from '../src/protocol/address.js';
import { createClientCodec } from '../src/protocol/session.js';
import { WsServer } from '../src/server/wsserver.js';
import { collectLog, connectRaw, LOOPBACK, PASSWORD, readExactly, readHttpHead, upgradeRequest, waitFor, withTimeout } from './helpers/net.js';

const PROBE_TIMEOUT_MS = 1000;
/** A deadline close may come this late (event-loop lag on a loaded machine). */
const LATE_MS = 1500;
/** 62 s: stale (or too far ahead) whatever the parity adjustment. */
const SKEW_MS = 62_000;

interface Outcome {
  how: 'end' | 'reset' | 'other';
  error?: string;
  /** Bytes the server sent after the 101. */
  bytes: number;
  /** ms from the upgrade request being written to the close. */
  fromRequest: number;
  /** ms from the 101 to the close. */
  from101: number;
}

/** Upgrade, send `bytes`, FIN if asked, then watch how the server closes. */
async function probe(port: number, bytes: Buffer, fin: boolean): Promise<Outcome> {
  const s = await connectRaw(port);
  const tReq = Date.now();
  s.write(upgradeRequest(port));
  const { head, rest } = await readHttpHead(s);
  const t101 = Date.now();
  if (!head.startsWith('HTTP/1.1 101 ')) throw new Error(`no 101: ${head}`);
  let got = rest.length;
  let how: Outcome['how'] | null = null;
  let error: string | undefined;
  const closed = new Promise<number>((resolve) => {
    s.on('data', (d: Buffer) => (got += d.length));
    s.on('end', () => {
      how ??= 'end';
      s.destroy(); // half-open client: close our side so 'close' comes
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      error ??= e.code;
      how ??= e.code === 'ECONNRESET' ? 'reset' : 'other';
    });
    s.on('close', () => resolve(Date.now()));
  });
  s.resume();
  if (bytes.length > 0) s.write(bytes);
  if (fin) s.end();
  const at = await withTimeout(closed, PROBE_TIMEOUT_MS + LATE_MS + 3000, 'server close');
  return { how: how ?? 'other', error, bytes: got, fromRequest: at - tReq, from101: at - t101 };
}

function expectRule(name: string, fin: boolean, o: Outcome): void {
  const what = `${name}, ${fin ? 'FIN' : 'no FIN'}: ${JSON.stringify(o)}`;
  expect(o.bytes, what).toBe(0);
  // the same for a half-closed client as for one that keeps its side open
  expect(o.how, what).toBe('reset');
  // the deadline runs from the upgrade, which came after our request
  expect(o.fromRequest, what).toBeGreaterThanOrEqual(PROBE_TIMEOUT_MS - 5);
  expect(o.from101, what).toBeLessThan(PROBE_TIMEOUT_MS + LATE_MS);
}

const MODES = [
  { name: 'Brook', wob: false },
  { name: 'withoutBrookProtocol', wob: true },
] as const;

describe.each(MODES)('one close rule for bad handshakes, $name mode', ({ wob }) => {
  let server: WsServer;
  let port: number;
  let dst: net.Server;
  let dstConnections = 0;
  const serverLog: LogEntry[] = [];

  beforeAll(async () => {
    dst = net.createServer((c) => {
      dstConnections++;
      c.on('error', () => undefined);
      c.resume();
      c.end();
    });
    await new Promise<void>((r) => dst.listen(0, LOOPBACK, () => r()));
    server = new WsServer({
      listen: `${LOOPBACK}:0`,
      password: PASSWORD,
      withoutBrookProtocol: wob,
      probeTimeoutMs: PROBE_TIMEOUT_MS,
      probeByteBudget: 64 * 1024,
      log: collectLog(serverLog),
    });
    port = (await server.listen()).port;
  });
  afterAll(async () => {
    await server?.close();
    await new Promise<void>((r) => (dst ? dst.close(() => r()) : r()));
  });

  const hello = (o: { password?: string; skewMs?: number } = {}) => {
    const c = createClientCodec({
      password: o.password ?? PASSWORD,
      withoutBrookProtocol: wob,
      network: 'tcp',
      destination: makeAddress(LOOPBACK, (dst.address() as net.AddressInfo).port),
      now: () => Date.now() + (o.skewMs ?? 0),
    });
    return Buffer.concat([c.hello(), c.seal(Buffer.from('GET / HTTP/1.0\r\n\r\n'))]);
  };

  /** Bytes up to the end of the first fragment (Brook) or the header (withoutBrookProtocol). */
  const validPreambleLength = () =>
    createClientCodec({ password: PASSWORD, withoutBrookProtocol: wob, network: 'tcp', destination: makeAddress(LOOPBACK, 1) }).hello().length;

  it('0..100 random bytes, prefixes of a valid preamble, wrong password, stale and future times, a replay: same close', async () => {
    const cases: { name: string; bytes: Buffer }[] = [];
    for (let n = 0; n <= 100; n++) cases.push({ name: `${n} random bytes`, bytes: randomBytes(n) });
    const valid = hello();
    const preamble = validPreambleLength();
    // ending inside the nonce / hash, the sealed length / length field, the first payload
    for (const n of [1, 11, 12, 13, 29, 30, 31, 33, 34, 40, preamble - 1]) cases.push({ name: `valid preamble cut at ${n}`, bytes: valid.subarray(0, n) });
    cases.push({ name: 'wrong password', bytes: hello({ password: 'not-' + PASSWORD }) });
    cases.push({ name: 'stale time', bytes: hello({ skewMs: -SKEW_MS }) });
    cases.push({ name: 'time too far ahead', bytes: hello({ skewMs: SKEW_MS }) });
    if (!wob) {
      // a stream the server accepted once, sent again
      const recorded = hello();
      const s = await connectRaw(port);
      s.write(upgradeRequest(port));
      await readHttpHead(s);
      s.write(recorded);
      expect((await readExactly(s, 12)).length, 'server nonce of the accepted original').toBe(12);
      s.destroy();
      await waitFor(() => dstConnections === 1, 5000, 'the original to reach the destination');
      cases.push({ name: 'replayed stream', bytes: recorded });
    }
    const runs = cases.flatMap((c) => [true, false].map((fin) => ({ ...c, fin })));
    const logBefore = serverLog.length;
    const outcomes = await Promise.all(runs.map((r) => probe(port, r.bytes, r.fin)));
    runs.forEach((r, i) => expectRule(r.name, r.fin, outcomes[i]!));
    // nothing but the accepted original ever reached the destination
    expect(dstConnections).toBe(wob ? 0 : 1);
    // the failures were told apart in the log (rate limiting may fold repeats)
    const codes = new Set(serverLog.slice(logBefore).map((e) => e['code']));
    expect(codes.has(wob ? ErrorCodes.WOB_PASSWORD : ErrorCodes.AUTH_FAILED)).toBe(true);
    expect(codes.has(ErrorCodes.TIME_STALE)).toBe(true);
    expect(codes.has(ErrorCodes.TIME_AHEAD)).toBe(true);
    if (!wob) expect(codes.has(ErrorCodes.REPLAY)).toBe(true);
  }, 20_000);
});
