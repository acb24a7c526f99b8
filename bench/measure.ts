/**
 * What `make bench` measures (bench/run.ts): the probe (bench/probe.ts, in its own process) and, per
 * contender and repeat, one Sample (RSS idle and with idle tunnels, connect latency, UDP echo,
 * throughput, CPU per GiB) and the connect-latency rows (loopback and over a delayed link).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { cpuSecondsOf, log, ROOT, rssKiBOf, sleep, stop, track } from './children.js';
import type { Contender, Running } from './contenders.js';
import { startDelayRelay } from './delay.js';

const PROBE = join(ROOT, 'bench', 'probe.ts');
const PROBE_TIMEOUT_MS = 180_000;
const SETTLE_MS = 1000;
/** Each way on the simulated link (ms): a 20 ms round trip. */
export const LINK_ONE_WAY_MS = 10;
/** After a latency client starts: its pool fills (over the link: a few round trips). */
const LATENCY_SETTLE_MS = 300;

/** How much one run measures (bench/run.ts: full or --quick). */
export interface Sizes {
  repeats: number;
  singleMiB: number;
  multiConns: number;
  multiMiBEach: number;
  rttCount: number;
  udpCount: number;
  udpSize: number;
  holdCount: number;
  /** Repeats that also measure the connect-latency table (the first ones). */
  latencyRepeats: number;
  /** Connects per latency row over the link, per repeat. */
  linkCount: number;
}

// ---------------------------------------------------------------- probe

interface ProbeResult {
  [k: string]: unknown;
}

function probe(args: string[]): Promise<ProbeResult> {
  return new Promise((resolvePromise, reject) => {
    const cp = spawn(process.execPath, ['--import', 'tsx', PROBE, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    track(cp);
    let out = '';
    let err = '';
    cp.stdout.on('data', (d) => (out += d));
    cp.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => cp.kill('SIGKILL'), PROBE_TIMEOUT_MS);
    cp.on('exit', () => {
      clearTimeout(t);
      const line = out.trim().split('\n').pop() ?? '';
      try {
        const r = JSON.parse(line) as ProbeResult;
        if (r['error']) reject(new Error(`probe ${args.join(' ')}: ${String(r['error'])}`));
        else resolvePromise(r);
      } catch {
        reject(new Error(`probe ${args.join(' ')}: no result (${err.trim().slice(-300)})`));
      }
    });
  });
}

/** Open `count` tunnels and keep them; returns a closer once they are all up. */
function holdTunnels(socks: string, count: number): Promise<{ ready: number; close: () => Promise<void> }> {
  return new Promise((resolvePromise, reject) => {
    const cp = spawn(process.execPath, ['--import', 'tsx', PROBE, 'hold', '--socks', socks, '--count', String(count)], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    track(cp);
    let out = '';
    const t = setTimeout(() => {
      cp.kill('SIGKILL');
      reject(new Error('hold: timed out'));
    }, PROBE_TIMEOUT_MS);
    cp.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(t);
      const r = JSON.parse(out.slice(0, nl)) as { ready: number };
      resolvePromise({
        ready: r.ready,
        close: async () => {
          const gone = new Promise<void>((res) => cp.once('exit', () => res()));
          cp.stdin.end();
          await Promise.race([gone, sleep(10_000)]);
          if (cp.exitCode === null) cp.kill('SIGKILL');
        },
      });
    });
  });
}

// ---------------------------------------------------------------- measurements

export interface Sample {
  idleRssKiB: number;
  holdRssKiB: number;
  holdReady: number;
  kibPerTunnel: number;
  clientKibPerTunnel: number;
  rttP50ms: number;
  rttP99ms: number;
  rttFails: number;
  udpP50ms: number;
  udpLoss: number;
  upMBps: number;
  downMBps: number;
  multiUpMBps: number;
  multiDownMBps: number;
  clientCpuSecPerGiB: number;
  serverCpuSecPerGiB: number;
  /** The probe's own CPU (sender + receiver/SHA-256), single stream, mean of up and down. */
  probeCpuSecPerGiB: number;
  intact: boolean;
}

