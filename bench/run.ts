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
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { cpus, tmpdir, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { renderChart } from './chart.js';
import { startDelayRelay } from './delay.js';
import { freePort } from './hostile/base.js';
import { cpuSeconds, rssKiB, tree } from './proc.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const BROOK = join(ROOT, 'dist', 'cmd', 'brook-ts.js');
const PROBE = join(ROOT, 'bench', 'probe.ts');
const DIRECT = join(ROOT, 'bench', 'direct.mjs');
const PASSWORD = 'bench-password';
const READY_TIMEOUT_MS = 15_000;
const PROBE_TIMEOUT_MS = 180_000;
const SETTLE_MS = 1000;
/** Each way on the simulated link (ms): a 20 ms round trip. */
const LINK_ONE_WAY_MS = 10;
/** After a latency client starts: its pool fills (over the link: a few round trips). */
const LATENCY_SETTLE_MS = 300;

interface Sizes {
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

const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---------------------------------------------------------------- processes

/** utime + stime of the tree, seconds (0 without a process). */
const cpuSecondsOf = (pid: number | undefined): number => (pid === undefined ? 0 : cpuSeconds(pid));
/** VmRSS of the tree, KiB (0 without a process). */
const rssKiBOf = (pid: number | undefined): number => (pid === undefined ? 0 : rssKiB(pid));

const started = new Set<ChildProcess>();

function start(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  const cp = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT, env });
  started.add(cp);
  let tail = '';
  const keep = (d: Buffer) => {
    tail = (tail + d.toString()).slice(-2000);
  };
  cp.stdout!.on('data', keep);
  cp.stderr!.on('data', keep);
  cp.on('exit', (code, sig) => {
    started.delete(cp);
    if (!stopping.has(cp)) log(`${name} exited (${code ?? sig}); last output:\n${tail}`);
  });
  return cp;
}

const stopping = new Set<ChildProcess>();
async function stop(cp: ChildProcess | undefined): Promise<void> {
  if (!cp || cp.exitCode !== null || cp.signalCode !== null) return;
  stopping.add(cp);
  const gone = new Promise<void>((r) => cp.once('exit', () => r()));
  const pids = cp.pid ? tree(cp.pid) : [];
  // the process and its cluster workers (ours: only pids this run started)
  for (const p of pids.reverse()) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await Promise.race([gone, sleep(5000)]);
  await sleep(200);
}

function cleanupSync(): void {
  for (const cp of started) {
    try {
      cp.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
}
process.on('exit', cleanupSync);
for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => process.exit(130));

async function waitPort(port: number, cp: ChildProcess): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < READY_TIMEOUT_MS) {
    if (cp.exitCode !== null) throw new Error(`process exited before listening on ${port}`);
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listening on ${port} after ${READY_TIMEOUT_MS} ms`);
}

// ---------------------------------------------------------------- probe

interface ProbeResult {
  [k: string]: unknown;
}

function probe(args: string[]): Promise<ProbeResult> {
  return new Promise((resolvePromise, reject) => {
    const cp = spawn(process.execPath, ['--import', 'tsx', PROBE, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    started.add(cp);
    let out = '';
    let err = '';
    cp.stdout.on('data', (d) => (out += d));
    cp.stderr.on('data', (d) => (err += d));
    const t = setTimeout(() => cp.kill('SIGKILL'), PROBE_TIMEOUT_MS);
    cp.on('exit', () => {
      clearTimeout(t);
      started.delete(cp);
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
    started.add(cp);
    let out = '';
    const t = setTimeout(() => {
      cp.kill('SIGKILL');
      reject(new Error('hold: timed out'));
    }, PROBE_TIMEOUT_MS);
    cp.on('exit', () => started.delete(cp));
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

// ---------------------------------------------------------------- contenders

interface Running {
  socks: string;
  client?: ChildProcess;
  server: ChildProcess;
  /** The server's port (the link relay goes in front of it). */
  serverPort?: number;
  /** Start one more client of this server (latency rows): through `via` instead of the server's port, with extra flags. */
  startClient?(o: { via?: number; extra?: string[] }): Promise<{ socks: string; client: ChildProcess }>;
}

/** A setting whose connect latency is reported as a row of its own (key '' = the contender's default). */
interface LatencyRow {
  key: string;
  label: string;
  extra: string[];
}

interface Contender {
  name: string;
  label: string;
  start(tmp: string): Promise<Running>;
  rows: LatencyRow[];
}

function brookWorkers(): string[] {
  return workersFlag ? ['--workers', workersFlag] : [];
}

async function startBrook(kind: 'ws' | 'wob' | 'wss', tmp: string): Promise<Running> {
  const sp = await freePort();
  const wob = kind === 'wob' ? ['--withoutBrookProtocol'] : [];
  const server =
    kind === 'wss'
      ? start('wssserver', process.execPath, [
          BROOK, 'wssserver', '--domainaddress', `localhost:${sp}`, '--listen', `127.0.0.1:${sp}`, '--password', PASSWORD,
          '--cert', join(tmp, 'cert.pem'), '--certkey', join(tmp, 'key.pem'), ...brookWorkers(),
        ])
      : start('wsserver', process.execPath, [BROOK, 'wsserver', '--listen', `127.0.0.1:${sp}`, '--password', PASSWORD, ...wob, ...brookWorkers()]);
  await waitPort(sp, server);
  const startClient = async (o: { via?: number; extra?: string[] } = {}) => {
    const cp = await freePort();
    const to = o.via ?? sp;
    const extra = o.extra ?? [];
    const client =
      kind === 'wss'
        ? start('wssclient', process.execPath, [
            BROOK, 'wssclient', '--wssserver', `wss://localhost:${sp}/ws`, '--address', `127.0.0.1:${to}`, '--ca', join(tmp, 'cert.pem'),
            '--password', PASSWORD, '--socks5', `127.0.0.1:${cp}`, ...extra, ...brookWorkers(),
          ])
        : start('wsclient', process.execPath, [
            BROOK, 'wsclient', '--wsserver', `ws://127.0.0.1:${to}/ws`, '--password', PASSWORD, '--socks5', `127.0.0.1:${cp}`, ...wob, ...extra, ...brookWorkers(),
          ]);
    await waitPort(cp, client);
    return { socks: `127.0.0.1:${cp}`, client };
  };
  const first = await startClient();
  return { ...first, server, serverPort: sp, startClient };
}

