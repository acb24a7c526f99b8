/**
 * --keepalive through a real reverse proxy (issue 12 item 1): Debian's nginx in front
 * of two wsservers, proxying the upgrade with a 2 s idle cut-off
 * (proxy_read_timeout 2s, proxy_send_timeout 2s). An idle tunnel survives 6 s with
 * `--keepalive 1` on both ends and is cut without it. nginx runs from the test:
 * its own config, pid file, logs and temp dirs under a temp folder, in the
 * foreground (daemon off, one process), on 127.0.0.1 only; stopped by PID.
 *
 * And the flag's bad input on the command line.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, LOOPBACK, runCli, startCli, stopAllClis, tempDir } from './helpers/cli.js';
import { sleep, socksConnect, withTimeout } from './helpers/net.js';

const PASSWORD = 'hello';
/** nginx's idle cut-off on the proxied upgrade, and how long the tunnels stay idle. */
const PROXY_TIMEOUT_S = 2;
const IDLE_MS = 6000;

function nginxConfig(dir: string, port: number, backends: { path: string; port: number }[]): string {
  const locations = backends
    .map(
      (b) => `
    location ${b.path} {
      proxy_pass http://127.0.0.1:${b.port};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_set_header Host $http_host;
      proxy_read_timeout ${PROXY_TIMEOUT_S}s;
      proxy_send_timeout ${PROXY_TIMEOUT_S}s;
    }`,
    )
    .join('\n');
  return `daemon off;
master_process off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 64; }
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/tmp/body;
  proxy_temp_path ${dir}/tmp/proxy;
  fastcgi_temp_path ${dir}/tmp/fastcgi;
  uwsgi_temp_path ${dir}/tmp/uwsgi;
  scgi_temp_path ${dir}/tmp/scgi;
  server {
    listen 127.0.0.1:${port};
${locations}
  }
}
`;
}

/** Debian's nginx is in /usr/sbin, which is not on every user's PATH. */
function nginxBinary(): string {
  if (!spawnSync('nginx', ['-v']).error) return 'nginx';
  if (existsSync('/usr/sbin/nginx')) return '/usr/sbin/nginx';
  throw new Error('nginx is not installed (Debian package nginx; .ci/test-deps.sh installs it)');
}

