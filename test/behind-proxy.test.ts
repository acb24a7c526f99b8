/**
 * Behind a proxy (issue 12 item 3): --proxyProtocol and --trustedProxies.
 *
 * In process: a small TCP relay in front writes a PROXY v1/v2 header (also a
 * byte at a time, also before TLS) and the logged client is the header's;
 * no header, a malformed one, one from a peer outside --trustedProxies: closed
 * without an answer, one rate-limited line, tunnels beside keep working.
 *
 * With the real thing in front (Debian haproxy and nginx, run in the
 * foreground from a temp folder on 127.0.0.1, stopped at the end):
 * - wsclient -> haproxy (send-proxy-v2) -> wsserver --proxyProtocol;
 * - wssclient withoutBrookProtocol -> nginx (TLS, Upgrade passed,
 *   X-Forwarded-For) -> wsserver withoutBrookProtocol --trustedProxies 127.0.0.1.
 * The client dials from 127.0.0.2 (--dialWithIP4), the proxies from
 * 127.0.0.1, so the logged address tells which one the server believed.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WsClient } from '../src/client/wsclient.js';
import { ErrorCodes } from '../src/errors.js';
import type { LogEntry } from '../src/log.js';
import { encodeProxyV1, V2_SIGNATURE } from '../src/server/proxyproto.js';
import { WsServer, type WsServerOptions } from '../src/server/wsserver.js';
import { type CliProcess, selfSigned, startCli, stopAllClis, tempDir } from './helpers/cli.js';
import {
  type Closable,
  closeAll,
  endedWithin,
  collectLog,
  connectRaw,
  freePort,
  LOOPBACK,
  PASSWORD,
  socksConnect,
  readExactly,
  sendRandom,
  sha256,
  upgradeRequest,
  waitFor,
  withTimeout,
} from './helpers/net.js';

const CLIENT_SOURCE = '127.0.0.2';
const open: Closable[] = [];
const tmp = tempDir('brook-behind-proxy-');
let sized: Awaited<ReturnType<typeof startSized>>;
let cert: { cert: string; key: string };

beforeAll(async () => {
  sized = await startSized();
  open.push(sized);
  cert = await selfSigned(tmp.dir, 'app.test', 'app');
});

afterAll(async () => {
  await closeAll(open);
  await stopAllClis();
  tmp.remove();
});

/** v2 header as send-proxy-v2 writes it for an IPv4 client. */
function proxyV2(src: string, sport: number, dstIp: string, dport: number): Buffer {
  const ip = (s: string) => s.split('.').map(Number);
  const b = Buffer.alloc(V2_SIGNATURE.length + 4 + 12);
  V2_SIGNATURE.copy(b);
  b.set([0x21, 0x11, 0x00, 0x0c], V2_SIGNATURE.length);
  b.set([...ip(src), ...ip(dstIp)], V2_SIGNATURE.length + 4);
  b.writeUInt16BE(sport, V2_SIGNATURE.length + 12);
  b.writeUInt16BE(dport, V2_SIGNATURE.length + 14);
  return b;
}