async function startV2ray(tmp: string): Promise<Running> {
  const sp = await freePort();
  const id = randomUUID();
  const ws = { network: 'ws', wsSettings: { path: '/ws' } };
  const serverCfg = {
    log: { loglevel: 'warning' },
    inbounds: [{ listen: '127.0.0.1', port: sp, protocol: 'vmess', settings: { clients: [{ id, alterId: 0 }] }, streamSettings: ws }],
    outbounds: [{ protocol: 'freedom', settings: {} }],
  };
  const clientCfg = (cp: number, to: number) => ({
    log: { loglevel: 'warning' },
    inbounds: [{ listen: '127.0.0.1', port: cp, protocol: 'socks', settings: { auth: 'noauth', udp: true, ip: '127.0.0.1' } }],
    outbounds: [
      {
        protocol: 'vmess',
        settings: { vnext: [{ address: '127.0.0.1', port: to, users: [{ id, alterId: 0, security: 'aes-128-gcm' }] }] },
        streamSettings: ws,
      },
    ],
  });
  writeFileSync(join(tmp, 'v2ray-server.json'), JSON.stringify(serverCfg, null, 2));
  const env = { ...process.env, V2RAY_LOCATION_ASSET: tmp };
  const server = spawn('v2ray', ['-config', join(tmp, 'v2ray-server.json')], { stdio: ['ignore', 'pipe', 'pipe'], env });
  started.add(server);
  server.on('exit', () => started.delete(server));
  server.stdout!.resume();
  server.stderr!.resume();
  await waitPort(sp, server);
  const startClient = async (o: { via?: number } = {}) => {
    const cp = await freePort();
    const file = join(tmp, `v2ray-client-${cp}.json`);
    writeFileSync(file, JSON.stringify(clientCfg(cp, o.via ?? sp), null, 2));
    const client = spawn('v2ray', ['-config', file], { stdio: ['ignore', 'pipe', 'pipe'], env });
    started.add(client);
    client.on('exit', () => started.delete(client));
    client.stdout!.resume();
    client.stderr!.resume();
    await waitPort(cp, client);
    return { socks: `127.0.0.1:${cp}`, client };
  };
  const first = await startClient();
  return { ...first, server, serverPort: sp, startClient };
}

/** The plain SOCKS5 pass-through; `js`: relaying in JS (BROOK_TS_SPLICE=0) rather than with splice(2). */
async function startBaseline(js = false): Promise<Running> {
  const p = await freePort();
  const server = start(js ? 'baseline-js' : 'baseline', process.execPath, [DIRECT, String(p)], js ? { ...process.env, BROOK_TS_SPLICE: '0' } : process.env);
  await waitPort(p, server);
  return { socks: `127.0.0.1:${p}`, server };
}

