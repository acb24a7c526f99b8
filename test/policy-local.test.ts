/**
 * Issue 22 item 2, the pure parts and the policy: the numeric IPv4 forms checked against what
 * the system's getaddrinfo (dns.lookup, as net.connect uses it) makes of them, the IPv4 inside
 * IPv6 forms, the local rules (always: unspecified; --blockLocal: the rest), the host's
 * addresses read at start and re-read, and DestinationPolicy.evaluate with every form.
 * Real sockets: test/e2e-block-local.test.ts.
 */
import { lookup } from 'node:dns/promises';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import type { LogEntry } from '../src/log.js';
import { ipKey } from '../src/policy/cidr.js';
import { embeddedIPv4, formatIPv4, parseInetAton } from '../src/policy/ipforms.js';
import { LocalRules } from '../src/policy/local.js';
import { DestinationPolicy, type DestinationPolicyOptions } from '../src/policy/policy.js';
import { makeAddress, type Address } from '../src/protocol/address.js';

const open: { close(): void }[] = [];
afterEach(() => {
  for (const p of open.splice(0)) p.close();
});

const key = (ip: string) => {
  const k = ipKey(ip);
  if (!k) throw new Error(`not an IP: ${ip}`);
  return k;
};
const domain = (host: string, port = 80): Address => ({ type: 'domain', host, port });

let seed = 0x1d872b41;
const rnd = (n: number) => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) % n;
};

/** `v` written as getaddrinfo reads it: `parts` parts, each in a random base, case and zero padding. */
function encode(v: number, parts: number): string {
  const bytes = [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255];
  const values = [...bytes.slice(0, parts - 1), bytes.slice(parts - 1).reduce((a, b) => a * 256 + b, 0)];
  return values
    .map((x) => {
      const pad = '0'.repeat(rnd(3));
      switch (rnd(3)) {
        case 0:
          return String(x);
        case 1:
          return `0${pad}${x.toString(8)}`;
        default:
          return `0${rnd(2) ? 'x' : 'X'}${pad}${rnd(2) ? x.toString(16) : x.toString(16).toUpperCase()}`;
      }
    })
    .join('.');
}

describe('parseInetAton: the IPv4 forms getaddrinfo reads', () => {
  it('reads the forms of the issue as the system does', () => {
    const cases: [string, string][] = [
      ['127.1', '127.0.0.1'],
      ['0x7f.1', '127.0.0.1'],
      ['0x7f000001', '127.0.0.1'],
      ['2130706433', '127.0.0.1'],
      ['0177.0.0.1', '127.0.0.1'],
      ['127.0.1', '127.0.0.1'],
      ['127.000.000.001', '127.0.0.1'],
      ['0X7F.1', '127.0.0.1'],
      ['0', '0.0.0.0'],
      ['0x0', '0.0.0.0'],
      ['00', '0.0.0.0'],
      ['0.0', '0.0.0.0'],
      ['169.254.43518', '169.254.169.254'],
      ['4294967295', '255.255.255.255'],
      ['1.2.3.4', '1.2.3.4'],
      ['0x1.0x100', '1.0.1.0'],
    ];
    for (const [text, ip] of cases) expect(formatIPv4(parseInetAton(text) ?? -1), text).toBe(ip);
  });

  it('refuses what is not a number form (it would be a DNS name)', () => {
    const bad = ['', 'localhost', '1password.com', '0x', '08', '09.1', '1..2', '1.2.3.', '127.0.0.1.', '.1', '1.2.3.4.5', '256.1.1.1', '1.256.1.1', '1.2.65536', '1.16777216', '4294967296', '0x100000000', '0x1.0x1000000', ' 1.2.3.4', '1.2.3.4 ', '+1', '-1', '1e3', '0x7g', '1.2.3.4\n', '0' + '0'.repeat(80), '\u0661\u0662\u0667.0.0.1', '１２７.0.0.1', '1.'.repeat(127) + '1', '0x' + 'f'.repeat(250)];
    for (const b of bad) expect(parseInetAton(b), JSON.stringify(b)).toBeNull();
  });

  it('agrees with dns.lookup (libuv getaddrinfo, what net.connect uses) on 300 random forms', async () => {
    const pending: Promise<void>[] = [];
    for (let i = 0; i < 300; i++) {
      const special = [0x7f000001, 0, 0xa9fea9fe, 0x7fffffff][i % 8];
      const v = special ?? ((rnd(0x10000) << 16) | rnd(0x10000)) >>> 0;
      const text = encode(v, 1 + rnd(4));
      const expected = formatIPv4(v);
      expect(parseInetAton(text) === null ? null : formatIPv4(parseInetAton(text)!), text).toBe(expected);
      pending.push(lookup(text, { family: 4 }).then((a) => expect(a.address, text).toBe(expected)));
    }
    await Promise.all(pending);
  });

  it('what it refuses, dns.lookup does not read as an address either', async () => {
    for (const b of ['0x', '08', '1..2', '127.0.0.1.', '1.2.3.4.5', '1.2.65536', '4294967296', '0x100000000', ' 127.0.0.1', '127.0.0.1 ']) {
      const r = await lookup(b, { family: 4 }).then(
        (a) => a.address,
        (e: NodeJS.ErrnoException) => e.code,
      );
      expect(['ENOTFOUND', 'EAI_AGAIN', 'ENODATA', 'EAI_NONAME'], `${JSON.stringify(b)} -> ${r}`).toContain(r);
    }
  });
});

