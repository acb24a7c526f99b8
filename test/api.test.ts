/**
 * The library API (src/index.ts; README "Use it from Node.js"), over loopback:
 *
 * - attachBrook on an Express app's server: the app's pages stay its own (on the
 *   tunnel path too), tunnels carry 1 MiB both ways; upgrades that are not tunnels
 *   go to the app's request handler when nobody else listens, and are left alone
 *   for the app's own 'upgrade' handler when it has one; two endpoints on one
 *   server; https; close() cuts tunnels and gives the path back to the app;
 * - the tunnels' hardening on an attached endpoint: a wrong password and a
 *   replayed stream get silence and the close rule (reset at the probe deadline);
 * - dial(): backpressure (1 MiB each way), half-close, a destination reset and a
 *   refused destination as stream errors, resetAndDestroy(), links;
 * - bad input: an Express app instead of its server, bad options, bad servers,
 *   destinations, a server that never answers.
 * The installed package (exports, types, the README's examples): test/api-package.test.ts.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  attachBrook,
  BrookError,
  buildLink,
  createBrookEndpoint,
  dial,
  ErrorCodes,
  type LogEntry,
  resolveServer,
  WsClient,
} from '../src/index.js';
import { makeAddress } from '../src/protocol/address.js';
import { createClientCodec } from '../src/protocol/session.js';
import { selfSigned, tempDir } from './helpers/cli.js';
import {
  type Closable,
  closeAll,
  closedWithin,
  collectLog,
  connectRaw,
  LOOPBACK,
  PASSWORD,
  rawHttp,
  readAllHashed,
  readHttpHead,
  sendRandom,
  startExchangeServer,
  upgradeRequest,
  waitFor,
  withTimeout,
} from './helpers/net.js';
import { expectSilentRefusal, PROBE_TIMEOUT_MS, recordTunnel, replay, startEcho } from './helpers/replay.js';

const MIB = 1024 * 1024;
const APP_PAGE = 'hello from the app\n';
const APP_WS_PAGE = 'the app at /ws\n';

/** An Express app with two pages of its own, one of them on the tunnel path. */
function expressApp(): express.Express {
  const app = express();
  app.get('/', (_req, res) => res.type('text/plain').send(APP_PAGE));
  app.get('/ws', (_req, res) => res.type('text/plain').send(APP_WS_PAGE));
  return app;
}

/** Every connection a server accepted, to destroy at the end (upgraded sockets are not the server's any more). */
const accepted = new WeakMap<Server, Set<net.Socket>>();

async function listen(server: Server): Promise<number> {
  const socks = new Set<net.Socket>();
  accepted.set(server, socks);
  server.on('connection', (c: net.Socket) => {
    socks.add(c);
    c.once('close', () => socks.delete(c));
  });
  await new Promise<void>((r) => server.listen(0, LOOPBACK, () => r()));
  return (server.address() as AddressInfo).port;
}

function closeServer(server: Server): Closable {
  return {
    close: () =>
      new Promise<void>((r) => {
        for (const c of accepted.get(server) ?? []) c.destroy();
        server.close(() => r());
      }),
  };
}

/** Resolves with the stream's error (or null when it ended cleanly), bounded. */
function outcome(s: Duplex, ms = 5000): Promise<(Error & { code?: string }) | null> {
  return withTimeout(
    new Promise((resolve) => {
      s.on('error', (e) => resolve(e));
      s.on('end', () => resolve(null));
      s.on('close', () => resolve(null));
      s.resume();
    }),
    ms,
    'stream outcome',
  );
}

/**
 * A raw upgrade request on `path` (with the WebSocket headers) and what comes back: until the
 * server closes (our FIN follows its FIN, as a client's does) or 300 ms pass without more bytes.
 */
