/** Domain suffix sets and CIDR sets: semantics, bad lines with their codes, and the CIDR search against brute force. */
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { CidrSet, formatIpKey, ipKey, parseCidr } from '../src/policy/cidr.js';
import { DomainSet } from '../src/policy/domains.js';
import { listLines } from '../src/policy/lists.js';

describe('DomainSet', () => {
  const set = DomainSet.of(['example.com', 'Ads.Tracker.NET.', 'xn--bcher-kva.example', 'dev']);

  it('matches the entry and its subdomains, on label boundaries only', () => {
    expect(set.match('example.com')).toBe('example.com');
    expect(set.match('a.example.com')).toBe('example.com');
    expect(set.match('a.b.c.example.com')).toBe('example.com');
    expect(set.match('badexample.com')).toBeNull();
    expect(set.match('example.com.evil.org')).toBeNull();
    expect(set.match('example.co')).toBeNull();
    expect(set.match('com')).toBeNull();
  });

  it('is case-insensitive and ignores one trailing dot, on entries and destinations', () => {
    expect(set.match('EXAMPLE.COM')).toBe('example.com');
    expect(set.match('x.Example.Com.')).toBe('example.com');
    expect(set.match('ads.tracker.net')).toBe('ads.tracker.net');
    expect(set.match('tracker.net')).toBeNull();
  });

  it('a one-label entry blocks the whole TLD; punycode entries match', () => {
    expect(set.match('anything.dev')).toBe('dev');
    expect(set.match('shop.xn--bcher-kva.example')).toBe('xn--bcher-kva.example');
  });

  it('an empty set matches nothing', () => {
    expect(DomainSet.of([]).match('example.com')).toBeNull();
  });

  it('bad lines are LIST_INVALID naming the source and line', () => {
    const bad = ['*.example.com', '.example.com', 'exa mple.com', 'a..b', 'http://x.com', 'x.com/path', 'a'.repeat(64) + '.com', '0.0.0.0 ads.com', 'a@b.com'];
    for (const b of bad) {
      const e = (() => {
        try {
          DomainSet.fromLines('/lists/d.txt', listLines(`ok.com\n${b}\n`));
        } catch (x) {
          return x as { code: string; message: string };
        }
        throw new Error(`accepted ${b}`);
      })();
      expect(e.code, b).toBe(ErrorCodes.LIST_INVALID);
      expect(e.message, b).toMatch(/^\/lists\/d\.txt line 2: not a domain/);
    }
  });

  it('says what to write instead of a wildcard', () => {
    expect(() => DomainSet.of(['*.example.com'])).toThrow(/write "example.com"/);
  });
});

describe('ipKey', () => {
  it('treats IPv4-mapped IPv6 as IPv4, keeps other IPv6', () => {
    expect(ipKey('::ffff:10.1.2.3')).toEqual(ipKey('10.1.2.3'));
    expect(ipKey('::ffff:a01:203')?.family).toBe(4);
    expect(ipKey('64:ff9b::10.1.2.3')?.family).toBe(6);
    expect(ipKey('example.com')).toBeNull();
    expect(formatIpKey(ipKey('::ffff:10.1.2.3')!)).toBe('10.1.2.3');
    expect(formatIpKey(ipKey('2001:DB8:0:0::1')!)).toBe('2001:db8::1');
  });
});

describe('parseCidr', () => {
  it('masks a non-canonical network and takes a bare IP as a host route', () => {
    const c = parseCidr('10.1.2.3/8');
    expect(typeof c === 'object' && formatIpKey({ family: 4, words: c.start })).toBe('10.0.0.0');
    expect(parseCidr('192.0.2.7')).toMatchObject({ family: 4, prefix: 32 });
    expect(parseCidr('2001:db8::1')).toMatchObject({ family: 6, prefix: 128 });
    expect(parseCidr('0.0.0.0/0')).toMatchObject({ prefix: 0 });
  });

  it('rejects what is not a CIDR', () => {
    for (const t of ['10.0.0.0/33', '2001:db8::/129', '10.0.0/8', '10.0.0.0/-1', '10.0.0.0/', 'x/8', '010.0.0.0/8', 'fe80::1%eth0/64', '10.0.0.0/8/8']) {
      expect(typeof parseCidr(t), t).toBe('string');
    }
  });
});

