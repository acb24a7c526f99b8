/**
 * deploy/*.service (issue 13, "A service on a VPS"): the systemd units pass
 * `systemd-analyze verify` (it works offline, without systemd running: only the
 * ExecStart= binary must exist, so a temporary copy points it at a stub) and
 * `systemd-analyze security --offline`; they hold what the README promises
 * (dynamic user, port-binding capability only, password through LoadCredential=
 * and --passwordFile, the ACME cache in the StateDirectory=, sandboxing,
 * Restart=on-failure, logs to the journal); their ExecStart= lines run with the
 * built CLI (systemd's %d and %S replaced by temporary directories), with
 * --blockLocal in force; and a unit without its state directory fails with one
 * clear line.
 */
import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, assertBuilt, freePort, runCli, startCli, stopCli, tempDir } from './helpers/cli.js';
import { LOOPBACK, exchangeThroughSocks, startExchangeServer, waitFor } from './helpers/net.js';
import { DEFAULT_SHUTDOWN_GRACE_SECONDS } from '../src/cli/main.js';
import { ACCOUNT_KEY_FILE } from '../src/tls/acme.js';

const UNITS = ['deploy/brook-ts-wssserver.service', 'deploy/brook-ts-wsserver.service'];
const INSTALLED_BIN = '/usr/local/bin/brook-ts';
const PASSWORD = 'unit-pass';

type Unit = Map<string, string[]>;

/** "Section.Key" -> values, in order (comments and blank lines dropped). */
function parseUnit(text: string): Unit {
  const u: Unit = new Map();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const m = /^\[(\w+)\]$/.exec(line);
    if (m) {
      section = m[1]!;
      continue;
    }
    const i = line.indexOf('=');
    if (i < 0) throw new Error(`not a key=value line: ${line}`);
    const k = `${section}.${line.slice(0, i)}`;
    u.set(k, [...(u.get(k) ?? []), line.slice(i + 1)]);
  }
  return u;
}

const one = (u: Unit, k: string): string => {
  const v = u.get(k);
  if (!v || v.length !== 1) throw new Error(`${k}: expected one value, got ${JSON.stringify(v)}`);
  return v[0]!;
};

function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((res) => {
    execFile(cmd, args, { timeout: 20_000, env: env ?? process.env }, (e, stdout, stderr) =>
      res({ code: e ? (typeof e.code === 'number' ? e.code : -1) : 0, stdout: String(stdout), stderr: String(stderr) }),
    );
  });
}

