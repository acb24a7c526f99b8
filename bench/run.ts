/**
 * Side-by-side benchmark on loopback (`make bench` = `npx tsx bench/run.ts`).
 *
 * Contenders, each a pair of child processes (client with a SOCKS5 inbound, server):
 *   brook-ws   brook-ts wsclient -> wsserver, Brook protocol
 *   brook-wob  the same with --withoutBrookProtocol
 *   brook-wss  brook-ts wssclient (--ca) -> wssserver (self-signed certificate made with openssl)
 *   v2ray      Debian's v2ray: VMess aes-128-gcm over WebSocket, client SOCKS5 inbound with UDP
 *   baseline   a plain SOCKS5 pass-through (no encryption, one process): the ceiling (spliced in the kernel
 *              when the native addon has splice, as upstream's Go relay does)
 *   baseline-js the same pass-through relaying in JS (BROOK_TS_SPLICE=0): what issue 11 measures wob against
 * All are measured by the same client, bench/probe.ts, in its own process.
 *
 * Per contender and repeat (5 by default, fresh processes each repeat, contenders interleaved): server RSS idle and with N idle open
 * tunnels, connect+first-byte latency over 300 connections, UDP echo, single-stream upload and
 * download (256 MiB, SHA-256 checked), 8 concurrent streams up and down (8 x 32 MiB), CPU seconds
 * per GiB moved (client and server process trees, /proc/PID/stat utime+stime around the transfers).
 * The table shows the median of the repeats and the ratio to v2ray beside every figure.
 *
 * Connect latency (a second table), in the first LATENCY_REPEATS repeats: connect + first echo p50 on
 * loopback and over a link with real latency (bench/delay.ts: a relay between client and server that
 * holds every chunk LINK_ONE_WAY_MS each way, 20 ms round trip, TCP handshake included), for every
 * contender and for the brook-ts settings that change it: the pool of prewarmed tunnels on (default)
 * and off (--pool 0), TLS session resumption on (default) and off (--noTlsResume). The baseline has
 * no client/server link: its link sits between it and the destination (a direct connection).
 *
 *   npx tsx bench/run.ts [--quick] [--repeats N] [--only a,b] [--out DIR] [--workers N]
 *     --quick    small sizes, 1 repeat (a smoke run, ~1 minute)
 *     --out      where results.json, table.md and chart.svg go (default bench/results; --quick: a temp dir)
 *     --workers  pass --workers N to the brook-ts client and server (default: their own default)
 *
 * Files: bench/children.ts (child processes), bench/contenders.ts (starting each contender),
 * bench/measure.ts (the probe, one Sample, the latency rows), bench/report.ts (medians, tables,
 * targets), bench/chart.ts (chart.svg); this one: the flags, the main loop and writing the results.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { renderChart } from './chart.js';
import { killChildrenOnExit, log, ROOT, stop } from './children.js';
import { BROOK, CONTENDERS, ensureV2ray, makeCert } from './contenders.js';
import { type LatencySample, measure, measureLatency, type Sample, type Sizes } from './measure.js';
import { latencyTable, latencyTargets, medianLatency, medianSamples, table, targets } from './report.js';

const FULL: Sizes = {
  repeats: 5, singleMiB: 256, multiConns: 8, multiMiBEach: 32, rttCount: 300, udpCount: 200, udpSize: 1200, holdCount: 1000, latencyRepeats: 2, linkCount: 30,
};
const QUICK: Sizes = {
  repeats: 1, singleMiB: 32, multiConns: 8, multiMiBEach: 4, rttCount: 50, udpCount: 50, udpSize: 1200, holdCount: 200, latencyRepeats: 1, linkCount: 15,
};

function flag(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const quick = process.argv.includes('--quick');
const sizes: Sizes = { ...(quick ? QUICK : FULL) };
if (flag('repeats')) sizes.repeats = Number(flag('repeats'));
const only = flag('only')?.split(',');
const workersFlag = flag('workers');
const outDir = resolve(flag('out') ?? (quick ? mkdtempSync(join(tmpdir(), 'brook-bench-quick-')) : join(ROOT, 'bench', 'results')));

killChildrenOnExit();

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const t0 = Date.now();
  if (!existsSync(BROOK)) throw new Error(`${BROOK} missing: run make build (or npx tsc -p tsconfig.json) first`);
  ensureV2ray();
  const tmp = mkdtempSync(join(tmpdir(), 'brook-bench-'));
  makeCert(tmp);
  const contenders = CONTENDERS.filter((c) => !only || only.includes(c.name));
  const samples: Record<string, Sample[]> = {};
  const latSamples: Record<string, LatencySample[]> = {};
  try {
    for (let rep = 0; rep < sizes.repeats; rep++) {
      for (const c of contenders) {
        log(`repeat ${rep + 1}/${sizes.repeats}: ${c.name}`);
        const r = await c.start(tmp, workersFlag);
        try {
          const s = await measure(r, sizes);
          (samples[c.name] ??= []).push(s);
          log(`  ${JSON.stringify(s)}`);
          if (rep < sizes.latencyRepeats) {
            for (const [k, v] of Object.entries(await measureLatency(c, r, s.rttP50ms, sizes))) (latSamples[k] ??= []).push(v);
          }
        } catch (e) {
          log(`  ${c.name} failed: ${(e as Error).message}`);
        } finally {
          await stop(r.client);
          await stop(r.server);
        }
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const medians = medianSamples(samples);
  const labels = Object.fromEntries(CONTENDERS.map((c) => [c.name, c.label]));
  const latMedians = medianLatency(latSamples);
  const latLabels = Object.fromEntries(
    contenders.flatMap((c) => c.rows.map((row) => [c.name + row.key, row.label ? `${c.label}, ${row.label}` : c.label])),
  );
  const crypto = JSON.parse(
    execFileSync(process.execPath, ['-e', `import('${join(ROOT, 'dist/src/crypto/index.js')}').then(m=>{m.selectBackend('auto');console.log(JSON.stringify(m.backendName()))})`]).toString(),
  ) as string;
  const v2rayVersion = execFileSync('v2ray', ['-version']).toString().split('\n')[0]!.trim();
  const meta = {
    date: new Date().toISOString(),
    quick,
    sizes,
    workers: workersFlag ?? 'default',
    node: process.version,
    cpus: `${cpus().length} x ${cpus()[0]?.model ?? '?'}`,
    memMiB: Math.round(totalmem() / 1048576),
    v2ray: v2rayVersion,
    crypto,
    minutes: (Date.now() - t0) / 60000,
  };
  const md = table(medians, labels);
  const lmd = latencyTable(latMedians, latLabels);
  const tg = [...targets(medians), ...latencyTargets(latMedians)];
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'results.json'), JSON.stringify({ meta, medians, samples, latency: { medians: latMedians, samples: latSamples } }, null, 2) + '\n');
  writeFileSync(join(outDir, 'table.md'), `${md}\n\n${lmd}\n\nTargets (brook-ts vs v2ray / baseline):\n${tg.join('\n')}\n`);
  writeFileSync(join(outDir, 'chart.svg'), renderChart(medians, labels, meta));
  process.stdout.write(`\n${md}\n\nMedian of ${sizes.repeats} repeat(s); ratio to v2ray in parentheses. crypto backend: ${crypto}; ${meta.cpus}; node ${meta.node}; ${v2rayVersion}\n`);
  process.stdout.write(`\n${lmd}\n\nMedian of ${Math.min(sizes.latencyRepeats, sizes.repeats)} repeat(s); link: ${sizes.linkCount} connects per repeat; ratios to the baseline (loopback) and to v2ray (link).\n`);
  process.stdout.write(`\nTargets:\n${tg.join('\n')}\n\nwrote ${outDir}/results.json, table.md, chart.svg (${meta.minutes.toFixed(1)} min)\n`);
  const broken = Object.entries(medians).filter(([, m]) => !m.intact);
  if (broken.length) {
    process.stdout.write(`DATA CHECK FAILED (SHA-256) for: ${broken.map(([n]) => n).join(', ')}\n`);
    process.exitCode = 1;
  }
}

main().catch((e: unknown) => {
  log(`failed: ${(e as Error).stack ?? String(e)}`);
  process.exitCode = 1;
});