/** A TCP relay to `target` that writes `header` first (a byte at a time when asked). */
async function prefixRelay(target: number, header: Buffer, byteAtATime = false): Promise<Closable & { port: number }> {
  const sockets = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (c) => {
    c.pause();
    const up = net.connect({ port: target, host: LOOPBACK, allowHalfOpen: true }, async () => {
      if (byteAtATime) {
        for (const byte of header) {
          up.write(Buffer.from([byte]));
          await new Promise((r) => setTimeout(r, 2));
        }
      } else up.write(header);
      c.pipe(up).pipe(c);
      c.resume();
    });
    for (const s of [c, up]) {
      sockets.add(s);
      s.on('error', () => [c, up].forEach((x) => x.destroy()));
      s.on('close', () => [c, up].forEach((x) => x.destroy()));
    }
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

async function startServer(o: Partial<WsServerOptions>): Promise<{ server: WsServer; port: number; log: LogEntry[] }> {
  const log: LogEntry[] = [];
  const server = new WsServer({ listen: `${LOOPBACK}:0`, password: PASSWORD, log: collectLog(log), ...o });
  const port = (await server.listen()).port;
  open.push({ close: () => server.close() });
  return { server, port, log };
}

async function clientTo(port: number, o: { secure?: boolean; withoutBrookProtocol?: boolean } = {}): Promise<number> {
  const hostname = o.secure ? 'app.test' : LOOPBACK;
  const client = new WsClient({
    endpoint: { secure: Boolean(o.secure), hostPort: `${hostname}:${port}`, hostname, port, path: '/ws', address: { host: LOOPBACK, port }, ca: o.secure ? readFileSync(cert.cert, 'utf8') : undefined },
    password: PASSWORD,
    withoutBrookProtocol: o.withoutBrookProtocol,
    socks5: `${LOOPBACK}:0`,
    log: () => undefined,
  });
  await client.listen();
  open.push({ close: () => client.close() });
  return client.socks.address().port;
}

/**
 * Move EXCHANGE_BYTES each way at once through a SOCKS5 port, SHA-256 on both
 * ends; nobody half-closes before both directions are complete (nginx ends an
 * upgraded connection at the first FIN of either side: no half-close).
 */
async function exchange(socksPort: number): Promise<void> {
  const s = await socksConnect(socksPort, { type: 'ipv4', host: LOOPBACK, port: sized.port });
  try {
    const got = readExactly(s, EXCHANGE_BYTES, 20_000);
    const sent = await sendRandom(s, EXCHANGE_BYTES);
    const down = await got;
    const seen = await withTimeout(sized.next(), 5000, 'destination hashes');
    expect(sha256(down)).toBe(seen.sent);
    expect(sent.hash).toBe(seen.received);
  } finally {
    s.destroy();
  }
}

const EXCHANGE_BYTES = 512 * 1024;

/** A destination that reads EXCHANGE_BYTES and sends EXCHANGE_BYTES at the same time, then closes. */
async function startSized(): Promise<Closable & { port: number; next(): Promise<{ sent: string; received: string }> }> {
  const done: { sent: string; received: string }[] = [];
  const waiters: ((v: { sent: string; received: string }) => void)[] = [];
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((c) => {
    sockets.add(c);
    c.on('close', () => sockets.delete(c));
    c.on('error', () => undefined);
    void Promise.all([readExactly(c, EXCHANGE_BYTES, 20_000), sendRandom(c, EXCHANGE_BYTES)]).then(([up, sent]) => {
      const r = { sent: sent.hash, received: sha256(up) };
      const w = waiters.shift();
      if (w) w(r);
      else done.push(r);
      c.end();
    }, () => c.destroy());
  });
  await new Promise<void>((r) => srv.listen(0, LOOPBACK, r));
  return {
    port: (srv.address() as net.AddressInfo).port,
    next: () => (done.length ? Promise.resolve(done.shift()!) : new Promise((r) => waiters.push(r))),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

/** Dial failure lines are rate-limited (one per code a second): a tunnel tried again after this, if its line was held back. */
const DIAL_LINE_RETRY_MS = 1200;

/** A tunnel to a closed port: its dial failure is logged with the `from` the server believes. */
async function fromOfFailedDial(socksPort: number, lines: () => Record<string, unknown>[]): Promise<string> {
  const closed = await freePort();
  const isIt = (l: Record<string, unknown>) => l['dst'] === `${LOOPBACK}:${closed}`;
  for (let i = 0; i < 4 && !lines().some(isIt); i++) {
    const s = await socksConnect(socksPort, { type: 'ipv4', host: LOOPBACK, port: closed }).catch(() => null);
    s?.destroy();
    await waitFor(() => lines().some(isIt), DIAL_LINE_RETRY_MS, 'dial failure line').catch(() => undefined);
  }
  await waitFor(() => lines().some(isIt), 1000, 'dial failure line');
  return String(lines().find(isIt)!['from']);
}

describe('--proxyProtocol in process', () => {
  it('v1 and v2 (also a byte at a time): tunnels work and the header source is the logged client', async () => {
    const { port, log } = await startServer({ proxyProtocol: true });
    const cases = [
      { header: encodeProxyV1({ address: '192.0.2.71', port: 4001 }, { address: LOOPBACK, port }), from: '192.0.2.71:4001', slow: false },
      { header: encodeProxyV1({ address: '2001:db8::72', port: 4002 }, { address: '::1', port }), from: '[2001:db8::72]:4002', slow: true },
      { header: proxyV2('192.0.2.73', 4003, LOOPBACK, port), from: '192.0.2.73:4003', slow: true },
    ];
    for (const c of cases) {
      const relay = await prefixRelay(port, c.header, c.slow);
      open.push(relay);
      const socks = await clientTo(relay.port);
      await exchange(socks);
      expect(await fromOfFailedDial(socks, () => log)).toBe(c.from);
    }
  });

  it('the header comes before TLS (wssserver)', async () => {
    const { port, log } = await startServer({ proxyProtocol: true, tls: { cert: readFileSync(cert.cert), key: readFileSync(cert.key) } });
    const relay = await prefixRelay(port, proxyV2('192.0.2.80', 4080, LOOPBACK, port), true);
    open.push(relay);
    const socks = await clientTo(relay.port, { secure: true });
    await exchange(socks);
    expect(await fromOfFailedDial(socks, () => log)).toBe('192.0.2.80:4080');
  });

  it('no header, a malformed one, a peer outside --trustedProxies: closed without an answer, one line per kind; tunnels beside keep working', async () => {
    const { port, log } = await startServer({ proxyProtocol: true });
    const good = await prefixRelay(port, encodeProxyV1({ address: '192.0.2.90', port: 1 }, { address: LOOPBACK, port }));
    open.push(good);
    const socks = await clientTo(good.port);
    const attempts = [upgradeRequest(port), 'PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n' + upgradeRequest(port), 'PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n'];
    for (let i = 0; i < 5; i++) {
      for (const a of attempts) {
        const s = await connectRaw(port);
        let answered = 0;
        s.on('data', (d: Buffer) => (answered += d.length));
        s.write(a);
        await endedWithin(s, 2000);
        expect(answered).toBe(0);
        s.destroy();
      }
    }
    const refused = log.filter((l) => l['msg'] === 'refused connection');
    expect(refused.length).toBe(1); // the same code: one line a second, the rest counted
    expect(refused[0]!['code']).toBe(ErrorCodes.PROXY_HEADER_INVALID);
    expect(refused[0]!['peer']).toMatch(/^127\.0\.0\.1:\d+$/);
    await exchange(socks);
    expect(await fromOfFailedDial(socks, () => log)).toBe('192.0.2.90:1');

    const strict = await startServer({ proxyProtocol: true, trustedProxies: '10.0.0.0/8' });
    const s = await connectRaw(strict.port);
    s.write(encodeProxyV1({ address: '192.0.2.91', port: 2 }, { address: LOOPBACK, port: strict.port }));
    await endedWithin(s, 2000);
    s.destroy();
    await waitFor(() => strict.log.some((l) => l['code'] === ErrorCodes.PROXY_UNTRUSTED), 2000, 'untrusted line');
    expect(String(strict.log.find((l) => l['code'] === ErrorCodes.PROXY_UNTRUSTED)!['error'])).toContain('127.0.0.1');
  });

  it('a header that never completes is closed at the head deadline', async () => {
    const { port } = await startServer({ proxyProtocol: true, headTimeoutMs: 400 });
    const s = await connectRaw(port);
    s.write('PROXY TCP4 1.2.3.4');
    const ms = await endedWithin(s, 3000);
    expect(ms).toBeGreaterThan(250);
    s.destroy();
  });
});

// ---- the real thing in front -------------------------------------------------

interface Front extends Closable {
  log(): string;
}

/** Run a proxy in the foreground; ready when `port` accepts; stopped by PID (SIGTERM, then SIGKILL). */
async function runFront(cmd: string, args: string[], port: number): Promise<Front> {
  let out = '';
  const child: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited: ${out}`);
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, LOOPBACK, () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`${cmd} not listening on ${port}: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { close: stop, log: () => out };
}

/** The README's haproxy.cfg, with test ports. */
export function haproxyConfig(listen: number, server: number): string {
  return `global
    maxconn 256

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

frontend brook
    bind 127.0.0.1:${listen}
    default_backend brook_ts

backend brook_ts
    server wsserver 127.0.0.1:${server} send-proxy-v2
`;
}

/** The README's nginx.conf server block, with test ports, certificate and temp dirs. */
export function nginxConfig(dir: string, listen: number, server: number, c: { cert: string; key: string }): string {
  return `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path ${dir}/client_body;
    proxy_temp_path ${dir}/proxy;
    fastcgi_temp_path ${dir}/fastcgi;
    uwsgi_temp_path ${dir}/uwsgi;
    scgi_temp_path ${dir}/scgi;

    server {
        listen 127.0.0.1:${listen} ssl;
        server_name app.test;
        ssl_certificate ${c.cert};
        ssl_certificate_key ${c.key};

        location /ws {
            proxy_pass http://127.0.0.1:${server};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
            proxy_read_timeout 1h;
            proxy_send_timeout 1h;
        }
    }
}
`;
}

describe('with haproxy and nginx in front', () => {
  it('wsclient -> haproxy send-proxy-v2 -> wsserver --proxyProtocol: data both ways, the logged client is haproxy\'s client', async () => {
    const wsPort = await freePort();
    const haPort = await freePort();
    const server = await startCli(['wsserver', '--listen', `${LOOPBACK}:${wsPort}`, '--password', PASSWORD, '--proxyProtocol', '--trustedProxies', LOOPBACK]);
    const cfg = join(tmp.dir, 'haproxy.cfg');
    writeFileSync(cfg, haproxyConfig(haPort, wsPort));
    const ha = await runFront('haproxy', ['-db', '-f', cfg], haPort);
    open.push(ha);
    const client: CliProcess = await startCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:${haPort}`, '--password', PASSWORD, '--socks5', `${LOOPBACK}:0`, '--dialWithIP4', CLIENT_SOURCE]);
    await exchange(client.port('socks5'));
    const from = await fromOfFailedDial(client.port('socks5'), () => server.lines);
    expect(from).toMatch(new RegExp(`^${CLIENT_SOURCE.replace(/\./g, '\\.')}:\\d+$`));
  });

  it('wssclient withoutBrookProtocol -> nginx TLS (Upgrade passed, X-Forwarded-For) -> wsserver withoutBrookProtocol --trustedProxies 127.0.0.1', async () => {
    const wsPort = await freePort();
    const ngPort = await freePort();
    const server = await startCli(['wsserver', '--listen', `${LOOPBACK}:${wsPort}`, '--password', PASSWORD, '--withoutBrookProtocol', '--trustedProxies', LOOPBACK]);
    writeFileSync(join(tmp.dir, 'nginx.conf'), nginxConfig(tmp.dir, ngPort, wsPort, cert));
    const ng = await runFront('nginx', ['-p', tmp.dir, '-c', join(tmp.dir, 'nginx.conf'), '-e', join(tmp.dir, 'error.log')], ngPort);
    open.push(ng);
    const client = await startCli([
      'wssclient', '--wssserver', `wss://app.test:${ngPort}/ws`, '--address', `${LOOPBACK}:${ngPort}`, '--ca', cert.cert,
      '--password', PASSWORD, '--withoutBrookProtocol', '--socks5', `${LOOPBACK}:0`, '--dialWithIP4', CLIENT_SOURCE,
    ]);
    await exchange(client.port('socks5'));
    // nginx appended its client (our client's source address) to X-Forwarded-For; nginx itself is trusted
    expect(await fromOfFailedDial(client.port('socks5'), () => server.lines)).toBe(CLIENT_SOURCE);
  });
});
