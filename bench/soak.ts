/**
 * `make soak` = `npx tsx bench/soak.ts`: mixed load for 10 minutes against a CLI wsserver +
 * wsclient pair (child processes of dist/cmd/brook-ts.js), their RSS and descriptors sampled
 * every 10 s, printed as a table, charted (soak.svg) and kept as JSON (soak.json).
 *
 * Load, all at once, until the time is up:
 *   tunnels   CHURN_WORKERS loops: SOCKS5 CONNECT to an echo server, a round trip, close
 *   bulk      one loop: 16 MiB up or down (alternating), SHA-256 checked at the other end, then a pause
 *   udp       one loop: UDP ASSOCIATE, UDP_BURST echoed datagrams, close
 *   probes    one every PROBE_EVERY_MS: wrong password, garbage after the upgrade, or a refused
 *             upgrade (404/405/400) with bytes after the answer, then FIN or RST
 *   slowloris SLOWLORIS connections sending one header byte every SLOW_INTERVAL_MS, reconnecting
 * Verdict: the median of the last samples against the median of those right after the warm-up.
 *
 *   npx tsx bench/soak.ts [--minutes M] [--sample S] [--out DIR] [--nofile N]
 *     --minutes  duration (default 10; --minutes 1 is a smoke run)
 *     --out      where soak.json, soak.svg and soak.txt go (default bench/results)
 */
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import { join, resolve } from 'node:path';
import {
  brookHello, connectTcp, echoServer, fdCount, flag, hangUp, ipv4Address, listenTcp, mib, now, numFlag, PASSWORD, readUntil, RESULTS, rssKiB,
  sleep, socksAssociate, socksConnect, startPair, stopPair, table, tunnelRoundTrip, udpEcho, upgrade, upgradeRequest, WS_PATH,
} from './hostile.js';

const MINUTES = numFlag('minutes', 10);
const SAMPLE_S = numFlag('sample', 10);
const NOFILE = flag('nofile') ? numFlag('nofile', 1024) : undefined;
const OUT = resolve(flag('out') ?? RESULTS);
const CHURN_WORKERS = 4;
const CHURN_PAUSE_MS = 20;
const BULK_MIB = 16;
/** Between bulk transfers: a mixed load, not a throughput benchmark hogging the 2 cores. */
const BULK_PAUSE_MS = 500;
const UDP_BURST = 20;
const UDP_SIZE = 1000;
const UDP_TIMEOUT_MS = 1000;
const PROBE_EVERY_MS = 100;
const SLOWLORIS = 50;
const SLOW_INTERVAL_MS = 2000;
const SLOW_RECONNECT_MS = 500;
/** The first WARM_UP_SHARE of the run is warm-up; FLAT_SAMPLES samples on each side are compared. */
const WARM_UP_SHARE = 0.2;
const FLAT_SAMPLES = 3;
const RSS_TOLERANCE = { share: 0.15, kib: 16 * 1024 };
const FD_TOLERANCE = { share: 0.15, count: 16 };
const MIB = 1024 * 1024;

const log = (m: string) => process.stderr.write(`[soak] ${m}\n`);

interface Counters {
  tunnelsOk: number;
  tunnelsFailed: number;
  bulkOk: number;
  bulkFailed: number;
  bulkMiB: number;
  udpSent: number;
  udpEchoed: number;
  probes: number;
  slowlorisClosed: number;
}
const zero = (): Counters => ({ tunnelsOk: 0, tunnelsFailed: 0, bulkOk: 0, bulkFailed: 0, bulkMiB: 0, udpSent: 0, udpEchoed: 0, probes: 0, slowlorisClosed: 0 });

interface Sample extends Counters {
  t: number;
  serverRssKiB: number;
  serverFds: number;
  clientRssKiB: number;
  clientFds: number;
  serverLogLines: number;
  clientLogLines: number;
}

const pattern = randomBytes(MIB);
const patternDigest = (() => {
  const h = createHash('sha256');
  for (let i = 0; i < BULK_MIB; i++) h.update(pattern);
  return h.digest();
})();

