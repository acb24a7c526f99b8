/**
 * `make attack` = `npx tsx bench/attack.ts`: the table of issue 10, measured again against a
 * live CLI wsserver under a descriptor limit, with hostile clients written here (bench/hostile.ts),
 * independently of the project's tests. Every row starts fresh processes.
 *
 *   npx tsx bench/attack.ts [--only a,b] [--nofile N] [--serverArgs "..."] [--out FILE] [--quick]
 *     rows: refused slowloris closetime replay emfile clientlog probes reset
 *     --nofile             descriptor limit of the wsserver (default 1024)
 *     --serverArgs         extra wsserver flags, e.g. "--headTimeout 5 --maxPending 512"
 *     --refusedWait S      how long after the refused requests the descriptors are counted (10)
 *     --slowloris N        slowloris connections (3000, reconnecting; first 100 alone are timed); --slowlorisSeconds S (30)
 *     --slowlorisInterval S  seconds between header bytes (1; the issue's attack used 5)
 *     --closeCap S         how long the close-time row waits for the server to close (45)
 *     --probes N           bad probes (6000)
 *     --quick              small counts and waits (a smoke run); no results file
 *     --out                where the table goes (default bench/results/attack.txt)
 */
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import {
  boolFlag, brookHello, type Child, connectTcp, echoServer, flag, freePort, hangUp, ipv4Address, listenTcp, logEntries, now, numFlag,
  type Pair, PASSWORD, pool, quantile, readUntil, RESULTS, sleep, socketCount, socksConnect, startBrook, startPair, startProcess,
  stopChild, stopPair, table, tunnelRoundTrip, upgrade, upgradeRequest, waitPort, watchClose, WS_PATH,
} from './hostile.js';

const quick = boolFlag('quick');
const NOFILE = numFlag('nofile', 1024);
const SERVER_ARGS = (flag('serverArgs') ?? '').split(' ').filter(Boolean);
const REFUSED_COUNT = quick ? 60 : 300;
const REFUSED_WAIT_S = numFlag('refusedWait', quick ? 3 : 10);
/** The "few more bytes later" of a refused request. */
const TRAILING_BYTES = Buffer.from('more\r\n');
const TRAILING_DELAY_MS = 300;
const SLOW_CONNS = numFlag('slowloris', quick ? 300 : 3000);
const SLOW_SECONDS = numFlag('slowlorisSeconds', quick ? 8 : 30);
const SLOW_INTERVAL_S = numFlag('slowlorisInterval', 1);
const SLOW_HEAD = Buffer.from(`GET ${WS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: `);
const SLOW_RECONNECT_MS = 1000;
/** Below the pending cap: this many slowloris connections, each timed until the server closes it. */
const SLOW_ALONE = 100;
const SLOW_ALONE_CAP_S = 120;
const REAL_TUNNEL_EVERY_MS = 500;
const REAL_TUNNEL_TIMEOUT_MS = 3000;
const CLOSE_MAX_K = 100;
const CLOSE_CAP_S = numFlag('closeCap', quick ? 35 : 45);
/** Where a Brook stream's client nonce (12) and sealed length (18) end. */
const NONCE_END = 12;
const SEALED_LENGTH_END = 30;
const REPLAYS = 20;
const REPLAY_WINDOW_MS = 2000;
const EMFILE_NOFILE = 96;
const EMFILE_MAX_TUNNELS = 80;
const CLIENT_FAILURES = 10;
const PROBES = numFlag('probes', quick ? 600 : 6000);
const PROBE_CONCURRENCY = 100;
const DOWNLOAD_KILL_AFTER = 1024 * 1024;
const RESET_WATCH_MS = 10_000;
const out = flag('out') ?? (quick ? undefined : join(RESULTS, 'attack.txt'));
const only = flag('only')?.split(',');

const logLine = (m: string) => process.stderr.write(`[attack] ${m}\n`);
const s1 = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

interface Row {
  tried: string;
  measured: string;
  upstream: string;
}

async function pair(o: Parameters<typeof startPair>[0] = {}): Promise<Pair> {
  return startPair({ nofile: NOFILE, ...o, serverArgs: [...SERVER_ARGS, ...(o.serverArgs ?? [])] });
}

// ---------------------------------------------------------------- rows

