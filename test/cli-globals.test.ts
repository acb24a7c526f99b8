/**
 * Issue 9: upstream's global options on the CLI (src/cli/globals.ts, runtime.ts), over real
 * processes and sockets on 127.0.0.1: --log FILE + SIGUSR1 + --tag + --pid,
 * --prometheus scraped during traffic (label sets fixed after 1,000
 * destinations; the sum over --workers), --dialWithIP4 and --dialWithDNS on the
 * server's dials, and bad values as one-line start errors.
 */
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { CLI, type CliProcess, freePort, runCli, selfSigned, startCli, stopAllClis } from './helpers/cli.js';
import { type DnsServer, startDnsServer } from './helpers/dial-dns.js';
import { connectRaw, exchangeThroughSocks, LOOPBACK, readExactly, readHttpHead, sleep, socksConnect, startExchangeServer, upgradeRequest, waitFor } from './helpers/net.js';
import { spawn } from 'node:child_process';
import { PASS, startPyProxy, startSocksv5, USER } from './helpers/socks5-proxies.js';
import { Socks5UdpClient, startUdpEcho } from './helpers/udp.js';

const dir = mkdtempSync(join(tmpdir(), 'brook-globals-'));
const closers: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  await stopAllClis();
  for (const c of closers.splice(0)) await c();
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const jsonLines = (path: string): Record<string, unknown>[] =>
  existsSync(path)
    ? readFileSync(path, 'utf8')
        .split('\n')
        .filter((l) => l.trim())
        .map((l) => JSON.parse(l) as Record<string, unknown>)
    : [];

async function pair(serverArgs: string[] = [], globals: string[] = []): Promise<{ server: CliProcess; client: CliProcess }> {
  const server = await startCli([...globals, 'wsserver', '--listen', `${LOOPBACK}:0`, '--password', 'hello', ...serverArgs]);
  const client = await startCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:${server.port('listen')}`, '--password', 'hello', '--socks5', `${LOOPBACK}:0`]);
  return { server, client };
}

async function scrape(port: number, path: string): Promise<string> {
  const r = await fetch(`http://${LOOPBACK}:${port}${path}`);
  expect(r.status).toBe(200);
  return r.text();
}

function value(body: string, series: string): number {
  const line = body.split('\n').find((l) => l.startsWith(series + ' '));
  return line ? Number(line.slice(series.length + 1)) : NaN;
}

/** The brook_* series (name + labels) a scrape shows. */
const brookSeries = (body: string) => new Set(body.split('\n').filter((l) => l.startsWith('brook_')).map((l) => l.slice(0, l.lastIndexOf(' '))));