/** 'u': read BULK_MIB MiB, answer their SHA-256; 'd': send BULK_MIB MiB and end. */
async function bulkServer(): Promise<{ srv: net.Server; port: number }> {
  return listenTcp((c) => {
    c.on('error', () => c.destroy());
    c.once('data', (first: Buffer) => {
      if (first[0] === 0x75) {
        const h = createHash('sha256');
        let got = first.length - 1;
        h.update(first.subarray(1));
        c.on('data', (d: Buffer) => {
          h.update(d);
          got += d.length;
          if (got >= BULK_MIB * MIB) c.end(h.digest());
        });
      } else {
        let i = 0;
        const pump = () => {
          while (i < BULK_MIB) {
            i++;
            if (!c.write(pattern)) return void c.once('drain', pump);
          }
          c.end();
        };
        pump();
      }
    });
  });
}

async function writeAll(s: net.Socket, mibCount: number): Promise<void> {
  for (let i = 0; i < mibCount; i++) {
    if (!s.write(pattern)) await new Promise<void>((r, j) => (s.once('drain', r), s.once('close', () => j(new Error('closed')))));
  }
}

async function bulkOnce(socksPort: number, dstPort: number, up: boolean): Promise<boolean> {
  let s: net.Socket | undefined;
  try {
    s = await socksConnect(socksPort, dstPort);
    if (up) {
      s.write('u');
      await writeAll(s, BULK_MIB);
      const r = await readUntil(s, (b) => b.length >= 32, 60_000);
      return r.data.subarray(0, 32).equals(patternDigest);
    }
    s.write('d');
    const h = createHash('sha256');
    let got = 0;
    await new Promise<void>((resolveDone) => {
      s!.on('data', (d: Buffer) => {
        h.update(d);
        got += d.length;
      });
      s!.on('end', resolveDone);
      s!.on('close', resolveDone);
    });
    return got === BULK_MIB * MIB && h.digest().equals(patternDigest);
  } catch {
    return false;
  } finally {
    s?.destroy();
  }
}

async function udpOnce(socksPort: number, echoPort: number, c: Counters): Promise<void> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  let ctl: net.Socket | undefined;
  try {
    const a = await socksAssociate(socksPort);
    ctl = a.s;
    const hdr = Buffer.concat([Buffer.from([0, 0, 0]), ipv4Address('127.0.0.1', echoPort)]);
    for (let i = 0; i < UDP_BURST; i++) {
      const payload = randomBytes(UDP_SIZE);
      c.udpSent++;
      const ok = await new Promise<boolean>((r) => {
        const t = setTimeout(() => (sock.removeAllListeners('message'), r(false)), UDP_TIMEOUT_MS);
        sock.on('message', (m) => {
          if (m.subarray(hdr.length).equals(payload)) {
            clearTimeout(t);
            sock.removeAllListeners('message');
            r(true);
          }
        });
        sock.send(Buffer.concat([hdr, payload]), a.relayPort, '127.0.0.1');
      });
      if (ok) c.udpEchoed++;
    }
  } catch {
    /* counted as not echoed */
  } finally {
    ctl?.destroy();
    sock.close();
  }
}

/** One bad probe at the server, chosen by `i`. */
async function probeOnce(serverPort: number, i: number): Promise<void> {
  try {
    switch (i % 3) {
      case 0: {
        const u = await upgrade(serverPort);
        u.s.write(brookHello('wrong-password', ipv4Address('127.0.0.1', 9)));
        await sleep(50);
        hangUp(u.s, i % 2 === 0);
        return;
      }
      case 1: {
        const u = await upgrade(serverPort);
        u.s.write(randomBytes(1 + (i % 100)));
        await sleep(50);
        hangUp(u.s, i % 2 === 0);
        return;
      }
      default: {
        const s = await connectTcp(serverPort, '127.0.0.1', 5000, true);
        s.on('error', () => {});
        const variants = [{ path: '/other' }, { method: 'OPTIONS' }, { version: '12' }];
        s.write(upgradeRequest(serverPort, variants[i % variants.length]));
        await readUntil(s, (b) => b.includes('\r\n\r\n'), 2000);
        await sleep(100);
        if (!s.destroyed) s.write('trailing bytes\r\n');
        await sleep(20);
        hangUp(s, i % 2 === 0);
        setTimeout(() => s.destroy(), 1000);
      }
    }
  } catch {
    /* a refused probe is fine */
  }
}