describe('embeddedIPv4', () => {
  it('finds the IPv4 in compat, SIIT, NAT64, 6to4 and Teredo addresses, nowhere else', () => {
    const cases: [string, string | null, string | null][] = [
      ['::127.0.0.1', '127.0.0.1', 'compat'],
      ['::ffff:0:127.0.0.1', '127.0.0.1', 'siit'],
      ['64:ff9b::127.0.0.1', '127.0.0.1', 'nat64'],
      ['64:ff9b::a9fe:a9fe', '169.254.169.254', 'nat64'],
      ['2002:7f00:1::', '127.0.0.1', '6to4'],
      ['2002:c000:202:1::5', '192.0.2.2', '6to4'],
      // Teredo: server 65.54.227.120, client 127.0.0.1 stored inverted
      ['2001:0:4136:e378:8000:63bf:80ff:fffe', '127.0.0.1', 'teredo'],
      ['::', null, null],
      ['::1', null, null],
      ['2001:db8::1', null, null],
      ['64:ff9b:1::7f00:1', null, null],
      ['fe80::1', null, null],
    ];
    for (const [ip, v4, via] of cases) {
      const e = embeddedIPv4(key(ip));
      expect(e ? [formatIPv4(e.v4), e.via] : [null, null], ip).toEqual([v4, via]);
    }
  });
});

function rules(o: Partial<ConstructorParameters<typeof LocalRules>[0]> = {}): LocalRules {
  const r = new LocalRules({ blockLocal: true, interfaces: () => ({}), ...o });
  open.push(r);
  return r;
}