describe('--log, --tag, --pid', () => {
  it('lines go to the file with the tags; SIGUSR1 after a move starts a new file; the pid file lives as long as the process', async () => {
    const log = join(dir, 'server.log');
    const pid = join(dir, 'server.pid');
    const child = spawn(
      process.execPath,
      [CLI, '--log', log, '--tag', 'region:eu', '--tag', 'host:vps1', '--pid', pid, 'wsserver', '--listen', `${LOOPBACK}:0`, '--password', 'hello', '--probeTimeout', '1'],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    closers.push(() => void (child.exitCode === null && child.kill('SIGKILL')));
    let stdout = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    await waitFor(() => jsonLines(log).some((l) => l['msg'] === 'listening'), 10_000, 'the listening line in the log file');
    const listening = jsonLines(log).find((l) => l['msg'] === 'listening')!;
    expect(listening).toMatchObject({ region: 'eu', host: 'vps1' });
    expect(stdout).toBe('');
    expect(readFileSync(pid, 'utf8').trim()).toBe(String(child.pid));
    const port = Number(/:(\d+)$/.exec(String(listening['listen']))![1]);

    // logrotate: move the file, signal; the next line goes to a new file
    renameSync(log, log + '.1');
    process.kill(child.pid!, 'SIGUSR1');
    await sleep(200);
    const s = await connectRaw(port);
    s.write(upgradeRequest(port));
    await readHttpHead(s);
    s.write(Buffer.alloc(40, 1)); // fails to decrypt: one handshake line at the deadline
    s.on('error', () => undefined);
    await waitFor(() => jsonLines(log).some((l) => l['code'] === 'BROOK_ERR_AUTH_FAILED'), 10_000, 'the failure line in the new file');
    expect(jsonLines(log).find((l) => l['code'] === 'BROOK_ERR_AUTH_FAILED')).toMatchObject({ region: 'eu', host: 'vps1' });
    expect(jsonLines(log + '.1').some((l) => l['code'] === 'BROOK_ERR_AUTH_FAILED')).toBe(false);
    s.destroy();

    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
    expect(existsSync(pid)).toBe(false);
  }, 30_000);
});

  it('--log console: a log reader that goes away (EPIPE) drops the lines; the server keeps serving and exits cleanly', async () => {
    const child = spawn(process.execPath, [CLI, 'wsserver', '--listen', `${LOOPBACK}:0`, '--password', 'hello', '--probeTimeout', '1'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    closers.push(() => void (child.exitCode === null && child.kill('SIGKILL')));
    let stdout = '';
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const onOut = (d: Buffer) => (stdout += d.toString());
    child.stdout!.on('data', onOut);
    await waitFor(() => stdout.includes('"listening"'), 10_000, 'the listening line');
    const port = Number(/"listen":"[^"]*:(\d+)"/.exec(stdout)![1]);
    child.stdout!.off('data', onOut);
    child.stdout!.destroy(); // the reader is gone: the next write gets EPIPE
    // something to log: a handshake that fails at the deadline
    const s = await connectRaw(port);
    s.on('error', () => undefined);
    s.write(upgradeRequest(port));
    await readHttpHead(s);
    s.write(Buffer.alloc(40, 1));
    await sleep(1500);
    s.destroy();
    expect(child.exitCode).toBe(null);
    // still serving: a refused upgrade is answered
    const t = await connectRaw(port);
    t.write(`GET /nope HTTP/1.1\r\nHost: x\r\n\r\n`);
    expect((await readHttpHead(t)).head).toMatch(/^HTTP\/1\.1 404/);
    t.destroy();
    child.kill('SIGTERM'); // writes its "shutting down" line into the closed pipe
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((r) => child.once('exit', (c, sg) => r([c, sg])));
    expect(stderr).not.toMatch(/EPIPE/);
    expect({ code, signal }).toEqual({ code: 0, signal: null });
  }, 30_000);

describe('--prometheus', () => {
  it('figures move with the traffic; 1,000 destinations leave the label sets as they were', async () => {
    const mport = await freePort();
    const { client } = await pair([], ['--prometheus', `${LOOPBACK}:${mport}`, '--prometheusPath', '/m-7f3a']);
    const before = await scrape(mport, '/m-7f3a');
    const seriesBefore = brookSeries(before);
    expect(value(before, 'brook_tunnels_opened_total{command="wsserver",network="tcp"}')).toBe(0);

    const dst = await startExchangeServer({ downBytes: 300_000 });
    closers.push(() => dst.close());
    const socks = client.port('socks5');
    await exchangeThroughSocks(socks, { type: 'ipv4', host: LOOPBACK, port: dst.port }, 1_000_000);
    // 1,000 tunnels to 1,000 different destinations (closed ports: each a dial failure)
    const ports: number[] = [];
    for (let p = 20_000; ports.length < 1000; p++) ports.push(p);
    let next = 0;
    await Promise.all(
      Array.from({ length: 25 }, async () => {
        while (next < ports.length) {
          const port = ports[next++]!;
          await socksConnect(socks, { type: 'ipv4', host: LOOPBACK, port }).then(
            (s) => s.destroy(),
            () => undefined,
          );
        }
      }),
    );
    const after = await scrape(mport, '/m-7f3a');
    expect(value(after, 'brook_tunnels_opened_total{command="wsserver",network="tcp"}')).toBeGreaterThanOrEqual(1001);
    expect(value(after, 'brook_bytes_total{command="wsserver",direction="up"}')).toBeGreaterThanOrEqual(1_000_000);
    expect(value(after, 'brook_bytes_total{command="wsserver",direction="down"}')).toBeGreaterThanOrEqual(300_000);
    expect(value(after, 'brook_dial_failures_total{command="wsserver",code="BROOK_ERR_CONNECTION_REFUSED"}')).toBeGreaterThanOrEqual(900);
    // only the dial-failure code that occurred was added; nothing per destination or client
    const added = [...brookSeries(after)].filter((x) => !seriesBefore.has(x));
    expect(added).toEqual(['brook_dial_failures_total{command="wsserver",code="BROOK_ERR_CONNECTION_REFUSED"}']);
    expect(after).not.toMatch(/127\.0\.0\.1/);
  }, 60_000);

  it('wssserver: the certificate expiry time', async () => {
    const mport = await freePort();
    const files = await selfSigned(dir, 'brook.test', 'metrics');
    const server = await startCli([
      '--prometheus', `${LOOPBACK}:${mport}`, '--prometheusPath', '/metrics',
      'wssserver', '--domainaddress', 'brook.test:443', '--listen', `${LOOPBACK}:0`, '--password', 'hello', '--cert', files.cert, '--certkey', files.key,
    ]);
    const notAfter = Math.floor(Date.parse(String(server.listening['notAfter'])) / 1000);
    expect(value(await scrape(mport, '/metrics'), 'brook_certificate_expiry_seconds')).toBe(notAfter);
  });

  it('with --workers 2 one endpoint reports the sum over the workers', async () => {
    const mport = await freePort();
    const { client } = await pair(['--workers', '2'], ['--prometheus', `${LOOPBACK}:${mport}`, '--prometheusPath', '/metrics']);
    const dst = await startExchangeServer({ downBytes: 1000 });
    closers.push(() => dst.close());
    const n = 40;
    for (let i = 0; i < n; i++) await exchangeThroughSocks(client.port('socks5'), { type: 'ipv4', host: LOOPBACK, port: dst.port }, 1000);
    await dst.waitRecords(n, 10_000);
    const body = await scrape(mport, '/metrics');
    expect(value(body, 'brook_tunnels_opened_total{command="wsserver",network="tcp"}')).toBe(n);
  }, 60_000);
});

describe('--dialWith* on the server', () => {
  it('--dialWithIP4 127.0.0.2: the destination sees that source address', async () => {
    const seen: string[] = [];
    const dst = net.createServer((s) => {
      seen.push(s.remoteAddress ?? '');
      s.end('hi');
    });
    await new Promise<void>((r) => dst.listen(0, LOOPBACK, r));
    closers.push(() => new Promise<void>((r) => dst.close(() => r())));
    const { client } = await pair([], ['--dialWithIP4', '127.0.0.2']);
    const s = await socksConnect(client.port('socks5'), { type: 'ipv4', host: LOOPBACK, port: (dst.address() as net.AddressInfo).port });
    s.resume();
    await new Promise((r) => s.once('end', r));
    s.destroy();
    expect(seen).toEqual(['127.0.0.2']);
  });

  it('--dialWithDNS: a name only our DNS server knows is resolved through it', async () => {
    const dst = await startExchangeServer({ downBytes: 1000 });
    closers.push(() => dst.close());
    const dns: DnsServer = await startDnsServer({ 'brook-dst.invalid': { A: [LOOPBACK] } });
    closers.push(() => dns.close());
    const { client } = await pair([], ['--dialWithDNS', `${LOOPBACK}:${dns.port}`]);
    const r = await exchangeThroughSocks(client.port('socks5'), { type: 'domain', host: 'brook-dst.invalid', port: dst.port }, 5000);
    expect(r.received.bytes).toBe(1000);
    expect(dns.queries.some((q) => q.name === 'brook-dst.invalid')).toBe(true);
  });
});

describe('--dialWithSocks5', () => {
  it.each([false, true])('wsclient reaches its wsserver only through an independent SOCKS5 proxy (auth %s)', async (auth) => {
    const proxy = await startSocksv5(auth);
    closers.push(() => proxy.close());
    // an echo (socksv5 does not keep half-closed connections: no FIN before the answer)
    const echo = net.createServer((c) => c.pipe(c));
    await new Promise<void>((r) => echo.listen(0, LOOPBACK, r));
    closers.push(() => new Promise<void>((r) => echo.close(() => r())));
    const server = await startCli(['wsserver', '--listen', `${LOOPBACK}:0`, '--password', 'hello']);
    const creds = auth ? ['--dialWithSocks5Username', USER, '--dialWithSocks5Password', PASS] : [];
    const client = await startCli([
      '--dialWithSocks5', `${LOOPBACK}:${proxy.port}`, ...creds,
      // no prewarmed connections: the proxy then sees exactly the one tunnel
      'wsclient', '--wsserver', `ws://${LOOPBACK}:${server.port('listen')}`, '--password', 'hello', '--socks5', `${LOOPBACK}:0`, '--pool', '0',
    ]);
    const s = await socksConnect(client.port('socks5'), { type: 'ipv4', host: LOOPBACK, port: (echo.address() as net.AddressInfo).port });
    s.write('through the proxy');
    expect((await readExactly(s, 17)).toString()).toBe('through the proxy');
    s.destroy();
    expect(proxy.seen.map((x) => x.dst)).toEqual([`${LOOPBACK}:${server.port('listen')}`]);
  });

  it("wsserver sends a flow's UDP through the proxy's UDP ASSOCIATE", async () => {
    const proxy = await startPyProxy();
    closers.push(() => proxy.close());
    const echo = await startUdpEcho(LOOPBACK);
    closers.push(() => echo.close());
    const { client } = await pair([], ['--dialWithSocks5', `${LOOPBACK}:${proxy.port}`]);
    const u = await Socks5UdpClient.associate({ host: LOOPBACK, port: client.port('socks5') });
    closers.push(() => u.close());
    u.send({ host: LOOPBACK, port: echo.port }, Buffer.from('through the proxy'));
    expect((await u.next()).data.toString()).toBe('through the proxy');
    await proxy.waitLine('ASSOC');
  });
});

describe('bad global values: one line on stderr, non-zero exit', () => {
  const server = ['wsserver', '--listen', `${LOOPBACK}:0`, '--password', 'x'];
  it.each([
    [['--tag', 'novalue'], /--tag/],
    [['--prometheus', `${LOOPBACK}:0`], /--prometheusPath/],
    [['--dialWithDNS', 'https://dns.example/dns-query'], /address/],
    [['--dialWithDNS', 'not-an-ip:53'], /--dialWithDNS/],
    [['--dialWithIP4', '::1'], /--dialWithIP4/],
    [['--dialWithNIC', 'no-such-nic0'], /--dialWithNIC/],
    [['--log', join(dir, 'missing', 'dir', 'x.log')], /log file/],
    [['--pprof', ':6060'], /pprof/],
  ])('%j', async (args, re) => {
    const r = await runCli([...args, ...server]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(re);
  });

  it('a --prometheus port in use', async () => {
    const busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, LOOPBACK, r));
    closers.push(() => new Promise<void>((r) => busy.close(() => r())));
    const r = await runCli(['--prometheus', `${LOOPBACK}:${(busy.address() as net.AddressInfo).port}`, '--prometheusPath', '/m', ...server]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/in use/);
  });
});