/** Refused upgrades (404 / 405 / 400), a few bytes later, then FIN or RST: descriptors still held. */
async function refused(): Promise<Row> {
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
      const s = await connectTcp(p.serverPort, '127.0.0.1', 5000, true);
      s.on('error', () => {});
      s.write(v.req);
      const r = await readUntil(s, (b) => b.includes('\r\n\r\n'), 3000);
      const got = /^HTTP\/1\.1 (\d{3})/.exec(r.data.toString('latin1'))?.[1] ?? 'none';
      statuses.set(`${v.status}->${got}`, (statuses.get(`${v.status}->${got}`) ?? 0) + 1);
      await sleep(TRAILING_DELAY_MS);
      if (!s.destroyed) s.write(TRAILING_BYTES);
      await sleep(50);
      hangUp(s, way === 'RST');
      if (way === 'FIN') setTimeout(() => s.destroy(), 1000);
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
async function slowloris(): Promise<Row> {
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
    const s = net.connect({ host: '127.0.0.1', port: p.serverPort });
    let opened = 0;
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    s.on('connect', () => {
      opened = now();
      open.add(s);
      const drip = () => {
        if (s.destroyed) return;
        s.write(sent < SLOW_HEAD.length ? SLOW_HEAD.subarray(sent, sent + 1) : 'a');
        sent++;
        timer = setTimeout(drip, SLOW_INTERVAL_S * 1000);
      };
      drip();
    });
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      if (opened) {
        open.delete(s);
        if (running) heldMs.push(now() - opened);
      } else connectFailures++;
      // an attacker reconnects (not in a tight loop: that would be a different attack, a SYN flood)
      if (running) setTimeout(attacker, SLOW_RECONNECT_MS);
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
async function closetime(): Promise<Row> {
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

/** One real tunnel recorded on the wire, replayed 20 times within 2 s. */
async function replayWith(workers: number): Promise<string> {
  const dst = await echoServer();
  const p = await pair({ noClient: true, serverArgs: workers > 1 ? ['--workers', String(workers)] : [] });
  const recorded: Buffer[][] = [];
  const { srv: proxy, port: proxyPort } = await listenTcp((c) => {
    const rec: Buffer[] = [];
    recorded.push(rec);
    const up = net.connect({ host: '127.0.0.1', port: p.serverPort });
    c.on('data', (d: Buffer) => {
      rec.push(Buffer.from(d));
      up.write(d);
    });
    up.on('data', (d: Buffer) => c.write(d));
    c.on('end', () => up.end());
    up.on('end', () => c.end());
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
    c.on('close', () => up.destroy());
  });
  const socksPort = await freePort();
  const client = startBrook('wsclient', ['wsclient', '--wsserver', `ws://127.0.0.1:${proxyPort}${WS_PATH}`, '--password', PASSWORD, '--socks5', `127.0.0.1:${socksPort}`]);
  await waitPort(socksPort, client);
  const ok = await tunnelRoundTrip(socksPort, dst.port);
  await sleep(300);
  await stopChild(client);
  const streams = recorded.map((r) => Buffer.concat(r)).sort((a, b) => b.length - a.length);
  const stream = streams[0] ?? Buffer.alloc(0);
  const headEnd = stream.indexOf('\r\n\r\n') + 4;
  const base = dst.connections();
  const t0 = now();
  await Promise.all(
    Array.from({ length: REPLAYS }, async (_, i) => {
      await sleep((i * REPLAY_WINDOW_MS) / REPLAYS);
      const s = await connectTcp(p.serverPort);
      s.on('error', () => {});
      s.write(stream.subarray(0, headEnd));
      await readUntil(s, (b) => b.includes('\r\n\r\n'), 2000);
      s.write(stream.subarray(headEnd));
      await readUntil(s, () => false, 1000);
      s.destroy();
    }),
  );
  const spanMs = now() - t0;
  await sleep(500);
  const replayed = dst.connections() - base;
  proxy.close();
  dst.close();
  await stopPair(p);
  return `workers ${workers}: original tunnel ${ok ? 'ok' : 'FAILED'} (${base} destination connection), ${REPLAYS} replays in ${s1(spanMs)} -> ${replayed} more destination connections`;
}

async function replay(): Promise<Row> {
  return {
    tried: `one real tunnel (wsclient, Brook mode) recorded on the wire, replayed ${REPLAYS} times within ${REPLAY_WINDOW_MS / 1000} s, with --workers 1 and 2`,
    measured: `${await replayWith(1)}; ${await replayWith(2)}`,
    upstream: 'same: 20 more connections (no replay cache)',
  };
}

function summarize(entries: Array<Record<string, unknown>>, keep: (e: Record<string, unknown>) => boolean): string {
  const by = new Map<string, number>();
  for (const e of entries.filter(keep)) {
    const what = [e['msg'], e['code']].filter(Boolean).join(' ') || '?';
    const k = `${what}${/EMFILE|ENFILE/.test(JSON.stringify(e)) ? ' (EMFILE)' : ''}`;
    by.set(k, (by.get(k) ?? 0) + 1);
  }
  return [...by].map(([k, n]) => `${k} x${n}`).join(', ') || 'nothing';
}

/** Out of descriptors at accept: tunnels held open until the server's limit is reached. */
async function emfile(): Promise<Row> {
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
async function clientlog(): Promise<Row> {
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
async function probes(): Promise<Row> {
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

const DESTINATION_SCRIPT = `
const net = require('node:net');
const chunk = Buffer.alloc(64 * 1024, 0x61);
const srv = net.createServer({ pauseOnConnect: true }, (c) => {
  // never reads: what the client sent stays unread, so the kernel answers a kill with an RST
  c.on('error', () => {});
  const pump = () => { while (c.write(chunk)) {} };
  c.on('drain', pump);
  pump();
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
`;

/** A destination that dies or resets mid-download: what the SOCKS5 client sees. */
async function reset(): Promise<Row> {
  const p = await pair();
  const download = async (dstPort: number, cut: () => void): Promise<string> => {
    const s = await socksConnect(p.socksPort, dstPort);
    s.write(Buffer.alloc(1000, 0x62));
    let got = 0;
    let cutDone = false;
    let t0 = now();
    const end = new Promise<string>((resolve) => {
      const t = setTimeout(() => resolve('nothing (hangs)'), RESET_WATCH_MS);
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (!cutDone && got >= DOWNLOAD_KILL_AFTER) {
          cutDone = true;
          t0 = now();
          cut();
        }
      });
      s.on('end', () => (clearTimeout(t), resolve('clean FIN')));
      s.on('error', (e: NodeJS.ErrnoException) => (clearTimeout(t), resolve(`reset (${e.code})`)));
    });
    const way = await end;
    s.destroy();
    return `${way} after ${(got / 1024 / 1024).toFixed(1)} MiB (${s1(now() - t0)} after the cut)`;
  };
  const dest = startProcess('destination', process.execPath, ['-e', DESTINATION_SCRIPT]);
  while (!dest.lines.length && !dest.exited) await sleep(50);
  const killed = await download(Number(dest.lines[0]), () => process.kill(dest.pid, 'SIGKILL'));
  const { srv: rstSrv, port: rstPort } = await listenTcp((c) => {
    c.on('error', () => {});
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let sent = 0;
    const pump = () => {
      while (sent < 2 * DOWNLOAD_KILL_AFTER) {
        sent += chunk.length;
        if (!c.write(chunk)) return void c.once('drain', pump);
      }
      c.resetAndDestroy();
    };
    pump();
  });
  const rst = await download(rstPort, () => {});
  rstSrv.close();
  const { srv: finSrv, port: finPort } = await listenTcp((c) => {
    c.on('error', () => {});
    c.end(Buffer.alloc(2 * DOWNLOAD_KILL_AFTER, 0x61));
  });
  const fin = await download(finPort, () => {});
  finSrv.close();
  await stopPair(p);
  return {
    tried: 'a download through wsclient -> wsserver; the destination is killed (kill -9, unread data, so its kernel sends an RST) or resets (explicit RST) mid-download; control: a clean FIN',
    measured: `kill -9: ${killed}; RST: ${rst}; clean FIN: ${fin}`,
    upstream: 'hangs (brook-ts before: clean FIN, truncation looks like success)',
  };
}

// ---------------------------------------------------------------- main

const ROWS: Array<[string, () => Promise<Row>]> = [
  ['refused', refused],
  ['slowloris', slowloris],
  ['closetime', closetime],
  ['replay', replay],
  ['emfile', emfile],
  ['clientlog', clientlog],
  ['probes', probes],
  ['reset', reset],
];

async function main(): Promise<void> {
  const t0 = now();
  const rows: Row[] = [];
  const timings: string[] = [];
  for (const [name, run] of ROWS) {
    if (only && !only.includes(name)) continue;
    logLine(`${name} ...`);
    const t = now();
    try {
      rows.push(await run());
    } catch (e) {
      rows.push({ tried: name, measured: `harness error: ${(e as Error).message}`, upstream: '' });
    }
    timings.push(`${name} ${s1(now() - t)}`);
    logLine(`${name} done in ${s1(now() - t)}: ${rows.at(-1)!.measured}`);
  }
  const text = [
    `brook-ts attack table, ${new Date().toISOString()}; wsserver at ulimit -n ${NOFILE}${SERVER_ARGS.length ? `, flags ${SERVER_ARGS.join(' ')}` : ''}`,
    '',
    table(['what was tried', 'brook-ts measured', 'upstream (from the issue)'], rows.map((r) => [r.tried, r.measured, r.upstream])),
    '',
    `rows: ${timings.join(', ')}; total ${s1(now() - t0)}`,
  ].join('\n');
  process.stdout.write(text + '\n');
  if (out) writeFileSync(out, text + '\n');
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`attack: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(2);
  },
);
