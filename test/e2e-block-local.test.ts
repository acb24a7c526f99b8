/**
 * Issue 22 item 2 over real sockets: a TCP and a UDP sentinel on 127.0.0.1 and [::1] (one port
 * each, both families) that a tunnel must never reach. For every form of a local destination,
 * first a plain Node dial (net.connect / dgram, what the server's dialer does) shows that the
 * form does reach the sentinel; then wsclient -> wsserver with --blockLocal must not, and the
 * refusal is a block (metric, rule) like a list's. Without --blockLocal the unspecified forms are
 * refused all the same and loopback is reached as upstream. The dialer refuses a name that
 * resolves to 0.0.0.0 (system resolver and --dialWithDNS), and --dialWithSocks5 gets the checked
 * address, never a local one.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Dialer, createDialer } from '../src/dial/index.js';
import { ErrorCodes, type ErrorCode } from '../src/errors.js';
import { type Metrics, type MetricsNetwork, noMetrics } from '../src/ops/metrics.js';
import { DestinationPolicy, type DestinationPolicyOptions, type PolicyVerdict } from '../src/policy/index.js';
import { parseIPv6 } from '../src/protocol/address.js';
import { type DnsServer, startDnsServer } from './helpers/dial-dns.js';
import { type Closable, closeAll, LOOPBACK, LOOPBACK6, type Pair, readAll, socksConnect, type SocksTarget, sleep, startPair, waitFor } from './helpers/net.js';
import { startSocksv5 } from './helpers/socks5-proxies.js';
import { Socks5UdpClient } from './helpers/udp.js';

const BANNER = 'sentinel';

interface Sentinel extends Closable {
  tcpPort: number;
  udpPort: number;
  /** Connections and datagrams that arrived, with the family that got them. */
  seen: string[];
}

/** TCP and UDP listeners on 127.0.0.1 and ::1, each kind on one port for both families. */
async function startSentinel(): Promise<Sentinel> {
  const seen: string[] = [];
  for (let attempt = 0; attempt < 10; attempt++) {
    const servers = [LOOPBACK, LOOPBACK6].map((host) =>
      net.createServer((c) => {
        seen.push(`tcp ${host} from ${c.remoteAddress}`);
        c.on('error', () => undefined);
        c.end(BANNER);
      }),
    );
    const udps = [dgram.createSocket('udp4'), dgram.createSocket('udp6')];
    udps.forEach((u, i) => u.on('message', (m) => seen.push(`udp ${i ? LOOPBACK6 : LOOPBACK} ${m.toString()}`)));
    try {
      await new Promise<void>((r, j) => servers[0]!.once('error', j).listen(0, LOOPBACK, r));
      const tcpPort = (servers[0]!.address() as net.AddressInfo).port;
      await new Promise<void>((r, j) => servers[1]!.once('error', j).listen(tcpPort, LOOPBACK6, r));
      await new Promise<void>((r, j) => udps[0]!.once('error', j).bind(0, LOOPBACK, r));
      const udpPort = udps[0]!.address().port;
      await new Promise<void>((r, j) => udps[1]!.once('error', j).bind(udpPort, LOOPBACK6, r));
      return {
        tcpPort,
        udpPort,
        seen,
        close: async () => {
          for (const u of udps) u.close();
          await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
        },
      };
    } catch {
      for (const s of servers) s.close();
      for (const u of udps) u.close();
    }
  }
  throw new Error('no port free on both 127.0.0.1 and ::1');
}

/** The forms of a loopback destination (with the ATYP the client sends them as). */
const loopbackForms: [SocksTarget['type'], string][] = [
  ['ipv4', '127.0.0.1'],
  ['ipv6', '::1'],
  ['ipv6', '::ffff:7f00:1'],
  ['domain', '127.0.0.1'],
  ['domain', '::1'],
  ['domain', '::ffff:127.0.0.1'],
  ['domain', '127.1'],
  ['domain', '0x7f.1'],
  ['domain', '0x7f000001'],
  ['domain', '2130706433'],
  ['domain', '0177.0.0.1'],
  ['domain', '127.000.000.001'],
  ['domain', '0X7F.0.0.1'],
  ['domain', 'localhost'],
];
/** The unspecified forms: refused with and without --blockLocal. */
const unspecifiedForms: [SocksTarget['type'], string][] = [
  ['ipv4', '0.0.0.0'],
  ['ipv6', '::'],
  ['ipv6', '::ffff:0:0'],
  ['domain', '0.0.0.0'],
  ['domain', '::'],
  ['domain', '::ffff:0.0.0.0'],
  ['domain', '0'],
  ['domain', '0x0'],
  ['domain', '0.0'],
];

