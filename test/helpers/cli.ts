/**
 * Helpers for tests that drive the built CLI (dist/cmd/brook-ts.js, made by
 * `npm run build`: tsc, then the esbuild bundle; `make test` builds first).
 *
 * - runCli(args): run to completion asynchronously, collect stdout/stderr/exit code.
 * - startCli(args): spawn without a shell, wait for its JSON "listening" line,
 *   keep the process; stopCli/stopAllClis kill by PID (SIGTERM, then SIGKILL).
 * - curl, a local HTTP origin (echo of POST bodies), free ports, self-signed
 *   certificates made with openssl: all asynchronous so the event loop that
 *   hosts in-process servers keeps running.
 *
 * Everything binds 127.0.0.1 only and every wait is bounded.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

export const LOOPBACK = '127.0.0.1';
export const CLI = resolve(process.env['BROOK_TS_CLI'] ?? 'dist/cmd/brook-ts.js');
const START_TIMEOUT_MS = 10_000;
const KILL_GRACE_MS = 3_000;

export function assertBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first with npm run build`);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Child pids of `pid` (from /proc). */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run the CLI to completion (killed after timeoutMs). */
export function runCli(args: string[], o: { timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  assertBuilt();
  return new Promise((res) => {
    const child = spawn(process.execPath, [CLI, ...args], { cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 10_000);
    child.once('close', (code, signal) => {
      clearTimeout(t);
      res({ code, signal, stdout, stderr });
    });
  });
}

export interface CliProcess {
  child: ChildProcess;
  pid: number;
  /** The parsed "listening" log line. */
  listening: Record<string, unknown>;
  /** Every JSON line printed so far. */
  lines: Record<string, unknown>[];
  stderr: () => string;
  /** Resolves with the exit code / signal once the process has exited. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Port of a "host:port" field of the listening line (listen, socks5, http). */
  port(field: string): number;
}

const running = new Set<CliProcess>();
process.once('exit', () => {
  for (const p of running) if (p.child.exitCode === null) p.child.kill('SIGKILL');
});

/** Spawn the CLI (under `ulimit -n nofile` when given) and wait (bounded) for its {"msg":"listening"} line. */
export function startCli(args: string[], o: { timeoutMs?: number; cwd?: string; nofile?: number } = {}): Promise<CliProcess> {
  assertBuilt();
  // bash execs node, so the pid is node's
  const [cmd, argv] = o.nofile
    ? ['bash', ['-c', `ulimit -n ${o.nofile} && exec "$0" "$@"`, process.execPath, CLI, ...args]]
    : [process.execPath, [CLI, ...args]];
  const child = spawn(cmd, argv, { cwd: o.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  let err = '';
  let out = '';
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.once('exit', (code, signal) => r({ code, signal })),
  );
  return new Promise((res, rej) => {
    let done = false;
    const fail = (why: string) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      if (child.exitCode === null) child.kill('SIGKILL');
      rej(new Error(`brook-ts ${args.join(' ')}: ${why}\nstdout: ${out.slice(-2000)}\nstderr: ${err.slice(-2000)}`));
    };
    const t = setTimeout(() => fail(`no listening line within ${o.timeoutMs ?? START_TIMEOUT_MS} ms`), o.timeoutMs ?? START_TIMEOUT_MS);
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        let j: Record<string, unknown>;
        try {
          j = JSON.parse(line) as Record<string, unknown>;
        } catch {
          continue;
        }
        lines.push(j);
        if (!done && j['msg'] === 'listening') {
          done = true;
          clearTimeout(t);
          const p: CliProcess = {
            child,
            pid: child.pid!,
            listening: j,
            lines,
            stderr: () => err,
            exited,
            port(field) {
              const v = String(j[field] ?? '');
              const m = /:(\d+)$/.exec(v);
              if (!m) throw new Error(`no port in ${field}=${v}`);
              return Number(m[1]);
            },
          };
          running.add(p);
          void exited.then(() => running.delete(p));
          res(p);
        }
      }
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    void exited.then(({ code, signal }) => fail(`exited (${code ?? signal}) before listening`));
  });
}

/** SIGTERM by PID, SIGKILL after a grace; resolves with how it exited. */
export async function stopCli(p: CliProcess, graceMs = KILL_GRACE_MS): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (p.child.exitCode === null && p.child.signalCode === null) {
    process.kill(p.pid, 'SIGTERM');
    const t = setTimeout(() => {
      if (p.child.exitCode === null && p.child.signalCode === null) process.kill(p.pid, 'SIGKILL');
    }, graceMs);
    const r = await p.exited;
    clearTimeout(t);
    return r;
  }
  return p.exited;
}

