/**
 * Rows of `make attack` on what the server and the client write to their logs: out of descriptors
 * at accept, failed client tunnels, and thousands of bad probes.
 */
import net from 'node:net';
import {
  brookHello, type Child, echoServer, freePort, hangUp, httpConnect, ipv4Address, logEntries, now, numFlag, PASSWORD, pool, readUntil, sleep,
  socksConnect, startBrook, startPair, stopChild, stopPair, tunnelRoundTrip, upgrade, waitPort, WS_PATH,
} from '../hostile.js';
import { CLOSE_CAP_S, pair, quick, type Row, SERVER_ARGS, summarize } from './shared.js';

const EMFILE_NOFILE = 96;
const EMFILE_MAX_TUNNELS = 80;
const CLIENT_FAILURES = 10;
const PROBES = numFlag('probes', quick ? 600 : 6000);
const DIAL_FAILURES = numFlag('dialFailures', quick ? 300 : 2000);
const DIAL_CONCURRENCY = 50;
/** After the failures: the rate limiter's last interval ends and its counts are written. */
const LOG_SETTLE_MS = 2500;
const PROBE_CONCURRENCY = 100;

/** Out of descriptors at accept: tunnels held open until the server's limit is reached. */
export async function emfile(): Promise<Row> {
  const echo = await echoServer();
  const p = await startPair({ nofile: EMFILE_NOFILE, serverArgs: SERVER_ARGS });
  const from = p.server.lines.length;
  const held: net.Socket[] = [];
  let firstFailure = -1;
  for (let i = 0; i < EMFILE_MAX_TUNNELS; i++) {
    try {
      const s = await socksConnect(p.socksPort, echo.port, 3000);
      s.write('x');
      const r = await readUntil(s, (b) => b.length >= 1, 3000);
      if (r.data.length < 1) throw new Error('no echo');
      held.push(s);
    } catch {
      if (firstFailure < 0) firstFailure = held.length;
    }
  }
  await sleep(1500);
  const during = logEntries(p.server, from);
  for (const s of held) s.destroy();
  await sleep(3000);
  const recovered = await tunnelRoundTrip(p.socksPort, echo.port);
  const alive = !p.server.exited;
  await stopPair(p);
  echo.close();
  return {
    tried: `wsserver at ulimit -n ${EMFILE_NOFILE}: real tunnels opened and held until it runs out of descriptors (${EMFILE_MAX_TUNNELS} tries), then all closed`,
    measured: `${held.length} tunnels held, first failure at #${firstFailure}; server logged: ${summarize(during, (e) => e['msg'] !== 'listening')}; afterwards ${alive ? 'alive' : 'DEAD'}, new tunnel ${recovered ? 'ok (recovered)' : 'FAILED'}`,
    upstream: 'logged (brook-ts before: silent; dial failures logged as BROOK_ERR_INTERNAL)',
  };
}

/** A failed client tunnel: how many lines the wsclient writes for it. */
export async function clientlog(): Promise<Row> {
  const linesPerFailure = async (c: Child, socksPort: number, dstPort: number): Promise<number> => {
    await sleep(300);
    const from = c.lines.length;
    for (let i = 0; i < CLIENT_FAILURES; i++) await socksConnect(socksPort, dstPort, 5000).then((s) => s.destroy(), () => {});
    await sleep(1500);
    return (c.lines.length - from) / CLIENT_FAILURES;
  };
  // the server is down
  const deadPort = await freePort();
  const socksPort = await freePort();
  const lone = startBrook('wsclient', ['wsclient', '--wsserver', `ws://127.0.0.1:${deadPort}${WS_PATH}`, '--password', PASSWORD, '--socks5', `127.0.0.1:${socksPort}`]);
  await waitPort(socksPort, lone);
  const down = await linesPerFailure(lone, socksPort, 9);
  const sample = lone.lines.at(-1) ?? '';
  await stopChild(lone);
  // the destination refuses
  const p = await pair();
  const closedPort = await freePort();
  const serverFrom = p.server.lines.length;
  const refusedLines = await linesPerFailure(p.client!, p.socksPort, closedPort);
  const serverLines = (p.server.lines.length - serverFrom) / CLIENT_FAILURES;
  await stopPair(p);
  return {
    tried: `${CLIENT_FAILURES} failed tunnels through wsclient: server down; destination refused`,
    measured: `server down: ${down} wsclient lines per failure; destination refused: ${refusedLines} wsclient + ${serverLines} wsserver lines per failure (e.g. ${sample.slice(0, 160)})`,
    upstream: 'once (brook-ts before: twice, wsclient then the SOCKS5 server)',
  };
}