/** Resolves once something accepts connections on 127.0.0.1:port (bounded). */
async function waitListening(port: number, ms: number, exited: () => string | null): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    const why = exited();
    if (why) throw new Error(why);
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ host: LOOPBACK, port }, () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listening on ${port} after ${ms} ms`);
    await sleep(50);
  }
}

describe('an idle tunnel behind nginx with a 2 s idle timeout', () => {
  const tmp = tempDir('brook-keepalive-nginx-');
  let nginx: ChildProcess | null = null;
  let nginxExit: string | null = null;
  let echo: net.Server | null = null;
  const sockets = new Set<net.Socket>();
  let socksKeepalive = 0;
  let socksPlain = 0;
  let echoPort = 0;

  beforeAll(async () => {
    const bin = nginxBinary();
    echo = net.createServer((c) => {
      sockets.add(c);
      c.on('error', () => undefined);
      c.pipe(c);
    });
    await new Promise<void>((r) => echo!.listen(0, LOOPBACK, r));
    echoPort = (echo.address() as net.AddressInfo).port;

    const [portKa, portPlain, nginxPort] = [await freePort(), await freePort(), await freePort()];
    for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(tmp.dir, 'tmp', d), { recursive: true });
    const conf = join(tmp.dir, 'nginx.conf');
    writeFileSync(conf, nginxConfig(tmp.dir, nginxPort, [{ path: '/ka', port: portKa }, { path: '/plain', port: portPlain }]));
    nginx = spawn(bin, ['-p', tmp.dir, '-c', conf, '-e', join(tmp.dir, 'error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let nginxErr = '';
    nginx.stderr!.on('data', (d: Buffer) => (nginxErr += d.toString()));
    nginx.once('exit', (code, signal) => (nginxExit = `nginx exited (${code ?? signal}): ${nginxErr.trim()}`));

    const server = (port: number, path: string, ka: boolean) =>
      startCli(['wsserver', '--listen', `${LOOPBACK}:${port}`, '--password', PASSWORD, '--path', path, ...(ka ? ['--keepalive', '1'] : [])]);
    const client = (path: string, ka: boolean) =>
      startCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:${nginxPort}${path}`, '--password', PASSWORD, '--socks5', `${LOOPBACK}:0`, ...(ka ? ['--keepalive', '1'] : [])]);
    const [, , cKa, cPlain] = await Promise.all([
      server(portKa, '/ka', true),
      server(portPlain, '/plain', false),
      client('/ka', true),
      client('/plain', false),
      waitListening(nginxPort, 10_000, () => nginxExit),
    ]);
    socksKeepalive = cKa.port('socks5');
    socksPlain = cPlain.port('socks5');
  }, 30_000);

  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await stopAllClis();
    if (nginx && nginx.exitCode === null && nginx.signalCode === null) {
      const exited = new Promise<void>((r) => nginx!.once('exit', () => r()));
      nginx.kill('SIGTERM');
      const t = setTimeout(() => nginx!.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    }
    if (echo) await new Promise<void>((r) => echo!.close(() => r()));
    tmp.remove();
  }, 15_000);

  /** A tunnel through nginx to the echo server: one exchange, then `IDLE_MS` of silence. */
  async function idleTunnel(socksPort: number): Promise<{ s: net.Socket; cutAfterMs: number | null }> {
    const s = await socksConnect(socksPort, { type: 'ipv4', host: LOOPBACK, port: echoPort });
    sockets.add(s);
    s.on('error', () => undefined);
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.resume();
    s.write('ping');
    const t0 = Date.now();
    let cutAfterMs: number | null = null;
    s.once('close', () => (cutAfterMs ??= Date.now() - t0));
    s.once('end', () => (cutAfterMs ??= Date.now() - t0));
    await withTimeout(
      (async () => {
        while (Buffer.concat(got).toString() !== 'ping') await sleep(20);
      })(),
      5000,
      'first echo',
    );
    got.length = 0;
    await sleep(IDLE_MS);
    return { s, cutAfterMs };
  }

  it('survives 6 s idle with --keepalive 1 on both ends, and is cut without it', async () => {
    const [ka, plain] = await Promise.all([idleTunnel(socksKeepalive), idleTunnel(socksPlain)]);
    // with keepalive: still open, and still carries data both ways
    expect(ka.cutAfterMs).toBeNull();
    const back = new Promise<string>((r) => {
      let text = '';
      ka.s.on('data', (d: Buffer) => {
        text += d.toString();
        if (text.length >= 5) r(text);
      });
    });
    ka.s.write('again');
    expect(await withTimeout(back, 5000, 'echo after the idle time')).toBe('again');
    // without: nginx cut it at its idle timeout (2 s, give or take its timer granularity and load)
    expect(plain.cutAfterMs).not.toBeNull();
    expect(plain.cutAfterMs!).toBeGreaterThanOrEqual(PROXY_TIMEOUT_S * 1000 - 200);
    expect(readFileSync(join(tmp.dir, 'error.log'), 'utf8')).toMatch(/upstream timed out/);
  }, 20_000);
});

describe('--keepalive on the command line', () => {
  it('is refused with --withoutBrookProtocol, on servers and clients: one line, non-zero exit', async () => {
    const port = await freePort();
    const results = await Promise.all([
      runCli(['wsserver', '--listen', `${LOOPBACK}:${port}`, '--password', PASSWORD, '--withoutBrookProtocol', '--keepalive', '5']),
      runCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:${port}`, '--password', PASSWORD, '--socks5', `${LOOPBACK}:0`, '--withoutBrookProtocol', '--keepalive', '5']),
    ]);
    for (const r of results) {
      expect(r.code).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/--keepalive needs the Brook protocol/);
    }
  });

  it('takes whole seconds only', async () => {
    const r = await runCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:1`, '--password', PASSWORD, '--keepalive', '1.5']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/keepalive/);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});