export async function stopAllClis(): Promise<void> {
  await Promise.all([...running].map((p) => stopCli(p)));
}

// ---- curl ----------------------------------------------------------------------

export function curl(args: string[], ms = 10_000): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((res) => {
    execFile('curl', ['-sS', '--max-time', String(Math.ceil(ms / 1000)), ...args], { timeout: ms + 2000, maxBuffer: 8 * 1024 * 1024 }, (e, stdout, stderr) => {
      const code = e ? (typeof (e as { code?: unknown }).code === 'number' ? (e as { code: number }).code : -1) : 0;
      res({ stdout: String(stdout), stderr: String(stderr), code });
    });
  });
}

// ---- local servers ---------------------------------------------------------------

export interface Origin {
  port: number;
  /** Requests seen: method, url, and SHA-256 + size of the body. */
  requests: { method: string; url: string; bodyBytes: number; bodySha256: string }[];
  close(): Promise<void>;
}

/**
 * HTTP origin on 127.0.0.1: GET answers "hello from origin <url>"; POST answers
 * "<bytes> <sha256>" of the body it received.
 */
export async function startOrigin(): Promise<Origin> {
  const requests: Origin['requests'] = [];
  const sockets = new Set<net.Socket>();
  const srv = createHttpServer((req, res) => {
    const h = createHash('sha256');
    let n = 0;
    req.on('data', (d: Buffer) => {
      n += d.length;
      h.update(d);
    });
    req.on('end', () => {
      const sha = h.digest('hex');
      requests.push({ method: req.method ?? '', url: req.url ?? '', bodyBytes: n, bodySha256: sha });
      const body = req.method === 'POST' ? `${n} ${sha}\n` : `hello from origin ${req.url}\n`;
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': String(Buffer.byteLength(body)) });
      res.end(body);
    });
  });
  srv.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, LOOPBACK, r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    requests,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

/** A port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, LOOPBACK, r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

// ---- temp dirs and certificates --------------------------------------------------

export function tempDir(prefix = 'brook-cli-'): { dir: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

function execFileP(cmd: string, args: string[], ms = 10_000): Promise<void> {
  return new Promise((res, rej) => {
    execFile(cmd, args, { timeout: ms }, (e, _o, stderr) => (e ? rej(new Error(`${cmd} failed: ${String(stderr)}`)) : res()));
  });
}

/** Self-signed P-256 certificate with CN and SAN DNS:<name>, valid for `days` (default 2). */
export async function selfSigned(dir: string, name: string, base: string, o: { days?: number } = {}): Promise<{ cert: string; key: string }> {
  const cert = join(dir, `${base}.crt.pem`);
  const key = join(dir, `${base}.key.pem`);
  await execFileP('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', String(o.days ?? 2),
    '-subj', `/CN=${name}`, '-addext', `subjectAltName=DNS:${name}`, '-keyout', key, '-out', cert,
  ]);
  return { cert, key };
}

/** An already expired self-signed certificate (2020-01-01 to 2020-01-02), made with `openssl ca` (3.0 req has no negative -days). */
export async function expiredSelfSigned(dir: string, name: string, base: string): Promise<{ cert: string; key: string }> {
  const work = join(dir, `${base}-ca`);
  mkdirSync(join(work, 'newcerts'), { recursive: true });
  writeFileSync(join(work, 'index.txt'), '');
  writeFileSync(join(work, 'serial'), '01\n');
  writeFileSync(
    join(work, 'ca.cnf'),
    `[ca]\ndefault_ca = d\n[d]\ndatabase = ${work}/index.txt\nnew_certs_dir = ${work}/newcerts\nserial = ${work}/serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n`,
  );
  const cert = join(dir, `${base}.crt.pem`);
  const key = join(dir, `${base}.key.pem`);
  const csr = join(work, 'req.csr');
  await execFileP('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', `/CN=${name}`, '-keyout', key, '-out', csr]);
  await execFileP('openssl', ['ca', '-batch', '-config', join(work, 'ca.cnf'), '-selfsign', '-keyfile', key, '-in', csr,
    '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-notext', '-out', cert]);
  return { cert, key };
}
