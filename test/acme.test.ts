/**
 * CertManager against a real pebble (Let's Encrypt's ACME test server) on
 * 127.0.0.1; see test/helpers/pebble.ts and ../shared/notes/acme-testing.md.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, statSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import * as acme from 'acme-client';
import { startPebble, type Pebble } from './helpers/pebble.js';
import { CertManager, type AcmeOptions, type CurrentCert, ACCOUNT_KEY_FILE, renewBeforeMsFor, resolveDirectoryUrl, LETSENCRYPT_PRODUCTION, LETSENCRYPT_STAGING } from '../src/tls/acme.js';
import { attachCertManager, createPortEightyServer, createTlsOptions } from '../src/tls/tlsserver.js';
import { BrookError, ErrorCodes } from '../src/errors.js';

const DOMAIN = 'app.test';
const VALIDITY_S = 30;
/** Second pebble (for "ACME down at start"): shares the first one's fake DNS and API certificate. */
const LATE = { listenPort: 14100, managementPort: 15100, httpPort: 5102, tlsPort: 5101 };

let pebble: Pebble;
let root: string;
const tmpDirs: string[] = [];
const cleanups: (() => Promise<void> | void)[] = [];
const acmeSettings = (acme.axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number } }).acmeSettings;
const savedRetry = acmeSettings.retryMaxAttempts;

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'brook-acme-'));
  tmpDirs.push(d);
  return d;
}

function manager(o: Partial<AcmeOptions> & { cacheDir: string }): CertManager {
  const m = new CertManager({
    domain: DOMAIN,
    directoryUrl: pebble.directoryUrl,
    caBundle: pebble.apiCaPem,
    skipChallengeVerification: true,
    checkIntervalMs: 60_000,
    retry: { initialMs: 200, maxMs: 1_000 },
    pollIntervalMs: 100,
    ...o,
  });
  cleanups.push(() => m.stop());
  return m;
}

async function portEighty(m: CertManager, port: number, httpsPort = 443): Promise<http.Server> {
  const s = await createPortEightyServer({ host: '127.0.0.1', port, certManager: m, httpsPort });
  cleanups.push(() => new Promise<void>((r) => s.close(() => r())));
  s.closeAllConnections?.();
  return s;
}

/** An https-like TLS echo server that follows the manager's certificate. */
async function tlsEcho(m: CertManager): Promise<number> {
  const server = tls.createServer(createTlsOptions({ domain: DOMAIN }), (s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  server.on('tlsClientError', () => {});
  attachCertManager(server, m);
  const conns = new Set<tls.TLSSocket>();
  server.on('secureConnection', (s) => {
    conns.add(s);
    s.once('close', () => conns.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const c of conns) c.destroy();
        server.close(() => r());
      }),
  );
  return (server.address() as AddressInfo).port;
}

function connect(port: number, servername: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername, ca: root, ALPNProtocols: ['h2', 'http/1.1'] });
    cleanups.push(() => void s.destroy());
    s.once('secureConnect', () => resolve(s));
    s.once('error', reject);
  });
}

function echo(s: tls.TLSSocket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const t = setTimeout(() => reject(new Error(`echo timeout, got ${JSON.stringify(got)}`)), 3_000);
    const onData = (d: Buffer): void => {
      got += d.toString();
      if (got.length >= text.length) {
        clearTimeout(t);
        s.off('data', onData);
        resolve(got);
      }
    };
    s.on('data', onData);
    s.write(text);
  });
}

function httpGet(port: number, path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, headers: { Host: DOMAIN }, agent: false }, (r) => {
        let body = '';
        r.on('data', (d: Buffer) => (body += d.toString()));
        r.on('end', () => resolve({ status: r.statusCode ?? 0, headers: r.headers, body }));
      })
      .on('error', reject);
  });
}

function chain(pem: string): X509Certificate[] {
  return (pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []).map((b) => new X509Certificate(b));
}

function nextCertificate(m: CertManager, timeoutMs: number): Promise<CurrentCert> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no certificate event in time')), timeoutMs);
    m.once('certificate', (c: CurrentCert) => {
      clearTimeout(t);
      resolve(c);
    });
  });
}

