/**
 * The client's HTTP proxy (`--http`) through the built CLI: wsclient,
 * wssclient and connect each carry curl --proxy requests (absolute URI and
 * CONNECT with -p) to a local HTTP server through the tunnel, and a 1 MiB POST
 * arrives intact (SHA-256 compared on the origin).
 */
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CliProcess, curl, LOOPBACK, type Origin, runCli, selfSigned, startCli, startOrigin, stopAllClis, tempDir } from './helpers/cli.js';

const PASSWORD = 'hello';
const DOMAIN = 'app.test';
const MiB = 1024 * 1024;
const tmp = tempDir('brook-e2e-http-');
let origin: Origin;
let body: { file: string; sha: string };
const clients: { name: string; proc: CliProcess }[] = [];

beforeAll(async () => {
  origin = await startOrigin();
  const bytes = randomBytes(MiB);
  body = { file: join(tmp.dir, 'body.bin'), sha: createHash('sha256').update(bytes).digest('hex') };
  writeFileSync(body.file, bytes);
  const files = await selfSigned(tmp.dir, DOMAIN, 'app');
  const [ws, wss] = await Promise.all([
    startCli(['wsserver', '--listen', `${LOOPBACK}:0`, '--password', PASSWORD]),
    startCli(['wssserver', '--domainaddress', `${DOMAIN}:443`, '--listen', `${LOOPBACK}:0`, '--password', PASSWORD, '--cert', files.cert, '--certkey', files.key]),
  ]);
  const wsUrl = `ws://${LOOPBACK}:${ws.port('listen')}`;
  const wssPort = wss.port('listen');
  const link = (await runCli(['link', '-s', wsUrl, '-p', PASSWORD])).stdout.trim();
  const local = ['--socks5', `${LOOPBACK}:0`, '--http', `${LOOPBACK}:0`];
  const started = await Promise.all([
    startCli(['wsclient', '--wsserver', wsUrl, '--password', PASSWORD, ...local]),
    startCli(['wssclient', '--wssserver', `wss://${DOMAIN}:${wssPort}/ws`, '--password', PASSWORD, '--ca', files.cert, '--address', `${LOOPBACK}:${wssPort}`, ...local]),
    startCli(['connect', '--link', link, ...local]),
  ]);
  clients.push({ name: 'wsclient', proc: started[0] }, { name: 'wssclient', proc: started[1] }, { name: 'connect', proc: started[2] });
});

afterAll(async () => {
  await stopAllClis();
  await origin?.close();
  tmp.remove();
});

describe.each(['wsclient', 'wssclient', 'connect'])('%s --http', (name) => {
  const proxy = () => {
    const c = clients.find((x) => x.name === name)!.proc;
    return `http://${LOOPBACK}:${c.port('http')}`;
  };

  it('announces the HTTP proxy in its listening line', () => {
    const c = clients.find((x) => x.name === name)!.proc;
    expect(String(c.listening['http'])).toMatch(/^127\.0\.0\.1:\d+$/);
  });

  it('absolute-URI GET and CONNECT (-p) reach the local server through the tunnel', async () => {
    const url = `http://${LOOPBACK}:${origin.port}/hello?via=${name}`;
    const plain = await curl(['--proxy', proxy(), url]);
    expect(plain.stderr).toBe('');
    expect(plain.stdout).toBe(`hello from origin /hello?via=${name}\n`);
    const tunnel = await curl(['-p', '--proxy', proxy(), `${url}-connect`]);
    expect(tunnel.stderr).toBe('');
    expect(tunnel.stdout).toBe(`hello from origin /hello?via=${name}-connect\n`);
    // the origin saw origin-form request targets in both cases
    const seen = origin.requests.map((r) => r.url);
    expect(seen).toContain(`/hello?via=${name}`);
    expect(seen).toContain(`/hello?via=${name}-connect`);
  });

  it('a 1 MiB POST arrives intact, absolute URI and CONNECT', async () => {
    for (const connect of [false, true]) {
      const r = await curl([...(connect ? ['-p'] : []), '--proxy', proxy(), '--data-binary', `@${body.file}`, '-H', 'Content-Type: application/octet-stream',
        `http://${LOOPBACK}:${origin.port}/upload?c=${connect}`]);
      expect(r.stderr).toBe('');
      expect(r.stdout).toBe(`${MiB} ${body.sha}\n`);
    }
  });
});
