/**
 * Issue 10, the front door (items 1, 3, 5): refused requests free their
 * descriptor whatever the client does after the answer; a request head (and
 * the TLS handshake) must complete within --headTimeout; at most maxPending
 * connections that are not tunnels yet, the oldest closed for each new one,
 * while tunnels keep working; running out of descriptors is logged (rate-
 * limited) and the server recovers by itself.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WsClient } from '../src/client/wsclient.js';
import { ErrorCodes } from '../src/errors.js';
import type { LogEntry } from '../src/log.js';
import { defaultMaxPending, parseNofileLimit } from '../src/server/descriptors.js';
import { WsServer, type WsServerOptions } from '../src/server/wsserver.js';
import { createTlsOptions } from '../src/tls/tlsserver.js';
import { assertBuilt, CLI, selfSigned, tempDir } from './helpers/cli.js';
import {
  collectLog,
  exchangeThroughSocks,
  type ExchangeServer,
  LOOPBACK,
  PASSWORD,
  readHttpHead,
  sendRandom,
  sleep,
  socksConnect,
  startExchangeServer,
  startPair,
  upgradeRequest,
  waitFor,
  withTimeout,
} from './helpers/net.js';

const DOMAIN = 'frontdoor.test';
const REQUESTS = 200;

const fdCount = (): number => readdirSync('/proc/self/fd').length;

interface Target {
  port: number;
  tls: boolean;
}

interface Client {
  /** What the test reads and writes (the TLS socket over TLS). */
  s: net.Socket;
  /** The TCP socket: reset it to send an RST. */
  tcp: net.Socket;
}

/**
 * TLS over a plain Duplex that forwards to `tcp`: the TCP socket keeps its
 * handle, so resetAndDestroy() can send an RST under the TLS session.
 */
function tlsOver(tcp: net.Socket): Duplex {
  const d = new Duplex({
    allowHalfOpen: true,
    read: () => undefined,
    write: (c: Buffer, _e, cb) => (tcp.destroyed ? cb() : tcp.write(c, () => cb())),
    final: (cb) => {
      tcp.end();
      cb();
    },
    destroy: (e, cb) => {
      tcp.destroy();
      cb(e);
    },
  });
  tcp.on('data', (b: Buffer) => d.push(b));
  tcp.on('end', () => d.push(null));
  tcp.on('close', () => d.destroy());
  return d;
}

/**
 * A client (TLS or not) that resolves once connected (over TLS, once the
 * handshake is done). Half-open allowed: it never closes on its own when the
 * server sends FIN.
 */
function connect(t: Target): Promise<Client> {
  return withTimeout(
    new Promise<Client>((resolve, reject) => {
      const tcp = net.connect({ host: LOOPBACK, port: t.port, allowHalfOpen: true });
      tcp.on('error', () => undefined);
      tcp.once('connect', () => {
        if (!t.tls) {
          resolve({ s: tcp, tcp });
          return;
        }
        const s = tls.connect({ socket: tlsOver(tcp), servername: DOMAIN, rejectUnauthorized: false, allowHalfOpen: true } as tls.ConnectionOptions, () => resolve({ s, tcp }));
        s.on('error', () => undefined);
      });
      tcp.once('close', () => reject(new Error('closed before connected')));
    }),
    10_000,
    'connect',
  );
}

async function open(t: Target): Promise<net.Socket> {
  return (await connect(t)).s;
}

const closedP = (s: net.Socket): Promise<void> => new Promise((r) => (s.destroyed ? r() : s.once('close', () => r())));

/** The server closed its side: its FIN ('end') or a reset ('close'). */
const serverClosedP = (s: net.Socket): Promise<void> =>
  new Promise((r) => {
    if (s.destroyed || s.readableEnded) r();
    s.once('end', () => r());
    s.once('close', () => r());
    s.resume();
  });