export async function measure(r: Running, sizes: Sizes): Promise<Sample> {
  const spid = r.server.pid;
  const cpid = r.client?.pid;
  await sleep(SETTLE_MS);
  const idleRssKiB = rssKiBOf(spid);
  const clientIdle = rssKiBOf(cpid);
  const held = await holdTunnels(r.socks, sizes.holdCount);
  await sleep(SETTLE_MS);
  const holdRssKiB = rssKiBOf(spid);
  const clientHold = rssKiBOf(cpid);
  await held.close();
  await sleep(SETTLE_MS);
  const rtt = await probe(['rtt', '--socks', r.socks, '--count', String(sizes.rttCount)]);
  const udp = await probe(['udp', '--socks', r.socks, '--count', String(sizes.udpCount), '--size', String(sizes.udpSize)]).catch((e: Error) => {
    log(`udp: ${e.message}`);
    return { p50ms: null, loss: 1 } as ProbeResult;
  });
  const c0 = cpuSecondsOf(cpid);
  const s0 = cpuSecondsOf(spid);
  const tcp = (dir: string, conns: number, mib: number) =>
    probe(['tcp', '--socks', r.socks, '--dir', dir, '--conns', String(conns), '--mib', String(mib)]);
  const up = await tcp('up', 1, sizes.singleMiB);
  const down = await tcp('down', 1, sizes.singleMiB);
  const mup = await tcp('up', sizes.multiConns, sizes.multiMiBEach);
  const mdown = await tcp('down', sizes.multiConns, sizes.multiMiBEach);
  const gib = (2 * sizes.singleMiB + 2 * sizes.multiConns * sizes.multiMiBEach) / 1024;
  const c1 = cpuSecondsOf(cpid);
  const s1 = cpuSecondsOf(spid);
  const n = (x: unknown) => (typeof x === 'number' ? x : NaN);
  return {
    idleRssKiB,
    holdRssKiB,
    holdReady: held.ready,
    kibPerTunnel: (holdRssKiB - idleRssKiB) / Math.max(1, held.ready),
    clientKibPerTunnel: cpid ? (clientHold - clientIdle) / Math.max(1, held.ready) : NaN,
    rttP50ms: n(rtt['p50ms']),
    rttP99ms: n(rtt['p99ms']),
    rttFails: n(rtt['fails']),
    udpP50ms: n(udp['p50ms']),
    udpLoss: n(udp['loss']),
    upMBps: n(up['MBps']),
    downMBps: n(down['MBps']),
    multiUpMBps: n(mup['MBps']),
    multiDownMBps: n(mdown['MBps']),
    clientCpuSecPerGiB: cpid ? (c1 - c0) / gib : NaN,
    serverCpuSecPerGiB: (s1 - s0) / gib,
    probeCpuSecPerGiB: (n(up['probeCpuSecPerGiB']) + n(down['probeCpuSecPerGiB'])) / 2,
    intact: [up, down, mup, mdown].every((x) => x['intact'] === true),
  };
}

/** Connect latency of one setting: loopback and over the link. */
export interface LatencySample {
  loopP50ms: number;
  linkP50ms: number;
  linkP99ms: number;
}

/**
 * The connect-latency rows of a contender (see the top of bench/run.ts). Loopback p50 of the default
 * row is the main table's (same probe, same count); every other figure comes from a client started
 * for it, stopped after.
 */
export async function measureLatency(c: Contender, r: Running, loopDefault: number, sizes: Sizes): Promise<Record<string, LatencySample>> {
  const out: Record<string, LatencySample> = {};
  const n = (x: unknown) => (typeof x === 'number' ? x : NaN);
  const rtt = (socks: string, count: number, extra: string[] = []) => probe(['rtt', '--socks', socks, '--count', String(count), ...extra]);
  for (const row of c.rows) {
    const name = c.name + row.key;
    let loop = loopDefault;
    if (row.key !== '' && r.startClient) {
      const x = await r.startClient({ extra: row.extra });
      try {
        await sleep(LATENCY_SETTLE_MS);
        loop = n((await rtt(x.socks, sizes.rttCount))['p50ms']);
      } finally {
        await stop(x.client);
      }
    }
    let link: ProbeResult;
    if (r.startClient && r.serverPort) {
      const relay = await startDelayRelay({ target: { host: '127.0.0.1', port: r.serverPort }, oneWayMs: LINK_ONE_WAY_MS });
      const x = await r.startClient({ via: relay.port, extra: row.extra });
      try {
        // the pool fills over the link first
        await sleep(LATENCY_SETTLE_MS);
        link = await rtt(x.socks, sizes.linkCount);
      } finally {
        await stop(x.client);
        await relay.close();
      }
    } else {
      // no client/server link (the baseline): the link is between it and the destination
      link = await rtt(r.socks, sizes.linkCount, ['--link-delay', String(LINK_ONE_WAY_MS)]);
    }
    out[name] = { loopP50ms: loop, linkP50ms: n(link['p50ms']), linkP99ms: n(link['p99ms']) };
    log(`  latency ${name}: ${JSON.stringify(out[name])}`);
  }
  return out;
}
