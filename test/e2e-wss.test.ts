/**
 * Issue 5 end to end through the built CLI: wssserver with certificate files
 * and with ACME (a real pebble on loopback), wssclient with --ca, --insecure
 * and --address, curl --socks5-hostname through the tunnel; clear one-line
 * errors for bad certificate files; SNI and ALPN on the wire.
 *
 * The URL host is app.test, which the system resolver does not know: every
 * client dials 127.0.0.1 via --address and keeps app.test for SNI and Host.
 * Pebble runs on its own ports (PEBBLE below) so this file can run next to
 * test/acme.test.ts, which uses pebble's defaults.
 */
import { chmodSync, copyFileSync, existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPebble, type Pebble } from './helpers/pebble.js';
import {
  type CliProcess,
  curl,
  expiredSelfSigned,
  LOOPBACK,
  type Origin,
  runCli,
  selfSigned,
  startCli,
  startOrigin,
  stopAllClis,
  stopCli,
  tempDir,
} from './helpers/cli.js';

const DOMAIN = 'app.test';
const PASSWORD = 'hello';
/** Ports apart from test/acme.test.ts (14000/15000/5002/5001/8053/8055 and 14100/15100/5102/5101). */
const PEBBLE = { listenPort: 14200, managementPort: 15200, httpPort: 5202, tlsPort: 5201, dnsPort: 8253, challManagementPort: 8255 };

const tmp = tempDir('brook-e2e-wss-');
let origin: Origin;

beforeAll(async () => {
  origin = await startOrigin();
});

afterAll(async () => {
  await stopAllClis();
  await origin?.close();
  tmp.remove();
});

function wssClientArgs(serverPort: number, extra: string[]): string[] {
  return [
    'wssclient', '--wssserver', `wss://${DOMAIN}:${serverPort}`, '--password', PASSWORD,
    '--address', `${LOOPBACK}:${serverPort}`, '--socks5', `${LOOPBACK}:0`, ...extra,
  ];
}

/** curl through a client's SOCKS5 (hostname resolved by the far end). */
function viaSocks(client: CliProcess, path: string) {
  return curl(['--socks5-hostname', `${LOOPBACK}:${client.port('socks5')}`, `http://localhost:${origin.port}${path}`]);
}

/** TLS handshake to the server; resolves with ALPN and the peer certificate's fingerprint, or rejects. */
function handshake(port: number, servername: string, ca?: string): Promise<{ alpn: string | false; fingerprint: string; authorized: boolean }> {
  return new Promise((res, rej) => {
    const s = tls.connect({ host: LOOPBACK, port, servername, ALPNProtocols: ['h2', 'http/1.1'], rejectUnauthorized: false, ca });
    const t = setTimeout(() => {
      s.destroy();
      rej(new Error('handshake timeout'));
    }, 5_000);
    s.once('secureConnect', () => {
      clearTimeout(t);
      const r = { alpn: s.alpnProtocol ?? false, fingerprint: s.getPeerCertificate().fingerprint256, authorized: s.authorized };
      s.destroy();
      res(r);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      rej(e);
    });
  });
}

