/**
 * The benchmark chart: a hand-written SVG with three panels (throughput MB/s,
 * connect latency p50 ms, server KiB per idle tunnel), one bar per contender.
 */
import type { Sample } from './measure.js';

const COLORS: Record<string, string> = {
  'brook-ws': '#1f77b4',
  'brook-wob': '#17becf',
  'brook-wss': '#9467bd',
  v2ray: '#d62728',
  baseline: '#7f7f7f',
};

const W = 900;
const PANEL_H = 220;
const TOP = 60;
const LEFT = 60;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

interface Group {
  title: string;
  key: keyof Sample;
}

function panel(y0: number, title: string, groups: Group[], medians: Record<string, Sample>, width: number, x0: number): string {
  const names = Object.keys(medians);
  const vals = groups.flatMap((g) => names.map((n) => medians[n]![g.key] as number)).filter(Number.isFinite);
  const max = niceMax(Math.max(0, ...vals));
  const plotW = width - LEFT - 10;
  const plotH = PANEL_H - 50;
  const gw = plotW / groups.length;
  const bw = Math.min(28, (gw - 16) / names.length);
  const out: string[] = [];
  out.push(`<text x="${x0 + LEFT}" y="${y0 + 14}" font-size="14" font-weight="bold">${esc(title)}</text>`);
  const base = y0 + 20 + plotH;
  for (let i = 0; i <= 4; i++) {
    const y = base - (plotH * i) / 4;
    out.push(`<line x1="${x0 + LEFT}" x2="${x0 + LEFT + plotW}" y1="${y}" y2="${y}" stroke="#ddd"/>`);
    const v = (max * i) / 4;
    out.push(`<text x="${x0 + LEFT - 6}" y="${y + 4}" font-size="11" text-anchor="end">${Number.isInteger(v) ? v : v.toFixed(1)}</text>`);
  }
  groups.forEach((g, gi) => {
    const gx = x0 + LEFT + gi * gw + (gw - bw * names.length) / 2;
    names.forEach((n, ni) => {
      const v = medians[n]![g.key] as number;
      if (!Number.isFinite(v)) return;
      const h = (plotH * v) / max;
      out.push(`<rect x="${gx + ni * bw}" y="${base - h}" width="${bw - 2}" height="${h}" fill="${COLORS[n] ?? '#333'}"><title>${esc(n)}: ${v.toFixed(2)}</title></rect>`);
    });
    out.push(`<text x="${x0 + LEFT + gi * gw + gw / 2}" y="${base + 16}" font-size="12" text-anchor="middle">${esc(g.title)}</text>`);
  });
  return out.join('\n');
}

export function renderChart(medians: Record<string, Sample>, labels: Record<string, string>, meta: { cpus: string; node: string; v2ray: string; crypto: string; sizes: { repeats: number } }): string {
  const names = Object.keys(medians);
  const H = TOP + PANEL_H * 2 + 40;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${W / 2}" y="20" font-size="16" text-anchor="middle" font-weight="bold">brook-ts vs v2ray on loopback (median of ${meta.sizes.repeats})</text>`);
  out.push(`<text x="${W / 2}" y="38" font-size="11" text-anchor="middle">${esc(`${meta.cpus}; node ${meta.node}; crypto ${meta.crypto}; ${meta.v2ray}`)}</text>`);
  // legend
  names.forEach((n, i) => {
    const x = 20 + i * (W / names.length);
    out.push(`<rect x="${x}" y="${TOP - 14}" width="12" height="12" fill="${COLORS[n] ?? '#333'}"/>`);
    out.push(`<text x="${x + 16}" y="${TOP - 4}" font-size="11">${esc(labels[n] ?? n)}</text>`);
  });
  out.push(
    panel(TOP + 10, 'Throughput, MB/s (higher is better)', [
      { title: '1 stream up', key: 'upMBps' },
      { title: '1 stream down', key: 'downMBps' },
      { title: '8 streams up', key: 'multiUpMBps' },
      { title: '8 streams down', key: 'multiDownMBps' },
    ], medians, W, 0),
  );
  out.push(panel(TOP + 20 + PANEL_H, 'Connect + first byte p50, ms (lower is better)', [{ title: 'connect p50', key: 'rttP50ms' }], medians, W / 2, 0));
  out.push(panel(TOP + 20 + PANEL_H, 'Server KiB per idle tunnel (lower is better)', [{ title: 'KiB / tunnel', key: 'kibPerTunnel' }], medians, W / 2, W / 2));
  out.push('</svg>');
  return out.join('\n') + '\n';
}
