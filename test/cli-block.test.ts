/**
 * Issue 9, destination policy through the CLI: block lists from a file and from
 * an http URL served on 127.0.0.1, a domain blocked by suffix, a domain that
 * resolves (through --dialWithDNS, a test DNS server) into a blocked CIDR, UDP
 * to a blocked address, a reload after the file changed and a failed reload that
 * keeps the list, the tunnel beside them still working, and bad values at start.
 * Issue 22: --blockLocal (and the unspecified addresses refused without it), the
 * flag wired through the CLI and the runtime, its start line, a client refusing it.
 * (Every form over real sockets: test/e2e-block-local.test.ts.)
 */
import { mkdtempSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type CliProcess, runCli, startCli, stopAllClis } from './helpers/cli.js';
import { type DnsServer, startDnsServer } from './helpers/dial-dns.js';
import { type ExchangeServer, exchangeThroughSocks, LOOPBACK, startExchangeServer, waitFor } from './helpers/net.js';
import { Socks5UdpClient, startUdpEcho, type UdpResponder } from './helpers/udp.js';

const OTHER = '127.0.0.2';
const dir = mkdtempSync(join(tmpdir(), 'brook-block-'));
let dns: DnsServer;
let dst: ExchangeServer;
const closers: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  dns = await startDnsServer({
    'a.blocked.test': { A: [LOOPBACK] },
    'good.test': { A: [LOOPBACK] },
    'evil.test': { A: [OTHER] },
  });
  dst = await startExchangeServer({ downBytes: 2000, hosts: [LOOPBACK, OTHER] });
});
afterEach(async () => {
  await stopAllClis();
  for (const c of closers.splice(0)) await c();
});
afterAll(async () => {
  await dst?.close();
  await dns?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function pair(globals: string[]): Promise<{ server: CliProcess; socks: number }> {
  const server = await startCli([...globals, '--dialWithDNS', `${LOOPBACK}:${dns.port}`, 'wsserver', '--listen', `${LOOPBACK}:0`, '--password', 'hello']);
  const client = await startCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:${server.port('listen')}`, '--password', 'hello', '--socks5', `${LOOPBACK}:0`]);
  return { server, socks: client.port('socks5') };
}

/** Whether a TCP tunnel to host:port carries the destination's bytes. */
async function reaches(socks: number, host: string, type: 'domain' | 'ipv4' = 'domain'): Promise<boolean> {
  try {
    const r = await exchangeThroughSocks(socks, { type, host, port: dst.port }, 100);
    return r.received.bytes === 2000;
  } catch {
    return false;
  }
}

const blockedLines = (p: CliProcess) => p.lines.filter((l) => l['code'] === 'BROOK_ERR_BLOCKED');

describe('block lists', () => {
  it('a domain by suffix, a domain resolving into a blocked CIDR, an IP in it; the tunnel beside them works; never dialled', async () => {
    const domains = join(dir, 'domains.txt');
    const cidr4 = join(dir, 'cidr4.txt');
    writeFileSync(domains, '# blocked\nblocked.test\n');
    writeFileSync(cidr4, `${OTHER}/32\n`);
    const { server, socks } = await pair(['--blockDomainList', domains, '--blockCIDR4List', cidr4]);
    const before = dst.records.length;
    expect(await reaches(socks, 'good.test')).toBe(true);
    expect(await reaches(socks, 'a.blocked.test')).toBe(false);
    expect(await reaches(socks, 'evil.test')).toBe(false);
    expect(await reaches(socks, OTHER, 'ipv4')).toBe(false);
    expect(await reaches(socks, LOOPBACK, 'ipv4')).toBe(true);
    await waitFor(() => blockedLines(server).length >= 1, 5000, 'a blocked line');
    // only the two allowed tunnels reached the destination
    await waitFor(() => dst.records.length >= before + 2, 5000, 'the allowed tunnels');
    expect(dst.records.length).toBe(before + 2);
    const line = blockedLines(server)[0]!;
    expect(line).toMatchObject({ dst: 'a.blocked.test:' + dst.port, network: 'tcp', rule: 'domain:blocked.test' });
  });

  it('UDP to a blocked address gets nothing; UDP beside it is echoed', async () => {
    const cidr4 = join(dir, 'cidr4-udp.txt');
    writeFileSync(cidr4, `${OTHER}/32\n`);
    const echoOk: UdpResponder = await startUdpEcho(LOOPBACK);
    const echoBlocked: UdpResponder = await startUdpEcho(OTHER);
    closers.push(() => echoOk.close(), () => echoBlocked.close());
    const { server, socks } = await pair(['--blockCIDR4List', cidr4]);
    const u = await Socks5UdpClient.associate({ host: LOOPBACK, port: socks });
    closers.push(() => u.close());
    u.send({ host: OTHER, port: echoBlocked.port }, Buffer.from('to the blocked one'));
    u.send({ host: LOOPBACK, port: echoOk.port }, Buffer.from('to the allowed one'));
    const r = await u.next((x) => x.data.toString() === 'to the allowed one');
    expect(r.data.toString()).toBe('to the allowed one');
    await waitFor(() => blockedLines(server).some((l) => l['network'] === 'udp'), 5000, 'the UDP blocked line');
    expect(echoBlocked.received).toBe(0);
  });

  it('an http URL list, reloaded every second: a change takes effect; a failed reload keeps the last good list', async () => {
    let body: string | null = 'nothing.test\n';
    const http = createHttpServer((_req, res) => {
      if (body === null) res.writeHead(503).end();
      else res.writeHead(200, { 'Content-Type': 'text/plain' }).end(body);
    });
    await new Promise<void>((r) => http.listen(0, LOOPBACK, r));
    closers.push(() => new Promise<void>((r) => http.close(() => r())));
    const url = `http://${LOOPBACK}:${(http.address() as AddressInfo).port}/list.txt`;
    const { server, socks } = await pair(['--blockDomainList', url, '--blockListUpdateInterval', '1']);
    expect(await reaches(socks, 'good.test')).toBe(true);
    body = 'good.test\n';
    const deadline = Date.now() + 8000;
    while (Date.now() < deadline && (await reaches(socks, 'good.test'))) await new Promise((r) => setTimeout(r, 300));
    expect(await reaches(socks, 'good.test')).toBe(false);
    body = null; // the list URL fails: the last good list stays
    const lines = server.lines.length;
    await waitFor(() => server.lines.slice(lines).some((l) => /503|reload|keep/i.test(JSON.stringify(l))), 8000, 'a reload failure line');
    expect(await reaches(socks, 'good.test')).toBe(false);
  }, 30_000);

  it('a file list reloaded after it changed, and after it was removed', async () => {
    const domains = join(dir, 'reload.txt');
    writeFileSync(domains, 'nothing.test\n');
    const { socks } = await pair(['--blockDomainList', domains, '--blockListUpdateInterval', '1']);
    expect(await reaches(socks, 'good.test')).toBe(true);
    writeFileSync(domains, 'good.test\n');
    const deadline = Date.now() + 8000;
    while (Date.now() < deadline && (await reaches(socks, 'good.test'))) await new Promise((r) => setTimeout(r, 300));
    expect(await reaches(socks, 'good.test')).toBe(false);
    unlinkSync(domains);
    await new Promise((r) => setTimeout(r, 1500));
    expect(await reaches(socks, 'good.test')).toBe(false);
  }, 30_000);
});

