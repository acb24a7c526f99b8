/**
 * Runs Debian's `pebble` (Let's Encrypt's ACME test server) and
 * `pebble-challtestsrv` (its fake DNS: every name resolves to 127.0.0.1) on
 * loopback, as ../shared/notes/acme-testing.md describes. Both are spawned
 * without a shell and stopped by their own PID.
 *
 *   const p = await startPebble({ validitySeconds: 30 });
 *   p.directoryUrl  // https://127.0.0.1:<listenPort>/dir (TLS with p.apiCaPem)
 *   await p.fetchRoot()  // issuing root PEM (new at every start)
 *   await p.stop();
 */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import https from 'node:https';
import net from 'node:net';

export interface PebbleOptions {
  listenPort?: number;
  managementPort?: number;
  /** Port pebble connects to for HTTP-01 validation. */
  httpPort?: number;
  tlsPort?: number;
  /** certificateValidityPeriod in seconds. */
  validitySeconds?: number;
  /** Use an already running fake DNS (host:port) instead of starting challtestsrv. */
  dnsServer?: string;
  dnsPort?: number;
  challManagementPort?: number;
  startTimeoutMs?: number;
  /** Reuse an API certificate (e.g. another Pebble's), so clients can trust it before this one starts. */
  api?: { certPem: string; keyPem: string };
}

export interface Pebble {
  directoryUrl: string;
  managementUrl: string;
  apiCaPem: string;
  apiKeyPem: string;
  httpPort: number;
  dnsServer: string;
  fetchRoot(): Promise<string>;
  stop(): Promise<void>;
}

const HOST = '127.0.0.1';
const POLL_MS = 50;
const STOP_GRACE_MS = 2_000;

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) if (c.exitCode === null && c.pid) c.kill('SIGKILL');
});

function launch(cmd: string, args: string[], env: NodeJS.ProcessEnv, log: string[]): ChildProcess {
  const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  const keep = (d: Buffer): void => {
    log.push(d.toString());
    if (log.length > 200) log.shift();
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.once('exit', () => running.delete(child));
  return child;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  process.kill(child.pid!, 'SIGTERM');
  const t = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, 'SIGKILL');
  }, STOP_GRACE_MS);
  await exited;
  clearTimeout(t);
}

function httpsGet(url: string, ca: string): Promise<{ status: number; body: string }> {
  return new Promise((res, rej) => {
    const req = https.get(url, { ca, agent: false, timeout: 2_000 }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (d: string) => (body += d));
      r.on('end', () => res({ status: r.statusCode ?? 0, body }));
      r.on('error', rej);
    });
    req.on('timeout', () => req.destroy(new Error(`timeout: ${url}`)));
    req.on('error', rej);
  });
}

function tcpOpen(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect({ host: HOST, port });
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

async function waitFor(what: string, deadline: number, children: ChildProcess[], log: string[], probe: () => Promise<boolean>): Promise<void> {
  for (;;) {
    for (const c of children) {
      if (c.exitCode !== null || c.signalCode !== null) {
        throw new Error(`${what}: process ${c.pid} exited (${c.exitCode ?? c.signalCode}):\n${log.join('')}`);
      }
    }
    if (await probe().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`${what}: not ready in time:\n${log.join('')}`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

export async function startPebble(opts: PebbleOptions = {}): Promise<Pebble> {
  const listenPort = opts.listenPort ?? 14000;
  const managementPort = opts.managementPort ?? 15000;
  const httpPort = opts.httpPort ?? 5002;
  const tlsPort = opts.tlsPort ?? 5001;
  const dnsPort = opts.dnsPort ?? 8053;
  const challManagementPort = opts.challManagementPort ?? 8055;
  const deadline = Date.now() + (opts.startTimeoutMs ?? 10_000);

  const dir = mkdtempSync(join(tmpdir(), 'brook-pebble-'));
  const certFile = join(dir, 'cert.pem');
  const keyFile = join(dir, 'key.pem');
  if (opts.api) {
    writeFileSync(certFile, opts.api.certPem);
    writeFileSync(keyFile, opts.api.keyPem);
  } else {
    const gen = spawnSync(
      'openssl',
      ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '30',
        '-subj', '/CN=pebble-api', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
        '-keyout', keyFile, '-out', certFile],
      { stdio: 'pipe' },
    );
    if (gen.status !== 0) throw new Error(`openssl failed: ${gen.stderr?.toString()}`);
  }
  const apiCaPem = readFileSync(certFile, 'utf8');
  const apiKeyPem = readFileSync(keyFile, 'utf8');
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({
      pebble: {
        listenAddress: `${HOST}:${listenPort}`,
        managementListenAddress: `${HOST}:${managementPort}`,
        certificate: certFile,
        privateKey: keyFile,
        httpPort,
        tlsPort,
        ocspResponderURL: '',
        externalAccountBindingRequired: false,
        certificateValidityPeriod: opts.validitySeconds ?? 3600,
      },
    }),
  );

  const log: string[] = [];
  const children: ChildProcess[] = [];
  let dnsServer = opts.dnsServer;
  const stop = async (): Promise<void> => {
    await Promise.all(children.map(stopChild));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    if (!dnsServer) {
      dnsServer = `${HOST}:${dnsPort}`;
      children.push(
        launch('pebble-challtestsrv', [
          '-management', `${HOST}:${challManagementPort}`, '-dns01', dnsServer,
          '-http01', '', '-https01', '', '-tlsalpn01', '', '-defaultIPv4', HOST, '-defaultIPv6', '',
        ], process.env, log),
      );
      await waitFor('pebble-challtestsrv', deadline, children, log, () => tcpOpen(challManagementPort));
    }
    children.push(
      launch('pebble', ['-config', join(dir, 'config.json'), '-dnsserver', dnsServer, '-strict=false'],
        { ...process.env, PEBBLE_VA_NOSLEEP: '1', PEBBLE_WFE_NONCEREJECT: '0' }, log),
    );
    const directoryUrl = `https://${HOST}:${listenPort}/dir`;
    await waitFor('pebble', deadline, children, log, async () => (await httpsGet(directoryUrl, apiCaPem)).status === 200);
    const managementUrl = `https://${HOST}:${managementPort}`;
    return {
      directoryUrl,
      managementUrl,
      apiCaPem,
      apiKeyPem,
      httpPort,
      dnsServer,
      async fetchRoot() {
        const r = await httpsGet(`${managementUrl}/roots/0`, apiCaPem);
        if (r.status !== 200) throw new Error(`pebble /roots/0: HTTP ${r.status}`);
        return r.body;
      },
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