let sentinel: Sentinel;
let dns: DnsServer;
const started: Closable[] = [];

beforeAll(async () => {
  sentinel = await startSentinel();
  dns = await startDnsServer({ 'zero.test': { A: ['0.0.0.0'] }, 'loop.test': { A: [LOOPBACK] }, 'public.test': { A: ['198.51.100.9'] } });
});
afterEach(async () => {
  await closeAll(started);
  sentinel.seen.length = 0;
});
afterAll(async () => {
  await sentinel?.close();
  await dns?.close();
});

/** Counts the blocks and dial failures of a server. */
function countingMetrics(): Metrics & { blocks: Record<MetricsNetwork, number>; dialFails: ErrorCode[] } {
  const blocks = { tcp: 0, udp: 0 } as Record<MetricsNetwork, number>;
  const dialFails: ErrorCode[] = [];
  return { ...noMetrics, blocks, dialFails, blocked: (n) => {
      blocks[n]++;
    }, dialFailed: (c) => {
      dialFails.push(c);
    } };
}

/** A policy that also records its verdicts (the server's log is rate-limited: one line per code and interval). */
function recorded(p: DestinationPolicy): { policy: DestinationPolicy; verdicts: Map<string, PolicyVerdict> } {
  const verdicts = new Map<string, PolicyVerdict>();
  const evaluate = p.evaluate.bind(p);
  p.evaluate = async (d) => {
    const v = await evaluate(d);
    verdicts.set(d.host, v);
    return v;
  };
  return { policy: p, verdicts };
}

async function pairWith(policy: DestinationPolicy | null, extra: { dialer?: Dialer } = {}) {
  const metrics = countingMetrics();
  const pair: Pair = await startPair({ server: { ...(policy ? { policy } : {}), metrics, ...extra } });
  started.push(pair);
  return { pair, metrics };
}

/** --blockLocal; without the host's interface addresses unless asked (they hold 127.0.0.1 and ::1 too, which would hide the loopback rule). */
async function blockLocal(o: DestinationPolicyOptions = {}) {
  const p = await DestinationPolicy.load({ blockLocal: true, interfaces: () => ({}), ...o });
  started.push({ close: async () => p!.close() });
  return recorded(p!);
}

/** Whether a TCP tunnel to the target got the sentinel's banner. */
async function reaches(socks: number, t: SocksTarget): Promise<boolean> {
  let s: net.Socket;
  try {
    s = await socksConnect(socks, t);
  } catch {
    return false;
  }
  s.on('error', () => undefined);
  const got = await readAll(s).catch(() => Buffer.alloc(0));
  s.destroy();
  return got.toString() === BANNER;
}

/** A plain Node dial of `host` (what the server's default dialer does with it): reached the sentinel? */
async function nodeReaches(host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect({ host, port: sentinel.tcpPort });
    c.on('error', () => resolve(false));
    c.on('data', (d) => {
      resolve(d.toString() === BANNER);
      c.destroy();
    });
  });
}

/** One datagram to host:port with the given ATYP, written by hand (the helper's IPv6 encoder knows no dotted tail). */
function sendUdp(u: Socks5UdpClient, type: SocksTarget['type'], host: string, port: number, data: string): void {
  const p = Buffer.alloc(2);
  p.writeUInt16BE(port);
  let addr: Buffer;
  if (type === 'domain') addr = Buffer.concat([Buffer.from([3, Buffer.byteLength(host)]), Buffer.from(host)]);
  else if (type === 'ipv4') addr = Buffer.from([1, ...host.split('.').map(Number)]);
  else addr = Buffer.concat([Buffer.from([4]), parseIPv6(host)]);
  u.sendRaw(Buffer.concat([Buffer.from([0, 0, 0]), addr, p, Buffer.from(data)]));
}

async function associate(pair: Pair): Promise<Socks5UdpClient> {
  const u = await Socks5UdpClient.associate({ host: LOOPBACK, port: pair.socksPort });
  started.push(u);
  return u;
}

