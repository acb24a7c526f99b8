/**
 * tlsfingerprint=chrome (issue 21 item 1; src/tls/fingerprint.ts): the hello
 * our wss client sends with it has the JA3 and JA4 that README's "Against a
 * censor" table states (and without it, Node's default, as before: the row
 * above it); its cipher suites, groups and signature algorithms are Chrome's
 * (less what OpenSSL 3.0 lacks); it still completes handshakes (TLS 1.3 with our
 * wssserver, TLS 1.2 with an RSA certificate) and resumes; any other value is a
 * one-line error; sessions are not shared across fingerprints.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls, { type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveServer } from '../src/client/connect.js';
import { connectUpgraded, type ServerEndpoint } from '../src/client/dial.js';
import { TlsSessionCache } from '../src/client/tls-session.js';
import { ErrorCodes } from '../src/errors.js';
import { buildLink, parseLink } from '../src/link.js';
import { type ClientHello, isGrease, ja3, ja4, parseClientHello } from '../src/tls/clienthello.js';
import { connectOptionsFor, contextOptionsFor, parseTlsFingerprint } from '../src/tls/fingerprint.js';
import { type CapturedWss, type HelloCapture, startCapturedWss } from './helpers/clienthello-capture.js';
import { LOOPBACK, oneLineError, waitFor } from './helpers/net.js';

const NAME = 'brook.test';
/** The figures are those of Node 20's OpenSSL 3.0; another OpenSSL builds another hello. */
const OPENSSL_30 = process.versions.openssl.startsWith('3.0.');
let wss: CapturedWss;
let cap: HelloCapture;
let ca: string;
const dir = mkdtempSync(join(tmpdir(), 'brook-tls-fingerprint-'));

/** JA4 and JA3 of a README table row whose first cell contains `marker`. */
function readmeRow(marker: string): { ja4: string; ja3: string } {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## Against a censor'));
  const line = section.split('\n').find((l) => l.startsWith('|') && l.split('|')[1]!.replace(/`/g, '').includes(marker));
  if (!line) throw new Error(`README's "Against a censor" table has no row with ${marker}`);
  const cells = line.split('|').map((c) => c.trim().replace(/`/g, ''));
  return { ja4: cells[2]!, ja3: cells[3]! };
}

beforeAll(async () => {
  wss = await startCapturedWss(NAME);
  ({ cap, ca } = wss);
});

afterAll(async () => {
  await wss?.close();
  rmSync(dir, { recursive: true, force: true });
});

const endpoint = (o: Partial<ServerEndpoint> = {}) => wss.endpoint(o);

async function helloOf(e: ServerEndpoint, tlsSessions?: TlsSessionCache): Promise<{ hello: ClientHello; reused: boolean }> {
  const next = cap.next();
  const u = await connectUpgraded({ endpoint: e, timeoutMs: 10_000, tlsSessions });
  const reused = (u.socket as TLSSocket).isSessionReused();
  const c = await next;
  u.socket.destroy();
  return { hello: c.hello, reused };
}

describe('tlsfingerprint=chrome: the hello', () => {
  it.skipIf(!OPENSSL_30)("JA4 and JA3 are the README table's, with and without the key", async () => {
    const chrome = (await helloOf(endpoint({ tlsFingerprint: 'chrome' }))).hello;
    expect({ ja4: ja4(chrome), ja3: ja3(chrome) }).toEqual(readmeRow('brook-ts, tlsfingerprint=chrome'));
    const plain = (await helloOf(endpoint())).hello;
    expect({ ja4: ja4(plain), ja3: ja3(plain) }).toEqual(readmeRow('brook-ts, no tlsfingerprint'));
  });

  it("Chrome's cipher suites in Chrome's order (then OpenSSL's 00ff), its groups less ML-KEM, its signature algorithms; no encrypt_then_mac; OCSP asked", async () => {
    const chromium = parseChromium();
    const h = (await helloOf(endpoint({ tlsFingerprint: 'chrome' }))).hello;
    expect(h.cipherSuites).toEqual([...chromium.cipherSuites.filter((c) => !isGrease(c)), 0x00ff]);
    expect(h.groups).toEqual(chromium.groups.filter((g) => !isGrease(g) && g !== 0x11ec));
    expect(h.signatureAlgorithms).toEqual(chromium.signatureAlgorithms.filter((s) => !isGrease(s) && s >> 8 !== 0x09));
    const types = h.extensions.map((e) => e.type);
    expect(types).not.toContain(0x0016);
    expect(types).toContain(0x0005);
    expect(h.alpn).toEqual(['http/1.1']);
    expect(h.supportedVersions).toEqual([0x0304, 0x0303]);
    expect(h.serverName).toBe(NAME);
  });

  it('sessions resume under the fingerprint and are never offered by the other hello', async () => {
    const cache = new TlsSessionCache();
    const e = endpoint({ tlsFingerprint: 'chrome' });
    expect((await helloOf(e, cache)).reused).toBe(false);
    await waitFor(() => cache.size === 1, 5000, 'a session kept');
    expect((await helloOf(e, cache)).reused).toBe(true);
    expect(cache.keyOf(e)).not.toBe(cache.keyOf(endpoint()));
    const offered = cache.offered;
    expect((await helloOf(endpoint(), cache)).reused).toBe(false);
    expect(cache.offered).toBe(offered);
  });

  it('a TLS 1.2 server with an RSA certificate accepts it (ECDHE-RSA, an RSA-PSS or PKCS#1 signature)', async () => {
    const key = join(dir, 'rsa.key.pem');
    const cert = join(dir, 'rsa.crt.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${NAME}`, '-addext', `subjectAltName=DNS:${NAME}`, '-keyout', key, '-out', cert], { stdio: 'ignore' });
    const srv = tls.createServer({ cert: readFileSync(cert), key: readFileSync(key), maxVersion: 'TLSv1.2', ALPNProtocols: ['http/1.1'] }, (s) => s.end());
    await new Promise<void>((r) => srv.listen(0, LOOPBACK, r));
    const port = (srv.address() as { port: number }).port;
    const e = endpoint({ tlsFingerprint: 'chrome', address: { host: LOOPBACK, port }, ca: readFileSync(cert, 'utf8') });
    const s = tls.connect({ host: LOOPBACK, port, servername: NAME, ca: e.ca, ALPNProtocols: ['http/1.1'], ...chromeContextOf(e) });
    await new Promise<void>((resolve, reject) => s.once('secureConnect', resolve).once('error', reject));
    expect(s.getProtocol()).toBe('TLSv1.2');
    expect(s.getCipher().name).toBe('ECDHE-RSA-AES128-GCM-SHA256');
    expect(s.alpnProtocol).toBe('http/1.1');
    s.destroy();
    // and through the client's own connect path (the server answers no 101: the handshake is what counts)
    await expect(connectUpgraded({ endpoint: e, timeoutMs: 5000 })).rejects.toMatchObject({ code: ErrorCodes.UPGRADE_RESPONSE });
    srv.close();
  });
});