describe('CidrSet', () => {
  it('IPv4: matches inside, not outside, most specific entry reported', () => {
    const s = CidrSet.of(4, ['10.0.0.0/8', '10.1.0.0/16', '192.168.1.0/24', '203.0.113.7', '10.1.0.0/16']);
    expect(s.size).toBe(4); // duplicate dropped
    expect(s.match(ipKey('10.200.0.1')!)).toBe('10.0.0.0/8');
    expect(s.match(ipKey('10.1.2.3')!)).toBe('10.1.0.0/16');
    expect(s.match(ipKey('10.255.255.255')!)).toBe('10.0.0.0/8');
    expect(s.match(ipKey('11.0.0.0')!)).toBeNull();
    expect(s.match(ipKey('9.255.255.255')!)).toBeNull();
    expect(s.match(ipKey('192.168.1.255')!)).toBe('192.168.1.0/24');
    expect(s.match(ipKey('192.168.2.0')!)).toBeNull();
    expect(s.match(ipKey('203.0.113.7')!)).toBe('203.0.113.7/32');
    expect(s.match(ipKey('203.0.113.8')!)).toBeNull();
    // an address after a nested entry but inside its parent
    expect(s.match(ipKey('10.2.0.0')!)).toBe('10.0.0.0/8');
  });

  it('IPv4: a mapped IPv6 destination is checked as IPv4', () => {
    const s = CidrSet.of(4, ['10.0.0.0/8']);
    expect(s.match(ipKey('::ffff:10.9.9.9')!)).toBe('10.0.0.0/8');
  });

  it('IPv6: prefixes across word boundaries, /0 and /128', () => {
    const s = CidrSet.of(6, ['2001:db8::/32', '2001:db8:0:1::/64', 'fd00::/8', '2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128']);
    expect(s.match(ipKey('2001:db8::1')!)).toBe('2001:db8::/32');
    expect(s.match(ipKey('2001:db8:0:1:ffff::1')!)).toBe('2001:db8:0:1::/64');
    expect(s.match(ipKey('2001:db8:0:2::1')!)).toBe('2001:db8::/32');
    expect(s.match(ipKey('2001:db9::')!)).toBeNull();
    expect(s.match(ipKey('fdff:ffff::1')!)).toBe('fd00::/8');
    expect(s.match(ipKey('fe00::1')!)).toBeNull();
    expect(s.match(ipKey('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff')!)).toBe('2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128');
    expect(CidrSet.of(6, ['::/0']).match(ipKey('2a00::1')!)).toBe('::/0');
  });

  it('a CIDR of the other family, or a bad line, is LIST_INVALID naming the line', () => {
    const e4 = (() => {
      try {
        CidrSet.fromLines(4, '/l/c4.txt', listLines('10.0.0.0/8\n# x\n2001:db8::/32\n'));
      } catch (x) {
        return x as { code: string; message: string };
      }
    })();
    expect(e4?.code).toBe(ErrorCodes.LIST_INVALID);
    expect(e4?.message).toBe('/l/c4.txt line 3: IPv6 CIDR in the IPv4 list: "2001:db8::/32"');
    expect(() => CidrSet.of(6, ['10.0.0.0/8'])).toThrow(/IPv4 CIDR in the IPv6 list/);
    expect(() => CidrSet.of(4, ['10.0.0.0/33'])).toThrow(/line 1: not a CIDR \(bad prefix length\)/);
  });

  it('agrees with a brute-force scan on random nested IPv4 and IPv6 sets', () => {
    let seed = 7;
    const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0);
    const v4 = (x: number) => `${x >>> 24}.${(x >>> 16) & 255}.${(x >>> 8) & 255}.${x & 255}`;
    const cidrs: string[] = [];
    for (let i = 0; i < 400; i++) cidrs.push(`${v4(rnd() & 0x0fffffff)}/${4 + (rnd() % 29)}`);
    const s = CidrSet.of(4, cidrs);
    const parsed = cidrs.map((c) => parseCidr(c)).filter((c): c is Exclude<typeof c, string> => typeof c !== 'string');
    for (let i = 0; i < 3000; i++) {
      const ip = rnd() & 0x0fffffff;
      const holders = parsed.filter((c) => c.start[0]! <= ip && ip <= c.end[0]!);
      const got = s.match(ipKey(v4(ip))!);
      if (holders.length === 0) expect(got).toBeNull();
      else {
        const best = Math.max(...holders.map((h) => h.prefix));
        expect(got).toMatch(new RegExp(`/${best}$`));
      }
    }
    // IPv6: nested prefixes under one /16
    const six = ['2001:db8::/32', '2001:db8:1::/48', '2001:db8:1:2::/64', '2001:db8:1:2:3::/80', '2001:db8:2::/48'];
    const s6 = CidrSet.of(6, six);
    expect(s6.match(ipKey('2001:db8:1:2:3:4:5:6')!)).toBe('2001:db8:1:2:3::/80');
    expect(s6.match(ipKey('2001:db8:1:2:4::')!)).toBe('2001:db8:1:2::/64');
    expect(s6.match(ipKey('2001:db8:1:3::')!)).toBe('2001:db8:1::/48');
    expect(s6.match(ipKey('2001:db8:3::')!)).toBe('2001:db8::/32');
    expect(s6.match(ipKey('2001:db8:2:ffff::')!)).toBe('2001:db8:2::/48');
  });
});
