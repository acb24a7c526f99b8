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
 *
 * The load lives in bench/soak-load.ts, the table, chart and verdict in bench/soak-report.ts;
 * this file starts the pair, runs the load and samples it.
 */
import { join, resolve } from 'node:path';
import { echoServer, fdCount, flag, mib, now, numFlag, RESULTS, rssKiB, sleep, startPair, stopPair, udpEcho } from './hostile.js';
import { bulkServer, type Counters, startLoad, zero } from './soak-load.js';
import { report, type Sample } from './soak-report.js';

const MINUTES = numFlag('minutes', 10);
const SAMPLE_S = numFlag('sample', 10);
const NOFILE = flag('nofile') ? numFlag('nofile', 1024) : undefined;
const OUT = resolve(flag('out') ?? RESULTS);

const log = (m: string) => process.stderr.write(`[soak] ${m}\n`);

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

  const { loops, slow } = startLoad(pair, { echo: echo.port, bulk: bulk.port, udpEcho: uecho.port }, running, c);

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

  const flat = report({ minutes: MINUTES, sampleSeconds: SAMPLE_S, samples, crashes }, OUT);
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
