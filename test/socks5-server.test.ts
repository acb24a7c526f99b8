import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import dgram from 'node:dgram';
import http from 'node:http';
import { execFile } from 'node:child_process';
import { SocksClient } from 'socks';
import { BrookError, ErrorCodes } from '../src/errors.js';
import type { Address } from '../src/protocol/address.js';
import { buildUdpHeader, parseUdpHeader } from '../src/socks5/codec.js';
import { createDirectSocks5 } from '../src/socks5/direct.js';
import { createSocks5Server, type Socks5Server, type UdpAssociation } from '../src/socks5/server.js';
import { nextDatagram as nextDatagramWithin } from './helpers/udp.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const STEP_TIMEOUT_MS = 3_000;

// Everything a test starts is registered here and stopped in afterEach.
const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

type Log = Record<string, unknown>;

async function startDirect(host = '127.0.0.1', extra: Partial<Parameters<typeof createDirectSocks5>[0]> = {}) {
  const logs: Log[] = [];
  const server = createDirectSocks5({ host, port: 0, log: (e) => logs.push(e), ...extra });
  await server.listen();
  cleanups.push(() => server.close());
  return { server, port: server.address().port, logs };
}

async function startEcho(host: string): Promise<number> {
  const srv = net.createServer((s) => {
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  await new Promise<void>((r) => srv.listen(0, host, r));
  cleanups.push(() => new Promise<void>((r) => srv.close(() => r())));
  return (srv.address() as net.AddressInfo).port;
}

async function startUdpEcho(type: 'udp4' | 'udp6', host: string): Promise<number> {
  const s = dgram.createSocket(type);
  s.on('message', (msg, r) => s.send(msg, r.port, r.address));
  await new Promise<void>((r) => s.bind(0, host, r));
  cleanups.push(() => new Promise<void>((r) => s.close(() => r())));
  return s.address().port;
}

async function udpClient(type: 'udp4' | 'udp6', host: string): Promise<dgram.Socket> {
  const s = dgram.createSocket(type);
  await new Promise<void>((r) => s.bind(0, host, r));
  cleanups.push(() => new Promise<void>((r) => s.close(() => r())));
  return s;
}

/** The next datagram on `s`, or null after STEP_TIMEOUT_MS (or `ms`). */
const nextDatagram = (s: dgram.Socket, ms = STEP_TIMEOUT_MS) => nextDatagramWithin(s, ms);

/** A raw TCP client that collects every byte and notes when the server closes. */
async function rawClient(port: number, host = '127.0.0.1') {
  const sock = net.connect({ port, host });
  cleanups.push(() => {
    sock.destroy();
  });
  let received = Buffer.alloc(0);
  let closed = false;
  const waiters: Array<() => void> = [];
  const wake = (): void => {
    for (const w of waiters.splice(0)) w();
  };
  sock.on('data', (d: Buffer) => {
    received = Buffer.concat([received, d]);
    wake();
  });
  sock.on('error', () => {});
  sock.on('close', () => {
    closed = true;
    wake();
  });
  await new Promise<void>((r, j) => {
    sock.once('connect', r);
    sock.once('error', j);
  });
  const until = (cond: () => boolean, ms = STEP_TIMEOUT_MS): Promise<boolean> =>
    new Promise((resolve) => {
      if (cond()) return resolve(true);
      const t = setTimeout(() => resolve(cond()), ms);
      const check = (): void => {
        if (cond()) {
          clearTimeout(t);
          resolve(true);
        } else waiters.push(check);
      };
      waiters.push(check);
    });
  return {
    sock,
    get received() {
      return received;
    },
    get closed() {
      return closed;
    },
    /** Wait until at least n bytes arrived. */
    bytes: async (n: number) => {
      await until(() => received.length >= n);
      return received;
    },
    /** Wait until the server closed the connection. */
    waitClosed: (ms?: number) => until(() => closed, ms),
  };
}

function socksConnect(port: number, dst: { host: string; port: number }, auth?: { userId: string; password: string }) {
  return SocksClient.createConnection({
    proxy: { host: '127.0.0.1', port, type: 5, ...(auth ?? {}) },
    command: 'connect',
    destination: dst,
    timeout: STEP_TIMEOUT_MS,
  });
}

async function echoRoundTrip(sock: net.Socket, payload: Buffer): Promise<Buffer> {
  cleanups.push(() => {
    sock.destroy();
  });
  let got = Buffer.alloc(0);
  const done = new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('echo timeout')), STEP_TIMEOUT_MS);
    sock.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= payload.length) {
        clearTimeout(t);
        resolve();
      }
    });
  });
  sock.write(payload);
  await done;
  return got;
}