describe('tlsfingerprint: the value', () => {
  it('chrome from a wssserver link or the options (which win); a wsserver link keeps it unread; empty is absent', () => {
    const link = buildLink('wssserver', 'wss://d.test:443/ws', 'pw', { tlsfingerprint: 'chrome' });
    expect(parseLink(link).tlsFingerprint).toBe('chrome');
    expect(resolveServer(link).endpoint.tlsFingerprint).toBe('chrome');
    expect(resolveServer('wss://d.test:443/ws', { password: 'pw', tlsFingerprint: 'chrome' }).endpoint.tlsFingerprint).toBe('chrome');
    expect(resolveServer('wss://d.test:443/ws', { password: 'pw' }).endpoint.tlsFingerprint).toBeUndefined();
    const ws = parseLink(buildLink('wsserver', 'ws://d.test:80', 'pw', { tlsfingerprint: 'firefox' }));
    expect(ws.tlsFingerprint).toBeUndefined();
    expect(ws.options.tlsfingerprint).toBe('firefox');
    expect(resolveServer('brook://wssserver?password=pw&tlsfingerprint=&wssserver=wss%3A%2F%2Fd.test%3A443').endpoint.tlsFingerprint).toBeUndefined();
  });

  it('any other value is a one-line error: LINK_INVALID in a link, CONFIG as an option or on a ws:// server', () => {
    const cases: Array<[() => unknown, string]> = [
      [() => parseLink('brook://wssserver?password=pw&tlsfingerprint=firefox&wssserver=wss%3A%2F%2Fd.test%3A443'), ErrorCodes.LINK_INVALID],
      [() => parseLink('brook://wssserver?password=pw&tlsfingerprint=Chrome&wssserver=wss%3A%2F%2Fd.test%3A443'), ErrorCodes.LINK_INVALID],
      [() => buildLink('wssserver', 'wss://d.test:443', 'pw', { tlsfingerprint: 'safari' }), ErrorCodes.LINK_INVALID],
      [() => resolveServer('wss://d.test:443/ws', { password: 'pw', tlsFingerprint: 'edge' as 'chrome' }), ErrorCodes.CONFIG],
      [() => resolveServer('ws://d.test:80/ws', { password: 'pw', tlsFingerprint: 'chrome' }), ErrorCodes.CONFIG],
      [() => parseTlsFingerprint(undefined), ErrorCodes.CONFIG],
    ];
    for (const [f, code] of cases) oneLineError(f, code);
  });
});

/** The Chromium 156 hello of test/clienthello.test.ts. */
function parseChromium(): ClientHello {
  return parseClientHello(Buffer.from(readFileSync(new URL('./fixtures/clienthello-chromium156.hex', import.meta.url), 'utf8').trim(), 'hex'));
}

function chromeContextOf(e: ServerEndpoint) {
  return { ...contextOptionsFor(e.tlsFingerprint!), ...connectOptionsFor(e.tlsFingerprint!) };
}
