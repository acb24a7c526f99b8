/**
 * Issue 10, item 4: replay protection on a live server (protocol/probing.md#replays).
 * - A tunnel of our own client, recorded at the socket level, replayed 20 times
 *   within 2 s: the destination counts exactly one connection, every replay
 *   gets silence and the close rule.
 * - An asynchronous guard (what a worker uses): slow answers, failed checks,
 *   clients that leave meanwhile.
 * - 10,000 quick tunnels through our client: none refused.
 * - Header times: up to --maxTimeAhead ahead accepted, beyond refused.
 * Across --workers: test/replay-workers.test.ts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BrookError, ErrorCodes } from '../src/errors.js';
import type { LogEntry } from '../src/log.js';
import { makeAddress } from '../src/protocol/address.js';
import { createClientCodec } from '../src/protocol/session.js';
import type { ReplayGuard, ReplayVerdict } from '../src/server/replay.js';
import { WsServer } from '../src/server/wsserver.js';
import { runCli } from './helpers/cli.js';
import {
  type Closable,
  closeAll,
  collectLog,
  connectRaw,
  LOOPBACK,
  PASSWORD,
  readExactly,
  readHttpHead,
  sleep,
  socksConnect,
  startPair,
  upgradeRequest,
  waitFor,
} from './helpers/net.js';
import { expectSilentRefusal, PROBE_TIMEOUT_MS, recordTunnel, replay, REPLAY_SPREAD_MS, REPLAYS, startEcho } from './helpers/replay.js';

describe('replayed Brook streams (one process)', () => {
  const started: Closable[] = [];
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let server: WsServer;
  let port: number;
  const serverLog: LogEntry[] = [];

  beforeAll(async () => {
    echo = await startEcho();
    started.push(echo);
    server = new WsServer({ listen: `${LOOPBACK}:0`, password: PASSWORD, probeTimeoutMs: PROBE_TIMEOUT_MS, log: collectLog(serverLog) });
    port = (await server.listen()).port;
    started.push({ close: () => server.close() });
  });
  afterAll(async () => {
    await closeAll(started);
  });

  it(`a recorded tunnel replayed ${REPLAYS} times within 2 s: one destination connection, silence for every replay`, async () => {
    const rec = await recordTunnel(port, echo.port);
    await waitFor(() => echo.connections() === 1, 5000, 'the original tunnel at the destination');
    const results = await Promise.all(
      Array.from({ length: REPLAYS }, async (_, i) => {
        await sleep((i * REPLAY_SPREAD_MS) / REPLAYS);
        const fin = i % 2 === 0;
        return { fin, r: await replay(port, rec, fin) };
      }),
    );
    expectSilentRefusal(results);
    expect(echo.connections()).toBe(1);
    expect(serverLog.some((e) => e['code'] === ErrorCodes.REPLAY)).toBe(true);
  }, 20_000);

  it('a header time up to 60 s ahead is accepted; beyond the bound it is refused like a stale one', async () => {
    const hello = (skewMs: number) => {
      const c = createClientCodec({ password: PASSWORD, network: 'tcp', destination: makeAddress(LOOPBACK, echo.port), now: () => Date.now() + skewMs });
      return { head: Buffer.from(upgradeRequest(port)), stream: Buffer.concat([c.hello(), c.seal(Buffer.from('x'))]) };
    };
    const before = echo.connections();
    // 58 s + at most 1 for the parity: within the bound
    const ok = await connectRaw(port);
    ok.write(upgradeRequest(port));
    await readHttpHead(ok);
    ok.write(hello(58_000).stream);
    expect((await readExactly(ok, 12)).length).toBe(12);
    ok.destroy();
    await waitFor(() => echo.connections() === before + 1, 5000, 'the tunnel from a clock 58 s ahead');
    const logBefore = serverLog.length;
    const far = await replay(port, hello(62_000), true);
    expectSilentRefusal([{ fin: true, r: far }]);
    expect(echo.connections()).toBe(before + 1);
    expect(serverLog.slice(logBefore).some((e) => e['code'] === ErrorCodes.TIME_AHEAD)).toBe(true);
  });
});

describe('an asynchronous replay guard (as with --workers)', () => {
  const started: Closable[] = [];
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let answer: (nonce: Uint8Array) => Promise<ReplayVerdict>;
  let asked = 0;
  let port: number;
  let server: WsServer;
  const serverLog: LogEntry[] = [];

  beforeAll(async () => {
    echo = await startEcho();
    started.push(echo);
    const guard: ReplayGuard = { check: (nonce) => (asked++, answer(nonce)) };
    server = new WsServer({ listen: `${LOOPBACK}:0`, password: PASSWORD, probeTimeoutMs: PROBE_TIMEOUT_MS, replay: guard, log: collectLog(serverLog) });
    port = (await server.listen()).port;
    started.push({ close: () => server.close() });
  });
  afterAll(async () => {
    await closeAll(started);
  });

  const recording = () => {
    const c = createClientCodec({ password: PASSWORD, network: 'tcp', destination: makeAddress(LOOPBACK, echo.port) });
    return { head: Buffer.from(upgradeRequest(port)), stream: Buffer.concat([c.hello(), c.seal(Buffer.from('ping'))]) };
  };
  const later = <T>(ms: number, v: () => T) => new Promise<T>((resolve) => setTimeout(() => resolve(v()), ms));

  it('a slow "fresh" answer: the paused socket loses nothing and the tunnel works', async () => {
    answer = () => later(200, () => 'fresh' as const);
    const s = await connectRaw(port);
    s.write(upgradeRequest(port));
    await readHttpHead(s);
    s.write(recording().stream);
    const back = await readExactly(s, 12, 5000);
    expect(back.length).toBe(12); // the server nonce: accepted after the answer
    s.destroy();
    await waitFor(() => echo.connections() === 1, 5000, 'the tunnel at the destination');
  });

  it('a failed check (the primary did not answer) is refused like a replay: silence, the close rule', async () => {
    answer = () => later(100, () => Promise.reject(new BrookError(ErrorCodes.TIMEOUT, 'test: no answer'))).then((p) => p);
    const before = echo.connections();
    const results = await Promise.all([true, false].map(async (fin) => ({ fin, r: await replay(port, recording(), fin) })));
    expectSilentRefusal(results);
    expect(echo.connections()).toBe(before);
    expect(serverLog.some((e) => e['error'] === 'test: no answer')).toBe(true);
  });

  it('the client leaves while the check runs: the late verdict finds it gone, nothing is left open', async () => {
    answer = () => later(300, () => 'fresh' as const);
    const askedBefore = asked;
    const s = await connectRaw(port);
    s.write(upgradeRequest(port));
    await readHttpHead(s);
    s.write(recording().stream);
    await waitFor(() => asked === askedBefore + 1, 5000, 'the check to start');
    s.resetAndDestroy();
    await sleep(400);
    // the verdict came after the client left: accepting finds the socket reset (a dial
    // already under way is closed as soon as it connects)
    await waitFor(() => server.openTunnels === 0 && echo.open() === 0, 5000, 'the tunnel and its destination socket to close');
    expect(serverLog.some((e) => e['code'] === ErrorCodes.INTERNAL)).toBe(false);
  });
});

describe('CLI flags', () => {
  it('--replayCacheSize and --maxTimeAhead refuse bad values with one line', async () => {
    for (const [flag, v] of [['--replayCacheSize', '0'], ['--maxTimeAhead', 'x']] as const) {
      const r = await runCli(['wsserver', '--listen', `${LOOPBACK}:0`, '--password', 'p', flag, v]);
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(flag);
    }
  });
});

describe('10,000 quick tunnels through our client', () => {
  it('none is refused as a replay', async () => {
    const echo = await startEcho();
    const pair = await startPair();
    const TOTAL = 10_000;
    const CONCURRENCY = 32;
    let next = 0;
    let failed = 0;
    try {
      const worker = async () => {
        while (next < TOTAL) {
          next++;
          try {
            const s = await socksConnect(pair.socksPort, { type: 'ipv4', host: LOOPBACK, port: echo.port });
            s.write('q');
            const got = await readExactly(s, 1, 10_000);
            if (got.length !== 1) failed++;
            s.destroy();
          } catch {
            failed++;
          }
        }
      };
      await Promise.all(Array.from({ length: CONCURRENCY }, worker));
      expect(failed).toBe(0);
      expect(echo.connections()).toBe(TOTAL);
      expect(pair.serverLog.filter((e) => e['code'] === ErrorCodes.REPLAY)).toEqual([]);
    } finally {
      await pair.close();
      await echo.close();
    }
  }, 120_000);
});