function slowlorisLoop(serverPort: number, running: () => boolean, c: Counters): Set<net.Socket> {
  const open = new Set<net.Socket>();
  const head = Buffer.from(`GET ${WS_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: `);
  const one = () => {
    if (!running()) return;
    const s = net.connect({ host: '127.0.0.1', port: serverPort });
    let sent = 0;
    let timer: NodeJS.Timeout | undefined;
    s.on('connect', () => {
      open.add(s);
      const drip = () => {
        if (s.destroyed) return;
        s.write(sent < head.length ? head.subarray(sent, sent + 1) : 'a');
        sent++;
        timer = setTimeout(drip, SLOW_INTERVAL_MS);
      };
      drip();
    });
    s.on('data', () => {});
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      open.delete(s);
      c.slowlorisClosed++;
      setTimeout(one, SLOW_RECONNECT_MS);
    });
  };
  for (let i = 0; i < SLOWLORIS; i++) one();
  return open;
}

// ---------------------------------------------------------------- chart

function chart(samples: Sample[], verdict: string): string {
  const W = 900;
  const PANEL_H = 240;
  const LEFT = 70;
  const TOP = 50;
  const plotW = W - LEFT - 30;
  const plotH = PANEL_H - 60;
  const tMax = Math.max(1, ...samples.map((s) => s.t));
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const niceMax = (v: number) => {
    if (!(v > 0)) return 1;
    const p = 10 ** Math.floor(Math.log10(v));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  };
  const panel = (y0: number, title: string, series: Array<{ name: string; color: string; v: (s: Sample) => number }>) => {
    const max = niceMax(Math.max(...series.flatMap((se) => samples.map(se.v))));
    const base = y0 + 30 + plotH;
    const o: string[] = [`<text x="${LEFT}" y="${y0 + 16}" font-size="14" font-weight="bold">${esc(title)}</text>`];
    for (let i = 0; i <= 4; i++) {
      const y = base - (plotH * i) / 4;
      o.push(`<line x1="${LEFT}" x2="${LEFT + plotW}" y1="${y}" y2="${y}" stroke="#ddd"/>`);
      o.push(`<text x="${LEFT - 6}" y="${y + 4}" font-size="11" text-anchor="end">${+((max * i) / 4).toFixed(1)}</text>`);
    }
    for (let i = 0; i <= 5; i++) {
      const x = LEFT + (plotW * i) / 5;
      o.push(`<text x="${x}" y="${base + 16}" font-size="11" text-anchor="middle">${((tMax * i) / 5 / 60).toFixed(1)} min</text>`);
    }
    const warmX = LEFT + plotW * WARM_UP_SHARE;
    o.push(`<line x1="${warmX}" x2="${warmX}" y1="${base - plotH}" y2="${base}" stroke="#999" stroke-dasharray="4 3"/>`);
    series.forEach((se, i) => {
      const pts = samples.map((s) => `${(LEFT + (plotW * s.t) / tMax).toFixed(1)},${(base - (plotH * se.v(s)) / max).toFixed(1)}`).join(' ');
      o.push(`<polyline fill="none" stroke="${se.color}" stroke-width="2" points="${pts}"/>`);
      o.push(`<rect x="${LEFT + 10 + i * 160}" y="${y0 + 24}" width="12" height="3" fill="${se.color}"/><text x="${LEFT + 26 + i * 160}" y="${y0 + 29}" font-size="11">${esc(se.name)}</text>`);
    });
    return o.join('\n');
  };
  const H = TOP + PANEL_H * 2 + 20;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" font-size="16" text-anchor="middle" font-weight="bold">brook-ts soak: ${MINUTES} min of mixed load, sampled every ${SAMPLE_S} s</text>`,
    `<text x="${W / 2}" y="38" font-size="11" text-anchor="middle">${esc(verdict)} (dashed: end of warm-up)</text>`,
    panel(TOP, 'RSS (MiB)', [
      { name: 'wsserver', color: '#1f77b4', v: (s) => s.serverRssKiB / 1024 },
      { name: 'wsclient', color: '#d62728', v: (s) => s.clientRssKiB / 1024 },
    ]),
    panel(TOP + PANEL_H, 'open descriptors', [
      { name: 'wsserver', color: '#1f77b4', v: (s) => s.serverFds },
      { name: 'wsclient', color: '#d62728', v: (s) => s.clientFds },
    ]),
    '</svg>',
  ].join('\n');
}

