/**
 * The Dialer without SOCKS5: source address (--dialWithIP4/6, --dialWithNIC's
 * choice), names through --dialWithDNS (never the system resolver), typed
 * errors, and the default (no options) path.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDialer, Dialer } from '../src/dial/dialer.js';
import { sourceFor } from '../src/dial/direct.js';
import { pickNicAddress } from '../src/dial/nic.js';
import { dialConfigFromFlags } from '../src/dial/options.js';
import type { UdpChannel } from '../src/dial/types.js';
import { ErrorCodes, isBrookError, socks5ReplyFor, Socks5Reply } from '../src/errors.js';
import { type DnsServer, startDnsServer } from './helpers/dial-dns.js';

interface EchoServer {
  port: number;
  peers: string[];
  close(): Promise<void>;
}

/** TCP echo on host that records each peer's address. */
async function startEcho(host: string): Promise<EchoServer> {
  const peers: string[] = [];
  const socks = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    peers.push(s.remoteAddress ?? '');
    socks.add(s);
    s.on('close', () => socks.delete(s));
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => srv.listen(0, host, () => r()));
  return {
    port: (srv.address() as net.AddressInfo).port,
    peers,
    close: async () => {
      for (const s of socks) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

interface UdpEcho {
  port: number;
  peers: string[];
  close(): Promise<void>;
}

async function startUdpEcho(host: string): Promise<UdpEcho> {
  const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  const peers: string[] = [];
  s.on('message', (m, r) => {
    peers.push(r.address);
    s.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address);
  });
  await new Promise<void>((r) => s.bind(0, host, () => r()));
  return { port: s.address().port, peers, close: () => new Promise<void>((r) => s.close(() => r())) };
}

async function roundTrip(sock: net.Socket, text: string): Promise<string> {
  sock.resume();
  return new Promise<string>((resolve, reject) => {
    let got = '';
    const t = setTimeout(() => reject(new Error('no echo')), 5000);
    sock.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.length >= text.length) {
        clearTimeout(t);
        resolve(got);
      }
    });
    sock.write(text);
  });
}

function udpRoundTrip(ch: UdpChannel, text: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no udp echo')), 5000);
    ch.on('message', (d) => {
      clearTimeout(t);
      resolve(d.toString());
    });
    ch.send(Buffer.from(text));
  });
}

async function failure(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (!isBrookError(e)) throw e;
    return { code: e.code, message: e.message };
  }
  throw new Error('expected a failure');
}

const has6 = await new Promise<boolean>((r) => {
  const s = net.createServer();
  s.once('error', () => r(false));
  s.listen(0, '::1', () => s.close(() => r(true)));
});

describe('dialer: source address', () => {
  let echo: EchoServer;
  let uecho: UdpEcho;
  beforeAll(async () => {
    echo = await startEcho('127.0.0.1');
    uecho = await startUdpEcho('127.0.0.1');
  });
  afterAll(async () => {
    await echo.close();
    await uecho.close();
  });

  it('--dialWithIP4 127.0.0.2: the destination sees that source (TCP)', async () => {
    const d = createDialer(dialConfigFromFlags({ dialWithIP4: '127.0.0.2' }));
    const s = await d.connectTcp({ host: '127.0.0.1', port: echo.port }, { timeoutMs: 5000 });
    expect(await roundTrip(s, 'hi')).toBe('hi');
    expect(echo.peers.at(-1)).toBe('127.0.0.2');
    s.destroy();
  });

  it('--dialWithIP4 127.0.0.2: the destination sees that source (UDP)', async () => {
    const d = createDialer(dialConfigFromFlags({ dialWithIP4: '127.0.0.2' }));
    const ch = await d.dialUdp({ host: '127.0.0.1', port: uecho.port }, { timeoutMs: 5000 });
    expect(await udpRoundTrip(ch, 'dgram')).toBe('echo:dgram');
    expect(uecho.peers.at(-1)).toBe('127.0.0.2');
    ch.close();
    expect(ch.closed).toBe(true);
  });

  it('without options: plain connect, socket handed back paused', async () => {
    const d = new Dialer();
    expect(d.isDefault).toBe(true);
    const s = await d.connectTcp({ host: 'localhost', port: echo.port }, { timeoutMs: 5000 });
    expect(s.readableFlowing).toBe(false);
    expect(await roundTrip(s, 'plain')).toBe('plain');
    s.destroy();
  });

  it.skipIf(!has6)('--dialWithIP6 ::1 applies to IPv6 destinations only', async () => {
    const e6 = await startEcho('::1');
    try {
      const d = createDialer(dialConfigFromFlags({ dialWithIP6: '::1', dialWithIP4: '127.0.0.3' }));
      const s6 = await d.connectTcp({ host: '::1', port: e6.port }, { timeoutMs: 5000 });
      expect(await roundTrip(s6, 'six')).toBe('six');
      expect(e6.peers.at(-1)).toBe('::1');
      s6.destroy();
      const s4 = await d.connectTcp({ host: '127.0.0.1', port: echo.port }, { timeoutMs: 5000 });
      expect(await roundTrip(s4, 'four')).toBe('four');
      expect(echo.peers.at(-1)).toBe('127.0.0.3');
      s4.destroy();
    } finally {
      await e6.close();
    }
  });

  it('a source address this machine does not have: NETWORK_UNREACHABLE naming the destination', async () => {
    const d = createDialer(dialConfigFromFlags({ dialWithIP4: '192.0.2.1' })); // TEST-NET-1: never local
    const err = await d.connectTcp({ host: '127.0.0.1', port: echo.port }, { timeoutMs: 5000 }).catch((e: unknown) => e);
    expect(isBrookError(err, ErrorCodes.NETWORK_UNREACHABLE)).toBe(true);
    expect((err as Error).message).toContain(`127.0.0.1:${echo.port}`);
    expect(socks5ReplyFor(err)).toBe(Socks5Reply.NETWORK_UNREACHABLE);
  });

  it('a refused connection: CONNECTION_REFUSED, so the SOCKS5 reply stays 5', async () => {
    const closed = await startEcho('127.0.0.1');
    const port = closed.port;
    await closed.close();
    const d = createDialer(dialConfigFromFlags({ dialWithIP4: '127.0.0.2' }));
    const err = await d.connectTcp({ host: '127.0.0.1', port }, { timeoutMs: 5000 }).catch((e: unknown) => e);
    expect(isBrookError(err, ErrorCodes.CONNECTION_REFUSED)).toBe(true);
    expect(socks5ReplyFor(err)).toBe(Socks5Reply.CONNECTION_REFUSED);
  });
});

