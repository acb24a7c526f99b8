/**
 * The report of `make soak` (bench/soak.ts): the samples as a table (soak.txt), kept as JSON
 * (soak.json) and charted (soak.svg), with the verdict: the median of the last samples against the
 * median of those right after the warm-up.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mib, table } from './hostile.js';
import { BULK_MIB, type Counters, zero } from './soak-load.js';

/** The first WARM_UP_SHARE of the run is warm-up; FLAT_SAMPLES samples on each side are compared. */
const WARM_UP_SHARE = 0.2;
const FLAT_SAMPLES = 3;
const RSS_TOLERANCE = { share: 0.15, kib: 16 * 1024 };
const FD_TOLERANCE = { share: 0.15, count: 16 };

export interface Sample extends Counters {
  t: number;
  serverRssKiB: number;
  serverFds: number;
  clientRssKiB: number;
  clientFds: number;
  serverLogLines: number;
  clientLogLines: number;
}

/** What the report says about the run. */
export interface Run {
  minutes: number;
  sampleSeconds: number;
  samples: Sample[];
  /** Why a child exited during the run (empty: none did). */
  crashes: string[];
}

// ---------------------------------------------------------------- chart

function chart(samples: Sample[], verdict: string, minutes: number, sampleSeconds: number): string {
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
    `<text x="${W / 2}" y="20" font-size="16" text-anchor="middle" font-weight="bold">brook-ts soak: ${minutes} min of mixed load, sampled every ${sampleSeconds} s</text>`,
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

// ---------------------------------------------------------------- verdict

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

/** Print the report and write soak.txt, soak.json and soak.svg into `out`; true when RSS and descriptors stayed flat. */
export function report(run: Run, out: string): boolean {
  const { minutes, sampleSeconds, samples, crashes } = run;
  const durationS = minutes * 60;
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
    `brook-ts soak: ${minutes} min, ${new Date().toISOString()}; per interval: tunnels ok/failed, bulk ${BULK_MIB} MiB ok/failed, UDP echoed/sent, probes, slowloris closed by the server; log lines are cumulative`,
    '',
    table(['t (s)', 'server RSS MiB', 'server fds', 'client RSS MiB', 'client fds', 'tunnels', 'bulk', 'udp', 'probes', 'slowloris closed', 'server log lines', 'client log lines'], rows),
    '',
    `totals: tunnels ${totals.tunnelsOk} ok / ${totals.tunnelsFailed} failed, bulk ${totals.bulkOk} ok / ${totals.bulkFailed} failed (${totals.bulkMiB} MiB, SHA-256 checked), UDP ${totals.udpEchoed} of ${totals.udpSent} echoed, ${totals.probes} bad probes, ${totals.slowlorisClosed} slowloris connections closed by the server`,
    verdict,
  ].join('\n');
  process.stdout.write(text + '\n');
  writeFileSync(join(out, 'soak.txt'), text + '\n');
  writeFileSync(join(out, 'soak.json'), JSON.stringify({ minutes, sampleSeconds, date: new Date().toISOString(), totals, verdict, flat, samples }, null, 2) + '\n');
  writeFileSync(join(out, 'soak.svg'), chart(samples, verdict, minutes, sampleSeconds) + '\n');
  return flat;
}