/** Run the CLI until its output satisfies `done` (bounded), then stop it. */
function runUntil(args: string[], done: (out: string) => boolean, ms = 8000): Promise<{ stdout: string; stderr: string }> {
  assertBuilt();
  const child = spawn(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  return new Promise((res, rej) => {
    const finish = (err?: Error) => {
      clearTimeout(t);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      if (err) rej(err);
      else res({ stdout, stderr });
    };
    const t = setTimeout(() => finish(new Error(`brook-ts ${args.join(' ')}: not done within ${ms} ms\nstdout: ${stdout}\nstderr: ${stderr}`)), ms);
    const check = () => done(stdout + stderr) && finish();
    child.stdout!.on('data', (d: Buffer) => ((stdout += d.toString()), check()));
    child.stderr!.on('data', (d: Buffer) => ((stderr += d.toString()), check()));
    child.once('exit', () => (done(stdout + stderr) ? finish() : finish(new Error(`brook-ts ${args.join(' ')}: exited\nstdout: ${stdout}\nstderr: ${stderr}`))));
  });
}

const tmp = tempDir('brook-deploy-unit-');
afterAll(() => tmp.remove());

/** A copy of the unit whose ExecStart= binary exists (a stub), for systemd-analyze. */
function verifiableCopy(unitPath: string, edit: (s: string) => string = (s) => s): string {
  const stub = join(tmp.dir, 'bin', 'brook-ts');
  if (!existsSync(stub)) {
    mkdirSync(join(tmp.dir, 'bin'), { recursive: true });
    writeFileSync(stub, '#!/bin/sh\nexit 0\n');
    chmodSync(stub, 0o755);
  }
  const text = readFileSync(unitPath, 'utf8');
  expect(text).toContain(`ExecStart=${INSTALLED_BIN} `);
  const dir = join(tmp.dir, `u${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(dir);
  const out = join(dir, unitPath.split('/').pop()!);
  writeFileSync(out, edit(text.replaceAll(`${INSTALLED_BIN} `, `${stub} `)));
  return out;
}

/** ExecStart= as CLI arguments, with systemd's %d (credentials) and %S (state root) replaced. */
function execStartArgs(u: Unit, dirs: { credentials: string; state: string }): string[] {
  const words = one(u, 'Service.ExecStart').split(/\s+/);
  expect(words[0]).toBe(INSTALLED_BIN);
  return words.slice(1).map((w) => w.replaceAll('%d', dirs.credentials).replaceAll('%S', dirs.state));
}

/** The credentials directory systemd would make from LoadCredential=password:... */
function credentials(u: Unit): string {
  const [name] = one(u, 'Service.LoadCredential').split(':');
  const dir = join(tmp.dir, `creds-${Math.random().toString(36).slice(2, 8)}`);
  mkdirSync(dir, { mode: 0o700 });
  writeFileSync(join(dir, name!), `${PASSWORD}\n`, { mode: 0o400 });
  return dir;
}

describe.each(UNITS)('%s', (path) => {
  const u = parseUnit(readFileSync(path, 'utf8'));

  it('passes systemd-analyze verify (and the check is not vacuous)', async () => {
    const good = await run('systemd-analyze', ['verify', '--man=no', verifiableCopy(path)]);
    expect({ code: good.code, stderr: good.stderr }).toEqual({ code: 0, stderr: '' });
    const badValue = await run('systemd-analyze', ['verify', '--man=no', verifiableCopy(path, (s) => s.replace(/^DynamicUser=yes$/m, 'DynamicUser=maybe'))]);
    expect(badValue.code).not.toBe(0);
    const unknownKey = await run('systemd-analyze', ['verify', '--man=no', verifiableCopy(path, (s) => s.replace(/^Restart=on-failure$/m, 'Restart=on-failure\nRestartOften=yes'))]);
    expect(unknownKey.stderr).toMatch(/Unknown key/);
  });

  it('has a low exposure score in systemd-analyze security --offline', async () => {
    const r = await run('systemd-analyze', ['security', '--offline=yes', '--no-pager', verifiableCopy(path)]);
    const m = /Overall exposure level for \S+: (\d+\.\d+)/.exec(r.stdout + r.stderr);
    expect(m, r.stdout + r.stderr).not.toBeNull();
    expect(Number(m![1])).toBeLessThanOrEqual(2.5);
  });

  it('runs as a dynamic user with the port-binding capability only, sandboxed, restarted on failure, logging to the journal', () => {
    expect(one(u, 'Service.DynamicUser')).toBe('yes');
    expect(one(u, 'Service.AmbientCapabilities')).toBe('CAP_NET_BIND_SERVICE');
    expect(one(u, 'Service.CapabilityBoundingSet')).toBe('CAP_NET_BIND_SERVICE');
    for (const [k, v] of Object.entries({ NoNewPrivileges: 'yes', ProtectSystem: 'strict', ProtectHome: 'yes', PrivateTmp: 'yes', PrivateDevices: 'yes', Restart: 'on-failure' })) {
      expect(one(u, `Service.${k}`), k).toBe(v);
    }
    // V8 needs writable+executable pages
    expect(u.has('Service.MemoryDenyWriteExecute')).toBe(false);
    // stdout is the journal (systemd's default): not redirected
    expect(u.has('Service.StandardOutput')).toBe(false);
    // SIGTERM: open tunnels get --shutdownGrace before systemd's SIGKILL
    expect(Number(one(u, 'Service.TimeoutStopSec').replace(/s$/, ''))).toBeGreaterThan(DEFAULT_SHUTDOWN_GRACE_SECONDS);
    expect(one(u, 'Install.WantedBy')).toBe('multi-user.target');
  });

  it('takes the password from a credential (--passwordFile %d/...), never from the command line', () => {
    const [name, source] = one(u, 'Service.LoadCredential').split(':');
    expect(source).toBe('/etc/brook-ts/password');
    const exec = one(u, 'Service.ExecStart');
    expect(exec).toContain(`--passwordFile %d/${name}`);
    expect(exec).not.toMatch(/(^|\s)(-p|--password)(\s|=)/);
  });

  it('its ExecStart= starts the built CLI (credential and state directories as systemd makes them)', async () => {
    const state = join(tmp.dir, `state-${Math.random().toString(36).slice(2, 8)}`);
    const creds = credentials(u);
    const args = execStartArgs(u, { credentials: creds, state });
    // both units refuse destinations on this host (README "Run as a service")
    expect(args).toContain('--blockLocal');
    if (args[0] === 'wsserver') {
      // the unit's own arguments; only the address is moved to loopback (the last --listen wins)
      const p = await startCli([...args, '--listen', `${LOOPBACK}:0`]);
      expect(p.listening['command']).toBe('wsserver');
      // the password is the credential file's line (its newline dropped): the tunnel's header is accepted, and
      // its destination on this host refused by the unit's --blockLocal (a block is logged only after a valid header)
      const dest = await startExchangeServer({ downBytes: 1024 });
      const c = await startCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:${p.port('listen')}`, '--password', PASSWORD, '--socks5', `${LOOPBACK}:0`]);
      try {
        const r = await exchangeThroughSocks(c.port('socks5'), { type: 'ipv4', host: LOOPBACK, port: dest.port }, 1024).catch(() => null);
        expect(r?.received.bytes ?? 0).toBe(0);
        await waitFor(() => p.lines.some((l) => l['code'] === 'BROOK_ERR_BLOCKED'), 5000, 'the blocked line');
        expect(p.lines.find((l) => l['code'] === 'BROOK_ERR_BLOCKED')).toMatchObject({ rule: 'local:loopback', network: 'tcp' });
        expect(dest.records.length).toBe(0);
      } finally {
        await Promise.all([stopCli(c), stopCli(p), dest.close()]);
      }
      return;
    }
    // wssserver: ACME against a closed local port; the account key lands in the state directory
    mkdirSync(join(state, 'brook-ts'), { recursive: true, mode: 0o700 });
    const closed = await freePort();
    const key = join(state, 'brook-ts', ACCOUNT_KEY_FILE);
    const r = await runUntil(
      [...args, '--listen', `${LOOPBACK}:0`, '--httpListen', `${LOOPBACK}:0`, '--acmeDirectory', `https://${LOOPBACK}:${closed}/directory`],
      (out) => out.includes(`created ACME account key ${key}`),
    );
    expect(r.stderr).toBe('');
    expect(existsSync(key)).toBe(true);
  });
});

