/** src/ops/prometheus.ts (the Metrics of src/ops/metrics.ts with prom-client): what a scrape shows, label sets that stay fixed, the endpoint's answers and its start errors. */
import { createServer } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { ErrorCodes, type ErrorCode } from '../src/errors.js';
import { createMetrics, type MetricsServer, serveMetrics } from '../src/ops/prometheus.js';

const servers: MetricsServer[] = [];
afterAll(async () => Promise.all(servers.map((s) => s.close())));

async function scrape(s: MetricsServer, path = '/metrics'): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${s.address.port}${path}`);
  return { status: r.status, body: await r.text() };
}

/** The value of one series in Prometheus text format. */
function value(body: string, series: string): number {
  const line = body.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.slice(series.length + 1)) : NaN;
}

const seriesCount = (body: string, name: string) => body.split('\n').filter((l) => l.startsWith(name + '{')).length;

describe('metrics', () => {
  it('counts tunnels, bytes (live ones included), failures, drops; labels come from fixed sets', async () => {
    const { metrics, registry } = createMetrics('wsserver');
    const s = await serveMetrics('127.0.0.1:0', '/metrics', registry);
    servers.push(s);
    const live = { up: 100, down: 1000 };
    metrics.liveBytes(() => live);
    metrics.tunnelOpened('tcp');
    metrics.tunnelOpened('tcp');
    metrics.tunnelOpened('udp');
    metrics.tunnelClosed('tcp', { up: 5, down: 7 });
    metrics.handshakeFailed('auth');
    metrics.udpDatagram('up');
    metrics.udpDropped();
    let b = (await scrape(s)).body;
    expect(value(b, 'brook_tunnels_opened_total{command="wsserver",network="tcp"}')).toBe(2);
    expect(value(b, 'brook_tunnels_active{command="wsserver",network="tcp"}')).toBe(1);
    expect(value(b, 'brook_tunnels_active{command="wsserver",network="udp"}')).toBe(1);
    expect(value(b, 'brook_bytes_total{command="wsserver",direction="up"}')).toBe(105);
    expect(value(b, 'brook_bytes_total{command="wsserver",direction="down"}')).toBe(1007);
    expect(value(b, 'brook_handshake_failures_total{command="wsserver",reason="auth"}')).toBe(1);
    expect(value(b, 'brook_handshake_failures_total{command="wsserver",reason="replay"}')).toBe(0);
    expect(value(b, 'brook_udp_dropped_total{command="wsserver"}')).toBe(1);
    expect(b).toContain('process_cpu_user_seconds_total');
    live.up += 50; // a live tunnel moves between scrapes
    b = (await scrape(s)).body;
    expect(value(b, 'brook_bytes_total{command="wsserver",direction="up"}')).toBe(155);

    // 1,000 failures with every known code and some unknown ones: the label set stays the code list
    const codes = Object.values(ErrorCodes) as ErrorCode[];
    for (let i = 0; i < 1000; i++) metrics.dialFailed(i % 7 === 0 ? (`X${i}` as ErrorCode) : codes[i % codes.length]!);
    b = (await scrape(s)).body;
    expect(seriesCount(b, 'brook_dial_failures_total')).toBeLessThanOrEqual(codes.length);
  });

  it('serves only its path: 404 elsewhere, 405 for other methods', async () => {
    const { registry } = createMetrics('wsclient');
    const s = await serveMetrics('127.0.0.1:0', '/hidden-path', registry);
    servers.push(s);
    expect((await scrape(s, '/metrics')).status).toBe(404);
    expect((await scrape(s, '/hidden-path')).status).toBe(200);
    const r = await fetch(`http://127.0.0.1:${s.address.port}/hidden-path`, { method: 'POST' });
    expect(r.status).toBe(405);
  });

  it('a port in use and a path without "/" are start errors', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as { port: number }).port;
    await expect(serveMetrics(`127.0.0.1:${port}`, '/m', createMetrics('x').registry)).rejects.toMatchObject({ code: 'EADDRINUSE' });
    await expect(serveMetrics('127.0.0.1:0', 'm', createMetrics('x').registry)).rejects.toMatchObject({ code: ErrorCodes.CONFIG });
    busy.close();
  });
});
