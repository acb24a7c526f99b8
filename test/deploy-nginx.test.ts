/**
 * deploy/nginx.conf end to end (issue 13, "More than one server", the CDN-origin
 * setup): Debian's nginx with the file from the repo included in a minimal main
 * config (listen address, certificate and upstream ports substituted), TLS
 * terminated by nginx, three wsserver --withoutBrookProtocol instances behind it
 * and one wssclient --withoutBrookProtocol in front. Tunnels arrive intact and
 * are spread over the instances; other paths get nginx's own 404.
 *
 * nginx does not carry a half-close through an upgraded connection: when one
 * side ends its half, nginx flushes what it holds and closes both. So the
 * exchange here is request/response (the destination reads BYTES, answers with
 * the hash of what it got, the hash of its reply and the reply, then closes),
 * not the FIN-ordered exchange of test/helpers/net.ts.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliProcess, curl, freePort, selfSigned, startCli, stopCli, tempDir } from './helpers/cli.js';
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';
import { LOOPBACK, readAll, sha256, socksConnect, withTimeout } from './helpers/net.js';

const CONFIG = 'deploy/nginx.conf';
const NGINX = existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx';
const PASSWORD = 'deploy-nginx';
const INSTANCES = 3;
const TUNNELS = 9;
const BYTES = 32 * 1024;
const HASH = 32;

/** Reads BYTES, then sends sha256(received) + sha256(reply) + reply (BYTES random) and closes. */
async function startAnswerServer(): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
    const h = createHash('sha256');
    let n = 0;
    s.on('data', (d: Buffer) => {
      if (n >= BYTES) return;
      const take = d.subarray(0, BYTES - n);
      h.update(take);
      n += take.length;
      if (n === BYTES) {
        const reply = randomBytes(BYTES);
        s.end(Buffer.concat([h.digest(), createHash('sha256').update(reply).digest(), reply]));
      }
    });
  });
  await new Promise<void>((r) => srv.listen(0, LOOPBACK, r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

/** One request/response tunnel through the SOCKS5 port; true if both directions arrived intact. */
async function answerThroughSocks(socksPort: number, port: number): Promise<boolean> {
  const s = await socksConnect(socksPort, { type: 'ipv4', host: LOOPBACK, port });
  try {
    const data = randomBytes(BYTES);
    const got = readAll(s);
    s.write(data);
    const b = await got;
    return (
      b.length === 2 * HASH + BYTES &&
      b.subarray(0, HASH).toString('hex') === sha256(data) &&
      b.subarray(HASH, 2 * HASH).toString('hex') === sha256(b.subarray(2 * HASH))
    );
  } finally {
    s.destroy();
  }
}

/** The repo's nginx.conf made runnable by a test; every rewrite must match. */
export function nginxConfigForTest(src: string, o: { listen: number; upstreams: number[]; cert: string; key: string }): string {
  let s = src;
  const rewrite = (re: RegExp, to: string | ((...m: string[]) => string), count: number, what: string) => {
    const g = new RegExp(re.source, re.flags + 'g');
    const n = (s.match(g) ?? []).length;
    if (n !== count) throw new Error(`${CONFIG}: expected ${count} ${what}, found ${n}`);
    s = s.replace(g, to as string);
  };
  rewrite(/^(\s*)listen 443 ssl;$/m, `$1listen ${LOOPBACK}:${o.listen} ssl;`, 1, 'IPv4 listen line');
  rewrite(/^\s*listen \[::\]:443 ssl;\n/m, '', 1, 'IPv6 listen line');
  rewrite(/^(\s*ssl_certificate\s+)\S+;$/m, `$1${o.cert};`, 1, 'ssl_certificate');
  rewrite(/^(\s*ssl_certificate_key\s+)\S+;$/m, `$1${o.key};`, 1, 'ssl_certificate_key');
  let i = 0;
  rewrite(/^(\s*server )127\.0\.0\.1:900\d( .*;)$/m, (_m, a, b) => `${a}${LOOPBACK}:${o.upstreams[i++]}${b}`, o.upstreams.length, 'upstream servers');
  return s;
}

describe('deploy/nginx.conf: TLS at nginx, three wsserver --withoutBrookProtocol instances', () => {
  const tmp = tempDir('brook-deploy-nginx-');
  const servers: CliProcess[] = [];
  const metrics: number[] = [];
  let client: CliProcess;
  let nginx: ChildProcess;
  let nginxLog = '';
  let answer: Awaited<ReturnType<typeof startAnswerServer>>;
  let front: number;

  beforeAll(async () => {
    answer = await startAnswerServer();
    for (let i = 0; i < INSTANCES; i++) {
      metrics.push(await freePort());
      servers.push(
        await startCli([
          '--prometheus', `${LOOPBACK}:${metrics[i]}`, '--prometheusPath', '/metrics',
          'wsserver', '--listen', `${LOOPBACK}:${await freePort()}`, '--password', PASSWORD, '--withoutBrookProtocol',
        ]),
      );
    }
    const { cert, key } = await selfSigned(tmp.dir, 'example.com', 'nginx');
    front = await freePort();
    const site = join(tmp.dir, 'brook-ts.conf');
    writeFileSync(site, nginxConfigForTest(readFileSync(CONFIG, 'utf8'), { listen: front, upstreams: servers.map((s) => s.port('listen')), cert, key }));
    const temp = (n: string) => join(tmp.dir, n);
    writeFileSync(
      temp('nginx.conf'),
      [
        'daemon off;',
        'master_process off;',
        `pid ${temp('nginx.pid')};`,
        'error_log stderr notice;',
        'events { worker_connections 256; }',
        'http {',
        '  access_log off;',
        ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${temp(t)};`),
        `  include ${site};`,
        '}',
      ].join('\n'),
    );
    nginx = spawn(NGINX, ['-e', 'stderr', '-p', tmp.dir, '-c', temp('nginx.conf')], { stdio: ['ignore', 'pipe', 'pipe'] });
    nginx.stdout!.on('data', (d: Buffer) => (nginxLog += d.toString()));
    nginx.stderr!.on('data', (d: Buffer) => (nginxLog += d.toString()));
    const t0 = Date.now();
    while ((await curl(['-k', '-o', '/dev/null', '-w', '%{http_code}', `https://${LOOPBACK}:${front}/`], 2000)).stdout !== '404') {
      if (nginx.exitCode !== null || Date.now() - t0 > 10_000) throw new Error(`nginx did not come up:\n${nginxLog}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    client = await startCli([
      'wssclient', '--wssserver', `wss://example.com:${front}/ws`, '--address', `${LOOPBACK}:${front}`, '--ca', cert,
      '--password', PASSWORD, '--withoutBrookProtocol', '--socks5', `${LOOPBACK}:0`,
    ]);
  }, 60_000);

  afterAll(async () => {
    if (nginx && nginx.exitCode === null) {
      nginx.kill('SIGTERM');
      await withTimeout(new Promise((r) => nginx.once('exit', r)), 5000, 'nginx exit').catch(() => nginx.kill('SIGKILL'));
    }
    await Promise.all([client, ...servers].filter(Boolean).map((p) => stopCli(p)));
    await answer?.close();
    tmp.remove();
  });

  it('other paths get nginx 404 and Server: nginx', async () => {
    const r = await curl(['-k', '-i', `https://${LOOPBACK}:${front}/index.html`]);
    expect(r.stdout).toMatch(/^HTTP\/1\.1 404/);
    expect(r.stdout).toMatch(/^Server: nginx/im);
  });

  it('tunnels pass the upgrade through TLS termination intact and reach every instance', async () => {
    for (let i = 0; i < TUNNELS; i++) expect(await withTimeout(answerThroughSocks(socks(), answer.port), 10_000, 'tunnel through nginx')).toBe(true);
    const opened = await Promise.all(
      metrics.map(async (port) => {
        const body = await (await withTimeout(fetch(`http://${LOOPBACK}:${port}/metrics`), 5000, 'metrics')).text();
        const line = body.split('\n').find((l) => l.startsWith('brook_tunnels_opened_total{') && l.includes('network="tcp"'));
        return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
      }),
    );
    expect(opened.reduce((a, b) => a + b, 0)).toBe(TUNNELS);
    for (const n of opened) expect(n).toBeGreaterThan(0);
  });

  const socks = () => client.port('socks5');
});
