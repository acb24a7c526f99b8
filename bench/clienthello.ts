/**
 * The JA3 and JA4 of three ClientHellos, captured on loopback in front of a real
 * TLS server (test/helpers/clienthello-capture.ts, parsed by src/tls/clienthello.ts):
 *
 *   node     brook-ts's wss client with no tlsfingerprint (Node's default hello, ALPN http/1.1)
 *   chrome   brook-ts's wss client with tlsfingerprint=chrome
 *   chromium Debian's Chromium, headless, loading https://brook.test:PORT/ (apt-get install -y chromium)
 *
 * Usage: npx tsx bench/clienthello.ts [--chromium /usr/bin/chromium | --no-chromium] [--out DIR]
 * Prints a Markdown table (the README's "Against a censor" one) and, per hello,
 * its JA3 and JA4 raw strings; --out also writes each hello's bytes as hex and a
 * results.json. Chromium is started in its own process group and ended by it.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { connectUpgraded, type ServerEndpoint } from '../src/client/dial.js';
import { type ClientHello, isGrease, ja3, ja3String, ja4, ja4Parts } from '../src/tls/clienthello.js';
import { type CapturedHello, type HelloCapture, startHelloCapture } from '../test/helpers/clienthello-capture.js';
import { selfSigned } from '../test/helpers/cli.js';
import { boolFlag, flag } from './hostile/base.js';

const NAME = 'brook.test';
const LOOPBACK = '127.0.0.1';
const CHROMIUM_TIMEOUT_MS = 30_000;
const CLIENT_TIMEOUT_MS = 5_000;

interface HelloRow {
  client: string;
  ja4: string;
  ja3: string;
  ja4r: ReturnType<typeof ja4Parts>;
  ja3Text: string;
  ciphers: number;
  extensions: number;
  bytes: number;
  hex: string;
}

function rowOf(client: string, h: ClientHello, bytes: Buffer): HelloRow {
  return {
    client,
    ja4: ja4(h),
    ja3: ja3(h),
    ja4r: ja4Parts(h),
    ja3Text: ja3String(h),
    ciphers: h.cipherSuites.filter((c) => !isGrease(c)).length,
    extensions: h.extensions.filter((e) => !isGrease(e.type)).length,
    bytes: h.recordBytes,
    hex: bytes.subarray(0, h.recordBytes).toString('hex'),
  };
}

/** A TLS server answering the upgrade with a plain 200 (the hello is what matters) and HTTP/1.1 pages. */
function startTlsServer(cert: Buffer, key: Buffer): Promise<tls.Server> {
  const server = tls.createServer({ cert, key, ALPNProtocols: ['http/1.1'] }, (s) => {
    s.on('error', () => undefined);
    s.once('data', () => s.end('HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok'));
  });
  return new Promise((r) => server.listen(0, LOOPBACK, () => r(server)));
}

async function brookHello(cap: HelloCapture, ca: string, extra: Partial<ServerEndpoint>): Promise<CapturedHello> {
  const endpoint: ServerEndpoint = { secure: true, hostPort: `${NAME}:${cap.port}`, hostname: NAME, port: cap.port, path: '/ws', address: { host: LOOPBACK, port: cap.port }, ca, ...extra };
  const next = cap.next();
  await connectUpgraded({ endpoint, timeoutMs: CLIENT_TIMEOUT_MS }).then(
    (u) => u.socket.destroy(),
    () => undefined, // the server answers 200, not 101: the hello was sent all the same
  );
  return next;
}

async function chromiumHello(cap: HelloCapture, binary: string): Promise<CapturedHello> {
  const profile = mkdtempSync(join(tmpdir(), 'brook-chromium-'));
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`, `--host-resolver-rules=MAP ${NAME} ${LOOPBACK}`,
    `https://${NAME}:${cap.port}/`,
  ];
  const child = spawn(binary, args, { detached: true, stdio: 'ignore' });
  try {
    for (;;) {
      const c = await cap.next(CHROMIUM_TIMEOUT_MS);
      if (c.hello.serverName === NAME) return c;
    }
  } finally {
    if (child.pid) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(profile, { recursive: true, force: true });
  }
}

function table(rows: HelloRow[]): string {
  const lines = ['| ClientHello | JA4 | JA3 | ciphers | extensions | bytes |', '|---|---|---|---|---|---|'];
  for (const r of rows) lines.push(`| ${r.client} | \`${r.ja4}\` | \`${r.ja3}\` | ${r.ciphers} | ${r.extensions} | ${r.bytes} |`);
  return lines.join('\n');
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'brook-clienthello-'));
  const { cert, key } = await selfSigned(dir, NAME, 'server');
  const ca = readFileSync(cert, 'utf8');
  const server = await startTlsServer(readFileSync(cert), readFileSync(key));
  const cap = await startHelloCapture({ forwardTo: { host: LOOPBACK, port: (server.address() as { port: number }).port } });
  const rows: HelloRow[] = [];
  try {
    let c = await brookHello(cap, ca, {});
    rows.push(rowOf('brook-ts, no tlsfingerprint (Node 20 default)', c.hello, c.bytes));
    c = await brookHello(cap, ca, { tlsFingerprint: 'chrome' });
    rows.push(rowOf('brook-ts, tlsfingerprint=chrome', c.hello, c.bytes));
    if (!boolFlag('no-chromium')) {
      const binary = flag('chromium') ?? '/usr/bin/chromium';
      c = await chromiumHello(cap, binary);
      rows.push(rowOf(`Chromium (${binary})`, c.hello, c.bytes));
    }
  } finally {
    await cap.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`${table(rows)}\n\n`);
  for (const r of rows) process.stdout.write(`${r.client}\n  JA4_r ${r.ja4r.a}_${r.ja4r.ciphers}_${r.ja4r.extensions}\n  JA3   ${r.ja3Text}\n`);
  const out = flag('out');
  if (out) {
    mkdirSync(out, { recursive: true });
    writeFileSync(join(out, 'results.json'), JSON.stringify({ node: process.version, openssl: process.versions.openssl, rows }, null, 2));
    rows.forEach((r, i) => writeFileSync(join(out, `hello-${i}.hex`), `${r.hex}\n`));
  }
}

await main();
