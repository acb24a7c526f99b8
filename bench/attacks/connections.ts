/**
 * Rows of `make attack` on the unauthenticated phase, where a prober holds the server's
 * descriptors and time: refused upgrades, slowloris, and when (and how) the server closes after the 101.
 */
import net from 'node:net';
import {
  connectTcp, echoServer, now, numFlag, pool, quantile, refusedUpgrade, sleep, SLOW_HEAD, slowlorisConnection, socketCount, stopPair,
  tunnelRoundTrip, upgrade, upgradeRequest, watchClose,
} from '../hostile.js';
import { CLOSE_CAP_S, NOFILE, pair, quick, type Row, s1 } from './shared.js';

const REFUSED_COUNT = quick ? 60 : 300;
const REFUSED_WAIT_S = numFlag('refusedWait', quick ? 3 : 10);
/** The "few more bytes later" of a refused request. */
const TRAILING_BYTES = Buffer.from('more\r\n');
const TRAILING_DELAY_MS = 300;
const SLOW_CONNS = numFlag('slowloris', quick ? 300 : 3000);
const SLOW_SECONDS = numFlag('slowlorisSeconds', quick ? 8 : 30);
const SLOW_INTERVAL_S = numFlag('slowlorisInterval', 1);
const SLOW_RECONNECT_MS = 1000;
/** Below the pending cap: this many slowloris connections, each timed until the server closes it. */
const SLOW_ALONE = 100;
const SLOW_ALONE_CAP_S = 120;
const REAL_TUNNEL_EVERY_MS = 500;
const REAL_TUNNEL_TIMEOUT_MS = 3000;
const CLOSE_MAX_K = 100;
/** Where a Brook stream's client nonce (12) and sealed length (18) end. */
const NONCE_END = 12;
const SEALED_LENGTH_END = 30;

/** Refused upgrades (404 / 405 / 400), a few bytes later, then FIN or RST: descriptors still held. */
export async function refused(): Promise<Row> {
  const p = await pair({ noClient: true });
  const variants = [
    { status: 404, req: upgradeRequest(p.serverPort, { path: '/other' }) },
    { status: 405, req: upgradeRequest(p.serverPort, { method: 'OPTIONS' }) },
    { status: 400, req: upgradeRequest(p.serverPort, { version: '12' }) },
    { status: 400, req: upgradeRequest(p.serverPort, { key: 'not-base64-16' }) },
  ];
  const held: Record<string, number> = {};
  const statuses = new Map<string, number>();
  for (const way of ['FIN', 'RST'] as const) {
    const base = socketCount(p.server.pid);
    await pool(REFUSED_COUNT / 2, 50, async (i) => {
      const v = variants[i % variants.length]!;
      const got = await refusedUpgrade(p.serverPort, v.req, {
        answerTimeoutMs: 3000,
        trailing: TRAILING_BYTES,
        trailingDelayMs: TRAILING_DELAY_MS,
        hangUpDelayMs: 50,
        rst: way === 'RST',
      });
      statuses.set(`${v.status}->${got}`, (statuses.get(`${v.status}->${got}`) ?? 0) + 1);
    });
    await sleep(REFUSED_WAIT_S * 1000);
    held[way] = Math.max(0, socketCount(p.server.pid) - base);
  }
  await stopPair(p);
  const total = held['FIN']! + held['RST']!;
  return {
    tried: `${REFUSED_COUNT} refused upgrades (404 other path, 405 OPTIONS, 400 bad version/key), "${TRAILING_BYTES.toString().trim()}" ${TRAILING_DELAY_MS} ms later, then FIN (half) or RST (half)`,
    measured: `${total} of ${REFUSED_COUNT} still open after ${REFUSED_WAIT_S} s (FIN ${held['FIN']}, RST ${held['RST']}); answers ${[...statuses].map(([k, n]) => `${k} x${n}`).join(', ')}`,
    upstream: 'freed (brook-ts before: 300 of 300 still open after 65 s)',
  };
}