const DEFAULT_ROW: LatencyRow = { key: '', label: '', extra: [] };
const POOL_ROWS: LatencyRow[] = [
  { key: '', label: 'pool on (default)', extra: [] },
  { key: '-pool0', label: '--pool 0', extra: ['--pool', '0'] },
];

const CONTENDERS: Contender[] = [
  { name: 'brook-ws', label: 'brook-ts ws (Brook)', start: (t) => startBrook('ws', t), rows: POOL_ROWS },
  { name: 'brook-wob', label: 'brook-ts ws withoutBrookProtocol', start: (t) => startBrook('wob', t), rows: POOL_ROWS },
  {
    name: 'brook-wss',
    label: 'brook-ts wss (Brook over TLS)',
    start: (t) => startBrook('wss', t),
    rows: [
      { key: '', label: 'pool on, TLS resumption on (default)', extra: [] },
      { key: '-pool0', label: '--pool 0 (TLS resumption on)', extra: ['--pool', '0'] },
      { key: '-pool0-noresume', label: '--pool 0 --noTlsResume', extra: ['--pool', '0', '--noTlsResume'] },
    ],
  },
  { name: 'v2ray', label: 'v2ray VMess aes-128-gcm ws', start: (t) => startV2ray(t), rows: [DEFAULT_ROW] },
  { name: 'baseline', label: 'plain SOCKS5 (no encryption)', start: () => startBaseline(), rows: [DEFAULT_ROW] },
  { name: 'baseline-js', label: 'plain SOCKS5, JS relay', start: () => startBaseline(true), rows: [DEFAULT_ROW] },
];

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

async function measure(r: Running): Promise<Sample> {
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
 * The connect-latency rows of a contender (see the top of this file). Loopback p50 of the default
 * row is the main table's (same probe, same count); every other figure comes from a client started
 * for it, stopped after.
 */
async function measureLatency(c: Contender, r: Running, loopDefault: number): Promise<Record<string, LatencySample>> {
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

// ---------------------------------------------------------------- setup

function ensureV2ray(): void {
  try {
    execFileSync('v2ray', ['-version'], { stdio: 'ignore' });
    return;
  } catch {
    /* missing */
  }
  log('v2ray not found: installing the Debian package');
  const sudo = process.getuid?.() === 0 ? [] : ['sudo'];
  const run = (args: string[]) => execFileSync(sudo[0] ?? args[0]!, sudo.length ? args : args.slice(1), { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  run(['apt-get', 'update']);
  run(['apt-get', 'install', '-y', 'v2ray']);
}

function makeCert(tmp: string): void {
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-addext', 'basicConstraints=critical,CA:TRUE',
    '-keyout', join(tmp, 'key.pem'), '-out', join(tmp, 'cert.pem'),
  ], { stdio: 'ignore' });
}

function median(xs: number[]): number {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
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

function table(medians: Record<string, Sample>, labels: Record<string, string>): string {
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

function targets(m: Record<string, Sample>): string[] {
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
function latencyTable(m: Record<string, LatencySample>, labels: Record<string, string>): string {
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
function latencyTargets(m: Record<string, LatencySample>): string[] {
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
        const r = await c.start(tmp);
        try {
          const s = await measure(r);
          (samples[c.name] ??= []).push(s);
          log(`  ${JSON.stringify(s)}`);
          if (rep < sizes.latencyRepeats) {
            for (const [k, v] of Object.entries(await measureLatency(c, r, s.rttP50ms))) (latSamples[k] ??= []).push(v);
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
  const medians: Record<string, Sample> = {};
  for (const [name, ss] of Object.entries(samples)) {
    const m = {} as Record<string, number | boolean>;
    for (const k of Object.keys(ss[0]!) as (keyof Sample)[]) {
      m[k] = k === 'intact' ? ss.every((s) => s.intact) : median(ss.map((s) => s[k] as number));
    }
    medians[name] = m as unknown as Sample;
  }
  const labels = Object.fromEntries(CONTENDERS.map((c) => [c.name, c.label]));
  const latMedians: Record<string, LatencySample> = {};
  for (const [name, ss] of Object.entries(latSamples)) {
    latMedians[name] = {
      loopP50ms: median(ss.map((x) => x.loopP50ms)),
      linkP50ms: median(ss.map((x) => x.linkP50ms)),
      linkP99ms: median(ss.map((x) => x.linkP99ms)),
    };
  }
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