describe('dialer: --dialWithDNS', () => {
  let dns: DnsServer;
  let echo: EchoServer;
  let uecho: UdpEcho;
  beforeAll(async () => {
    dns = await startDnsServer({
      'svc.brook-ts.invalid': { A: ['127.0.0.1'], AAAA: ['::1'], ttl: 60 },
    });
    echo = await startEcho('127.0.0.1');
    uecho = await startUdpEcho('127.0.0.1');
  });
  afterAll(async () => {
    await dns.close();
    await echo.close();
    await uecho.close();
  });

  it('TCP and UDP to a name only our DNS server knows', async () => {
    const d = createDialer(dialConfigFromFlags({ dialWithDNS: `127.0.0.1:${dns.port}`, dialWithIP4: '127.0.0.4' }));
    const s = await d.connectTcp({ host: 'svc.brook-ts.invalid', port: echo.port }, { timeoutMs: 5000 });
    expect(await roundTrip(s, 'named')).toBe('named');
    expect(echo.peers.at(-1)).toBe('127.0.0.4');
    s.destroy();
    const ch = await d.dialUdp({ host: 'svc.brook-ts.invalid', port: uecho.port }, { timeoutMs: 5000 });
    expect(ch.remote.host).toBe('svc.brook-ts.invalid');
    expect(await udpRoundTrip(ch, 'u')).toBe('echo:u');
    ch.close();
    expect(dns.queries.filter((q) => q.name === 'svc.brook-ts.invalid').length).toBe(1); // second from the cache
    // the DNS query itself left from the configured source too
    d.close();
  });

  it('the system resolver cannot resolve the name (the answer above was ours)', async () => {
    const d = new Dialer();
    const f = await failure(d.connectTcp({ host: 'svc.brook-ts.invalid', port: echo.port }, { timeoutMs: 5000 }));
    // ENOTFOUND at once, or a system resolver with no reachable server that times out
    expect([ErrorCodes.DNS_FAILED, ErrorCodes.TIMEOUT]).toContain(f.code);
  });

  it('a resolver that does not answer: TIMEOUT within the dial timeout', async () => {
    const mute = await startDnsServer({}, { dropUdp: 1000 });
    try {
      const d = createDialer(dialConfigFromFlags({ dialWithDNS: `127.0.0.1:${mute.port}` }));
      const t0 = Date.now();
      const f = await failure(d.connectTcp({ host: 'svc.brook-ts.invalid', port: echo.port }, { timeoutMs: 300 }));
      expect(f.code).toBe(ErrorCodes.TIMEOUT);
      expect(f.message).toContain(`svc.brook-ts.invalid:${echo.port}`);
      expect(Date.now() - t0).toBeLessThan(3000);
      d.close();
    } finally {
      await mute.close();
    }
  });
});

describe('dialer: --dialWithNIC (the source address of a named interface, as upstream)', () => {
  it('picks a public IPv4 over a private one, a global IPv6, never loopback or link-local', () => {
    expect(pickNicAddress(['127.0.0.1', '169.254.1.1', '10.0.0.5', '203.0.113.9'], 4)).toBe('203.0.113.9');
    expect(pickNicAddress(['127.0.0.1', '192.168.1.2'], 4)).toBe('192.168.1.2');
    expect(pickNicAddress(['127.0.0.1'], 4)).toBeNull();
    expect(pickNicAddress(['fe80::1', '::1', '2001:db8::5', '10.0.0.1'], 6)).toBe('2001:db8::5');
    expect(pickNicAddress(['fe80::1'], 6)).toBeNull();
  });

  it('reads the interface at each dial (lister injected) and fails typed when it has no address', () => {
    let addrs = [{ address: '10.1.2.3', family: 'IPv4' }];
    const interfaces = () => ({ test0: addrs as never });
    expect(sourceFor({ nic: 'test0', ip4: '127.0.0.2', interfaces }, '127.0.0.1')).toBe('10.1.2.3'); // NIC wins over IP4
    addrs = [{ address: '10.9.9.9', family: 'IPv4' }];
    expect(sourceFor({ nic: 'test0', interfaces }, '127.0.0.1')).toBe('10.9.9.9');
    try {
      sourceFor({ nic: 'test0', interfaces }, '::1');
      expect.unreachable();
    } catch (e) {
      expect(isBrookError(e, ErrorCodes.NETWORK_UNREACHABLE)).toBe(true);
    }
  });

  it('a dial through lo (no global address) fails with NETWORK_UNREACHABLE', async () => {
    const d = createDialer(dialConfigFromFlags({ dialWithNIC: 'lo' }));
    const f = await failure(d.connectTcp({ host: '127.0.0.1', port: 9 }, { timeoutMs: 2000 }));
    expect(f.code).toBe(ErrorCodes.NETWORK_UNREACHABLE);
    expect(f.message).toContain('lo');
  });
});