describe('what reaches the socket layer (no brook in between)', () => {
  it('every loopback and unspecified form, dialled by Node, reaches a listener on 127.0.0.1 or [::1]', async () => {
    for (const [, host] of [...loopbackForms, ...unspecifiedForms]) expect(await nodeReaches(host), host).toBe(true);
    // and UDP: dgram resolves a name the same way (dns.lookup -> getaddrinfo)
    const before = sentinel.seen.length;
    for (const host of ['0.0.0.0', '127.1', '0', '2130706433', '::', '::ffff:0.0.0.0']) {
      const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
      await new Promise<void>((r) => s.send(host, sentinel.udpPort, host, () => r()));
      s.close();
    }
    await waitFor(() => sentinel.seen.length - before >= 6, 3000, 'six datagrams');
  });
});

describe('--blockLocal: no form reaches the sentinel', () => {
  it('TCP: every form refused as a block (metric, rule), none dialled', async () => {
    const { policy, verdicts } = await blockLocal();
    const { pair, metrics } = await pairWith(policy);
    const forms = [...loopbackForms, ...unspecifiedForms];
    for (const [type, host] of forms) expect(await reaches(pair.socksPort, { type, host, port: sentinel.tcpPort }), host).toBe(false);
    await waitFor(() => metrics.blocks.tcp >= forms.length, 5000, 'every block counted');
    expect(metrics.blocks.tcp).toBe(forms.length);
    expect(metrics.dialFails).toEqual([]);
    expect(sentinel.seen).toEqual([]);
    const rules = Object.fromEntries([...verdicts].map(([h, v]) => [h, v.blocked ? v.rule : 'allowed']));
    expect(rules).toMatchObject({
      '127.0.0.1': 'local:loopback',
      '::1': 'local:loopback',
      '::ffff:127.0.0.1': 'local:loopback',
      '127.1': 'local:loopback',
      '2130706433': 'local:loopback',
      localhost: 'local:localhost',
      '0': 'local:unspecified',
      '::': 'local:unspecified',
      '0.0.0.0': 'local:unspecified',
    });
    // the log line of a list's block: rate-limited, with dst, network, the rule, BLOCKED
    const line = pair.serverLog.find((l) => l['code'] === ErrorCodes.BLOCKED);
    expect(line).toMatchObject({ dst: `127.0.0.1:${sentinel.tcpPort}`, network: 'tcp', rule: 'local:loopback', error: 'destination blocked by local:loopback' });
  });

  it('UDP: every form refused as a block, no datagram delivered', async () => {
    const { policy, verdicts } = await blockLocal();
    const { pair, metrics } = await pairWith(policy);
    const forms = [...loopbackForms, ...unspecifiedForms];
    // one association each: the client keeps one flow per association and destination, and some forms are one destination to it
    for (const [i, [type, host]] of forms.entries()) {
      const u = await associate(pair);
      sendUdp(u, type, host, sentinel.udpPort, `${type} ${host}`);
      await waitFor(() => metrics.blocks.udp > i, 5000, `the UDP flow to ${host} blocked`);
    }
    await sleep(200);
    expect(metrics.blocks.udp).toBe(forms.length);
    expect(sentinel.seen).toEqual([]);
    for (const [, host] of loopbackForms) expect(verdicts.get(host), host).toMatchObject({ blocked: true, rule: host === 'localhost' ? 'local:localhost' : 'local:loopback' });
    for (const [, host] of unspecifiedForms) expect(verdicts.get(host), host).toMatchObject({ blocked: true, rule: 'local:unspecified' });
    expect(pair.serverLog.find((l) => l['code'] === ErrorCodes.BLOCKED)).toMatchObject({ network: 'udp', rule: expect.stringMatching(/^local:/) });
  });

  it("this host's own addresses, link-local, metadata: refused with their rule (no listener needed: never dialled)", async () => {
    const { policy, verdicts } = await blockLocal({ interfaces: undefined });
    const { pair, metrics } = await pairWith(policy);
    const own = Object.values((await import('node:os')).networkInterfaces())
      .flatMap((l) => l ?? [])
      .filter((a) => !a.internal && !a.address.startsWith('fe80'))
      .map((a) => a.address);
    const targets: SocksTarget[] = [
      ...own.map((host) => ({ type: net.isIPv6(host) ? ('ipv6' as const) : ('ipv4' as const), host, port: 9 })),
      { type: 'ipv4', host: '169.254.169.254', port: 80 },
      { type: 'ipv6', host: 'fe80::1', port: 80 },
      { type: 'domain', host: '169.254.43518', port: 80 },
    ];
    for (const t of targets) expect(await reaches(pair.socksPort, t), t.host).toBe(false);
    await waitFor(() => metrics.blocks.tcp >= targets.length, 5000, 'every block counted');
    for (const host of own) expect(verdicts.get(host), host).toEqual({ blocked: true, rule: 'local:interface' });
    expect(verdicts.get('169.254.169.254')).toEqual({ blocked: true, rule: 'local:metadata' });
    expect(verdicts.get('169.254.43518')).toEqual({ blocked: true, rule: 'local:metadata', ip: '169.254.169.254' });
    expect(verdicts.get('fe80::1')).toEqual({ blocked: true, rule: 'local:link-local' });
  });

  it('a name that resolves to loopback (--dialWithDNS answers) is refused before any dial', async () => {
    const dialer = createDialer({ dns: { kind: 'udp', host: LOOPBACK, port: dns.port }, dnsPrefer: 'A', socks5: null });
    started.push({ close: async () => dialer.close() });
    const { policy, verdicts } = await blockLocal({ resolve: async (h) => [(await dialer.resolve(h)).address] });
    const { pair, metrics } = await pairWith(policy, { dialer });
    expect(await reaches(pair.socksPort, { type: 'domain', host: 'loop.test', port: sentinel.tcpPort })).toBe(false);
    const u = await associate(pair);
    sendUdp(u, 'domain', 'loop.test', sentinel.udpPort, 'loop.test');
    await waitFor(() => metrics.blocks.tcp + metrics.blocks.udp >= 2, 5000, 'two blocks');
    expect(verdicts.get('loop.test')).toEqual({ blocked: true, rule: 'local:loopback', ip: LOOPBACK });
    expect(sentinel.seen).toEqual([]);
  });
});

