/**
 * The report of `make bench` (bench/run.ts): medians of the repeats, the main table and the
 * connect-latency table (markdown, ratios beside every figure) and the targets of issue 11.
 */
import { LINK_ONE_WAY_MS, type LatencySample, type Sample } from './measure.js';

function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Per contender: the median of every figure over its repeats (intact: all of them intact). */
export function medianSamples(samples: Record<string, Sample[]>): Record<string, Sample> {
  const medians: Record<string, Sample> = {};
  for (const [name, ss] of Object.entries(samples)) {
    const m = {} as Record<string, number | boolean>;
    for (const k of Object.keys(ss[0]!) as (keyof Sample)[]) {
      m[k] = k === 'intact' ? ss.every((s) => s.intact) : median(ss.map((s) => s[k] as number));
    }
    medians[name] = m as unknown as Sample;
  }
  return medians;
}

/** Per latency row: the median of every figure over its repeats. */
export function medianLatency(latSamples: Record<string, LatencySample[]>): Record<string, LatencySample> {
  const latMedians: Record<string, LatencySample> = {};
  for (const [name, ss] of Object.entries(latSamples)) {
    latMedians[name] = {
      loopP50ms: median(ss.map((x) => x.loopP50ms)),
      linkP50ms: median(ss.map((x) => x.linkP50ms)),
      linkP99ms: median(ss.map((x) => x.linkP99ms)),
    };
  }
  return latMedians;
}

// ---------------------------------------------------------------- report

interface Column {
  key: keyof Sample;
  title: string;
  digits: number;
  /** true: bigger is better. */
  higher: boolean;
}

export const COLUMNS: Column[] = [
  { key: 'upMBps', title: '1 stream up MB/s', digits: 0, higher: true },
  { key: 'downMBps', title: '1 stream down MB/s', digits: 0, higher: true },
  { key: 'multiUpMBps', title: '8 streams up MB/s', digits: 0, higher: true },
  { key: 'multiDownMBps', title: '8 streams down MB/s', digits: 0, higher: true },
  { key: 'rttP50ms', title: 'connect p50 ms', digits: 2, higher: false },
  { key: 'rttP99ms', title: 'connect p99 ms', digits: 2, higher: false },
  { key: 'udpP50ms', title: 'UDP echo p50 ms', digits: 3, higher: false },
  { key: 'udpLoss', title: 'UDP loss %', digits: 1, higher: false },
  { key: 'clientCpuSecPerGiB', title: 'client CPU s/GiB', digits: 2, higher: false },
  { key: 'serverCpuSecPerGiB', title: 'server CPU s/GiB', digits: 2, higher: false },
  { key: 'probeCpuSecPerGiB', title: 'probe CPU s/GiB (1 stream)', digits: 2, higher: false },
  { key: 'idleRssKiB', title: 'server RSS idle MiB', digits: 1, higher: false },
  { key: 'kibPerTunnel', title: 'server KiB/idle tunnel', digits: 1, higher: false },
];

function fmt(c: Column, v: number): string {
  if (!Number.isFinite(v)) return 'n/a';
  if (c.key === 'udpLoss') return (v * 100).toFixed(c.digits);
  if (c.key === 'idleRssKiB') return (v / 1024).toFixed(c.digits);
  return v.toFixed(c.digits);
}