function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

async function freePort(host: string): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, host, r));
  const p = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return p;
}

/** Do the no-auth greeting + UDP ASSOCIATE on a raw control socket; returns the announced UDP endpoint. */
async function associate(port: number, host: string, dstHex = '01 00000000 0000') {
  const c = await rawClient(port, host);
  c.sock.write(Buffer.concat([hex('05 01 00'), hex('05 03 00'), hex(dstHex)]));
  const r = await c.bytes(2);
  expect(r.subarray(0, 2)).toEqual(hex('05 00'));
  const atyp = (await c.bytes(6))[5];
  const replyLen = 2 + 4 + (atyp === 0x04 ? 16 : 4) + 2;
  const reply = (await c.bytes(replyLen)).subarray(2, replyLen);
  expect(reply[1]).toBe(0x00);
  const udpPort = reply.readUInt16BE(reply.length - 2);
  return { control: c, reply, udpPort };
}

describe('SOCKS5 server: CONNECT through the direct handler', () => {
  it('relays to IPv4, IPv6 and domain targets (npm socks client)', async () => {
    const { port } = await startDirect();
    const echo4 = await startEcho('127.0.0.1');
    const echo6 = await startEcho('::1');
    for (const dst of [
      { host: '127.0.0.1', port: echo4 },
      { host: '::1', port: echo6 },
      { host: 'localhost', port: echo4 },
    ]) {
      const { socket } = await socksConnect(port, dst);
      const payload = Buffer.from(`hello ${dst.host} `.repeat(100));
      expect(await echoRoundTrip(socket, payload)).toEqual(payload);
    }
  });

  it('serves curl --socks5-hostname to a local HTTP server', async () => {
    const { port } = await startDirect();
    const web = http.createServer((_req, res) => res.end('hello from http'));
    await new Promise<void>((r) => web.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => web.close(() => r())));
    web.keepAliveTimeout = 100;
    const webPort = (web.address() as net.AddressInfo).port;
    const body = await new Promise<string>((resolve, reject) =>
      execFile(
        'curl',
        ['-sS', '--max-time', '5', '--socks5-hostname', `127.0.0.1:${port}`, `http://localhost:${webPort}/`],
        (err, stdout, stderr) => (err ? reject(new Error(`${err.message} ${stderr}`)) : resolve(stdout)),
      ),
    );
    expect(body).toBe('hello from http');
  });

  it('keeps bytes pipelined after the request (unshifted back)', async () => {
    const { port } = await startDirect();
    const echo = await startEcho('127.0.0.1');
    const c = await rawClient(port);
    const req = Buffer.alloc(10);
    hex('05 01 00 01 7f000001').copy(req);
    req.writeUInt16BE(echo, 8);
    c.sock.write(Buffer.concat([hex('05 01 00'), req, Buffer.from('pipelined!')]));
    const all = await c.bytes(2 + 10 + 10);
    expect(all.subarray(0, 2)).toEqual(hex('05 00'));
    expect(all.subarray(2, 4)).toEqual(hex('05 00')); // success reply
    expect(all.subarray(12).toString()).toBe('pipelined!');
  });

  it('half-close: client FIN still gets the rest of the answer', async () => {
    const { port } = await startDirect();
    // target answers only after it sees EOF
    const srv = net.createServer({ allowHalfOpen: true }, (s) => {
      let n = 0;
      s.on('data', (d: Buffer) => (n += d.length));
      s.on('end', () => s.end(`got ${n}`));
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    cleanups.push(() => new Promise<void>((r) => srv.close(() => r())));
    const { socket } = await socksConnect(port, { host: '127.0.0.1', port: (srv.address() as net.AddressInfo).port });
    cleanups.push(() => {
      socket.destroy();
    });
    const answer = new Promise<string>((resolve) => {
      let s = '';
      socket.on('data', (d: Buffer) => (s += d.toString()));
      socket.on('end', () => resolve(s));
    });
    socket.end(Buffer.alloc(5000, 1));
    expect(await answer).toBe('got 5000');
  });

  it('refused destination -> reply 0x05', async () => {
    const { port, logs } = await startDirect();
    const closedPort = await freePort('127.0.0.1');
    const c = await rawClient(port);
    const req = Buffer.alloc(10);
    hex('05 01 00 01 7f000001').copy(req);
    req.writeUInt16BE(closedPort, 8);
    c.sock.write(Buffer.concat([hex('05 01 00'), req]));
    expect(await c.waitClosed()).toBe(true);
    expect(c.received).toEqual(hex('05 00  05 05 00 01 00000000 0000'));
    expect(logs.some((l) => l.code === ErrorCodes.CONNECTION_REFUSED && l.network === 'tcp')).toBe(true);
    // also through the npm client
    await expect(socksConnect(port, { host: '127.0.0.1', port: closedPort })).rejects.toThrow(/refused/i);
  });

  it('unresolvable domain -> reply 0x04', async () => {
    const { port } = await startDirect();
    const c = await rawClient(port);
    const name = Buffer.from('no-such-host.invalid');
    c.sock.write(Buffer.concat([hex('05 01 00 05 01 00 03'), Buffer.from([name.length]), name, hex('0050')]));
    expect(await c.waitClosed(8_000)).toBe(true);
    expect(c.received.subarray(0, 4)).toEqual(hex('05 00 05 04'));
  });
});

describe('SOCKS5 server: authentication', () => {
  const auth = { username: 'alice', password: 's3cret' };

  it('accepts the right username/password (npm socks client)', async () => {
    const { port } = await startDirect('127.0.0.1', { auth });
    const echo = await startEcho('127.0.0.1');
    const { socket } = await socksConnect(port, { host: '127.0.0.1', port: echo }, { userId: 'alice', password: 's3cret' });
    expect(await echoRoundTrip(socket, Buffer.from('authed'))).toEqual(Buffer.from('authed'));
  });

  it('wrong password -> status 0x01 then close', async () => {
    const { port, logs } = await startDirect('127.0.0.1', { auth });
    const c = await rawClient(port);
    c.sock.write(hex('05 01 02'));
    expect(await c.bytes(2)).toEqual(hex('05 02'));
    c.sock.write(Buffer.concat([hex('01 05'), Buffer.from('alice'), hex('06'), Buffer.from('wrong!')]));
    expect(await c.waitClosed()).toBe(true);
    expect(c.received).toEqual(hex('05 02 01 01'));
    expect(logs.some((l) => l.code === ErrorCodes.SOCKS_AUTH)).toBe(true);
    await expect(
      socksConnect(port, { host: '127.0.0.1', port: 9 }, { userId: 'alice', password: 'nope' }),
    ).rejects.toThrow();
  });

  it('client offering only no-auth when auth is required -> 0xFF then close', async () => {
    const { port } = await startDirect('127.0.0.1', { auth });
    const c = await rawClient(port);
    c.sock.write(hex('05 01 00'));
    expect(await c.waitClosed()).toBe(true);
    expect(c.received).toEqual(hex('05 ff'));
  });
});

describe('SOCKS5 server: malformed input gets the right reply bytes', () => {
  it('wrong greeting version -> closed without a reply', async () => {
    const { port, server } = await startDirect();
    const c = await rawClient(port);
    c.sock.write(hex('04 01 00 50 7f000001 00'));
    expect(await c.waitClosed()).toBe(true);
    expect(c.received.length).toBe(0);
    expect(server.stats.handshakeFailures).toBe(1);
  });

  it('no acceptable method -> 05 ff then close', async () => {
    const { port } = await startDirect();
    const c = await rawClient(port);
    c.sock.write(hex('05 02 01 02'));
    expect(await c.waitClosed()).toBe(true);
    expect(c.received).toEqual(hex('05 ff'));
  });

  const cases: Array<[string, string, string]> = [
    ['BIND -> 0x07', '05 02 00 01 7f000001 0050', '05 07 00 01 00000000 0000'],
    ['unknown command -> 0x07', '05 09 00 01 7f000001 0050', '05 07 00 01 00000000 0000'],
    ['unknown ATYP -> 0x08', '05 01 00 05 7f000001 0050', '05 08 00 01 00000000 0000'],
    ['wrong request version -> 0x01', '04 01 00 01 7f000001 0050', '05 01 00 01 00000000 0000'],
    ['empty domain -> 0x01', '05 01 00 03 00 0050', '05 01 00 01 00000000 0000'],
  ];
  for (const [name, request, reply] of cases) {
    it(name, async () => {
      const { port } = await startDirect();
      const c = await rawClient(port);
      // byte-split across writes: greeting, then the request in two pieces
      c.sock.write(hex('05 01 00'));
      expect(await c.bytes(2)).toEqual(hex('05 00'));
      const r = hex(request);
      c.sock.write(r.subarray(0, 2));
      await new Promise((res) => setTimeout(res, 20));
      c.sock.write(r.subarray(2));
      expect(await c.waitClosed()).toBe(true);
      expect(c.received).toEqual(Buffer.concat([hex('05 00'), hex(reply)]));
    });
  }

  it('slow/silent clients are closed after handshakeTimeoutMs', async () => {
    const { port, server, logs } = await startDirect('127.0.0.1', { handshakeTimeoutMs: 150 });
    const c = await rawClient(port);
    c.sock.write(hex('05 01')); // incomplete greeting, then silence
    const t0 = Date.now();
    expect(await c.waitClosed()).toBe(true);
    expect(Date.now() - t0).toBeLessThan(2_000);
    expect(c.received.length).toBe(0);
    expect(logs.some((l) => l.code === ErrorCodes.TIMEOUT)).toBe(true);
    expect(server.stats.tcpActive).toBe(0);
  });

  it('a handler that throws produces a failure reply, not a crash', async () => {
    const server = createSocks5Server({
      host: '127.0.0.1',
      port: 0,
      onConnect: () => {
        throw new BrookError(ErrorCodes.NETWORK_UNREACHABLE, 'nope');
      },
    });
    await server.listen();
    cleanups.push(() => server.close());
    const c = await rawClient(server.address().port);
    c.sock.write(hex('05 01 00  05 01 00 01 7f000001 0050'));
    expect(await c.waitClosed()).toBe(true);
    expect(c.received).toEqual(hex('05 00  05 03 00 01 00000000 0000'));
  });
});

describe('SOCKS5 server: UDP ASSOCIATE', () => {
  it('echoes over IPv4 via a raw dgram client; strangers are dropped', async () => {
    const { port, server, logs } = await startDirect();
    const echo = await startUdpEcho('udp4', '127.0.0.1');
    const { reply, udpPort } = await associate(port, '127.0.0.1');
    expect(reply.subarray(3, 8)).toEqual(hex('01 7f000001')); // announces the listen IP
    expect(udpPort).toBe(port); // same port number as TCP
    const cl = await udpClient('udp4', '127.0.0.1');
    const dst: Address = { type: 'ipv4', host: '127.0.0.1', port: echo };
    for (let i = 0; i < 3; i++) {
      const payload = Buffer.from(`datagram ${i}`);
      const got = nextDatagram(cl);
      cl.send(buildUdpHeader(dst, payload), udpPort, '127.0.0.1');
      const d = await got;
      expect(d).not.toBeNull();
      const h = parseUdpHeader(d!);
      expect(h.address).toEqual(dst);
      expect(h.data).toEqual(payload);
    }
    // a second socket on the same IP is a stranger: the association is bound to `cl`
    const stranger = await udpClient('udp4', '127.0.0.1');
    const dropped = server.stats.udpDropped;
    const none = nextDatagram(stranger, 300);
    stranger.send(buildUdpHeader(dst, Buffer.from('let me in')), udpPort, '127.0.0.1');
    expect(await none).toBeNull();
    expect(server.stats.udpDropped).toBe(dropped + 1);
    expect(logs.some((l) => l.network === 'udp' && /stranger/.test(String(l.error)))).toBe(true);
    // bad datagrams from the bound client are dropped too, and the association keeps working
    for (const bad of [hex('0000 01 01 7f000001 0050 41'), hex('0000 00 09 00'), hex('00 00')]) {
      cl.send(bad, udpPort, '127.0.0.1');
    }
    const after = nextDatagram(cl);
    cl.send(buildUdpHeader(dst, Buffer.from('still here')), udpPort, '127.0.0.1');
    expect(parseUdpHeader((await after)!).data.toString()).toBe('still here');
    expect(server.stats.udpDropped).toBe(dropped + 4);
    expect(logs.some((l) => l.code === ErrorCodes.SOCKS_UDP_FRAG)).toBe(true);
    expect(logs.some((l) => l.code === ErrorCodes.ATYP_UNKNOWN)).toBe(true);
    expect(logs.some((l) => l.code === ErrorCodes.ADDRESS_TRUNCATED)).toBe(true);
  });

  it('echoes over IPv6 (server, client and target on ::1)', async () => {
    const { port } = await startDirect('::1');
    const echo = await startUdpEcho('udp6', '::1');
    const { reply, udpPort } = await associate(port, '::1');
    expect(reply.subarray(3, 20)).toEqual(hex('04 00000000000000000000000000000001'));
    const cl = await udpClient('udp6', '::1');
    const dst: Address = { type: 'ipv6', host: '::1', port: echo };
    const got = nextDatagram(cl);
    cl.send(buildUdpHeader(dst, Buffer.from('v6 hello')), udpPort, '::1');
    const h = parseUdpHeader((await got)!);
    expect(h.address).toEqual(dst);
    expect(h.data.toString()).toBe('v6 hello');
  });

  it('a non-zero DST.PORT pins the client port; other ports are strangers', async () => {
    const { port, server } = await startDirect();
    const echo = await startUdpEcho('udp4', '127.0.0.1');
    const pinned = await udpClient('udp4', '127.0.0.1');
    const other = await udpClient('udp4', '127.0.0.1');
    const p = Buffer.alloc(2);
    p.writeUInt16BE(pinned.address().port);
    const { udpPort } = await associate(port, '127.0.0.1', `01 7f000001 ${p.toString('hex')}`);
    const dst: Address = { type: 'ipv4', host: '127.0.0.1', port: echo };
    const none = nextDatagram(other, 300);
    other.send(buildUdpHeader(dst, Buffer.from('x')), udpPort, '127.0.0.1');
    expect(await none).toBeNull();
    expect(server.stats.udpDropped).toBe(1);
    const got = nextDatagram(pinned);
    pinned.send(buildUdpHeader(dst, Buffer.from('pinned')), udpPort, '127.0.0.1');
    expect(parseUdpHeader((await got)!).data.toString()).toBe('pinned');
  });

  it('the association ends when its control connection closes', async () => {
    const seen: Buffer[] = [];
    let closedAssoc: UdpAssociation | null = null;
    let markClosed!: () => void;
    const closed = new Promise<void>((resolve) => (markClosed = resolve));
    const server: Socks5Server = createSocks5Server({
      host: '127.0.0.1',
      port: 0,
      onConnect: (req) => req.reject(0x02),
      onUdpDatagram: (assoc, dst, data) => {
        seen.push(Buffer.from(data));
        assoc.send(dst, Buffer.from(`ack ${data}`));
      },
      onUdpAssociationClosed: (assoc) => {
        closedAssoc = assoc;
        markClosed();
      },
    });
    cleanups.push(() => server.close());
    await server.listen();
    const port = server.address().port;
    const { control, udpPort } = await associate(port, '127.0.0.1');
    const cl = await udpClient('udp4', '127.0.0.1');
    const dst: Address = { type: 'domain', host: 'example.test', port: 7 };
    const got = nextDatagram(cl);
    cl.send(buildUdpHeader(dst, Buffer.from('one')), udpPort, '127.0.0.1');
    const h = parseUdpHeader((await got)!);
    expect(h.address).toEqual(dst);
    expect(h.data.toString()).toBe('ack one');
    expect(server.stats.udpActiveAssociations).toBe(1);

    control.sock.end();
    await within(closed, STEP_TIMEOUT_MS);
    expect(closedAssoc!.clientPort).toBe(cl.address().port);
    expect(server.stats.udpActiveAssociations).toBe(0);
    const none = nextDatagram(cl, 300);
    cl.send(buildUdpHeader(dst, Buffer.from('two')), udpPort, '127.0.0.1');
    expect(await none).toBeNull();
    expect(seen.map(String)).toEqual(['one']);
    expect(server.stats.udpDropped).toBe(1);
  });

  it('announceIP overrides the listen IP; an unspecified listen IP without it is a CONFIG error', async () => {
    const { port } = await startDirect('127.0.0.1', { announceIP: '127.0.0.2' });
    const { reply } = await associate(port, '127.0.0.1');
    expect(reply.subarray(3, 8)).toEqual(hex('01 7f000002'));
    const bad = createDirectSocks5({ host: '0.0.0.0', port: 0 });
    await expect(bad.listen()).rejects.toMatchObject({ code: ErrorCodes.CONFIG });
    const bad6 = createDirectSocks5({ host: '::', port: 0 });
    await expect(bad6.listen()).rejects.toMatchObject({ code: ErrorCodes.CONFIG, message: /announceIP/ });
  });

  it('UDP disabled -> UDP ASSOCIATE gets 0x07', async () => {
    const { port } = await startDirect('127.0.0.1', { udp: false });
    const c = await rawClient(port);
    c.sock.write(hex('05 01 00  05 03 00 01 00000000 0000'));
    expect(await c.waitClosed()).toBe(true);
    expect(c.received).toEqual(hex('05 00  05 07 00 01 00000000 0000'));
  });
});