describe('without --blockLocal (baseline): upstream behaviour but the unspecified addresses', () => {
  it('TCP and UDP to the unspecified forms are refused as blocks; loopback is reached', async () => {
    const { pair, metrics } = await pairWith(null); // the endpoint's DestinationPolicy.baseline()
    for (const [type, host] of unspecifiedForms) expect(await reaches(pair.socksPort, { type, host, port: sentinel.tcpPort }), host).toBe(false);
    await waitFor(() => metrics.blocks.tcp >= unspecifiedForms.length, 5000, 'every TCP block counted');
    for (const [i, [type, host]] of unspecifiedForms.entries()) {
      sendUdp(await associate(pair), type, host, sentinel.udpPort, host);
      await waitFor(() => metrics.blocks.udp > i, 5000, `the UDP flow to ${host} blocked`);
    }
    await sleep(200);
    expect(metrics.blocks).toEqual({ tcp: unspecifiedForms.length, udp: unspecifiedForms.length });
    expect(sentinel.seen).toEqual([]);
    expect(metrics.dialFails).toEqual([]);
    // loopback as upstream: reached, TCP and UDP
    expect(await reaches(pair.socksPort, { type: 'ipv4', host: LOOPBACK, port: sentinel.tcpPort })).toBe(true);
    expect(await reaches(pair.socksPort, { type: 'domain', host: '127.1', port: sentinel.tcpPort })).toBe(true);
    sendUdp(await associate(pair), 'ipv4', LOOPBACK, sentinel.udpPort, 'allowed');
    await waitFor(() => sentinel.seen.includes(`udp ${LOOPBACK} allowed`), 3000, 'the allowed datagram');
  });

  it('a DNS name answering 0.0.0.0 (--dialWithDNS) is refused by the dialer: the same close and line, counted as a dial failure', async () => {
    const dialer = createDialer({ dns: { kind: 'udp', host: LOOPBACK, port: dns.port }, dnsPrefer: 'A', socks5: null });
    started.push({ close: async () => dialer.close() });
    const { pair, metrics } = await pairWith(null, { dialer });
    expect(await reaches(pair.socksPort, { type: 'domain', host: 'zero.test', port: sentinel.tcpPort })).toBe(false);
    const u = await associate(pair);
    sendUdp(u, 'domain', 'zero.test', sentinel.udpPort, 'zero.test');
    await waitFor(() => metrics.dialFails.length >= 2, 5000, 'two refused dials');
    expect(metrics.dialFails).toEqual([ErrorCodes.BLOCKED, ErrorCodes.BLOCKED]);
    expect(sentinel.seen).toEqual([]);
    const line = pair.serverLog.find((l) => l['code'] === ErrorCodes.BLOCKED);
    expect(String(line?.['error'])).toMatch(/destination blocked by local:unspecified \(0\.0\.0\.0\)$/);
  });
});