async function rawUpgrade(port: number, path: string): Promise<{ text: string }> {
  const s = await connectRaw(port);
  const parts: Buffer[] = [];
  s.on('end', () => s.end());
  let quiet: NodeJS.Timeout | null = null;
  const done = new Promise<void>((r) => {
    s.on('data', (d: Buffer) => {
      parts.push(d);
      if (quiet) quiet.refresh();
      else quiet = setTimeout(r, 300);
    });
    s.once('close', () => r());
  });
  s.write(upgradeRequest(port, path));
  await withTimeout(done, 5000, `answer to an upgrade on ${path}`);
  if (quiet) clearTimeout(quiet);
  s.destroy();
  return { text: Buffer.concat(parts).toString('latin1') };
}

describe('attachBrook on an Express app', () => {
  const started: Closable[] = [];
  const log: LogEntry[] = [];
  let server: Server;
  let port: number;
  let brook: ReturnType<typeof attachBrook>;
  let exchange: Awaited<ReturnType<typeof startExchangeServer>>;

  beforeAll(async () => {
    exchange = await startExchangeServer({ downBytes: MIB });
    started.push(exchange);
    server = createHttpServer(expressApp());
    brook = attachBrook(server, { path: '/ws', password: PASSWORD, log: collectLog(log) });
    port = await listen(server);
    started.push(closeServer(server));
  });
  afterAll(async () => {
    await brook.close();
    await closeAll(started);
  });

  it("the app's pages stay its own, on the tunnel path too; a tunnel carries 1 MiB each way", async () => {
    const page = await rawHttp(port, `GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    expect([page.status, page.body.toString()]).toEqual([200, APP_PAGE]);
    const onPath = await rawHttp(port, `GET /ws HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
    expect([onPath.status, onPath.body.toString()]).toEqual([200, APP_WS_PAGE]);

    const s = await dial({ server: `ws://${LOOPBACK}:${port}/ws`, password: PASSWORD, destination: `${LOOPBACK}:${exchange.port}` });
    const [down, up] = await Promise.all([readAllHashed(s as unknown as net.Socket), sendRandom(s as unknown as net.Socket, MIB, { end: true })]);
    const [rec] = await exchange.waitRecords(1, 10_000);
    expect(rec!.receivedHash).toBe(up.hash);
    expect(down.hash).toBe(rec!.sentHash);
    expect(down.bytes).toBe(MIB);
    expect(down.gotEnd).toBe(true);
  }, 20_000);

  it("an upgrade that is not a tunnel (another path, a bad upgrade on ours) goes to the app's request handler, then the connection closes", async () => {
    const other = await rawUpgrade(port, '/');
    expect(other.text).toMatch(/^HTTP\/1\.1 200 /);
    expect(other.text).toContain(APP_PAGE);
    // our path without a valid key: the app's page, not a 101 or our 400
    const noKey = await (async () => {
      const s = await connectRaw(port);
      const parts: Buffer[] = [];
      s.on('data', (d: Buffer) => parts.push(d));
      s.on('end', () => s.end());
      s.write(`GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n`);
      // answered, then closed by us (after our FIN), well before the linger bound
      expect(await closedWithin(s, 3000)).toBeLessThan(3000);
      return Buffer.concat(parts).toString('latin1');
    })();
    expect(noKey).toMatch(/^HTTP\/1\.1 200 /);
    expect(noKey).toContain(APP_WS_PAGE);
    expect(server.listenerCount('upgrade')).toBe(1);
  });

  it('a wrong password and a replayed stream: silence, then a reset at the probe deadline (the tunnel rules hold here)', async () => {
    const echo = await startEcho();
    const s2 = createHttpServer(expressApp());
    const b2 = attachBrook(s2, { password: PASSWORD, probeTimeoutMs: PROBE_TIMEOUT_MS, log: () => undefined });
    const p2 = await listen(s2);
    try {
      const rec = await recordTunnel(p2, echo.port);
      await waitFor(() => echo.connections() === 1, 5000, 'the recorded tunnel at the destination');
      const c = createClientCodec({ password: 'not-the-password', network: 'tcp', destination: makeAddress(LOOPBACK, echo.port) });
      const wrong = { head: Buffer.from(upgradeRequest(p2)), stream: Buffer.concat([c.hello(), c.seal(Buffer.from('x'))]) };
      const results = await Promise.all([replay(p2, rec, false), replay(p2, rec, true), replay(p2, wrong, false)]);
      expectSilentRefusal(results.map((r, i) => ({ fin: i === 1, r })));
      expect(echo.connections()).toBe(1);
    } finally {
      await b2.close();
      await closeServer(s2).close();
      await echo.close();
    }
  }, 20_000);
});

describe("attachBrook beside the app's own upgrade handler, several endpoints, https, close()", () => {
  const started: Closable[] = [];
  let echo: Awaited<ReturnType<typeof startEcho>>;
  const tmp = tempDir('brook-api-');

  beforeAll(async () => {
    echo = await startEcho();
    started.push(echo);
  });
  afterAll(async () => {
    await closeAll(started);
    tmp.remove();
  });

  async function echoThrough(server: string, password: string, o: { insecure?: boolean } = {}): Promise<string> {
    const s = await dial({ server, password, destination: `${LOOPBACK}:${echo.port}`, ...o });
    const got = new Promise<string>((resolve) => {
      let text = '';
      s.on('data', (d: Buffer) => (text += d.toString()));
      s.on('end', () => resolve(text));
    });
    s.end('ping');
    return withTimeout(got, 5000, 'echo through the tunnel');
  }

  it("the app's own WebSocket path keeps working, and upgrades nobody takes are left to the app's handler", async () => {
    const server = createHttpServer(expressApp());
    const seen: string[] = [];
    // the app's handler: answers /chat, closes what it does not know, ignores the tunnel path
    server.on('upgrade', (req: IncomingMessage, socket: net.Socket) => {
      seen.push(req.url ?? '');
      if (req.url === '/chat') {
        socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: chat\r\nConnection: Upgrade\r\n\r\n');
        socket.on('data', (d) => socket.write(d));
      } else if (req.url !== '/ws') socket.destroy();
    });
    const brook = attachBrook(server, { password: PASSWORD, log: () => undefined });
    const port = await listen(server);
    started.push(closeServer(server));

    expect(await echoThrough(`ws://${LOOPBACK}:${port}/ws`, PASSWORD)).toBe('ping');
    const chat = await connectRaw(port);
    chat.write(upgradeRequest(port, '/chat'));
    const { head } = await readHttpHead(chat);
    expect(head).toMatch(/^HTTP\/1\.1 101 .*\r\nUpgrade: chat/s);
    chat.resume();
    chat.write('hi');
    const back = await withTimeout(new Promise<string>((r) => chat.once('data', (d: Buffer) => r(d.toString()))), 5000, 'chat echo');
    expect(back).toBe('hi');
    chat.destroy();
    // not ours, not the app's: its handler closes it; we wrote nothing
    const nobody = await rawUpgrade(port, '/nobody');
    expect(nobody.text).toBe('');
    expect(seen).toEqual(['/ws', '/chat', '/nobody']);
    await brook.close();
    expect(server.listenerCount('upgrade')).toBe(1);
  });

  it('two endpoints on one server, each with its path and password; close() cuts tunnels and gives the path back to the app', async () => {
    const server = createHttpServer(expressApp());
    const a = attachBrook(server, { path: '/a', password: 'pa', log: () => undefined });
    const b = attachBrook(server, { path: '/b', password: 'pb', log: () => undefined });
    const port = await listen(server);
    started.push(closeServer(server));
    expect(server.listenerCount('upgrade')).toBe(1);
    expect(await echoThrough(`ws://${LOOPBACK}:${port}/a`, 'pa')).toBe('ping');
    expect(await echoThrough(`ws://${LOOPBACK}:${port}/b`, 'pb')).toBe('ping');
    expect((await rawUpgrade(port, '/')).text).toContain(APP_PAGE);

    const open = await dial({ server: `ws://${LOOPBACK}:${port}/a`, password: 'pa', destination: `${LOOPBACK}:${echo.port}` });
    open.write('x');
    await waitFor(() => a.openTunnels === 1, 5000, 'the open tunnel');
    const ended = outcome(open);
    await a.close();
    await ended;
    expect(a.openTunnels).toBe(0);
    // /a is the app's again (no route there: Express's 404); /b still ours
    expect((await rawUpgrade(port, '/a')).text).toMatch(/^HTTP\/1\.1 404 /);
    expect(await echoThrough(`ws://${LOOPBACK}:${port}/b`, 'pb')).toBe('ping');
    await b.close();
    expect(server.listenerCount('upgrade')).toBe(0);
    // no listener left: Node itself gives the upgrade to the app
    expect((await rawUpgrade(port, '/ws')).text).toContain(APP_WS_PAGE);
  });

  it('an https server: wss:// tunnels beside the pages', async () => {
    const pem = await selfSigned(tmp.dir, 'localhost', 'api');
    const server = createHttpsServer({ cert: readFileSync(pem.cert), key: readFileSync(pem.key) }, expressApp());
    const brook = attachBrook(server, { password: PASSWORD, log: () => undefined });
    const port = await listen(server as unknown as Server);
    started.push(closeServer(server as unknown as Server));
    expect(await echoThrough(`wss://localhost:${port}/ws`, PASSWORD, { insecure: true })).toBe('ping');
    const link = buildLink('wssserver', `wss://localhost:${port}/ws`, PASSWORD, { insecure: true, address: `${LOOPBACK}:${port}` });
    expect(await echoThrough(link, '')).toBe('ping'); // the link's password
    await brook.close();
  });

  it('createBrookEndpoint: for an app that routes its own upgrades (true: taken; false: untouched)', async () => {
    const endpoint = createBrookEndpoint({ password: PASSWORD, log: () => undefined });
    const verdicts: boolean[] = [];
    const server = createHttpServer(expressApp());
    server.on('upgrade', (req, socket: net.Socket, head: Buffer) => {
      const taken = endpoint.handleUpgrade(req, socket, head);
      verdicts.push(taken);
      if (!taken) socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    });
    const port = await listen(server);
    started.push(closeServer(server));
    expect(await echoThrough(`ws://${LOOPBACK}:${port}/ws`, PASSWORD)).toBe('ping');
    expect((await rawUpgrade(port, '/x')).text).toMatch(/^HTTP\/1\.1 404 /);
    expect(verdicts).toEqual([true, false]);
    await endpoint.close();
  });
});

describe('dial(): a Duplex through the server', () => {
  const started: Closable[] = [];
  let url: string;

  beforeAll(async () => {
    const server = createHttpServer(expressApp());
    started.push({ close: () => brook.close() });
    const brook = attachBrook(server, { password: PASSWORD, log: () => undefined });
    url = `ws://${LOOPBACK}:${await listen(server)}/ws`;
    started.push(closeServer(server));
  });
  afterAll(async () => {
    await closeAll(started.reverse());
  });

  it('half-close: our FIN reaches the destination, which answers after it', async () => {
    const ex = await startExchangeServer({ downBytes: 100_000, order: 'after-end' });
    try {
      const s = await dial({ server: url, password: PASSWORD, destination: { host: LOOPBACK, port: ex.port } });
      const down = readAllHashed(s as unknown as net.Socket);
      const up = await sendRandom(s as unknown as net.Socket, 50_000, { end: true });
      const [rec] = await ex.waitRecords(1, 10_000);
      expect(rec!.gotEnd).toBe(true);
      expect(rec!.receivedHash).toBe(up.hash);
      expect((await down).hash).toBe(rec!.sentHash);
    } finally {
      await ex.close();
    }
  });

  it('backpressure: write() reports a full tunnel while the destination does not read', async () => {
    const held = new Set<net.Socket>();
    const dst = net.createServer((c) => {
      held.add(c);
      c.pause(); // never reads
      c.on('error', () => undefined);
    });
    await new Promise<void>((r) => dst.listen(0, LOOPBACK, () => r()));
    try {
      const s = await dial({ server: url, password: PASSWORD, destination: `${LOOPBACK}:${(dst.address() as AddressInfo).port}` });
      s.on('error', () => undefined);
      let written = 0;
      const chunk = randomBytes(64 * 1024);
      while (s.write(chunk)) {
        written += chunk.length;
        if (written > 256 * MIB) break;
      }
      // bounded by the kernel's and the relay's buffers, far below what we would have written
      expect(written).toBeLessThan(64 * MIB);
      s.destroy();
    } finally {
      for (const c of held) c.destroy();
      await new Promise<void>((r) => dst.close(() => r()));
    }
  }, 20_000);

  it('resets: a destination that resets, and a refused destination, are stream errors; resetAndDestroy() resets the destination', async () => {
    const resets = net.createServer((c) => c.once('data', () => c.resetAndDestroy()));
    let seenReset!: Promise<string>;
    const abortedPort = await new Promise<number>((listening) => {
      seenReset = new Promise<string>((r) => {
        const srv = net.createServer((c) => c.on('error', (e: NodeJS.ErrnoException) => r(e.code ?? '')).on('close', () => r('close')));
        started.push({ close: () => new Promise<void>((res) => srv.close(() => res())) });
        srv.listen(0, LOOPBACK, () => listening((srv.address() as AddressInfo).port));
      });
    });
    await new Promise<void>((r) => resets.listen(0, LOOPBACK, () => r()));
    started.push({ close: () => new Promise<void>((r) => resets.close(() => r())) });

    const a = await dial({ server: url, password: PASSWORD, destination: `${LOOPBACK}:${(resets.address() as AddressInfo).port}` });
    const aOut = outcome(a);
    a.write('x');
    expect((await aOut)?.message).toMatch(/ECONNRESET|reset/);

    const closed = await new Promise<number>((r) => {
      const t = net.createServer();
      t.listen(0, LOOPBACK, () => {
        const p = (t.address() as AddressInfo).port;
        t.close(() => r(p));
      });
    });
    const b = await dial({ server: url, password: PASSWORD, destination: `${LOOPBACK}:${closed}` });
    expect(await outcome(b)).toBeInstanceOf(Error);

    const c = await dial({ server: url, password: PASSWORD, destination: `${LOOPBACK}:${abortedPort}` });
    c.on('error', () => undefined);
    c.write('hello');
    await new Promise((r) => setTimeout(r, 200));
    c.resetAndDestroy();
    expect(await withTimeout(seenReset, 5000, 'the destination side')).toBe('ECONNRESET');
  });

  it('a brook:// link as the server, and resolveServer for a WsClient', async () => {
    const echo = await startEcho();
    started.push(echo);
    const link = buildLink('wsserver', url, PASSWORD);
    const s = await dial({ server: link, destination: `${LOOPBACK}:${echo.port}` });
    s.end('via link');
    const text = await withTimeout(new Promise<string>((r) => {
      let t = '';
      s.on('data', (d: Buffer) => (t += d.toString()));
      s.on('end', () => r(t));
    }), 5000, 'echo via link');
    expect(text).toBe('via link');

    const settings = resolveServer(link);
    expect(settings.password).toBe(PASSWORD);
    expect(settings.endpoint).toMatchObject({ secure: false, hostname: LOOPBACK, path: '/ws' });
    const client = new WsClient({ ...settings, socks5: `${LOOPBACK}:0`, log: () => undefined });
    await client.listen();
    expect(client.socks.address().port).toBeGreaterThan(0);
    await client.close();
  });
});

describe('bad input', () => {
  it('attachBrook: an Express app instead of its server, a missing password, a path without "/"', () => {
    const app = expressApp();
    const code = (f: () => unknown): string => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(BrookError);
        return `${(e as BrookError).code}: ${(e as Error).message}`;
      }
      return 'no error';
    };
    expect(code(() => attachBrook(app as never, { password: PASSWORD }))).toMatch(/^BROOK_ERR_CONFIG: .*app\.listen/);
    expect(code(() => attachBrook({} as never, { password: PASSWORD }))).toMatch(/^BROOK_ERR_CONFIG: /);
    const server = createHttpServer(app);
    expect(code(() => attachBrook(server, { password: '' }))).toMatch(/^BROOK_ERR_CONFIG: .*password/);
    expect(code(() => attachBrook(server, { password: PASSWORD, path: 'ws' }))).toMatch(/^BROOK_ERR_CONFIG: .*path/);
    expect(code(() => attachBrook(server, { password: PASSWORD, host: 'a b' }))).toMatch(/^BROOK_ERR_CONFIG: .*host/);
    expect(code(() => attachBrook(server, { password: PASSWORD, withoutBrookProtocol: true, keepalive: 5 }))).toMatch(/^BROOK_ERR_CONFIG: /);
    expect(server.listenerCount('upgrade')).toBe(0); // nothing attached by a failed call
  });

  it('dial: bad servers, a missing password, bad destinations (typed errors)', async () => {
    const err = async (o: unknown): Promise<string> => {
      try {
        await dial(o as never);
      } catch (e) {
        expect(e).toBeInstanceOf(BrookError);
        return (e as BrookError).code;
      }
      return 'no error';
    };
    const dst = `${LOOPBACK}:1`;
    expect(await err(undefined)).toBe(ErrorCodes.CONFIG);
    expect(await err({ password: PASSWORD, destination: dst })).toBe(ErrorCodes.CONFIG);
    expect(await err({ server: 'http://127.0.0.1:1/ws', password: PASSWORD, destination: dst })).toBe(ErrorCodes.LINK_KIND);
    expect(await err({ server: 'ws://127.0.0.1/ws', password: PASSWORD, destination: dst })).toBe(ErrorCodes.LINK_INVALID);
    expect(await err({ server: 'brook://server?server=1.2.3.4%3A1&password=x', destination: dst })).toBe(ErrorCodes.LINK_KIND);
    expect(await err({ server: 'ws://127.0.0.1:1/ws', destination: dst })).toBe(ErrorCodes.CONFIG);
    expect(await err({ server: 'ws://127.0.0.1:1/ws', password: PASSWORD, destination: 'no-port' })).toBe(ErrorCodes.ADDRESS_INVALID);
    expect(await err({ server: 'ws://127.0.0.1:1/ws', password: PASSWORD, destination: { host: 'a', port: 70000 } })).toBe(ErrorCodes.ADDRESS_INVALID);
    expect(await err({ server: 'ws://127.0.0.1:1/ws', password: PASSWORD })).toBe(ErrorCodes.ADDRESS_INVALID);
  });

  it('dial: a server that accepts and never answers times out; a closed port is refused', async () => {
    const silent = new Set<net.Socket>();
    const srv = net.createServer((c) => silent.add(c.on('error', () => undefined)));
    await new Promise<void>((r) => srv.listen(0, LOOPBACK, () => r()));
    const port = (srv.address() as AddressInfo).port;
    try {
      const t0 = Date.now();
      const e = await dial({ server: `ws://${LOOPBACK}:${port}/ws`, password: PASSWORD, destination: 'example.com:80', timeoutMs: 300 }).catch((x: unknown) => x);
      expect((e as BrookError).code).toBe(ErrorCodes.TIMEOUT);
      expect(Date.now() - t0).toBeLessThan(3000);
    } finally {
      for (const c of silent) c.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    }
    const e = await dial({ server: `ws://${LOOPBACK}:${port}/ws`, password: PASSWORD, destination: 'example.com:80' }).catch((x: unknown) => x);
    expect((e as BrookError).code).toBe(ErrorCodes.CONNECTION_REFUSED);
  });
});
