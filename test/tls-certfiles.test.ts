import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, readFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { loadCertFiles } from '../src/tls/certfiles.js';
import { createTlsOptions } from '../src/tls/tlsserver.js';
import { BrookError, ErrorCodes, type ErrorCode } from '../src/errors.js';

let dir: string;

function openssl(args: string[]): void {
  const r = spawnSync('openssl', args, { cwd: dir, stdio: 'pipe' });
  if (r.status !== 0) throw new Error(`openssl ${args.join(' ')}: ${r.stderr.toString()}`);
}

function selfSigned(name: string, cn: string, san?: string): void {
  openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '30',
    '-subj', `/CN=${cn}`, ...(san ? ['-addext', `subjectAltName=${san}`] : []),
    '-keyout', `${name}.key`, '-out', `${name}.crt`,
  ]);
}

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<BrookError> {
  const e = await p.then(
    () => {
      throw new Error(`expected ${code}, got success`);
    },
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(BrookError);
  expect((e as BrookError).code).toBe(code);
  return e as BrookError;
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'brook-certfiles-'));
  selfSigned('good', 'app.test', 'DNS:app.test,DNS:www.app.test');
  selfSigned('other', 'other.test');
  // A certificate that really expired (openssl 3.0 req has no negative -days: use `ca` with explicit dates).
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=old.test', '-keyout', 'old.key', '-out', 'old.csr']);
  writeFileSync(join(dir, 'index.txt'), '');
  writeFileSync(join(dir, 'serial'), '01\n');
  mkdirSync(join(dir, 'newcerts'));
  writeFileSync(
    join(dir, 'ca.cnf'),
    '[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = newcerts\nserial = serial\ndefault_md = sha256\npolicy = p\nunique_subject = no\n[p]\ncommonName = supplied\n',
  );
  openssl(['ca', '-batch', '-config', 'ca.cnf', '-selfsign', '-keyfile', 'old.key', '-in', 'old.csr',
    '-startdate', '20200101000000Z', '-enddate', '20200102000000Z', '-notext', '-out', 'old.crt']);
  writeFileSync(join(dir, 'garbage.crt'), 'this is not PEM\n');
  writeFileSync(join(dir, 'broken.crt'), '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
  writeFileSync(join(dir, 'garbage.key'), '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('loadCertFiles', () => {
  it('loads a matching pair and reports names and notAfter', async () => {
    const c = await loadCertFiles(join(dir, 'good.crt'), join(dir, 'good.key'));
    expect(c.names).toEqual(['app.test', 'www.app.test']);
    expect(c.cert).toContain('BEGIN CERTIFICATE');
    expect(c.key).toContain('PRIVATE KEY');
    const days = (c.notAfter.getTime() - Date.now()) / 86_400_000;
    expect(days).toBeGreaterThan(29);
    expect(days).toBeLessThan(31);
  });

  it('falls back to the subject CN when there is no subjectAltName', async () => {
    // openssl req -x509 without -addext adds no SAN
    const c = await loadCertFiles(join(dir, 'other.crt'), join(dir, 'other.key'));
    expect(c.names).toEqual(['other.test']);
  });

  it('resolves relative paths against the working directory', async () => {
    const rel = relative(process.cwd(), join(dir, 'good.crt'));
    expect(rel.startsWith('/')).toBe(false);
    const c = await loadCertFiles(rel, relative(process.cwd(), join(dir, 'good.key')));
    expect(c.names[0]).toBe('app.test');
  });

  it('CERT_MISSING names the missing path (cert or key)', async () => {
    const e1 = await expectCode(loadCertFiles(join(dir, 'nope.crt'), join(dir, 'good.key')), ErrorCodes.CERT_MISSING);
    expect(e1.message).toContain(join(dir, 'nope.crt'));
    const e2 = await expectCode(loadCertFiles(join(dir, 'good.crt'), join(dir, 'nope.key')), ErrorCodes.CERT_MISSING);
    expect(e2.message).toContain(join(dir, 'nope.key'));
  });

  it('CERT_UNREADABLE for non-PEM, unparseable PEM, a bad key and a directory', async () => {
    await expectCode(loadCertFiles(join(dir, 'garbage.crt'), join(dir, 'good.key')), ErrorCodes.CERT_UNREADABLE);
    await expectCode(loadCertFiles(join(dir, 'broken.crt'), join(dir, 'good.key')), ErrorCodes.CERT_UNREADABLE);
    await expectCode(loadCertFiles(join(dir, 'good.crt'), join(dir, 'garbage.key')), ErrorCodes.CERT_UNREADABLE);
    // A certificate given as the key is not a private key.
    await expectCode(loadCertFiles(join(dir, 'good.crt'), join(dir, 'good.crt')), ErrorCodes.CERT_UNREADABLE);
    // EISDIR stands in for a permission error: tests run as root, where chmod 000 does not stop reads.
    const e = await expectCode(loadCertFiles(dir, join(dir, 'good.key')), ErrorCodes.CERT_UNREADABLE);
    expect(e.message).toContain(dir);
  });

  it('CERT_MISMATCH when the key belongs to another certificate', async () => {
    await expectCode(loadCertFiles(join(dir, 'good.crt'), join(dir, 'other.key')), ErrorCodes.CERT_MISMATCH);
  });

  it('CERT_EXPIRED for a really expired certificate, with the date in the message', async () => {
    const e = await expectCode(loadCertFiles(join(dir, 'old.crt'), join(dir, 'old.key')), ErrorCodes.CERT_EXPIRED);
    expect(e.message).toContain('2020-01-02T00:00:00.000Z');
  });

  it('CERT_EXPIRED through the injected clock', async () => {
    const good = [join(dir, 'good.crt'), join(dir, 'good.key')] as const;
    await expect(loadCertFiles(...good, { now: () => new Date(Date.now() + 29 * 86_400_000) })).resolves.toBeTruthy();
    await expectCode(loadCertFiles(...good, { now: () => new Date(Date.now() + 31 * 86_400_000) }), ErrorCodes.CERT_EXPIRED);
  });
});