describe('wssserver --cert/--certkey + wssclient', () => {
  let files: { cert: string; key: string };

  beforeAll(async () => {
    files = await selfSigned(tmp.dir, DOMAIN, 'app');
  });

  describe.each([
    { name: 'Brook', wob: [] as string[] },
    { name: 'withoutBrookProtocol', wob: ['--withoutBrookProtocol'] },
  ])('$name mode', ({ wob }) => {
    let server: CliProcess;

    beforeAll(async () => {
      server = await startCli([
        'wssserver', '--domainaddress', `${DOMAIN}:443`, '--listen', `${LOOPBACK}:0`, '--password', PASSWORD,
        '--cert', files.cert, '--certkey', files.key, ...wob,
      ]);
      expect(server.listening).toMatchObject({ command: 'wssserver', domain: DOMAIN, certificate: 'files' });
    });

    it('wssclient --ca and --insecure with --address carry curl --socks5-hostname', async () => {
      const port = server.port('listen');
      const [withCa, insecure] = await Promise.all([
        startCli(wssClientArgs(port, ['--ca', files.cert, ...wob])),
        startCli(wssClientArgs(port, ['--insecure', ...wob])),
      ]);
      expect(withCa.listening['server']).toBe(`wss://${DOMAIN}:${port}/ws`);
      expect(withCa.listening['withoutBrookProtocol']).toBe(wob.length > 0);
      for (const [c, tag] of [[withCa, 'ca'], [insecure, 'insecure']] as const) {
        const r = await viaSocks(c, `/hello?via=${tag}`);
        expect(r.stderr).toBe('');
        expect(r.code).toBe(0);
        expect(r.stdout).toBe(`hello from origin /hello?via=${tag}\n`);
      }
      await Promise.all([stopCli(withCa), stopCli(insecure)]);
    });

    it('a client that trusts neither the CA nor --insecure fails verification; the server keeps serving', async () => {
      const port = server.port('listen');
      const [untrusting, good] = await Promise.all([
        startCli(wssClientArgs(port, wob)),
        startCli(wssClientArgs(port, ['--ca', files.cert, ...wob])),
      ]);
      const bad = await viaSocks(untrusting, '/never');
      expect(bad.code).not.toBe(0);
      expect(bad.stderr).toMatch(/SOCKS5/i); // the SOCKS5 reply was a failure
      expect(origin.requests.some((r) => r.url === '/never')).toBe(false);
      const logged = untrusting.lines.find((l) => typeof l['error'] === 'string');
      expect(String(logged?.['error'])).toMatch(/certificate/i);
      const ok = await viaSocks(good, '/after-bad');
      expect(ok.code).toBe(0);
      expect(ok.stdout).toBe('hello from origin /after-bad\n');
      await Promise.all([stopCli(untrusting), stopCli(good)]);
    });

    it('negotiates ALPN http/1.1 for app.test and fails the handshake for another SNI name', async () => {
      const port = server.port('listen');
      const ok = await handshake(port, DOMAIN, undefined);
      expect(ok.alpn).toBe('http/1.1');
      await expect(handshake(port, 'other.test')).rejects.toThrow();
      // still serving after the refused handshake
      expect((await handshake(port, DOMAIN)).alpn).toBe('http/1.1');
    });
  });
});

describe('wssserver certificate file errors: one line on stderr, non-zero exit', () => {
  let good: { cert: string; key: string };
  let other: { cert: string; key: string };
  let expired: { cert: string; key: string };

  beforeAll(async () => {
    [good, other, expired] = await Promise.all([
      selfSigned(tmp.dir, DOMAIN, 'good'),
      selfSigned(tmp.dir, 'other.test', 'other'),
      expiredSelfSigned(tmp.dir, DOMAIN, 'expired'),
    ]);
    writeFileSync(join(tmp.dir, 'garbage.pem'), 'this is not PEM\n');
    copyFileSync(good.cert, join(tmp.dir, 'noperm.pem'));
    chmodSync(join(tmp.dir, 'noperm.pem'), 0o000);
  });

  const run = (cert: string, key: string) =>
    runCli(['wssserver', '--domainaddress', `${DOMAIN}:443`, '--listen', `${LOOPBACK}:0`, '--password', PASSWORD, '--cert', cert, '--certkey', key]);

  function expectOneLine(r: { code: number | null; stderr: string; stdout: string }, re: RegExp): void {
    expect(r.code).not.toBe(0);
    expect(r.code).not.toBeNull();
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^brook-ts: /);
    expect(lines[0]).toMatch(re);
    expect(r.stdout).not.toContain('"listening"');
  }

  it('missing certificate and missing key name the path', async () => {
    const missing = join(tmp.dir, 'nope.pem');
    const [a, b] = await Promise.all([run(missing, good.key), run(good.cert, missing)]);
    expectOneLine(a, /nope\.pem/);
    expectOneLine(b, /nope\.pem/);
  });

  it('unreadable: not PEM, a directory, and (when not root) no permission', async () => {
    const [a, b] = await Promise.all([run(join(tmp.dir, 'garbage.pem'), good.key), run(tmp.dir, good.key)]);
    expectOneLine(a, /PEM|certificate/i);
    expectOneLine(b, /certificate|director|EISDIR|read/i);
    if (process.getuid?.() !== 0) expectOneLine(await run(join(tmp.dir, 'noperm.pem'), good.key), /noperm\.pem/);
  });

  it('mismatched key and expired certificate', async () => {
    const [a, b] = await Promise.all([run(good.cert, other.key), run(expired.cert, expired.key)]);
    expectOneLine(a, /key|match/i);
    expectOneLine(b, /expired/i);
    expect(b.stderr).toMatch(/2020/);
  });

  it('only one of --cert/--certkey', async () => {
    const r = await runCli(['wssserver', '--domainaddress', `${DOMAIN}:443`, '--listen', `${LOOPBACK}:0`, '--password', PASSWORD, '--cert', good.cert]);
    expectOneLine(r, /--cert/);
  });
});