/** SLOW_ALONE slowloris connections (no reconnecting, no cap reached): how long the server holds each. */
async function slowAlone(serverPort: number): Promise<number[]> {
  const head = SLOW_HEAD;
  return Promise.all(
    Array.from({ length: SLOW_ALONE }, async () => {
      const s = await connectTcp(serverPort);
      const t0 = now();
      let sent = 0;
      const drip = setInterval(() => !s.destroyed && s.write(sent < head.length ? head.subarray(sent, sent + 1) : 'a', () => sent++), SLOW_INTERVAL_S * 1000);
      s.write(head.subarray(0, 1));
      sent = 1;
      const r = await watchClose(s, t0, SLOW_ALONE_CAP_S * 1000);
      clearInterval(drip);
      s.destroy();
      return r.way === 'open' ? Infinity : r.ms;
    }),
  );
}

/** 3,000 slowloris connections under the descriptor limit while a real tunnel is tried every 500 ms. */
export async function slowloris(): Promise<Row> {
  const p = await pair();
  const alone = await slowAlone(p.serverPort);
  const echo = await echoServer();
  const before = await tunnelRoundTrip(p.socksPort, echo.port);
  const heldMs: number[] = [];
  const open = new Set<net.Socket>();
  let connectFailures = 0;
  let running = true;
  const t0 = now();
  const attacker = (): void => {
    if (!running) return;
    slowlorisConnection(p.serverPort, SLOW_INTERVAL_S * 1000, {
      opened: (s) => open.add(s),
      closed: (s, opened) => {
        if (opened) {
          open.delete(s);
          if (running) heldMs.push(now() - opened);
        } else connectFailures++;
        // an attacker reconnects (not in a tight loop: that would be a different attack, a SYN flood)
        if (running) setTimeout(attacker, SLOW_RECONNECT_MS);
      },
    });
  };
  for (let i = 0; i < SLOW_CONNS; i++) {
    attacker();
    if (i % 200 === 199) await sleep(50);
  }
  const tries: boolean[] = [];
  const pending: Array<Promise<void>> = [];
  while (now() - t0 < SLOW_SECONDS * 1000) {
    pending.push(tunnelRoundTrip(p.socksPort, echo.port, REAL_TUNNEL_TIMEOUT_MS).then((ok) => void tries.push(ok)));
    await sleep(REAL_TUNNEL_EVERY_MS);
  }
  const stillOpen = open.size;
  running = false;
  await Promise.all(pending);
  for (const s of open) s.destroy();
  echo.close();
  await stopPair(p);
  const okCount = tries.filter(Boolean).length;
  let streak = 0;
  let longest = 0;
  for (const ok of tries) {
    streak = ok ? 0 : streak + 1;
    longest = Math.max(longest, streak);
  }
  const held = heldMs.length
    ? `closed by the server after median ${s1(quantile(heldMs, 0.5))}, p90 ${s1(quantile(heldMs, 0.9))}, max ${s1(heldMs.reduce((a, b) => Math.max(a, b), 0))} (${heldMs.length} closed, ${connectFailures} connects failed)`
    : 'none closed by the server';
  return {
    tried: `${SLOW_CONNS} slowloris connections (one header byte every ${SLOW_INTERVAL_S} s, reconnecting) for ${SLOW_SECONDS} s, wsserver at ulimit -n ${NOFILE}; a real tunnel through wsclient every ${REAL_TUNNEL_EVERY_MS} ms`,
    measured: `${SLOW_ALONE} alone: held median ${s1(quantile(alone, 0.5))}, max ${s1(Math.max(...alone))}; ${SLOW_CONNS} at once: ${held}; ${stillOpen} still open at the end; real tunnels ${okCount} of ${tries.length} ok (longest failure run ${((longest * REAL_TUNNEL_EVERY_MS) / 1000).toFixed(1)} s; before the attack: ${before ? 'ok' : 'failed'})`,
    upstream: 'closed after ~5 s (brook-ts before: held ~90 s; every real tunnel failed for 90 s)',
  };
}