describe('LocalRules', () => {
  const ruleOf = (r: LocalRules, ip: string) => r.match(key(ip));

  it('always: the unspecified addresses in every form, nothing else', () => {
    const r = rules({ blockLocal: false });
    for (const ip of ['0.0.0.0', '0.1.2.3', '0.255.255.255', '::', '::ffff:0.0.0.0', '::ffff:0:0', '0:0:0:0:0:ffff:0.0.0.7']) {
      expect(ruleOf(r, ip), ip).toEqual({ rule: 'local:unspecified' });
    }
    for (const ip of ['127.0.0.1', '::1', '169.254.169.254', 'fe80::1', '1.0.0.0', '::2', '64:ff9b::0.0.0.0']) expect(ruleOf(r, ip), ip).toBeNull();
    expect(r.matchName('localhost')).toBeNull();
  });

  it('--blockLocal: each kind, with its rule; the IPv4 inside IPv6 named', () => {
    const r = rules({ interfaces: () => ({ eth0: [iface('IPv4', '203.0.113.5'), iface('IPv6', '2001:db8::5'), iface('IPv6', 'fe80::5%eth0')] }) });
    const cases: [string, string, string?][] = [
      ['0.0.0.0', 'local:unspecified'],
      ['127.0.0.1', 'local:loopback'],
      ['127.255.255.254', 'local:loopback'],
      ['::1', 'local:loopback'],
      ['::ffff:127.0.0.1', 'local:loopback'],
      ['169.254.169.254', 'local:metadata'],
      ['100.100.100.200', 'local:metadata'],
      ['fd00:ec2::254', 'local:metadata'],
      ['169.254.1.1', 'local:link-local'],
      ['fe80::1', 'local:link-local'],
      ['febf::1', 'local:link-local'],
      ['224.0.0.251', 'local:multicast'],
      ['239.255.255.250', 'local:multicast'],
      ['ff02::1', 'local:multicast'],
      ['255.255.255.255', 'local:broadcast'],
      ['203.0.113.5', 'local:interface'],
      ['::ffff:203.0.113.5', 'local:interface'],
      ['2001:db8::5', 'local:interface'],
      ['::127.0.0.1', 'local:loopback', '127.0.0.1'],
      ['::ffff:0:7f00:1', 'local:loopback', '127.0.0.1'],
      ['64:ff9b::7f00:1', 'local:loopback', '127.0.0.1'],
      ['64:ff9b::a9fe:a9fe', 'local:metadata', '169.254.169.254'],
      ['64:ff9b::cb00:7105', 'local:interface', '203.0.113.5'],
      ['2002:7f00:1::1', 'local:loopback', '127.0.0.1'],
      ['2001:0:4136:e378:8000:63bf:80ff:fffe', 'local:loopback', '127.0.0.1'],
      ['::2', 'local:unspecified', '0.0.0.2'],
    ];
    for (const [ip, rule, inner] of cases) expect(ruleOf(r, ip), ip).toEqual(inner ? { rule, ip: inner } : { rule });
    for (const ip of ['8.8.8.8', '10.0.0.1', '192.168.1.1', '203.0.113.6', '2001:db8::6', 'fec0::1', 'fc00::1', '64:ff9b::808:808', '2002:808:808::1', '100.64.0.1', '1.0.0.0']) {
      expect(ruleOf(r, ip), ip).toBeNull();
    }
    for (const n of ['localhost', 'LOCALHOST.', 'a.b.localhost', 'x.Localhost']) expect(r.matchName(n), n).toEqual({ rule: 'local:localhost' });
    for (const n of ['localhost.example', 'notlocalhost', 'localhostx']) expect(r.matchName(n), n).toBeNull();
  });

  it("blocks every address this machine's interfaces have (os.networkInterfaces)", () => {
    const r = rules({ interfaces: undefined });
    const all = Object.values(networkInterfaces()).flatMap((l) => l ?? []);
    expect(all.length).toBeGreaterThan(0);
    for (const a of all) expect(ruleOf(r, a.address), a.address).not.toBeNull();
  });

  it('re-reads the interfaces on its interval; a failed read keeps the last ones and says so', async () => {
    let list: ReturnType<typeof networkInterfaces> = { eth0: [iface('IPv4', '198.51.100.1')] };
    let fail = false;
    const lines: LogEntry[] = [];
    const r = rules({
      refreshMs: 20,
      log: (e) => lines.push(e),
      interfaces: () => {
        if (fail) throw new Error('uv_interface_addresses failed');
        return list;
      },
    });
    expect(ruleOf(r, '198.51.100.1')).toEqual({ rule: 'local:interface' });
    list = { eth0: [iface('IPv4', '198.51.100.2')] };
    await waitUntil(() => ruleOf(r, '198.51.100.2') !== null);
    expect(ruleOf(r, '198.51.100.1')).toBeNull();
    fail = true;
    await waitUntil(() => lines.length > 0);
    expect(lines[0]).toMatchObject({ msg: 'reading the interface addresses failed, keeping the last ones', addresses: 1 });
    expect(ruleOf(r, '198.51.100.2')).toEqual({ rule: 'local:interface' });
    r.close();
    const n = lines.length;
    await new Promise((res) => setTimeout(res, 80));
    expect(lines.length).toBe(n); // no read after close
  });

  it('a failed read at start is a start error', () => {
    expect(
      () =>
        new LocalRules({
          blockLocal: true,
          interfaces: () => {
            throw new Error('no netlink');
          },
        }),
    ).toThrow(/--blockLocal: cannot read the interface addresses: no netlink/);
  });
});

function iface(family: 'IPv4' | 'IPv6', address: string) {
  const base = { address, netmask: '', mac: '00:00:00:00:00:00', internal: false, cidr: null };
  return family === 'IPv4' ? { ...base, family } : { ...base, family, scopeid: 0 };
}