describe('createTlsOptions with certificate files', () => {
  let server: tls.Server | undefined;
  const sockets = new Set<tls.TLSSocket>();

  afterEach(async () => {
    for (const s of sockets) s.destroy();
    sockets.clear();
    if (server) await new Promise<void>((r) => server!.close(() => r()));
    server = undefined;
  });

  async function listen(): Promise<number> {
    const c = await loadCertFiles(join(dir, 'good.crt'), join(dir, 'good.key'));
    server = tls.createServer(createTlsOptions({ domain: 'App.Test.', cert: c.cert, key: c.key }), (s) => {
      s.on('error', () => {});
      s.end('hi');
    });
    server.on('tlsClientError', () => {});
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    return (server.address() as AddressInfo).port;
  }

  function connect(port: number, opts: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca: readFileSync(join(dir, 'good.crt')), ...opts });
      sockets.add(s);
      s.once('secureConnect', () => resolve(s));
      s.once('error', reject);
    });
  }

  it('serves the configured name with ALPN http/1.1 only (case and trailing dot ignored)', async () => {
    const port = await listen();
    const s = await connect(port, { servername: 'app.test', ALPNProtocols: ['h2', 'http/1.1'] });
    expect(s.authorized).toBe(true);
    expect(s.alpnProtocol).toBe('http/1.1');
    const s2 = await connect(port, { servername: 'APP.test' });
    expect(s2.authorized).toBe(true);
  });

  it('fails the handshake for another SNI name', async () => {
    const port = await listen();
    await expect(connect(port, { servername: 'other.test' })).rejects.toThrow();
  });

  it('a client without SNI gets the default (domain) certificate', async () => {
    const port = await listen();
    // Connecting by IP without servername: Node sends no SNI.
    const s = await connect(port, { checkServerIdentity: () => undefined });
    expect(s.getPeerX509Certificate()?.subject).toContain('CN=app.test');
  });
});
