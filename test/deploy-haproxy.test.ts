/**
 * deploy/haproxy.cfg end to end (issue 13, "More than one server"): Debian's
 * haproxy with a config generated from the file in the repo (addresses, ports
 * and the check interval substituted; the Debian-only global lines - syslog,
 * chroot, user, daemon, stats socket - dropped), three wsserver processes (the
 * built CLI) behind it and one wsclient in front. 60 tunnels with SHA-256
 * checks in both directions: every instance carries some; one instance is
 * killed (SIGKILL) while 9 tunnels are open: exactly the ones it carried fail,
 * the others finish intact, new tunnels succeed at once (haproxy retries a
 * refused connection on another instance) and the health check marks it DOWN.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliProcess, freePort, startCli, stopCli, tempDir } from './helpers/cli.js';
import {
  type ExchangeServer,
  LOOPBACK,
  type SocksTarget,
  exchangeThroughSocks,
  readAllHashed,
  sha256,
  socksConnect,
  startExchangeServer,
  waitFor,
  withTimeout,
} from './helpers/net.js';

const CONFIG = 'deploy/haproxy.cfg';
const HAPROXY = existsSync('/usr/sbin/haproxy') ? '/usr/sbin/haproxy' : 'haproxy';
const PASSWORD = 'deploy-haproxy';
const INSTANCES = 3;
const UP = 32 * 1024;
const DOWN = 32 * 1024;
const BEFORE_KILL = 30;
const HELD = 9;
const AFTER_KILL = 60 - BEFORE_KILL - HELD;
const PARALLEL = 5;
const TUNNEL_MS = 10_000;

/**
 * The repo's haproxy.cfg made runnable by a test: each rewrite must match the
 * expected number of lines, so a change to the file that the test no longer
 * understands fails here rather than testing something else.
 */
export function haproxyConfigForTest(src: string, o: { front: number; servers: number[]; checkInterval: string }): string {
  let s = src;
  const rewrite = (re: RegExp, to: string | ((...m: string[]) => string), count: number, what: string) => {
    const n = (s.match(new RegExp(re.source, re.flags.includes('g') ? re.flags : re.flags + 'g')) ?? []).length;
    if (n !== count) throw new Error(`${CONFIG}: expected ${count} ${what}, found ${n}`);
    s = s.replace(new RegExp(re.source, re.flags.includes('g') ? re.flags : re.flags + 'g'), to as string);
  };
  rewrite(/^\s*log \/dev\/log.*\n/m, '', 2, 'syslog lines');
  rewrite(/^\s*(chroot|user|group) .*\n/m, '', 3, 'chroot/user/group lines');
  rewrite(/^\s*stats (socket|timeout) .*\n/m, '', 2, 'stats lines');
  rewrite(/^\s*daemon\s*\n/m, '', 1, 'daemon line');
  rewrite(/^(\s*)maxconn \d+/m, '$1maxconn 1000\n$1log stderr format raw daemon notice', 1, 'maxconn line');
  rewrite(/^(\s*)bind :9999$/m, `$1bind ${LOOPBACK}:${o.front}`, 1, 'bind line');
  rewrite(/ inter 2s fall 3 rise 2$/m, ` inter ${o.checkInterval} fall 2 rise 2`, 1, 'check timing');
  let i = 0;
  rewrite(
    /^(\s*)server (brook\d) 10\.0\.0\.\d+:9999 send-proxy-v2 check-send-proxy$/m,
    (_m, ws, name) => `${ws}server ${name} ${LOOPBACK}:${o.servers[i++]} send-proxy-v2 check-send-proxy`,
    o.servers.length,
    'server lines',
  );
  return s;
}

function haproxyCheck(file: string): Promise<{ code: number; out: string }> {
  return new Promise((res) => {
    execFile(HAPROXY, ['-c', '-f', file], { timeout: 10_000 }, (e, stdout, stderr) =>
      res({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, out: `${stdout}${stderr}` }),
    );
  });
}

async function scrape(port: number): Promise<string> {
  const r = await withTimeout(fetch(`http://${LOOPBACK}:${port}/metrics`), 5000, `metrics on ${port}`);
  return r.text();
}

function series(body: string, name: string): number {
  const line = body.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes('network="tcp"'));
  return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
}

/** Run `n` jobs at most `parallel` at a time; results in order. */
async function pool<T>(n: number, parallel: number, job: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array<T>(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: parallel }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await job(i);
      }
    }),
  );
  return out;
}

interface Held {
  s: net.Socket;
  data: Buffer;
  received: Promise<{ hash: string; bytes: number; gotEnd: boolean }>;
}