async function waitUntil(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 5));
  }
}

async function load(o: DestinationPolicyOptions): Promise<DestinationPolicy> {
  const p = await DestinationPolicy.load({ interfaces: () => ({ eth0: [iface('IPv4', '203.0.113.5')] }), ...o });
  if (!p) throw new Error('no policy');
  open.push(p);
  return p;
}

describe('DestinationPolicy and the local rules', () => {
  const noResolve = async (): Promise<string[]> => {
    throw new Error('must not resolve');
  };

  it('baseline (no option): the unspecified forms refused, loopback allowed, nothing resolved, names dialled as given', async () => {
    const p = DestinationPolicy.baseline();
    expect(DestinationPolicy.isConfigured({})).toBe(false);
    for (const d of [makeAddress('0.0.0.0', 80), makeAddress('::', 80), makeAddress('::ffff:0.0.0.0', 80), domain('0'), domain('0x0'), domain('0.0'), domain('0.0.0.0'), domain('[::]'), domain('::ffff:0:0')]) {
      expect(await p.evaluate(d), d.host).toMatchObject({ blocked: true, rule: 'local:unspecified' });
    }
    expect(await p.evaluate(domain('0'))).toEqual({ blocked: true, rule: 'local:unspecified', ip: '0.0.0.0' });
    for (const d of [makeAddress('127.0.0.1', 80), makeAddress('::1', 80), domain('localhost'), domain('example.com'), domain('1password.com')]) {
      expect(await p.evaluate(d), d.host).toEqual({ blocked: false });
    }
    // a number form that is not unspecified goes to the dialer as given (upstream's behaviour)
    expect(await p.evaluate(domain('127.1'))).toEqual({ blocked: false });
    expect(p.sizes()).toEqual({ domains: 0, cidr4: 0, cidr6: 0, geoip: [] });
  });

  it('--blockLocal: IP destinations, number forms, localhost names; a number form is dialled at the IPv4 checked', async () => {
    const p = await load({ blockLocal: true, resolve: noResolve });
    expect(p.sizes()).toEqual({ domains: 0, cidr4: 0, cidr6: 0, geoip: [], local: 1 });
    const cases: [Address, string, string?][] = [
      [makeAddress('127.0.0.1', 80), 'local:loopback'],
      [makeAddress('::1', 80), 'local:loopback'],
      [makeAddress('::ffff:127.0.0.1', 80), 'local:loopback'],
      [makeAddress('64:ff9b::7f00:1', 80), 'local:loopback', '127.0.0.1'],
      [makeAddress('169.254.169.254', 80), 'local:metadata'],
      [makeAddress('203.0.113.5', 80), 'local:interface'],
      [domain('127.1'), 'local:loopback', '127.0.0.1'],
      [domain('0x7f.1'), 'local:loopback', '127.0.0.1'],
      [domain('0x7f000001'), 'local:loopback', '127.0.0.1'],
      [domain('2130706433'), 'local:loopback', '127.0.0.1'],
      [domain('0177.0.0.1'), 'local:loopback', '127.0.0.1'],
      [domain('169.254.43518'), 'local:metadata', '169.254.169.254'],
      [domain('[::1]'), 'local:loopback'],
      [domain('fe80::1%eth0'), 'local:link-local'],
      [domain('localhost'), 'local:localhost'],
      [domain('Foo.LocalHost.'), 'local:localhost'],
    ];
    for (const [d, rule, ip] of cases) expect(await p.evaluate(d), d.host).toEqual(ip ? { blocked: true, rule, ip } : { blocked: true, rule });
    expect(await p.evaluate(domain('134744072'))).toEqual({ blocked: false, ips: ['8.8.8.8'] });
    expect(await p.evaluate(makeAddress('8.8.8.8', 53))).toEqual({ blocked: false });
  });

  it('--blockLocal: a name is resolved; any local answer refuses it; an allowed one is dialled at the addresses checked', async () => {
    const table: Record<string, string[]> = {
      'rebind.test': ['127.0.0.1'],
      'mixed.test': ['198.51.100.7', '127.0.0.1'],
      'v6.test': ['2001:db8::7', '::1'],
      'zero.test': ['0.0.0.0'],
      'meta.test': ['169.254.169.254'],
      'nat64.test': ['64:ff9b::7f00:1'],
      'self.test': ['203.0.113.5'],
      'fine.test': ['198.51.100.8', '2001:db8::8'],
    };
    const p = await load({ blockLocal: true, resolve: async (h) => table[h] ?? Promise.reject(Object.assign(new Error(`ENOTFOUND ${h}`), { code: 'ENOTFOUND' })) });
    expect(await p.evaluate(domain('rebind.test'))).toEqual({ blocked: true, rule: 'local:loopback', ip: '127.0.0.1' });
    expect(await p.evaluate(domain('mixed.test'))).toEqual({ blocked: true, rule: 'local:loopback', ip: '127.0.0.1' });
    expect(await p.evaluate(domain('v6.test'))).toEqual({ blocked: true, rule: 'local:loopback', ip: '::1' });
    expect(await p.evaluate(domain('zero.test'))).toEqual({ blocked: true, rule: 'local:unspecified', ip: '0.0.0.0' });
    expect(await p.evaluate(domain('meta.test'))).toEqual({ blocked: true, rule: 'local:metadata', ip: '169.254.169.254' });
    expect(await p.evaluate(domain('nat64.test'))).toEqual({ blocked: true, rule: 'local:loopback', ip: '64:ff9b::7f00:1' });
    expect(await p.evaluate(domain('self.test'))).toEqual({ blocked: true, rule: 'local:interface', ip: '203.0.113.5' });
    expect(await p.evaluate(domain('fine.test'))).toEqual({ blocked: false, ips: ['198.51.100.8', '2001:db8::8'] });
    expect((await p.evaluate(domain('nx.test')).catch((e) => e)).code).toBe(ErrorCodes.DNS_FAILED);
  });

  it('lists without --blockLocal: a name resolving to an unspecified address is refused (the lists alone missed 0.0.0.0)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'brook-local-'));
    try {
      await writeFile(join(dir, 'c4'), '127.0.0.0/8\n');
      await writeFile(join(dir, 'c6'), '::1/128\n');
      await writeFile(join(dir, 'd'), 'localhost\n');
      const q = await load({ blockCIDR4List: join(dir, 'c4'), blockCIDR6List: join(dir, 'c6'), blockDomainList: join(dir, 'd'), resolve: async () => ['0.0.0.0'] });
      // the list: each of these reached the loopback services before
      expect(await q.evaluate(makeAddress('0.0.0.0', 80))).toEqual({ blocked: true, rule: 'local:unspecified' });
      expect(await q.evaluate(makeAddress('::', 80))).toEqual({ blocked: true, rule: 'local:unspecified' });
      expect(await q.evaluate(makeAddress('::ffff:0.0.0.0', 80))).toEqual({ blocked: true, rule: 'local:unspecified' });
      expect(await q.evaluate(domain('0'))).toEqual({ blocked: true, rule: 'local:unspecified', ip: '0.0.0.0' });
      expect(await q.evaluate(domain('pihole-blocked.test'))).toEqual({ blocked: true, rule: 'local:unspecified', ip: '0.0.0.0' });
      // and the lists see the number forms as the addresses they are
      expect(await q.evaluate(domain('127.1'))).toEqual({ blocked: true, rule: 'cidr4:127.0.0.0/8', ip: '127.0.0.1' });
      expect(await q.evaluate(domain('localhost'))).toEqual({ blocked: true, rule: 'domain:localhost' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('--blockLocal alone is a configuration: loaded, logged with the address count, closed with its timer', async () => {
    const lines: LogEntry[] = [];
    const p = await load({ blockLocal: true, log: (e) => lines.push(e) });
    expect(lines).toEqual([{ msg: 'block lists loaded', domains: 0, cidr4: 0, cidr6: 0, geoip: [], local: 1, updateInterval: 0 }]);
    p.close();
    expect(await p.check(makeAddress('127.0.0.1', 1))).toEqual({ rule: 'local:loopback' }); // still answers after close
  });

  it('a start failure of --blockLocal fails the load', async () => {
    const e = await DestinationPolicy.load({
      blockLocal: true,
      interfaces: () => {
        throw new Error('EPERM');
      },
    }).catch((x) => x);
    expect(e.code).toBe(ErrorCodes.INTERNAL);
    expect(e.message).toMatch(/^--blockLocal: cannot read the interface addresses/);
  });
});