/** 6,000 bad probes: how many log lines they cost. */
export async function probes(): Promise<Row> {
  const p = await pair({ noClient: true });
  const from = p.server.lines.length;
  const dst = ipv4Address('127.0.0.1', 9);
  const kinds = ['wrong password', 'garbage after upgrade', 'stale time'] as const;
  await pool(PROBES, PROBE_CONCURRENCY, async (i) => {
    const kind = kinds[i % kinds.length]!;
    try {
      const u = await upgrade(p.serverPort);
      const bytes =
        kind === 'wrong password'
          ? brookHello('wrong-password', dst)
          : kind === 'stale time'
            ? brookHello(PASSWORD, dst, { timeSec: Math.floor(Date.now() / 1000) - 3600 })
            : Buffer.from(Array.from({ length: 1 + (i % 200) }, () => Math.floor(Math.random() * 256)));
      u.s.write(bytes);
      await sleep(20);
      hangUp(u.s, true);
    } catch {
      /* counted by the server's log, if at all */
    }
  });
  // lines may be written when the drain ends: wait until the count is still for 3 s
  let last = -1;
  const t0 = now();
  while (p.server.lines.length !== last && now() - t0 < CLOSE_CAP_S * 1000) {
    last = p.server.lines.length;
    await sleep(3000);
  }
  const entries = logEntries(p.server, from);
  await stopPair(p);
  return {
    tried: `${PROBES} bad probes after the upgrade (wrong password, garbage, stale time; RST after 20 ms), ${PROBE_CONCURRENCY} at a time`,
    measured: `${entries.length} log lines (${summarize(entries, () => true)})`,
    upstream: 'same: 6,000 lines (brook-ts before: 6,000 lines)',
  };
}

/** Lines a child wrote since `from`: how many, how many `suppressed` counts, and the lines they held back. */
function lineCost(c: Child, from: number): string {
  const entries = logEntries(c, from).filter((e) => e['msg'] !== 'listening');
  const counts = entries.filter((e) => e['msg'] === 'suppressed');
  const held = counts.reduce((n, e) => n + Number(e['count'] ?? 0), 0);
  return `${entries.length} lines (${counts.length} of them "suppressed" counts, holding back ${held})`;
}

/**
 * Dial failures in bulk: DIAL_FAILURES tunnels to a destination that refuses (the server's dial fails), then
 * as many SOCKS5 CONNECTs and HTTP CONNECTs through a wsclient whose server is down (the client's dial fails).
 */
export async function dialfail(): Promise<Row> {
  const p = await pair({ http: true });
  const closedPort = await freePort();
  const serverFrom = p.server.lines.length;
  const t0 = now();
  await pool(DIAL_FAILURES, DIAL_CONCURRENCY, async () => {
    await socksConnect(p.socksPort, closedPort, 5000).then((s) => s.destroy(), () => {});
  });
  const spanS = (now() - t0) / 1000;
  await sleep(LOG_SETTLE_MS);
  const serverCost = lineCost(p.server, serverFrom);
  await stopPair(p);

  const deadPort = await freePort();
  const socksPort = await freePort();
  const httpPort = await freePort();
  const lone = startBrook('wsclient', [
    'wsclient', '--wsserver', `ws://127.0.0.1:${deadPort}${WS_PATH}`, '--password', PASSWORD, '--socks5', `127.0.0.1:${socksPort}`, '--http', `127.0.0.1:${httpPort}`,
  ]);
  await waitPort(socksPort, lone);
  await waitPort(httpPort, lone);
  const clientFrom = lone.lines.length;
  const statuses = new Map<number, number>();
  await pool(DIAL_FAILURES, DIAL_CONCURRENCY, async (i) => {
    if (i % 2 === 0) await socksConnect(socksPort, 9, 5000).then((s) => s.destroy(), () => {});
    else {
      const st = await httpConnect(httpPort, 9, 5000).catch(() => 0);
      statuses.set(st, (statuses.get(st) ?? 0) + 1);
    }
  });
  await sleep(LOG_SETTLE_MS);
  const clientCost = lineCost(lone, clientFrom);
  await stopChild(lone);
  return {
    tried: `${DIAL_FAILURES} tunnels to a destination that refuses (${DIAL_CONCURRENCY} at a time, ${spanS.toFixed(1)} s); ${DIAL_FAILURES} SOCKS5 + HTTP CONNECTs through a wsclient whose server is down`,
    measured: `wsserver: ${serverCost}; wsclient: ${clientCost}; HTTP answers ${[...statuses].map(([k, n]) => `${k} x${n}`).join(', ')}`,
    upstream: 'one line each (brook-ts before: one wsserver line per refused destination, none held back)',
  };
}