describe('deploy/haproxy.cfg: three wsserver instances behind haproxy', () => {
  const tmp = tempDir('brook-deploy-haproxy-');
  const servers: { proc: CliProcess; metrics: number }[] = [];
  let client: CliProcess;
  let haproxy: ChildProcess;
  let haproxyLog = '';
  let exchange: ExchangeServer;
  let target: SocksTarget;
  let socks: number;

  beforeAll(async () => {
    exchange = await startExchangeServer({ downBytes: DOWN });
    target = { type: 'ipv4', host: LOOPBACK, port: exchange.port };
    for (let i = 0; i < INSTANCES; i++) {
      const metrics = await freePort();
      const proc = await startCli([
        '--prometheus', `${LOOPBACK}:${metrics}`, '--prometheusPath', '/metrics',
        'wsserver', '--listen', `${LOOPBACK}:${await freePort()}`, '--password', PASSWORD, '--proxyProtocol', '--trustedProxies', LOOPBACK,
      ]);
      servers.push({ proc, metrics });
    }
    const front = await freePort();
    const cfg = join(tmp.dir, 'haproxy.cfg');
    writeFileSync(cfg, haproxyConfigForTest(readFileSync(CONFIG, 'utf8'), { front, servers: servers.map((s) => s.proc.port('listen')), checkInterval: '200ms' }));
    haproxy = spawn(HAPROXY, ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
    haproxy.stdout!.on('data', (d: Buffer) => (haproxyLog += d.toString()));
    haproxy.stderr!.on('data', (d: Buffer) => (haproxyLog += d.toString()));
    client = await startCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:${front}`, '--password', PASSWORD, '--socks5', `${LOOPBACK}:0`]);
    socks = client.port('socks5');
    // haproxy is up once a tunnel goes through (bounded)
    const t0 = Date.now();
    for (;;) {
      try {
        const r = await exchangeThroughSocks(socks, target, 1);
        if (r.received.bytes === DOWN) break;
      } catch {
        /* not yet */
      }
      if (haproxy.exitCode !== null || Date.now() - t0 > 10_000) throw new Error(`haproxy did not come up:\n${haproxyLog}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }, 60_000);

  afterAll(async () => {
    if (haproxy && haproxy.exitCode === null) {
      haproxy.kill('SIGTERM');
      await withTimeout(new Promise((r) => haproxy.once('exit', r)), 5000, 'haproxy exit').catch(() => haproxy.kill('SIGKILL'));
    }
    await Promise.all([client, ...servers.map((s) => s.proc)].filter(Boolean).map((p) => stopCli(p)));
    await exchange?.close();
    tmp.remove();
  });

  it('the file in the repo passes haproxy -c as it is', async () => {
    const r = await haproxyCheck(CONFIG);
    expect(r.code, r.out).toBe(0);
  });

  it('60 tunnels: all intact, spread over every instance; a killed instance loses only its own tunnels', async () => {
    const opened = async () => Promise.all(servers.map(async (s) => series(await scrape(s.metrics), 'brook_tunnels_opened_total')));
    const active = async () => Promise.all(servers.map(async (s) => series(await scrape(s.metrics), 'brook_tunnels_active')));
    const intact = (r: Awaited<ReturnType<typeof exchangeThroughSocks>>) =>
      r.received.bytes === DOWN &&
      exchange.records.some((x) => x.sentHash === r.received.hash) &&
      exchange.records.some((x) => x.receivedHash === r.sent.hash && x.receivedBytes === UP);
    const base = await opened();

    // 1. 30 tunnels, 5 at a time
    const first = await pool(BEFORE_KILL, PARALLEL, () => withTimeout(exchangeThroughSocks(socks, target, UP), TUNNEL_MS, 'tunnel'));
    await exchange.waitRecords(1 + BEFORE_KILL, 10_000);
    for (const r of first) {
      expect(intact(r), JSON.stringify(r)).toBe(true);
    }
    const afterFirst = await opened();
    const carried = afterFirst.map((n, i) => n - base[i]!);
    expect(carried.reduce((a, b) => a + b, 0)).toBe(BEFORE_KILL);
    for (const n of carried) expect(n).toBeGreaterThan(0);

    // 2. 9 tunnels held open (half their bytes sent), then instance 2 is killed
    const held: Held[] = [];
    for (let i = 0; i < HELD; i++) {
      const s = await socksConnect(socks, target);
      s.on('error', () => undefined);
      const data = randomBytes(UP);
      const received = readAllHashed(s);
      s.write(data.subarray(0, UP / 2));
      held.push({ s, data, received });
    }
    let live: number[] = [];
    await withTimeout(
      (async () => {
        for (;;) {
          live = await active();
          if (live.reduce((a, b) => a + b, 0) === HELD) return;
          await new Promise((r) => setTimeout(r, 50));
        }
      })(),
      10_000,
      `${HELD} tunnels active on the instances`,
    );
    const victim = 1;
    const lost = live[victim]!;
    expect(lost).toBeGreaterThan(0);
    process.kill(servers[victim]!.proc.pid, 'SIGKILL');
    await servers[victim]!.proc.exited;

    // 3. new tunnels right away: none fails, the killed instance is skipped
    const later = await pool(AFTER_KILL, 3, () => withTimeout(exchangeThroughSocks(socks, target, UP), TUNNEL_MS, 'tunnel after the kill'));

    // the held tunnels finish: exactly those on the killed instance fail
    const results = await Promise.all(
      held.map(async (h) => {
        if (!h.s.destroyed) h.s.end(h.data.subarray(UP / 2));
        const got = await withTimeout(h.received, TUNNEL_MS, 'held tunnel');
        return { got, sentHash: sha256(h.data) };
      }),
    );
    // every tunnel reached the destination (the killed instance's connections were closed by the kernel)
    await exchange.waitRecords(1 + BEFORE_KILL + HELD + AFTER_KILL, 10_000);
    for (const r of later) expect(intact(r), JSON.stringify(r)).toBe(true);
    const ok = results.filter(
      (r) => r.got.bytes === DOWN && exchange.records.some((x) => x.sentHash === r.got.hash) && exchange.records.some((x) => x.receivedHash === r.sentHash && x.receivedBytes === UP),
    );
    expect(ok.length).toBe(HELD - lost);

    const final = await Promise.all(servers.map(async (s, i) => (i === victim ? afterFirst[i]! : series(await scrape(s.metrics), 'brook_tunnels_opened_total'))));
    const survivors = final.reduce((a, n, i) => (i === victim ? a : a + n - afterFirst[i]!), 0);
    expect(survivors).toBe(HELD - lost + AFTER_KILL);

    // the health check has taken the instance out
    await waitFor(() => /brook2 is DOWN/.test(haproxyLog), 5000, `haproxy marking brook2 DOWN; log:\n${haproxyLog}`);
    for (const s of held) s.s.destroy();
  }, 60_000);
});
