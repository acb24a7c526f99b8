/**
 * --dialWithDNS: the resolver against DNS and DoH servers the test runs on
 * loopback, answering for made-up names (under .invalid, RFC 2606: no system
 * resolver can know them), so every answer provably came from ours.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, isBrookError } from '../src/errors.js';
import { directTransport } from '../src/dial/direct.js';
import { parseDialWithDNS } from '../src/dial/options.js';
import { Resolver, type ResolverOptions } from '../src/dial/resolver.js';
import { type DnsServer, type DohServer, makeCert, startDnsServer, startDohServer, type TestCert, type Zone } from './helpers/dial-dns.js';

const ZONE: Zone = {
  'both.brook-ts.invalid': { A: ['127.0.0.7'], AAAA: ['::7'], ttl: 60 },
  'v4only.brook-ts.invalid': { A: ['127.0.0.8'], ttl: 60 },
  'v6only.brook-ts.invalid': { AAAA: ['::8'], ttl: 60 },
  'alias.brook-ts.invalid': { cname: 'both.brook-ts.invalid', ttl: 30 },
  'big.brook-ts.invalid': { A: ['127.0.0.9'], ttl: 60 },
  'short.brook-ts.invalid': { A: ['127.0.0.10'], ttl: 5 },
};

function udpResolver(port: number, extra: Partial<ResolverOptions> = {}): Resolver {
  return new Resolver({ server: parseDialWithDNS(`127.0.0.1:${port}`), transport: directTransport({}), ...extra });
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return isBrookError(e) ? e.code : `not a BrookError: ${String(e)}`;
  }
  return 'resolved';
}

describe('resolver over UDP/TCP', () => {
  let dns: DnsServer;
  beforeAll(async () => {
    dns = await startDnsServer(ZONE, { truncateUdp: new Set(['big.brook-ts.invalid']) });
  });
  afterAll(async () => {
    await dns.close();
  });

  it('answers from our server, A preferred by default', async () => {
    const r = udpResolver(dns.port);
    expect(await r.lookup('both.brook-ts.invalid')).toEqual({ address: '127.0.0.7', family: 4 });
    expect(dns.queries.some((q) => q.name === 'both.brook-ts.invalid' && q.type === 'A' && q.transport === 'udp')).toBe(true);
    r.close();
  });

  it('AAAA preferred when asked; falls back to the other type when the first has none', async () => {
    const r = udpResolver(dns.port, { prefer: 'AAAA' });
    expect(await r.lookup('both.brook-ts.invalid')).toEqual({ address: '::7', family: 6 });
    expect(await r.lookup('v4only.brook-ts.invalid')).toEqual({ address: '127.0.0.8', family: 4 });
    const a = udpResolver(dns.port, { prefer: 'A' });
    expect(await a.lookup('v6only.brook-ts.invalid')).toEqual({ address: '::8', family: 6 });
    r.close();
    a.close();
  });

  it('follows a CNAME inside the answer', async () => {
    const r = udpResolver(dns.port);
    expect((await r.lookup('ALIAS.brook-ts.invalid.')).address).toBe('127.0.0.7');
    r.close();
  });

  it('retries over TCP when the UDP answer is truncated', async () => {
    const r = udpResolver(dns.port);
    expect((await r.lookup('big.brook-ts.invalid')).address).toBe('127.0.0.9');
    const forBig = dns.queries.filter((q) => q.name === 'big.brook-ts.invalid' && q.type === 'A').map((q) => q.transport);
    expect(forBig).toEqual(['udp', 'tcp']);
    expect(r.stats.tcpRetries).toBe(1);
    r.close();
  });

  it('an unknown name is DNS_FAILED (NXDOMAIN ends the lookup, cached briefly)', async () => {
    let now = 1_000_000;
    const r = udpResolver(dns.port, { now: () => now });
    const before = dns.queries.length;
    expect(await code(r.lookup('nothing.brook-ts.invalid'))).toBe(ErrorCodes.DNS_FAILED);
    expect(dns.queries.length - before).toBe(1); // A only: NXDOMAIN means no AAAA either
    expect(await code(r.lookup('nothing.brook-ts.invalid'))).toBe(ErrorCodes.DNS_FAILED);
    expect(dns.queries.length - before).toBe(1); // negative answer cached
    now += 11_000; // SOA minimum 10 s
    expect(await code(r.lookup('nothing.brook-ts.invalid'))).toBe(ErrorCodes.DNS_FAILED);
    expect(dns.queries.length - before).toBe(2);
    r.close();
  });

  it('caches for the TTL (clock injected): a hit asks nothing, expiry asks again', async () => {
    let now = 5_000_000;
    const r = udpResolver(dns.port, { now: () => now });
    const count = () => dns.queries.filter((q) => q.name === 'short.brook-ts.invalid').length;
    const before = count();
    await r.lookup('short.brook-ts.invalid');
    await r.lookup('short.brook-ts.invalid');
    now += 4_000;
    await r.lookup('short.brook-ts.invalid');
    expect(count() - before).toBe(1);
    expect(r.stats.cacheHits).toBe(2);
    now += 2_000; // past the 5 s TTL
    await r.lookup('short.brook-ts.invalid');
    expect(count() - before).toBe(2);
    r.close();
  });

  it('a bounded cache: the least recently used entry goes first', async () => {
    const r = udpResolver(dns.port, { cacheEntries: 2 });
    const count = (n: string) => dns.queries.filter((q) => q.name === n).length;
    await r.lookup('both.brook-ts.invalid');
    await r.lookup('v4only.brook-ts.invalid');
    await r.lookup('both.brook-ts.invalid'); // hit, now most recent
    await r.lookup('short.brook-ts.invalid'); // evicts v4only
    const b = count('both.brook-ts.invalid');
    const v = count('v4only.brook-ts.invalid');
    await r.lookup('both.brook-ts.invalid');
    await r.lookup('v4only.brook-ts.invalid');
    expect(count('both.brook-ts.invalid')).toBe(b);
    expect(count('v4only.brook-ts.invalid')).toBe(v + 1);
    r.close();
  });

  it('concurrent identical lookups share one query', async () => {
    const slow = await startDnsServer(ZONE, { delayMs: 100 });
    try {
      const r = udpResolver(slow.port);
      const all = await Promise.all(Array.from({ length: 20 }, () => r.lookup('both.brook-ts.invalid')));
      expect(new Set(all.map((a) => a.address))).toEqual(new Set(['127.0.0.7']));
      expect(slow.queries.length).toBe(1);
      r.close();
    } finally {
      await slow.close();
    }
  });

  it('ignores a reply with the wrong id and retries a lost query', async () => {
    const odd = await startDnsServer(ZONE, { spoofWrongId: true, dropUdp: 1 });
    try {
      const r = udpResolver(odd.port, { udpTryTimeoutMs: 300 });
      expect((await r.lookup('both.brook-ts.invalid')).address).toBe('127.0.0.7');
      expect(odd.queries.length).toBe(2);
      expect(odd.queries[0]!.id).not.toBe(odd.queries[1]!.id);
      r.close();
    } finally {
      await odd.close();
    }
  });

  it('times out (TIMEOUT) when the server never answers, after its tries', async () => {
    const mute = await startDnsServer(ZONE, { dropUdp: 100 });
    try {
      const r = udpResolver(mute.port, { udpTryTimeoutMs: 150, udpTries: 2 });
      expect(await code(r.lookup('both.brook-ts.invalid'))).toBe(ErrorCodes.TIMEOUT);
      expect(mute.queries.length).toBe(2);
      r.close();
    } finally {
      await mute.close();
    }
  });

  it('refuses what is not a domain name before sending anything', async () => {
    const r = udpResolver(dns.port);
    const before = dns.queries.length;
    expect(await code(r.lookup('a..b'))).toBe(ErrorCodes.DNS_FAILED);
    expect(await code(r.lookup('x'.repeat(64) + '.invalid'))).toBe(ErrorCodes.DNS_FAILED);
    expect(await code(r.lookup('bad name.invalid'))).toBe(ErrorCodes.DNS_FAILED);
    expect(dns.queries.length).toBe(before);
    expect(await r.lookup('::1')).toEqual({ address: '::1', family: 6 });
    r.close();
  });
});

describe('resolver over DoH', () => {
  let cert: TestCert;
  let doh: DohServer;
  beforeAll(async () => {
    cert = await makeCert('dns.brook-ts.invalid');
    doh = await startDohServer(ZONE, cert);
  });
  afterAll(async () => {
    await doh.close();
  });

  const url = () => `https://dns.brook-ts.invalid/dns-query?address=127.0.0.1%3A${doh.port}`;

  for (const method of ['POST', 'GET'] as const) {
    it(`${method}: connects to address, SNI and Host from the URL, answer from ours`, async () => {
      const r = new Resolver({ server: parseDialWithDNS(url()), transport: directTransport({}), ca: cert.cert, dohMethod: method });
      const before = doh.requests.length;
      expect(await r.lookup('both.brook-ts.invalid')).toEqual({ address: '127.0.0.7', family: 4 });
      const req = doh.requests[before]!;
      expect(req.method).toBe(method);
      expect(req.host).toBe('dns.brook-ts.invalid');
      expect(req.sni).toBe('dns.brook-ts.invalid');
      expect(req.path.startsWith('/dns-query')).toBe(true);
      expect(req.path).not.toContain('address');
      expect(doh.queries.at(-1)).toMatchObject({ transport: 'doh', name: 'both.brook-ts.invalid', type: 'A', id: 0 });
      r.close();
    });
  }

  it('AAAA preferred when asked', async () => {
    const r = new Resolver({ server: parseDialWithDNS(url()), prefer: 'AAAA', transport: directTransport({}), ca: cert.cert });
    expect(await r.lookup('both.brook-ts.invalid')).toEqual({ address: '::7', family: 6 });
    r.close();
  });

  it('an untrusted certificate fails (no CA given): DNS_FAILED, nothing resolved', async () => {
    const r = new Resolver({ server: parseDialWithDNS(url()), transport: directTransport({}) });
    expect(await code(r.lookup('both.brook-ts.invalid'))).toBe(ErrorCodes.DNS_FAILED);
    r.close();
  });

  it('a certificate for another name fails', async () => {
    const other = `https://other.brook-ts.invalid/dns-query?address=127.0.0.1%3A${doh.port}`;
    const r = new Resolver({ server: parseDialWithDNS(other), transport: directTransport({}), ca: cert.cert });
    expect(await code(r.lookup('both.brook-ts.invalid'))).toBe(ErrorCodes.DNS_FAILED);
    r.close();
  });
});