/** After the 101: k random bytes (0..100), with and without FIN: when and how the server closes. */
export async function closetime(): Promise<Row> {
  const p = await pair({ noClient: true });
  const results: Array<{ k: number; fin: boolean; way: string; ms: number }> = [];
  const cases = Array.from({ length: CLOSE_MAX_K + 1 }, (_, k) => [{ k, fin: true }, { k, fin: false }]).flat();
  await Promise.all(
    cases.map(async ({ k, fin }) => {
      const u = await upgrade(p.serverPort);
      const bytes = Buffer.alloc(k);
      for (let i = 0; i < k; i++) bytes[i] = Math.floor(Math.random() * 256);
      const t0 = now();
      const closing = watchClose(u.s, t0, CLOSE_CAP_S * 1000);
      if (k > 0) u.s.write(bytes);
      if (fin) u.s.end();
      const r = await closing;
      u.s.destroy();
      results.push({ k, fin, way: r.way, ms: r.ms });
    }),
  );
  await stopPair(p);
  const group = (name: string, f: (r: (typeof results)[0]) => boolean) => {
    const g = results.filter(f);
    const closed = g.filter((r) => r.way !== 'open').map((r) => r.ms);
    const ways = [...new Set(g.map((r) => r.way))].join('/');
    return `${name}: ${closed.length ? `${s1(Math.min(...closed))}..${s1(Math.max(...closed))}` : '-'} ${ways}${g.some((r) => r.way === 'open') ? ` (${g.filter((r) => r.way === 'open').length} open at ${CLOSE_CAP_S} s)` : ''}`;
  };
  const at = (r: (typeof results)[0]) => (r.way === 'open' ? CLOSE_CAP_S * 1000 : r.ms);
  const spreadOf = (g: typeof results) => Math.max(...g.map(at)) - Math.min(...g.map(at));
  const waysOf = (g: typeof results) => new Set(g.map((r) => r.way)).size;
  /** Closes further apart than this are a tell. */
  const SAME_CLOSE_MS = 2000;
  const fin = results.filter((r) => r.fin);
  const noFin = results.filter((r) => !r.fin);
  const kFree = spreadOf(fin) < SAME_CLOSE_MS && spreadOf(noFin) < SAME_CLOSE_MS && waysOf(fin) === 1 && waysOf(noFin) === 1;
  const finFree = spreadOf(results) < SAME_CLOSE_MS && waysOf(results) === 1;
  return {
    tried: `after the 101: k = 0..${CLOSE_MAX_K} random bytes, with and without FIN (${cases.length} connections at once)`,
    measured: [
      group(`FIN k<${NONCE_END}`, (r) => r.fin && r.k < NONCE_END),
      group(`FIN ${NONCE_END}<=k<${SEALED_LENGTH_END}`, (r) => r.fin && r.k >= NONCE_END && r.k < SEALED_LENGTH_END),
      group(`FIN k>=${SEALED_LENGTH_END}`, (r) => r.fin && r.k >= SEALED_LENGTH_END),
      group(`no FIN k<${SEALED_LENGTH_END}`, (r) => !r.fin && r.k < SEALED_LENGTH_END),
      group(`no FIN k>=${SEALED_LENGTH_END}`, (r) => !r.fin && r.k >= SEALED_LENGTH_END),
      `close ${kFree ? 'independent of k' : 'DEPENDS on k'}, ${finFree ? 'independent of the FIN' : 'DEPENDS on the FIN'} (spread ${s1(spreadOf(results))})`,
    ].join('; '),
    upstream: 'the same close for all (brook-ts before: <30 bytes then FIN closed after 30 s, >=30 at once)',
  };
}