describe('wssserver with ACME (pebble) + wssclient trusting only the issuing root', () => {
  let pebble: Pebble;
  let apiCa: string;
  let cacheDir: string;

  beforeAll(async () => {
    pebble = await startPebble(PEBBLE);
    apiCa = join(tmp.dir, 'pebble-api.pem');
    writeFileSync(apiCa, pebble.apiCaPem);
    cacheDir = join(tmp.dir, 'acme-cache');
  });

  afterAll(async () => {
    await stopAllClis();
    await pebble?.stop();
  });

  const serverArgs = (directory: string) => [
    'wssserver', '--domainaddress', `${DOMAIN}:443`, '--listen', `${LOOPBACK}:0`, '--password', PASSWORD,
    '--httpListen', `${LOOPBACK}:${PEBBLE.httpPort}`, '--acmeDirectory', directory, '--acmeCA', apiCa,
    '--cacheDir', cacheDir, '--acmeSkipChallengeVerification',
  ];

  it('gets a certificate, serves it, and a client with --ca root.pem reaches a local HTTP server', async () => {
    const server = await startCli(serverArgs(pebble.directoryUrl), { timeoutMs: 20_000 });
    expect(server.listening).toMatchObject({ command: 'wssserver', domain: DOMAIN, certificate: 'acme' });
    expect(server.lines.some((l) => /obtained certificate/.test(String(l['msg'])))).toBe(true);
    expect(existsSync(join(cacheDir, `${DOMAIN}.crt.pem`))).toBe(true);

    const rootPem = join(tmp.dir, 'pebble-root.pem');
    writeFileSync(rootPem, await pebble.fetchRoot());
    const port = server.port('listen');
    const first = await handshake(port, DOMAIN, await pebble.fetchRoot());
    expect(first.authorized).toBe(true);
    expect(first.alpn).toBe('http/1.1');

    const client = await startCli(wssClientArgs(port, ['--ca', rootPem]));
    const r = await viaSocks(client, '/hello?via=acme');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('hello from origin /hello?via=acme\n');

    // Port "80" (here pebble's httpPort) redirects everything but the challenge to https.
    const redirect = await curl(['-s', '-o', '/dev/null', '-w', '%{http_code} %{redirect_url}', `http://${LOOPBACK}:${PEBBLE.httpPort}/some/path`]);
    expect(redirect.stdout).toBe(`301 https://${DOMAIN}/some/path`);

    expect(await stopCli(server)).toEqual({ code: 0, signal: null });

    // Restart with the ACME directory pointing nowhere: the cached certificate is reused.
    const again = await startCli(serverArgs(`https://${LOOPBACK}:1/dir`), { timeoutMs: 10_000 });
    expect(again.listening).toMatchObject({ certificate: 'acme', notAfter: server.listening['notAfter'] });
    expect(again.lines.some((l) => /using cached certificate/.test(String(l['msg'])))).toBe(true);
    const port2 = again.port('listen');
    expect((await handshake(port2, DOMAIN)).fingerprint).toBe(first.fingerprint);
    const client2 = await startCli(wssClientArgs(port2, ['--ca', rootPem]));
    const r2 = await viaSocks(client2, '/hello?via=cache');
    expect(r2.stdout).toBe('hello from origin /hello?via=cache\n');
    await Promise.all([stopCli(client), stopCli(client2), stopCli(again)]);
  });
});