export function table(medians: Record<string, Sample>, labels: Record<string, string>): string {
  const v2 = medians['v2ray'];
  const names = Object.keys(medians);
  const lines: string[] = [];
  lines.push(`| figure | ${names.map((n) => labels[n] ?? n).join(' | ')} |`);
  lines.push(`|---|${names.map(() => '---:').join('|')}|`);
  for (const c of COLUMNS) {
    const cells = names.map((n) => {
      const v = medians[n]![c.key] as number;
      const base = v2 ? (v2[c.key] as number) : NaN;
      const ratio = n !== 'v2ray' && Number.isFinite(v) && Number.isFinite(base) && base !== 0 ? ` (${(v / base).toFixed(2)}x)` : '';
      return `${fmt(c, v)}${ratio}`;
    });
    lines.push(`| ${c.title} | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

export function targets(m: Record<string, Sample>): string[] {
  const b = m['brook-ws'];
  const v = m['v2ray'];
  const wob = m['brook-wob'];
  const base = m['baseline'];
  const out: string[] = [];
  const check = (name: string, value: number, target: string, ok: boolean) =>
    out.push(`- ${name}: ${Number.isFinite(value) ? value.toFixed(2) : 'n/a'} (target ${target}) ${ok ? 'MET' : 'NOT MET'}`);
  if (b && v) {
    check('Brook single stream up / v2ray', b.upMBps / v.upMBps, '>= 1.0x', b.upMBps / v.upMBps >= 1.0);
    check('Brook single stream down / v2ray', b.downMBps / v.downMBps, '>= 1.0x', b.downMBps / v.downMBps >= 1.0);
    check('Brook 8 streams up / v2ray', b.multiUpMBps / v.multiUpMBps, '>= 1.5x', b.multiUpMBps / v.multiUpMBps >= 1.5);
    check('Brook 8 streams down / v2ray', b.multiDownMBps / v.multiDownMBps, '>= 1.5x', b.multiDownMBps / v.multiDownMBps >= 1.5);
    check('Brook connect p50 / v2ray', b.rttP50ms / v.rttP50ms, '<= 0.65x', b.rttP50ms / v.rttP50ms <= 0.65);
  }
  if (wob && base) {
    const r = (wob.upMBps + wob.downMBps) / (base.upMBps + base.downMBps);
    check('withoutBrookProtocol single stream / baseline (up+down)', r, '>= 0.8x', r >= 0.8);
    const r8 = (wob.multiUpMBps + wob.multiDownMBps) / (base.multiUpMBps + base.multiDownMBps);
    check('withoutBrookProtocol 8 streams / baseline (up+down)', r8, '>= 0.8x', r8 >= 0.8);
  }
  const js = m['baseline-js'];
  if (wob && js) {
    // issue 11: the spliced withoutBrookProtocol path against a pass-through that relays in JS
    check('withoutBrookProtocol single stream up / JS-relay pass-through', wob.upMBps / js.upMBps, '>= 1.5x', wob.upMBps / js.upMBps >= 1.5);
    check('withoutBrookProtocol single stream down / JS-relay pass-through', wob.downMBps / js.downMBps, '>= 1.5x', wob.downMBps / js.downMBps >= 1.5);
  }
  if (b && base) check('Brook UDP echo p50 / baseline', b.udpP50ms / base.udpP50ms, '<= 1.3x', b.udpP50ms / base.udpP50ms <= 1.3);
  if (b) check('Brook server KiB per idle tunnel', b.kibPerTunnel, '<= 32', b.kibPerTunnel <= 32);
  if (b) check('wsserver idle RSS MiB', b.idleRssKiB / 1024, '<= 48', b.idleRssKiB / 1024 <= 48);
  return out;
}

/** The connect-latency table: one row per contender and setting. */
export function latencyTable(m: Record<string, LatencySample>, labels: Record<string, string>): string {
  const base = m['baseline'];
  const v2 = m['v2ray'];
  const f = (v: number, ref: number | undefined, self: boolean) =>
    !Number.isFinite(v) ? 'n/a' : `${v.toFixed(2)}${!self && ref !== undefined && Number.isFinite(ref) && ref > 0 ? ` (${(v / ref).toFixed(2)}x)` : ''}`;
  const lines = [
    `| connect + first echo | loopback p50 ms (x baseline) | ${2 * LINK_ONE_WAY_MS} ms link p50 ms (x v2ray) | ${2 * LINK_ONE_WAY_MS} ms link p99 ms |`,
    '|---|---:|---:|---:|',
  ];
  for (const [name, x] of Object.entries(m)) {
    lines.push(`| ${labels[name] ?? name} | ${f(x.loopP50ms, base?.loopP50ms, name === 'baseline')} | ${f(x.linkP50ms, v2?.linkP50ms, name === 'v2ray')} | ${f(x.linkP99ms, undefined, true)} |`);
  }
  return lines.join('\n');
}

/** Issue 11's connect targets: loopback p50 at most the baseline's, over the link at most half of v2ray's. */
export function latencyTargets(m: Record<string, LatencySample>): string[] {
  const b = m['brook-ws'];
  const base = m['baseline'];
  const v = m['v2ray'];
  const out: string[] = [];
  const check = (name: string, value: number, target: string, ok: boolean) =>
    out.push(`- ${name}: ${Number.isFinite(value) ? value.toFixed(2) : 'n/a'} (target ${target}) ${ok ? 'MET' : 'NOT MET'}`);
  if (b && base) check('Brook connect p50 loopback / baseline', b.loopP50ms / base.loopP50ms, '<= 1.0x', b.loopP50ms / base.loopP50ms <= 1.0);
  if (b && v) check(`Brook connect p50 over the ${2 * LINK_ONE_WAY_MS} ms link / v2ray`, b.linkP50ms / v.linkP50ms, '<= 0.5x', b.linkP50ms / v.linkP50ms <= 0.5);
  return out;
}