/** Refused requests of every kind the front door answers. */
const REFUSED: Record<string, (port: number) => string> = {
  'upgrade on another path (404)': (p) => upgradeRequest(p, '/other'),
  'OPTIONS upgrade on the path (405)': (p) => upgradeRequest(p).replace(/^GET/, 'OPTIONS'),
  'bad Sec-WebSocket-Version (400)': (p) => upgradeRequest(p).replace('Version: 13', 'Version: 12'),
  'bad Sec-WebSocket-Key (400)': (p) => upgradeRequest(p, '/ws', 'c2hvcnQ='),
  'keep-alive GET on another path (Express 404)': (p) => `GET /index.html HTTP/1.1\r\nHost: ${LOOPBACK}:${p}\r\n\r\n`,
  'keep-alive GET on the path without upgrade (Express 400)': (p) => `GET /ws HTTP/1.1\r\nHost: ${LOOPBACK}:${p}\r\n\r\n`,
  'unparsable request (clientError 400)': () => 'HELLO /ws HTTP/1.1\r\n\r\n',
};

/**
 * `REQUESTS` refused requests: each reads the answer, sends a few more bytes
 * a little later, then FIN (and closes when the server does) or RST. Resolves
 * once every client socket is closed.
 */
async function refusedBatch(t: Target, request: string, how: 'fin' | 'rst'): Promise<void> {
  const one = async () => {
    const { s, tcp } = await connect(t);
    s.write(request);
    const { head } = await readHttpHead(s, 10_000);
    expect(head).toMatch(/^HTTP\/1\.1 (400|404|405) /);
    await sleep(30);
    s.write('more bytes after the answer\r\n');
    await sleep(30);
    if (how === 'rst') {
      tcp.resetAndDestroy();
      s.destroy();
    } else {
      s.end();
      s.resume();
      await withTimeout(closedP(tcp), 10_000, 'server closes after our FIN');
    }
    await closedP(tcp);
  };
  const all: Promise<void>[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    all.push(one());
    if (i % 25 === 24) await sleep(5); // do not overrun the accept backlog
  }
  await Promise.all(all);
}

async function tlsOptions(): Promise<WsServerOptions['tls']> {
  const dir = tempDir('brook-frontdoor-');
  const files = await selfSigned(dir.dir, DOMAIN, 'srv');
  const { readFileSync } = await import('node:fs');
  const o = createTlsOptions({ domain: DOMAIN, cert: readFileSync(files.cert, 'latin1'), key: readFileSync(files.key, 'latin1') });
  dir.remove();
  return o;
}

let tlsOpts: WsServerOptions['tls'];
beforeAll(async () => {
  tlsOpts = await tlsOptions();
});

for (const transport of ['ws', 'wss'] as const) {
  describe(`${transport}: every refused request frees its descriptor`, () => {
    let server: WsServer;
    let target: Target;
    const log: LogEntry[] = [];
    beforeAll(async () => {
      // a long head timeout: what frees the sockets here is the client's FIN or RST, not the deadline
      server = new WsServer({ listen: `${LOOPBACK}:0`, password: PASSWORD, headTimeoutMs: 60_000, log: collectLog(log), ...(transport === 'wss' ? { tls: tlsOpts } : {}) });
      target = { port: (await server.listen()).port, tls: transport === 'wss' };
    });
    afterAll(async () => server.close());

    it('the answer to a refused upgrade arrives, then a clean close, whether more bytes come with the request, at once or after the answer', async () => {
      const cases = [
        ['upgrade on another path (404)', 'HTTP/1.1 404'],
        ['bad Sec-WebSocket-Version (400)', 'HTTP/1.1 400'],
        ['unparsable request (clientError 400)', 'HTTP/1.1 400'],
      ] as const;
      for (const [kind, status] of cases) for (const when of ['same write', 'next write', 'after the answer'] as const) {
        const req = REFUSED[kind]!(target.port);
        const results = await Promise.all(
          Array.from({ length: 20 }, async () => {
            const { s } = await connect(target);
            let reset = '';
            s.on('error', (e: NodeJS.ErrnoException) => (reset = e.code ?? 'error'));
            s.write(when === 'same write' ? req + 'more bytes\r\n' : req);
            if (when === 'next write') s.write('more bytes\r\n');
            const { head } = await readHttpHead(s, 10_000);
            if (when === 'after the answer') s.write('more bytes\r\n');
            await withTimeout(serverClosedP(s), 10_000, 'the server closing');
            s.end();
            s.destroy();
            return `${head.slice(0, 12)} ${reset || 'no reset'}`;
          }),
        );
        expect(results, `${kind}, ${when}`).toEqual(Array(20).fill(`${status} no reset`));
      }
    });

    for (const [kind, request] of Object.entries(REFUSED)) {
      it(`${REQUESTS} × ${kind}, trailing bytes, then FIN and then RST: descriptors back to the baseline`, async () => {
        const base = fdCount();
        for (const how of ['fin', 'rst'] as const) {
          await refusedBatch(target, request(target.port), how);
          await waitFor(() => fdCount() <= base && server.pendingConnections === 0, 5000, `descriptors back to ${base} after ${how} (now ${fdCount()}, pending ${server.pendingConnections})`);
        }
      });
    }
  });
}