beforeAll(async () => {
  // acme.axios is process-wide: in this test process only, fail fast instead of
  // acme-client's 5 retries (75 s); CertManager's own backoff does the retrying.
  acmeSettings.retryMaxAttempts = 0;
  pebble = await startPebble({ validitySeconds: VALIDITY_S });
  root = await pebble.fetchRoot();
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

afterAll(async () => {
  acmeSettings.retryMaxAttempts = savedRetry;
  await pebble?.stop();
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

describe('CertManager with pebble', () => {
  let firstCacheDir: string;
  let firstCert: CurrentCert;

  it('obtains a first certificate over HTTP-01 (served by the port-80 server) that verifies against pebble\'s root', async () => {
    firstCacheDir = tmp();
    const m = manager({ cacheDir: firstCacheDir });
    const certs: CurrentCert[] = [];
    m.on('certificate', (c: CurrentCert) => certs.push(c));
    await portEighty(m, pebble.httpPort, 8443);
    const c = await m.start();
    firstCert = c;
    expect(certs).toHaveLength(1);
    expect(m.current()).toBe(c);

    const [leaf, ...rest] = chain(c.cert);
    expect(leaf!.subjectAltName).toContain(`DNS:${DOMAIN}`);
    expect(leaf!.checkPrivateKey((await import('node:crypto')).createPrivateKey(c.key))).toBe(true);
    const rootX = new X509Certificate(root);
    const issuers = [...rest, rootX];
    let cur = leaf!;
    for (const next of issuers) {
      expect(cur.verify(next.publicKey)).toBe(true);
      cur = next;
    }
    expect(cur).toBe(rootX);
    expect(c.notAfter.getTime() - c.notBefore.getTime()).toBeLessThanOrEqual(VALIDITY_S * 1000 + 1000);

    for (const f of [ACCOUNT_KEY_FILE, `${DOMAIN}.crt.pem`, `${DOMAIN}.key.pem`]) {
      expect(statSync(join(firstCacheDir, f)).mode & 0o777).toBe(0o600);
    }
    expect(readFileSync(join(firstCacheDir, `${DOMAIN}.crt.pem`), 'utf8')).toBe(c.cert);

    // The port-80 server: redirects everything but the challenge; unknown tokens are 404.
    const r = await httpGet(pebble.httpPort, '/some/path?x=1');
    expect(r.status).toBe(301);
    expect(r.headers.location).toBe('https://app.test:8443/some/path?x=1');
    expect((await httpGet(pebble.httpPort, '/.well-known/acme-challenge/unknown')).status).toBe(404);
  });

  it('restarts from the cache without contacting ACME (dead directory URL)', async () => {
    expect(firstCert).toBeDefined();
    const errors: unknown[] = [];
    const m = manager({ cacheDir: firstCacheDir, directoryUrl: 'https://127.0.0.1:1/dir' });
    m.on('error', (e) => errors.push(e));
    const c = await m.start();
    expect(c.serialNumber).toBe(firstCert.serialNumber);
    expect(c.cert).toBe(firstCert.cert);
    await new Promise((r) => setTimeout(r, 300));
    expect(errors).toEqual([]);
  });

  it('serves a cached certificate that is due for renewal at once, then renews it (existing ACME account)', async () => {
    const m = manager({ cacheDir: firstCacheDir, renewBeforeMs: 10 * 60_000 });
    const errors: unknown[] = [];
    m.on('error', (e) => errors.push(e));
    await portEighty(m, pebble.httpPort);
    const renewed = nextCertificate(m, 10_000).then(() => nextCertificate(m, 10_000));
    const c = await m.start();
    expect(c.serialNumber).toBe(firstCert.serialNumber);
    const r = await renewed;
    expect(r.serialNumber).not.toBe(firstCert.serialNumber);
    expect(errors).toEqual([]);
    m.stop();
    firstCert = r;
  });

  it('a client trusting only pebble\'s root reaches the TLS server for app.test; another SNI name fails', async () => {
    const m = manager({ cacheDir: firstCacheDir, directoryUrl: 'https://127.0.0.1:1/dir' });
    await m.start();
    const port = await tlsEcho(m);
    const s = await connect(port, DOMAIN);
    expect(s.authorized).toBe(true);
    expect(s.alpnProtocol).toBe('http/1.1');
    expect(await echo(s, 'ping')).toBe('ping');
    await expect(connect(port, 'other.test')).rejects.toThrow();
  });

  it('renews a short-lived certificate in place: an open connection keeps working, new ones see the new serial', async () => {
    // Renew 4 s after issuance: renewBefore = lifetime - 4 s.
    const m = manager({ cacheDir: tmp(), renewBeforeMs: (VALIDITY_S - 4) * 1000, checkIntervalMs: 250 });
    await portEighty(m, pebble.httpPort);
    const first = await m.start();
    const port = await tlsEcho(m);
    const old = await connect(port, DOMAIN);
    expect(old.getPeerX509Certificate()!.serialNumber).toBe(first.serialNumber);
    expect(await echo(old, 'before')).toBe('before');

    const renewed = await nextCertificate(m, 15_000);
    expect(renewed.serialNumber).not.toBe(first.serialNumber);
    expect(m.current()).toBe(renewed);
    m.stop(); // no further renewals during the checks

    expect(await echo(old, 'after renewal')).toBe('after renewal');
    const fresh = await connect(port, DOMAIN);
    expect(fresh.authorized).toBe(true);
    expect(fresh.alpnProtocol).toBe('http/1.1');
    expect(fresh.getPeerX509Certificate()!.serialNumber).toBe(renewed.serialNumber);
  });

  it('ACME down at start: ACME_FAILED errors, retries with backoff, succeeds once pebble is up', async () => {
    const late = { directoryUrl: `https://127.0.0.1:${LATE.listenPort}/dir` };
    const m = manager({ cacheDir: tmp(), directoryUrl: late.directoryUrl });
    const errors: { at: number; err: BrookError }[] = [];
    const gotThree = new Promise<void>((resolve) => {
      m.on('error', (err: BrookError) => {
        errors.push({ at: Date.now(), err });
        if (errors.length === 3) resolve();
      });
    });
    await portEighty(m, LATE.httpPort);
    const started = m.start();
    started.catch(() => {}); // awaited below; stop() in cleanup rejects it if the test fails first
    await gotThree;
    for (const { err } of errors) {
      expect(err).toBeInstanceOf(BrookError);
      expect(err.code).toBe(ErrorCodes.ACME_FAILED);
      expect(err.message).toContain(late.directoryUrl);
      expect(err.message).toContain('ECONNREFUSED');
    }
    // backoff 200 ms, then 400 ms (lower bounds only: the machine may be slow)
    expect(errors[1]!.at - errors[0]!.at).toBeGreaterThanOrEqual(180);
    expect(errors[2]!.at - errors[1]!.at).toBeGreaterThanOrEqual(380);
    expect(m.current()).toBeNull();

    const p2 = await startPebble({ ...LATE, validitySeconds: VALIDITY_S, dnsServer: pebble.dnsServer, api: { certPem: pebble.apiCaPem, keyPem: pebble.apiKeyPem } });
    cleanups.push(() => p2.stop());
    const c = await Promise.race([
      started,
      new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no certificate after pebble came up')), 10_000)),
    ]);
    const root2 = await p2.fetchRoot();
    const issuers = chain(c.cert);
    expect(issuers.length).toBeGreaterThanOrEqual(2);
    expect(issuers[issuers.length - 1]!.verify(new X509Certificate(root2).publicKey)).toBe(true);
  });
});

describe('CertManager without a server', () => {
  it('waitForCertificate times out with TIMEOUT carrying the last error; stop() rejects start() with CLOSED', async () => {
    const m = manager({ cacheDir: tmp(), directoryUrl: 'https://127.0.0.1:1/dir', retry: { initialMs: 100, maxMs: 100 } });
    m.on('error', () => {});
    const started = m.start();
    started.catch(() => {});
    const e = await m.waitForCertificate(400).catch((x: unknown) => x);
    expect((e as BrookError).code).toBe(ErrorCodes.TIMEOUT);
    expect((e as BrookError).message).toContain('last error');
    m.stop();
    await expect(started).rejects.toMatchObject({ code: ErrorCodes.CLOSED });
  });

  it('challengeHandler serves only known tokens; defaults and the renewal rule', () => {
    const m = new CertManager({ domain: 'App.Test.' });
    expect(m.domain).toBe('app.test');
    expect(m.directoryUrl).toBe(LETSENCRYPT_PRODUCTION);
    expect(m.cacheDir).toBe(join(process.cwd(), '.letsencrypt'));
    expect(resolveDirectoryUrl('staging')).toBe(LETSENCRYPT_STAGING);
    expect(() => new CertManager({ domain: '127.0.0.1:443' })).toThrow(BrookError);
    const day = 86_400_000;
    const t0 = new Date(0);
    expect(renewBeforeMsFor(t0, new Date(90 * day))).toBe(30 * day);
    expect(renewBeforeMsFor(t0, new Date(6 * day))).toBe(2 * day);
    expect(renewBeforeMsFor(t0, new Date(6 * day), 1234)).toBe(1234);
  });
});