describe('the dialer (socket layer): a name that resolves to an unspecified address is never connected', () => {
  it('default dialer (net.connect with the system resolver) and UDP', async () => {
    const d = new Dialer();
    // `0` is a name to Node (net.isIP says no): getaddrinfo makes it 0.0.0.0, which the kernel dials as 127.0.0.1
    const e = await d.connectTcp({ host: '0', port: sentinel.tcpPort }, { timeoutMs: 2000 }).catch((x) => x);
    expect(e.code).toBe(ErrorCodes.BLOCKED);
    expect(e.message).toMatch(/destination blocked by local:unspecified \(0\.0\.0\.0\)$/);
    const u = await d.dialUdp({ host: '0x0', port: sentinel.udpPort }, { timeoutMs: 2000 }).catch((x) => x);
    expect(u.code).toBe(ErrorCodes.BLOCKED);
    // a name that resolves elsewhere is dialled as before
    const ok = await d.connectTcp({ host: 'localhost', port: sentinel.tcpPort }, { timeoutMs: 2000 });
    ok.destroy();
    await waitFor(() => sentinel.seen.length === 1, 3000, 'the localhost connection');
    expect(sentinel.seen[0]).toMatch(/^tcp /);
  });

  it('the SOCKS5 proxy itself may be at any address the operator wrote', async () => {
    const proxy = await startSocksv5(false);
    started.push(proxy);
    const d = new Dialer({ socks5: { host: '127.1', port: proxy.port, tcpTimeoutSeconds: 0, udpTimeoutSeconds: 0 } });
    const s = await d.connectTcp({ host: LOOPBACK, port: sentinel.tcpPort }, { timeoutMs: 3000 });
    s.destroy();
    expect(proxy.seen.map((x) => x.dst)).toEqual([`${LOOPBACK}:${sentinel.tcpPort}`]);
  });
});

describe('--dialWithSocks5 with --blockLocal: the proxy is handed the checked address, never a local one', () => {
  it('names are resolved here; local ones never reach the proxy; allowed ones reach it as their IP', async () => {
    const proxy = await startSocksv5(false);
    started.push(proxy);
    const dialer = new Dialer({ socks5: { host: LOOPBACK, port: proxy.port, tcpTimeoutSeconds: 0, udpTimeoutSeconds: 0 } });
    const table: Record<string, string> = { 'loop.test': LOOPBACK, 'public.test': '198.51.100.9' };
    const { policy } = await blockLocal({ resolve: async (h) => (table[h] ? [table[h]!] : Promise.reject(new Error(`ENOTFOUND ${h}`))) });
    const { pair, metrics } = await pairWith(policy, { dialer });
    for (const host of ['loop.test', 'localhost', '127.1', '0']) expect(await reaches(pair.socksPort, { type: 'domain', host, port: 80 }), host).toBe(false);
    await waitFor(() => metrics.blocks.tcp >= 4, 5000, 'four blocks');
    expect(proxy.seen).toEqual([]);
    void reaches(pair.socksPort, { type: 'domain', host: 'public.test', port: 80 });
    await waitFor(() => proxy.seen.length >= 1, 5000, 'the allowed name at the proxy');
    expect(proxy.seen.map((x) => x.dst)).toEqual(['198.51.100.9:80']);
    // without --blockLocal (and no list) the name goes to the proxy unresolved, as upstream
    const { pair: plain } = await pairWith(null, { dialer });
    void reaches(plain.socksPort, { type: 'domain', host: 'public.test', port: 81 });
    await waitFor(() => proxy.seen.length >= 2, 5000, 'the name at the proxy');
    expect(proxy.seen[1]!.dst).toBe('public.test:81');
  });
});