describe('head timeout (slowloris)', () => {
  const HEAD_TIMEOUT_MS = 1000;
  let ws: WsServer;
  let wss: WsServer;
  beforeAll(async () => {
    ws = new WsServer({ listen: `${LOOPBACK}:0`, password: PASSWORD, headTimeoutMs: HEAD_TIMEOUT_MS, log: () => undefined });
    wss = new WsServer({ listen: `${LOOPBACK}:0`, password: PASSWORD, headTimeoutMs: HEAD_TIMEOUT_MS, tls: tlsOpts, log: () => undefined });
    await ws.listen();
    await wss.listen();
  });
  afterAll(async () => {
    await ws.close();
    await wss.close();
  });

  /** One byte of a valid upgrade request every 200 ms; resolves with {ms from connect to close, bytes received}. */
  async function slowloris(t: Target): Promise<{ ms: number; received: number }> {
    const t0 = Date.now();
    const s = await open(t);
    let received = 0;
    s.on('data', (d: Buffer) => (received += d.length));
    const req = upgradeRequest(t.port);
    let i = 0;
    const timer = setInterval(() => {
      if (i < req.length - 1 && !s.destroyed) s.write(req[i++]!);
    }, 200);
    await withTimeout(serverClosedP(s), HEAD_TIMEOUT_MS + 5000, 'slowloris closed');
    clearInterval(timer);
    return { ms: Date.now() - t0, received };
  }

  it('ws: a head sent one byte every 200 ms is closed at the head timeout, without an answer', async () => {
    const r = await slowloris({ port: (ws.server.address() as net.AddressInfo).port, tls: false });
    expect(r.received).toBe(0);
    expect(r.ms).toBeGreaterThanOrEqual(HEAD_TIMEOUT_MS - 100);
    expect(r.ms).toBeLessThan(HEAD_TIMEOUT_MS + 900);
  });

  it('wss: the TLS handshake counts inside the same bound', async () => {
    const r = await slowloris({ port: (wss.server.address() as net.AddressInfo).port, tls: true });
    expect(r.received).toBe(0);
    expect(r.ms).toBeGreaterThanOrEqual(HEAD_TIMEOUT_MS - 100);
    expect(r.ms).toBeLessThan(HEAD_TIMEOUT_MS + 900);
  });

  it('wss: a TCP connection that never starts the handshake is closed at the head timeout', async () => {
    const s = await open({ port: (wss.server.address() as net.AddressInfo).port, tls: false });
    let received = 0;
    s.on('data', (d: Buffer) => (received += d.length));
    const t0 = Date.now();
    await withTimeout(serverClosedP(s), HEAD_TIMEOUT_MS + 5000, 'silent TCP connection closed');
    const ms = Date.now() - t0;
    expect(received).toBe(0);
    expect(ms).toBeGreaterThanOrEqual(HEAD_TIMEOUT_MS - 150);
    expect(ms).toBeLessThan(HEAD_TIMEOUT_MS + 900);
  });

  it('a keep-alive connection gets the same bound after each answer', async () => {
    const port = (ws.server.address() as net.AddressInfo).port;
    const s = await open({ port, tls: false });
    s.write(`GET / HTTP/1.1\r\nHost: ${LOOPBACK}:${port}\r\n\r\n`);
    const { head } = await readHttpHead(s);
    expect(head).toMatch(/^HTTP\/1\.1 404 /);
    const t0 = Date.now();
    s.resume();
    await withTimeout(serverClosedP(s), HEAD_TIMEOUT_MS + 5000, 'idle keep-alive closed');
    expect(Date.now() - t0).toBeLessThan(HEAD_TIMEOUT_MS + 900);
  });

  it('a refused request whose client never closes is freed at the deadline', async () => {
    const port = (ws.server.address() as net.AddressInfo).port;
    const s = await open({ port, tls: false });
    s.write(upgradeRequest(port, '/other'));
    const t0 = Date.now();
    await readHttpHead(s);
    s.resume();
    const keepSending = setInterval(() => !s.destroyed && s.write('x'), 100);
    await withTimeout(closedP(s), HEAD_TIMEOUT_MS + 5000, 'lingering refused socket closed');
    clearInterval(keepSending);
    expect(Date.now() - t0).toBeLessThan(HEAD_TIMEOUT_MS + 900);
    await waitFor(() => ws.pendingConnections === 0, 2000, 'nothing pending');
  });
});

