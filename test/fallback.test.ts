/**
 * --fallback and --host (issue 12 items 2 and 5): every request that is not a
 * tunnel goes to a local site (reverse proxy) or a folder; curl and raw
 * requests against it; a site that is down gets nginx's 502 (nothing names
 * brook-ts); tunnels beside keep working; a missing folder is a one-line
 * start error.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { nginxErrorPage } from '../src/server/fallback.js';
import { runCli, tempDir } from './helpers/cli.js';
import {
  type Closable,
  closeAll,
  connectRaw,
  curl,
  endedWithin,
  exchangeThroughSocks,
  freePort,
  LOOPBACK,
  rawHttp,
  readHttpHead,
  sha256,
  startExchangeServer,
  startPair,
  upgradeRequest,
  waitFor,
} from './helpers/net.js';

const MiB = 1024 * 1024;
const BIG = Buffer.alloc(MiB, 0).map((_, i) => (i * 7 + 3) & 0xff);

interface Site extends Closable {
  port: number;
  seen: { method: string; url: string; headers: IncomingHttpHeaders }[];
}

/** The site behind --fallback: pages with its own Server header, a 1 MiB file, a POST echo (size + SHA-256), its own 404. */
async function startSite(): Promise<Site> {
  const seen: Site['seen'] = [];
  const sockets = new Set<net.Socket>();
  const srv = createServer((req, res) => {
    seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers });
    const h = createHash('sha256');
    let n = 0;
    req.on('data', (d: Buffer) => {
      n += d.length;
      h.update(d);
    });
    req.on('end', () => {
      const common = { Server: 'Apache/2.4.62 (Debian)', 'X-Site': 'yes' };
      if (req.url === '/big') {
        res.writeHead(200, { ...common, 'Content-Type': 'application/octet-stream' }); // chunked
        res.end(BIG);
        return;
      }
      const [status, body] =
        req.method === 'POST' ? [201, `${n} ${h.digest('hex')}`] : req.url === '/missing' ? [404, '<h1>site says not found</h1>'] : [200, `<h1>page ${req.url}</h1>`];
      res.writeHead(status, { ...common, 'Content-Type': 'text/html', 'Content-Length': String(Buffer.byteLength(body)) });
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
    seen,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

/** Nothing in an answer may name us or the stack under us. */
function expectNoFingerprint(text: string): void {
  expect(text).not.toMatch(/brook|express|node\.js|x-powered-by|BROOK_ERR/i);
}

const open: Closable[] = [];
const tmp = tempDir('brook-fallback-');
let site: Site;
let dst: Awaited<ReturnType<typeof startExchangeServer>>;

beforeAll(async () => {
  site = await startSite();
  dst = await startExchangeServer({ downBytes: 256 * 1024 });
  open.push(site, dst);
});

afterAll(async () => {
  await closeAll(open);
  tmp.remove();
});

async function tunnelWorks(socksPort: number): Promise<void> {
  const r = await exchangeThroughSocks(socksPort, { type: 'ipv4', host: LOOPBACK, port: dst.port }, 256 * 1024);
  // the destination's record of this exchange (records finish in any order; wait until it is there)
  await waitFor(() => dst.records.some((x) => x.receivedHash === r.sent.hash), 5000, "the destination's record of the tunnel");
  const rec = dst.records.find((x) => x.receivedHash === r.sent.hash)!;
  expect(r.received.hash).toBe(rec.sentHash);
  expect(r.sent.hash).toBe(rec.receivedHash);
}

describe('--fallback http://site', () => {
  it('pages, the tunnel path without an upgrade, a 1 MiB download, a POST body and the site 404, with the site status and headers; tunnels still work', async () => {
    const pair = await startPair({ server: { fallback: `http://${LOOPBACK}:${site.port}` } });
    open.push(pair);
    const base = `http://${LOOPBACK}:${pair.serverPort}`;

    const page = await curl(['-i', `${base}/index.html?x=1`]);
    expect(page.code).toBe(0);
    expect(page.stdout).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(page.stdout).toContain('Server: Apache/2.4.62 (Debian)');
    expect(page.stdout).toContain('X-Site: yes');
    expect(page.stdout).toContain('<h1>page /index.html?x=1</h1>');
    expectNoFingerprint(page.stdout);

    // the tunnel path, a plain GET (no upgrade): the site's page too
    const ws = await curl(['-i', `${base}/ws`]);
    expect(ws.stdout).toContain('<h1>page /ws</h1>');

    const big = await curl(['-s', '-o', join(tmp.dir, 'big'), '-w', '%{http_code} %{size_download}', `${base}/big`]);
    expect(big.stdout).toBe(`200 ${MiB}`);
    const { readFileSync } = await import('node:fs');
    expect(sha256(readFileSync(join(tmp.dir, 'big')))).toBe(sha256(BIG));

    writeFileSync(join(tmp.dir, 'body'), BIG);
    const post = await curl(['-i', '--data-binary', `@${join(tmp.dir, 'body')}`, `${base}/upload`]);
    expect(post.stdout).toMatch(/^HTTP\/1\.1 201 Created/);
    expect(post.stdout).toContain(`${MiB} ${sha256(BIG)}`);

    const missing = await curl(['-i', `${base}/missing`]);
    expect(missing.stdout).toMatch(/^HTTP\/1\.1 404 Not Found/);
    expect(missing.stdout).toContain('site says not found');

    // what the site saw: the client's Host, X-Forwarded-*, no hop-by-hop headers
    const last = site.seen.find((s) => s.url === '/index.html?x=1')!;
    expect(last.headers.host).toBe(`${LOOPBACK}:${pair.serverPort}`);
    expect(last.headers['x-forwarded-for']).toBe(LOOPBACK);
    expect(last.headers['x-forwarded-proto']).toBe('http');
    expect(last.headers['x-forwarded-host']).toBe(`${LOOPBACK}:${pair.serverPort}`);

    await tunnelWorks(pair.socksPort);
  });

  it('an upgrade to another path, a bad upgrade on the tunnel path and another method go to the site; a valid upgrade stays ours', async () => {
    const pair = await startPair({ server: { fallback: `http://${LOOPBACK}:${site.port}` } });
    open.push(pair);
    const other = await rawHttp(pair.serverPort, upgradeRequest(pair.serverPort, '/chat'));
    expect(other.status).toBe(200);
    expect(other.body.toString()).toBe('<h1>page /chat</h1>');
    expect(other.headers.get('server')).toBe('Apache/2.4.62 (Debian)');
    const seen = site.seen.at(-1)!;
    expect(seen.url).toBe('/chat');
    expect(seen.headers.upgrade).toBeUndefined(); // hop-by-hop: not passed on

    const badVersion = upgradeRequest(pair.serverPort).replace('Version: 13', 'Version: 8');
    expect((await rawHttp(pair.serverPort, badVersion)).body.toString()).toBe('<h1>page /ws</h1>');
    const del = await rawHttp(pair.serverPort, `DELETE /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n`);
    expect(del.body.toString()).toBe('<h1>page /ws</h1>');

    await tunnelWorks(pair.socksPort);
  });

  it("a site that is down: nginx's 502 page, nothing naming brook-ts, one rate-limited log line; tunnels still work", async () => {
    const down = await freePort();
    const pair = await startPair({ server: { fallback: `http://${LOOPBACK}:${down}` } });
    open.push(pair);
    const answers = await Promise.all([1, 2, 3].map(() => rawHttp(pair.serverPort, `GET / HTTP/1.1\r\nHost: x\r\n\r\n`)));
    for (const a of answers) {
      expect(a.status).toBe(502);
      expect(a.headers.get('server')).toBe('nginx');
      expect(a.body.toString()).toBe(nginxErrorPage(502));
      expectNoFingerprint([...a.headers].join('\n') + a.body.toString());
    }
    await waitFor(() => pair.serverLog.some((l) => l['code'] === ErrorCodes.FALLBACK_UNREACHABLE), 2000, 'fallback log line');
    expect(pair.serverLog.filter((l) => l['code'] === ErrorCodes.FALLBACK_UNREACHABLE).length).toBe(1);
    await tunnelWorks(pair.socksPort);
  });

  it('keep-alive: two requests on one connection, then the head deadline closes it without an answer', async () => {
    const pair = await startPair({ server: { fallback: `http://${LOOPBACK}:${site.port}`, headTimeoutMs: 500 } });
    open.push(pair);
    const s = await connectRaw(pair.serverPort);
    s.write('GET /a HTTP/1.1\r\nHost: x\r\n\r\n');
    const h1 = await readHttpHead(s);
    expect(h1.head).toMatch(/^HTTP\/1\.1 200/);
    s.write('GET /b HTTP/1.1\r\nHost: x\r\n\r\n');
    const h2 = await readHttpHead(s);
    expect(h2.head).toMatch(/^HTTP\/1\.1 200/);
    const ms = await endedWithin(s, 3000);
    expect(ms).toBeGreaterThan(300);
    s.destroy();
  });
});

describe('--fallback DIR', () => {
  it("serves files; a missing one is nginx's 404, another method nginx's 405; no redirect, no dot files", async () => {
    const dir = join(tmp.dir, 'site');
    mkdirSync(join(dir, 'sub'), { recursive: true });
    writeFileSync(join(dir, 'index.html'), '<h1>home</h1>');
    writeFileSync(join(dir, 'sub', 'a.txt'), 'a file');
    writeFileSync(join(dir, '.secret'), 'no');
    const pair = await startPair({ server: { fallback: dir } });
    open.push(pair);
    const base = `http://${LOOPBACK}:${pair.serverPort}`;
    const home = await curl(['-i', `${base}/`]);
    expect(home.stdout).toMatch(/^HTTP\/1\.1 200 OK/);
    expect(home.stdout).toContain('<h1>home</h1>');
    expect(home.stdout).toContain('Server: nginx');
    expectNoFingerprint(home.stdout);
    expect((await curl([`${base}/sub/a.txt`])).stdout).toBe('a file');
    for (const path of ['/nope', '/.secret', '/sub', '/ws']) {
      const a = await rawHttp(pair.serverPort, `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`);
      expect(a.status).toBe(404);
      expect(a.body.toString()).toBe(nginxErrorPage(404));
    }
    const post = await rawHttp(pair.serverPort, `POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi`);
    expect(post.status).toBe(405);
    await tunnelWorks(pair.socksPort);
  });

  it('a folder that does not exist, or a bad URL, is a one-line start error', async () => {
    for (const [flag, msg] of [
      [join(tmp.dir, 'no-such-dir'), /^brook-ts: --fallback .*no-such-dir: no such directory\n$/],
      ['ftp://127.0.0.1/', /^brook-ts: --fallback ftp:\/\/127\.0\.0\.1\/: only http:\/\/ and https:\/\/ sites\n$/],
    ] as const) {
      const r = await runCli(['wsserver', '--listen', `${LOOPBACK}:0`, '--password', 'x', '--fallback', flag]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toMatch(msg);
    }
  });
});

describe('--host', () => {
  it('an upgrade for another Host gets the answer of another path (or the fallback); the right Host tunnels', async () => {
    const plain = await startPair({ server: { host: LOOPBACK } }); // the client sends Host: 127.0.0.1:port
    open.push(plain);
    const wrong = upgradeRequest(plain.serverPort).replace(`Host: ${LOOPBACK}:`, 'Host: other.example:');
    const a = await rawHttp(plain.serverPort, wrong);
    expect(a.status).toBe(404);
    expect(a.body.length).toBe(0);
    expect(a.headers.get('server')).toBe('nginx');
    await tunnelWorks(plain.socksPort);

    const withPort = await startPair({ server: { host: `${LOOPBACK}:1`, fallback: `http://${LOOPBACK}:${site.port}` } });
    open.push(withPort);
    const b = await rawHttp(withPort.serverPort, upgradeRequest(withPort.serverPort)); // Host has another port
    expect(b.body.toString()).toBe('<h1>page /ws</h1>');
  });

  it('a bad --host is a one-line start error', async () => {
    const r = await runCli(['wsserver', '--listen', `${LOOPBACK}:0`, '--password', 'x', '--host', 'a b']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toBe('brook-ts: --host: not a host name: a b\n');
  });
});