// ---------------------------------------------------------------- main

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

function flatness(samples: Sample[], durationS: number): { verdict: string; flat: boolean } {
  const after = samples.filter((s) => s.t >= durationS * WARM_UP_SHARE).slice(0, FLAT_SAMPLES);
  const end = samples.slice(-FLAT_SAMPLES);
  if (after.length === 0 || end.length === 0) return { verdict: 'too few samples for a verdict', flat: false };
  const parts: string[] = [];
  let flat = true;
  for (const [label, key, tol] of [
    ['server RSS', 'serverRssKiB', RSS_TOLERANCE],
    ['client RSS', 'clientRssKiB', RSS_TOLERANCE],
    ['server fds', 'serverFds', FD_TOLERANCE],
    ['client fds', 'clientFds', FD_TOLERANCE],
  ] as const) {
    const a = median(after.map((s) => s[key]));
    const b = median(end.map((s) => s[key]));
    const allowed = Math.max(a * tol.share, 'kib' in tol ? tol.kib : tol.count);
    const ok = b - a <= allowed;
    flat &&= ok;
    const fmt = (v: number) => (key.endsWith('KiB') ? `${mib(v)} MiB` : String(v));
    parts.push(`${label} ${fmt(a)} -> ${fmt(b)}${ok ? '' : ' GROWS'}`);
  }
  return { verdict: `${flat ? 'FLAT' : 'NOT FLAT'}: after warm-up -> end (medians of ${FLAT_SAMPLES}): ${parts.join(', ')}`, flat };
}