describe('maxPending: slowloris cannot starve real tunnels', () => {
  const CAP = 20;
  const ATTACKERS = 100;
  it(`with a cap of ${CAP} and ${ATTACKERS} slowloris connections, a running tunnel keeps transferring and a new one works`, async () => {
    const log: LogEntry[] = [];
    const pair = await startPair({ server: { maxPending: CAP, headTimeoutMs: 30_000, log: collectLog(log) } });
    const dst: ExchangeServer = await startExchangeServer({ downBytes: 256 * 1024 });
    const attackers: net.Socket[] = [];
    let dripper: NodeJS.Timeout | undefined;
    try {
      // a tunnel running before the attack, sending all through it
      const running = await socksConnect(pair.socksPort, { type: 'ipv4', host: LOOPBACK, port: dst.port });
      running.resume();
      let runningSent = 0;
      let stop = false;
      const pump = (async () => {
        while (!stop) {
          await sendRandom(running, 16 * 1024);
          runningSent += 16 * 1024;
          await sleep(20);
        }
        running.end();
      })();

      const req = upgradeRequest(pair.serverPort);
      let closedAttackers = 0;
      for (let i = 0; i < ATTACKERS; i++) {
        const s = await open({ port: pair.serverPort, tls: false });
        s.once('close', () => closedAttackers++);
        attackers.push(s);
        if (i % 10 === 9) await sleep(20);
      }
      let k = 0;
      dripper = setInterval(() => {
        for (const s of attackers) if (!s.destroyed && k < req.length - 1) s.write(req[k]!);
        k++;
      }, 200);
      expect(pair.server.pendingConnections).toBeLessThanOrEqual(CAP);

      // a new tunnel during the attack
      const r = await withTimeout(exchangeThroughSocks(pair.socksPort, { type: 'ipv4', host: LOOPBACK, port: dst.port }, 256 * 1024), 20_000, 'tunnel during the attack');
      expect(r.received.bytes).toBe(256 * 1024);
      expect(r.received.gotEnd).toBe(true);

      const before = runningSent;
      await sleep(500);
      expect(runningSent, 'the running tunnel kept transferring').toBeGreaterThan(before);
      stop = true;
      await pump;
      await dst.waitRecords(2, 10_000);
      expect(dst.records.some((x) => x.receivedBytes === runningSent)).toBe(true);
      expect(closedAttackers).toBeGreaterThanOrEqual(ATTACKERS - CAP);
      expect(pair.server.pendingConnections).toBeLessThanOrEqual(CAP);
      expect(log.some((e) => e['reason'] === 'cap')).toBe(true);
      // rate-limited: far fewer lines than evictions
      expect(log.filter((e) => e['reason'] === 'cap').length).toBeLessThan(10);
      running.destroy();
    } finally {
      clearInterval(dripper);
      for (const s of attackers) s.destroy();
      await dst.close();
      await pair.close();
    }
  });
});