describe('--blockLocal, and the unspecified addresses without it', () => {
  async function localPair(serverArgs: string[]): Promise<{ server: CliProcess; socks: number }> {
    const server = await startCli(['wsserver', '--listen', `${LOOPBACK}:0`, '--password', 'hello', ...serverArgs]);
    const client = await startCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:${server.port('listen')}`, '--password', 'hello', '--socks5', `${LOOPBACK}:0`]);
    return { server, socks: client.port('socks5') };
  }

  it('wsserver --blockLocal: loopback in any form refused, the rule in the line; never dialled', async () => {
    const { server, socks } = await localPair(['--blockLocal']);
    expect(server.lines.find((l) => l['msg'] === 'block lists loaded')).toMatchObject({ domains: 0, cidr4: 0, cidr6: 0, local: expect.any(Number) });
    const before = dst.records.length;
    expect(await reaches(socks, LOOPBACK, 'ipv4')).toBe(false);
    await waitFor(() => blockedLines(server).length >= 1, 5000, 'a blocked line');
    expect(blockedLines(server)[0]).toMatchObject({ dst: `${LOOPBACK}:${dst.port}`, network: 'tcp', rule: 'local:loopback', error: 'destination blocked by local:loopback' });
    for (const host of ['127.1', '2130706433', 'localhost', '0']) expect(await reaches(socks, host), host).toBe(false);
    expect(dst.records.length).toBe(before);
  });

  it('wsserver --blockLocal: UDP to loopback refused, the rule in the line, nothing delivered', async () => {
    const echo: UdpResponder = await startUdpEcho(LOOPBACK);
    closers.push(() => echo.close());
    const { server, socks } = await localPair(['--blockLocal']);
    const u = await Socks5UdpClient.associate({ host: LOOPBACK, port: socks });
    closers.push(() => u.close());
    u.send({ host: LOOPBACK, port: echo.port }, Buffer.from('to the loopback'));
    await waitFor(() => blockedLines(server).some((l) => l['network'] === 'udp'), 5000, 'the UDP blocked line');
    expect(blockedLines(server)[0]).toMatchObject({ network: 'udp', rule: 'local:loopback' });
    await new Promise((r) => setTimeout(r, 200));
    expect(echo.received).toBe(0);
  });

  it('wsserver without it: 0.0.0.0 and the name 0 refused (local:unspecified), loopback reached as upstream', async () => {
    const { server, socks } = await localPair([]);
    expect(await reaches(socks, '0.0.0.0', 'ipv4')).toBe(false);
    await waitFor(() => blockedLines(server).length >= 1, 5000, 'a blocked line');
    expect(blockedLines(server)[0]).toMatchObject({ dst: `0.0.0.0:${dst.port}`, network: 'tcp', rule: 'local:unspecified' });
    expect(await reaches(socks, '0')).toBe(false);
    expect(await reaches(socks, LOOPBACK, 'ipv4')).toBe(true);
    expect(server.lines.some((l) => l['msg'] === 'block lists loaded')).toBe(false);
  });

  it('is a server option: a client refuses it with one line', async () => {
    const r = await runCli(['wsclient', '--blockLocal', '--wsserver', `ws://${LOOPBACK}:9`, '--password', 'x', '--socks5', `${LOOPBACK}:0`], { timeoutMs: 20_000 });
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/unknown option '--blockLocal'/);
    const help = await runCli(['wssserver', '--help']);
    expect(help.stdout).toMatch(/--blockLocal\s+refuse destinations on this host/);
  }, 30_000);
});

describe('bad block values: one line, non-zero exit', () => {
  const server = ['wsserver', '--listen', `${LOOPBACK}:0`, '--password', 'x'];
  it('a bad CIDR line, an unreadable file, an unreachable URL, block options on a client', async () => {
    const bad = join(dir, 'bad.txt');
    writeFileSync(bad, '10.0.0.0/8\nnot-a-cidr\n');
    const cases: [string[], RegExp][] = [
      [['--blockCIDR4List', bad, ...server], /line 2/],
      [['--blockDomainList', join(dir, 'missing.txt'), ...server], /missing\.txt/],
      [['--blockDomainList', `http://${LOOPBACK}:9/list.txt`, ...server], /list/i],
      [['--blockDomainList', bad, 'wsclient', '--wsserver', `ws://${LOOPBACK}:9`, '--password', 'x', '--socks5', `${LOOPBACK}:0`], /applies to wsserver/],
    ];
    for (const [args, re] of cases) {
      const r = await runCli(args, { timeoutMs: 20_000 });
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toMatch(re);
    }
  }, 60_000);
});