describe('deploy/brook-ts-wssserver.service: the state directory', () => {
  const u = parseUnit(readFileSync(UNITS[0]!, 'utf8'));

  it('the ACME cache is the StateDirectory=', () => {
    expect(one(u, 'Service.StateDirectory')).toBe('brook-ts');
    expect(one(u, 'Service.ExecStart')).toContain('--cacheDir %S/brook-ts');
  });

  it('without a writable state directory ExecStartPre= stops the start with one line', async () => {
    const pre = one(u, 'Service.ExecStartPre');
    const m = /^\/bin\/sh -c '(.*)'$/.exec(pre);
    expect(m, pre).not.toBeNull();
    const script = m![1]!.replaceAll('$$', '$'); // systemd's escape of "$"
    const env = { PATH: process.env['PATH'] ?? '/usr/bin:/bin' };
    const missing = await run('/bin/sh', ['-c', script], env);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toBe('brook-ts: no writable state directory for the ACME cache: keep StateDirectory=brook-ts in the unit\n');
    const gone = await run('/bin/sh', ['-c', script], { ...env, STATE_DIRECTORY: join(tmp.dir, 'does-not-exist') });
    expect(gone.code).toBe(1);
    const there = await run('/bin/sh', ['-c', script], { ...env, STATE_DIRECTORY: tmp.dir });
    expect({ code: there.code, stderr: there.stderr }).toEqual({ code: 0, stderr: '' });
  });

  it('wssserver with a --cacheDir it cannot create stops at start with one line naming the directory and the reason', async () => {
    const file = join(tmp.dir, 'not-a-dir');
    writeFileSync(file, '');
    const closed = await freePort();
    const dir = join(file, 'brook-ts');
    const r = await runCli([
      'wssserver', '--domainaddress', 'example.com:443', '--password', PASSWORD, '--cacheDir', dir,
      '--listen', `${LOOPBACK}:0`, '--httpListen', `${LOOPBACK}:0`, '--acmeDirectory', `https://${LOOPBACK}:${closed}/directory`,
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(dir);
    expect(r.stderr).toMatch(/ENOTDIR/);
  });
});