describe('descriptor budget', () => {
  it('maxPending defaults to a quarter of the soft RLIMIT_NOFILE beyond a reserve, at least 16', () => {
    expect(parseNofileLimit('Limit  Soft Limit  Hard Limit  Units\nMax open files            1024                 4096                 files\n')).toBe(1024);
    expect(parseNofileLimit('Max open files            unlimited            unlimited            files\n')).toBeNull();
    expect(defaultMaxPending(1024)).toBe(240);
    expect(defaultMaxPending(100)).toBe(16);
    expect(defaultMaxPending(null)).toBe(1024);
  });
});

describe('out of descriptors at accept (child process under ulimit -n 100)', () => {
  let child: ChildProcess | null = null;
  afterAll(() => {
    if (child && child.exitCode === null) child.kill('SIGKILL');
  });

  it('logs EMFILE rate-limited, sheds, and a real tunnel works after the flood', async () => {
    assertBuilt();
    const lines: Record<string, unknown>[] = [];
    // maxPending far above what the limit allows, so that accept runs out of descriptors
    child = spawn('bash', ['-c', 'ulimit -n 100; exec "$0" "$@"', process.execPath, CLI, 'wsserver', '--listen', `${LOOPBACK}:0`, '--password', PASSWORD, '--maxPending', '1000', '--headTimeout', '30'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        try {
          lines.push(JSON.parse(buf.slice(0, i)) as Record<string, unknown>);
        } catch {
          // not JSON
        }
        buf = buf.slice(i + 1);
      }
    });
    await waitFor(() => lines.some((l) => l['msg'] === 'listening'), 10_000, 'listening line');
    const port = Number(/:(\d+)$/.exec(String(lines.find((l) => l['msg'] === 'listening')!['listen']))![1]);

    const flood: net.Socket[] = [];
    try {
      for (let i = 0; i < 400; i++) {
        const s = net.connect({ host: LOOPBACK, port });
        s.on('error', () => undefined);
        flood.push(s);
        if (i % 50 === 49) await sleep(50);
      }
      await waitFor(() => lines.some((l) => l['msg'] === 'out of descriptors'), 10_000, 'an "out of descriptors" line');
      await sleep(1500);
    } finally {
      for (const s of flood) s.destroy();
    }
    const exhausted = lines.filter((l) => l['msg'] === 'out of descriptors');
    expect(exhausted[0]).toMatchObject({ errno: 'EMFILE', code: ErrorCodes.OUT_OF_RESOURCES });
    expect(String(exhausted[0]!['error'])).toContain('EMFILE');
    // rate-limited: at most one line a second (plus "suppressed" counts)
    expect(exhausted.length).toBeLessThanOrEqual(5);
    await waitFor(() => lines.some((l) => l['msg'] === 'descriptors available again'), 10_000, 'recovery line');

    const dst = await startExchangeServer({ downBytes: 64 * 1024 });
    const client = new WsClient({
      endpoint: { secure: false, hostPort: `${LOOPBACK}:${port}`, hostname: LOOPBACK, port, path: '/ws' },
      password: PASSWORD,
      socks5: `${LOOPBACK}:0`,
      log: () => undefined,
    });
    await client.listen();
    try {
      const r = await withTimeout(exchangeThroughSocks(client.socks.address().port, { type: 'ipv4', host: LOOPBACK, port: dst.port }, 64 * 1024), 15_000, 'tunnel after the flood');
      expect(r.received.bytes).toBe(64 * 1024);
    } finally {
      await client.close();
      await dst.close();
    }
    expect(child.exitCode).toBeNull();
    child.kill('SIGTERM');
    await withTimeout(new Promise((r) => child!.once('exit', r)), 10_000, 'server exit');
  });
});