async function main(): Promise<void> {
  const durationS = MINUTES * 60;
  const echo = await echoServer();
  const bulk = await bulkServer();
  const uecho = await udpEcho();
  const pair = await startPair({ nofile: NOFILE, keepLines: false });
  const crashes: string[] = [];
  let stopping = false;
  for (const c of [pair.server, pair.client!]) c.cp.on('exit', (code, sig) => !stopping && crashes.push(`${c.name} exited (${code ?? sig}): ${c.stderr.slice(-800)}`));
  const c = zero();
  const t0 = now();
  const deadline = t0 + durationS * 1000;
  const running = () => now() < deadline && crashes.length === 0;
  log(`${MINUTES} min against wsserver :${pair.serverPort} (pid ${pair.server.pid}) and wsclient :${pair.socksPort} (pid ${pair.client!.pid})`);

  const loops: Array<Promise<void>> = [];
  for (let w = 0; w < CHURN_WORKERS; w++) {
    loops.push(
      (async () => {
        while (running()) {
          if (await tunnelRoundTrip(pair.socksPort, echo.port)) c.tunnelsOk++;
          else c.tunnelsFailed++;
          await sleep(CHURN_PAUSE_MS);
        }
      })(),
    );
  }
  loops.push(
    (async () => {
      for (let i = 0; running(); i++) {
        if (await bulkOnce(pair.socksPort, bulk.port, i % 2 === 0)) {
          c.bulkOk++;
          c.bulkMiB += BULK_MIB;
        } else c.bulkFailed++;
        await sleep(BULK_PAUSE_MS);
      }
    })(),
  );
  loops.push(
    (async () => {
      while (running()) await udpOnce(pair.socksPort, uecho.port, c);
    })(),
  );
  loops.push(
    (async () => {
      for (let i = 0; running(); i++) {
        void probeOnce(pair.serverPort, i);
        c.probes++;
        await sleep(PROBE_EVERY_MS);
      }
    })(),
  );
  const slow = slowlorisLoop(pair.serverPort, running, c);

  const samples: Sample[] = [];
  let last = zero();
  const sample = () => {
    const s: Sample = {
      t: Math.round((now() - t0) / 1000),
      serverRssKiB: rssKiB(pair.server.pid),
      serverFds: fdCount(pair.server.pid),
      clientRssKiB: rssKiB(pair.client!.pid),
      clientFds: fdCount(pair.client!.pid),
      serverLogLines: pair.server.lineCount,
      clientLogLines: pair.client!.lineCount,
      ...(Object.fromEntries(Object.entries(c).map(([k, v]) => [k, v - last[k as keyof Counters]])) as unknown as Counters),
    };
    last = { ...c };
    samples.push(s);
    log(`t=${s.t}s server ${mib(s.serverRssKiB)} MiB ${s.serverFds} fds, client ${mib(s.clientRssKiB)} MiB ${s.clientFds} fds; tunnels ${s.tunnelsOk}/${s.tunnelsFailed} bulk ${s.bulkOk}/${s.bulkFailed} udp ${s.udpEchoed}/${s.udpSent} probes ${s.probes} slowloris closed ${s.slowlorisClosed}`);
  };
  sample();
  while (running()) {
    await sleep(Math.min(SAMPLE_S * 1000, Math.max(0, deadline - now())));
    if (now() >= deadline - 500 || running()) sample();
  }
  await Promise.all(loops);
  for (const s of slow) s.destroy();
  stopping = true;
  await stopPair(pair);
  echo.close();
  bulk.srv.close();
  uecho.sock.close();

  const { verdict, flat } = crashes.length ? { verdict: `CRASH: ${crashes.join('; ')}`, flat: false } : flatness(samples, durationS);
  const totals = samples.reduce((a, s) => {
    for (const k of Object.keys(a) as Array<keyof Counters>) a[k] += s[k];
    return a;
  }, zero());
  const rows = samples.map((s) => [
    s.t, mib(s.serverRssKiB), s.serverFds, mib(s.clientRssKiB), s.clientFds, `${s.tunnelsOk}/${s.tunnelsFailed}`, `${s.bulkOk}/${s.bulkFailed}`,
    `${s.udpEchoed}/${s.udpSent}`, s.probes, s.slowlorisClosed, s.serverLogLines, s.clientLogLines,
  ]);
  const text = [
    `brook-ts soak: ${MINUTES} min, ${new Date().toISOString()}; per interval: tunnels ok/failed, bulk ${BULK_MIB} MiB ok/failed, UDP echoed/sent, probes, slowloris closed by the server; log lines are cumulative`,
    '',
    table(['t (s)', 'server RSS MiB', 'server fds', 'client RSS MiB', 'client fds', 'tunnels', 'bulk', 'udp', 'probes', 'slowloris closed', 'server log lines', 'client log lines'], rows),
    '',
    `totals: tunnels ${totals.tunnelsOk} ok / ${totals.tunnelsFailed} failed, bulk ${totals.bulkOk} ok / ${totals.bulkFailed} failed (${totals.bulkMiB} MiB, SHA-256 checked), UDP ${totals.udpEchoed} of ${totals.udpSent} echoed, ${totals.probes} bad probes, ${totals.slowlorisClosed} slowloris connections closed by the server`,
    verdict,
  ].join('\n');
  process.stdout.write(text + '\n');
  writeFileSync(join(OUT, 'soak.txt'), text + '\n');
  writeFileSync(join(OUT, 'soak.json'), JSON.stringify({ minutes: MINUTES, sampleSeconds: SAMPLE_S, date: new Date().toISOString(), totals, verdict, flat, samples }, null, 2) + '\n');
  writeFileSync(join(OUT, 'soak.svg'), chart(samples, verdict) + '\n');
  log(`written: ${join(OUT, 'soak.txt')}, soak.json, soak.svg`);
  process.exitCode = flat ? 0 : 1;
}

main().then(
  () => process.exit(),
  (e: unknown) => {
    process.stderr.write(`soak: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(2);
  },
);
