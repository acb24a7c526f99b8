/**
 * --dialWithSocks5 against independent SOCKS5 servers: the `socksv5` npm
 * package for CONNECT (with and without username/password), and a small
 * Python stdlib server (test/helpers/dial-socks5-udp.py) for UDP ASSOCIATE.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDialer } from '../src/dial/dialer.js';
import { dialConfigFromFlags, type DialFlags } from '../src/dial/options.js';
import type { UdpChannel } from '../src/dial/types.js';
import { ErrorCodes, isBrookError, socks5ReplyFor, Socks5Reply } from '../src/errors.js';
import { makeCert } from './helpers/dial-dns.js';
import { PASS, type Proxy, type PyProxy, startPyProxy, startSocksv5, USER } from './helpers/socks5-proxies.js';

async function startEcho(): Promise<{ port: number; close(): Promise<void> }> {
  const socks5 = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    socks5.add(s);
    s.on('close', () => socks5.delete(s));
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of socks5) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

function echoOnce(s: net.Socket | import('node:tls').TLSSocket, text: string): Promise<string> {
  s.resume();
  return new Promise<string>((resolve, reject) => {
    let got = '';
    const t = setTimeout(() => reject(new Error('no echo')), 5000);
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.length >= text.length) {
        clearTimeout(t);
        resolve(got);
      }
    });
    s.write(text);
  });
}

async function failure(p: Promise<unknown>): Promise<{ code: string; err: unknown }> {
  try {
    await p;
  } catch (e) {
    if (!isBrookError(e)) throw e;
    return { code: e.code, err: e };
  }
  throw new Error('expected a failure');
}

const flags = (port: number, extra: DialFlags = {}): DialFlags => ({ dialWithSocks5: `127.0.0.1:${port}`, ...extra });

describe('--dialWithSocks5: CONNECT through socksv5', () => {
  let open: Proxy;
  let authed: Proxy;
  let echo: { port: number; close(): Promise<void> };
  beforeAll(async () => {
    open = await startSocksv5(false);
    authed = await startSocksv5(true);
    echo = await startEcho();
  });
  afterAll(async () => {
    await open.close();
    await authed.close();
    await echo.close();
  });

  it('without username/password; a domain goes to the proxy unresolved', async () => {
    const d = createDialer(dialConfigFromFlags(flags(open.port)));
    const s = await d.connectTcp({ host: '127.0.0.1', port: echo.port }, { timeoutMs: 5000 });
    expect(await echoOnce(s, 'through')).toBe('through');
    s.destroy();
    const s2 = await d.connectTcp({ host: 'localhost', port: echo.port }, { timeoutMs: 5000 });
    expect(await echoOnce(s2, 'named')).toBe('named');
    s2.destroy();
    expect(open.seen.at(-1)!.dst).toBe(`localhost:${echo.port}`);
  });

  it('with username/password (RFC 1929)', async () => {
    const d = createDialer(dialConfigFromFlags(flags(authed.port, { dialWithSocks5Username: USER, dialWithSocks5Password: PASS })));
    const s = await d.connectTcp({ host: '127.0.0.1', port: echo.port }, { timeoutMs: 5000 });
    expect(await echoOnce(s, 'authed')).toBe('authed');
    s.destroy();
  });

  it('a wrong password, or none where one is needed: SOCKS_AUTH', async () => {
    const bad = createDialer(dialConfigFromFlags(flags(authed.port, { dialWithSocks5Username: USER, dialWithSocks5Password: 'nope' })));
    expect((await failure(bad.connectTcp({ host: '127.0.0.1', port: echo.port }, { timeoutMs: 5000 }))).code).toBe(ErrorCodes.SOCKS_AUTH);
    const none = createDialer(dialConfigFromFlags(flags(authed.port)));
    expect((await failure(none.connectTcp({ host: '127.0.0.1', port: echo.port }, { timeoutMs: 5000 }))).code).toBe(ErrorCodes.SOCKS_AUTH);
  });

  it("the proxy's refusal keeps its meaning: CONNECTION_REFUSED, SOCKS5 reply 5", async () => {
    const gone = await startEcho();
    const port = gone.port;
    await gone.close();
    const d = createDialer(dialConfigFromFlags(flags(open.port)));
    const f = await failure(d.connectTcp({ host: '127.0.0.1', port }, { timeoutMs: 5000 }));
    expect(f.code).toBe(ErrorCodes.CONNECTION_REFUSED);
    expect(socks5ReplyFor(f.err)).toBe(Socks5Reply.CONNECTION_REFUSED);
  });

  it('the connection to the proxy leaves from --dialWithIP4', async () => {
    const d = createDialer(dialConfigFromFlags(flags(open.port, { dialWithIP4: '127.0.0.2' })));
    const s = await d.connectTcp({ host: '127.0.0.1', port: echo.port }, { timeoutMs: 5000 });
    expect(open.seen.at(-1)!.src).toBe('127.0.0.2');
    s.destroy();
  });

  it('TLS runs over the returned socket (a wssclient behind a proxy)', async () => {
    const cert = await makeCert('wss.brook-ts.invalid');
    const tlsSrv = createTlsServer({ cert: cert.cert, key: cert.key }, (s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    await new Promise<void>((r) => tlsSrv.listen(0, '127.0.0.1', () => r()));
    try {
      const d = createDialer(dialConfigFromFlags(flags(open.port)));
      const raw = await d.connectTcp({ host: '127.0.0.1', port: (tlsSrv.address() as net.AddressInfo).port }, { timeoutMs: 5000 });
      const t = tlsConnect({ socket: raw, servername: 'wss.brook-ts.invalid', ca: cert.cert });
      await new Promise<void>((r, j) => {
        t.once('secureConnect', () => r());
        t.once('error', j);
      });
      expect(await echoOnce(t, 'secret')).toBe('secret');
      t.destroy();
    } finally {
      await new Promise<void>((r) => tlsSrv.close(() => r()));
    }
  });

  it('a proxy that says nothing: TIMEOUT after --dialWithSocks5TCPTimeout', async () => {
    const held = new Set<net.Socket>();
    const mute = net.createServer((s) => {
      held.add(s);
      s.on('error', () => undefined);
    });
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', () => r()));
    try {
      const port = (mute.address() as net.AddressInfo).port;
      const d = createDialer(dialConfigFromFlags(flags(port, { dialWithSocks5TCPTimeout: '1' })));
      const t0 = Date.now();
      const f = await failure(d.connectTcp({ host: '127.0.0.1', port: echo.port }, { timeoutMs: 20_000 }));
      expect(f.code).toBe(ErrorCodes.TIMEOUT);
      expect(Date.now() - t0).toBeLessThan(10_000);
    } finally {
      for (const s of held) s.destroy();
      await new Promise<void>((r) => mute.close(() => r()));
    }
  });
});

// ---- UDP ASSOCIATE ---------------------------------------------------------


async function startUdpEcho(): Promise<{ port: number; close(): Promise<void> }> {
  const s = dgram.createSocket('udp4');
  s.on('message', (m, r) => s.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  return { port: s.address().port, close: () => new Promise<void>((r) => s.close(() => r())) };
}

function nextMessage(ch: UdpChannel, ms = 5000): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no datagram')), ms);
    ch.on('message', (d) => {
      clearTimeout(t);
      resolve(d.toString());
    });
  });
}

function closedEvent(ch: UdpChannel, ms = 5000): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (ch.closed) return resolve();
    const t = setTimeout(() => reject(new Error('channel did not close')), ms);
    ch.on('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

describe('--dialWithSocks5: UDP ASSOCIATE through an independent Python server', () => {
  let uecho: { port: number; close(): Promise<void> };
  beforeAll(async () => {
    uecho = await startUdpEcho();
  });
  afterAll(async () => {
    await uecho.close();
  });

  it('datagrams go both ways; closing the channel ends the association', async () => {
    const py = await startPyProxy();
    try {
      const d = createDialer(dialConfigFromFlags(flags(py.port)));
      const ch = await d.dialUdp({ host: '127.0.0.1', port: uecho.port }, { timeoutMs: 5000 });
      await py.waitLine('ASSOC ');
      for (const text of ['one', 'two', 'x'.repeat(1400)]) {
        const got = nextMessage(ch);
        ch.send(Buffer.from(text));
        expect(await got).toBe(`echo:${text}`);
      }
      ch.close();
      await py.waitLine('CLOSED ');
    } finally {
      await py.close();
    }
  });

  it('with username/password', async () => {
    const py = await startPyProxy([USER, PASS]);
    try {
      const d = createDialer(dialConfigFromFlags(flags(py.port, { dialWithSocks5Username: USER, dialWithSocks5Password: PASS })));
      const ch = await d.dialUdp({ host: '127.0.0.1', port: uecho.port }, { timeoutMs: 5000 });
      const got = nextMessage(ch);
      ch.send(Buffer.from('auth'));
      expect(await got).toBe('echo:auth');
      ch.close();
      const bad = createDialer(dialConfigFromFlags(flags(py.port, { dialWithSocks5Username: USER, dialWithSocks5Password: 'wrong' })));
      expect((await failure(bad.dialUdp({ host: '127.0.0.1', port: uecho.port }, { timeoutMs: 5000 }))).code).toBe(ErrorCodes.SOCKS_AUTH);
    } finally {
      await py.close();
    }
  });

  it('the proxy ending the control connection closes the channel', async () => {
    const py = await startPyProxy();
    try {
      const d = createDialer(dialConfigFromFlags(flags(py.port)));
      const ch = await d.dialUdp({ host: '127.0.0.1', port: uecho.port }, { timeoutMs: 5000 });
      await py.waitLine('ASSOC ');
      const closed = closedEvent(ch);
      py.proc.stdin.write('drop\n');
      await closed;
      expect(ch.closed).toBe(true);
    } finally {
      await py.close();
    }
  });

  it('--dialWithSocks5UDPTimeout: an idle association is closed, both sockets', async () => {
    const py = await startPyProxy();
    try {
      const d = createDialer(dialConfigFromFlags(flags(py.port, { dialWithSocks5UDPTimeout: '1' })));
      const ch = await d.dialUdp({ host: '127.0.0.1', port: uecho.port }, { timeoutMs: 5000 });
      await py.waitLine('ASSOC ');
      const t0 = Date.now();
      await closedEvent(ch, 10_000);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
      await py.waitLine('CLOSED ');
    } finally {
      await py.close();
    }
  });
});
