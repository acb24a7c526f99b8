/**
 * The contenders of `make bench` (bench/run.ts), each a pair of child processes (client with a SOCKS5
 * inbound, server) or one pass-through, and the setup they need (v2ray installed, a certificate).
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { log, ROOT, start, track, waitPort } from './children.js';
import { freePort } from './hostile/base.js';

export const BROOK = join(ROOT, 'dist', 'cmd', 'brook-ts.js');
const DIRECT = join(ROOT, 'bench', 'direct.mjs');
const PASSWORD = 'bench-password';

export interface Running {
  socks: string;
  client?: ChildProcess;
  server: ChildProcess;
  /** The server's port (the link relay goes in front of it). */
  serverPort?: number;
  /** Start one more client of this server (latency rows): through `via` instead of the server's port, with extra flags. */
  startClient?(o: { via?: number; extra?: string[] }): Promise<{ socks: string; client: ChildProcess }>;
}

/** A setting whose connect latency is reported as a row of its own (key '' = the contender's default). */
export interface LatencyRow {
  key: string;
  label: string;
  extra: string[];
}

export interface Contender {
  name: string;
  label: string;
  /** `workers`: pass --workers N to the brook-ts client and server (undefined: their own default). */
  start(tmp: string, workers?: string): Promise<Running>;
  rows: LatencyRow[];
}

function brookWorkers(workers: string | undefined): string[] {
  return workers ? ['--workers', workers] : [];
}

async function startBrook(kind: 'ws' | 'wob' | 'wss', tmp: string, workers: string | undefined): Promise<Running> {
  const sp = await freePort();
  const wob = kind === 'wob' ? ['--withoutBrookProtocol'] : [];
  const server =
    kind === 'wss'
      ? start('wssserver', process.execPath, [
          BROOK, 'wssserver', '--domainaddress', `localhost:${sp}`, '--listen', `127.0.0.1:${sp}`, '--password', PASSWORD,
          '--cert', join(tmp, 'cert.pem'), '--certkey', join(tmp, 'key.pem'), ...brookWorkers(workers),
        ])
      : start('wsserver', process.execPath, [BROOK, 'wsserver', '--listen', `127.0.0.1:${sp}`, '--password', PASSWORD, ...wob, ...brookWorkers(workers)]);
  await waitPort(sp, server);
  const startClient = async (o: { via?: number; extra?: string[] } = {}) => {
    const cp = await freePort();
    const to = o.via ?? sp;
    const extra = o.extra ?? [];
    const client =
      kind === 'wss'
        ? start('wssclient', process.execPath, [
            BROOK, 'wssclient', '--wssserver', `wss://localhost:${sp}/ws`, '--address', `127.0.0.1:${to}`, '--ca', join(tmp, 'cert.pem'),
            '--password', PASSWORD, '--socks5', `127.0.0.1:${cp}`, ...extra, ...brookWorkers(workers),
          ])
        : start('wsclient', process.execPath, [
            BROOK, 'wsclient', '--wsserver', `ws://127.0.0.1:${to}/ws`, '--password', PASSWORD, '--socks5', `127.0.0.1:${cp}`, ...wob, ...extra, ...brookWorkers(workers),
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
  track(server);
  server.stdout!.resume();
  server.stderr!.resume();
  await waitPort(sp, server);
  const startClient = async (o: { via?: number } = {}) => {
    const cp = await freePort();
    const file = join(tmp, `v2ray-client-${cp}.json`);
    writeFileSync(file, JSON.stringify(clientCfg(cp, o.via ?? sp), null, 2));
    const client = spawn('v2ray', ['-config', file], { stdio: ['ignore', 'pipe', 'pipe'], env });
    track(client);
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

export const CONTENDERS: Contender[] = [
  { name: 'brook-ws', label: 'brook-ts ws (Brook)', start: (t, w) => startBrook('ws', t, w), rows: POOL_ROWS },
  { name: 'brook-wob', label: 'brook-ts ws withoutBrookProtocol', start: (t, w) => startBrook('wob', t, w), rows: POOL_ROWS },
  {
    name: 'brook-wss',
    label: 'brook-ts wss (Brook over TLS)',
    start: (t, w) => startBrook('wss', t, w),
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

// ---------------------------------------------------------------- setup

export function ensureV2ray(): void {
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

export function makeCert(tmp: string): void {
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost', '-addext', 'basicConstraints=critical,CA:TRUE',
    '-keyout', join(tmp, 'key.pem'), '-out', join(tmp, 'cert.pem'),
  ], { stdio: 'ignore' });
}
