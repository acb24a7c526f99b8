/** DestinationPolicy: load from files and a local http URL, the check order, resolver injection, reloads and start errors. */
import { mkdtemp, rename, rm, unlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import type { LogEntry } from '../src/log.js';
import { makeAddress, type Address } from '../src/protocol/address.js';
import { DestinationPolicy, type DestinationPolicyOptions } from '../src/policy/policy.js';

let dir: string;
let server: Server;
let base: string;
let deadPort: number;
/** What the http list server answers at /domains.txt; null: 503. */
let served: string | null = 'served.example\n';
const policies: DestinationPolicy[] = [];

const dst = (host: string, port = 443): Address => makeAddress(host, port);
/** A resolver that answers from a table and refuses anything else (proves it was used). */
const table = (t: Record<string, string[]>) => async (host: string) => {
  const a = t[host];
  if (!a) throw Object.assign(new Error(`queryA ENOTFOUND ${host}`), { code: 'ENOTFOUND' });
  return a;
};

async function load(o: DestinationPolicyOptions): Promise<DestinationPolicy> {
  const p = await DestinationPolicy.load(o);
  if (!p) throw new Error('no policy');
  policies.push(p);
  return p;
}

async function file(name: string, text: string): Promise<string> {
  const f = join(dir, name);
  // write-then-rename, as an operator's update should
  await writeFile(`${f}.tmp`, text);
  await rename(`${f}.tmp`, f);
  return f;
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'brook-policy-'));
  server = createServer((req, res) => {
    if (req.url === '/slow') return; // never answers
    if (req.url === '/domains.txt' && served !== null) {
      res.end(served);
      return;
    }
    res.statusCode = 503;
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  deadPort = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
});

afterEach(() => {
  for (const p of policies.splice(0)) p.close();
  served = 'served.example\n';
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await rm(dir, { recursive: true, force: true });
});

describe('DestinationPolicy.load', () => {
  it('is null when no block option is given (nothing to check on the connect path)', async () => {
    expect(await DestinationPolicy.load({})).toBeNull();
    expect(await DestinationPolicy.load({ blockGeoIP: [], blockListUpdateInterval: 60 })).toBeNull();
  });

  it('reads a domain file, CIDR files and an http URL list, and logs a summary', async () => {
    const lines: LogEntry[] = [];
    const p = await load({
      blockDomainList: await file('d.txt', '# ads\nexample.com\nTracker.Example.NET\n'),
      blockCIDR4List: await file('c4.txt', '10.0.0.0/8\n192.0.2.0/24\n'),
      blockCIDR6List: await file('c6.txt', '2001:db8::/32\n'),
      log: (e) => lines.push(e),
    });
    expect(p.sizes()).toEqual({ domains: 2, cidr4: 2, cidr6: 1, geoip: [] });
    expect(lines).toEqual([{ msg: 'block lists loaded', domains: 2, cidr4: 2, cidr6: 1, geoip: [], updateInterval: 0 }]);
    const q = await load({ blockDomainList: `${base}/domains.txt` });
    expect(await q.check(dst('a.served.example'))).toEqual({ rule: 'domain:served.example' });
  });

  it('start errors: bad CIDR line, unreadable file, unreachable URL, bad values, each one line with its code', async () => {
    const cases: [DestinationPolicyOptions, string, RegExp][] = [
      [{ blockCIDR4List: await file('bad4.txt', '10.0.0.0/8\n10.0.0.0/40\n') }, ErrorCodes.LIST_INVALID, /bad4\.txt line 2: not a CIDR/],
      [{ blockCIDR6List: await file('bad6.txt', '10.0.0.0/8\n') }, ErrorCodes.LIST_INVALID, /line 1: IPv4 CIDR in the IPv6 list/],
      [{ blockDomainList: await file('badd.txt', 'ok.com\n*.ads.com\n') }, ErrorCodes.LIST_INVALID, /line 2: not a domain/],
      [{ blockDomainList: join(dir, 'absent.txt') }, ErrorCodes.LIST_UNREACHABLE, /cannot read .*absent\.txt/],
      [{ blockCIDR4List: `http://127.0.0.1:${deadPort}/c4.txt` }, ErrorCodes.LIST_UNREACHABLE, /ECONNREFUSED/],
      [{ blockDomainList: `${base}/gone.txt` }, ErrorCodes.LIST_UNREACHABLE, /HTTP 503/],
      [{ blockGeoIP: ['USA'] }, ErrorCodes.CONFIG, /two-letter country code/],
      [{ blockDomainList: await file('ok.txt', 'a.com\n'), blockListUpdateInterval: 1.5 }, ErrorCodes.CONFIG, /whole seconds/],
      [{ blockGeoIP: ['US'], geoipDatabase: join(dir, 'no.mmdb') }, ErrorCodes.GEOIP_UNAVAILABLE, /cannot load GeoIP database/],
    ];
    for (const [o, code, re] of cases) {
      const e = await DestinationPolicy.load(o).then(
        (p) => {
          p?.close();
          throw new Error(`loaded ${JSON.stringify(o)}`);
        },
        (x) => x,
      );
      expect(e.code, JSON.stringify(o)).toBe(code);
      expect(e.message).toMatch(re);
      expect(e.message).not.toContain('\n');
    }
  });

  it('one list failing at start stops the other downloads and names the failing list', async () => {
    const t = Date.now();
    const e = await DestinationPolicy.load({
      blockDomainList: join(dir, 'absent2.txt'),
      blockCIDR4List: `${base}/slow`,
      fetchTimeoutMs: 30_000,
    }).catch((x) => x);
    expect(e.code).toBe(ErrorCodes.LIST_UNREACHABLE);
    expect(e.message).toContain('absent2.txt');
    expect(Date.now() - t).toBeLessThan(20_000);
  });
});

describe('DestinationPolicy.evaluate', () => {
  it('blocks by domain suffix without resolving', async () => {
    let asked = 0;
    const p = await load({
      blockDomainList: await file('d1.txt', 'example.com\n'),
      blockCIDR4List: await file('c1.txt', '10.0.0.0/8\n'),
      resolve: async () => {
        asked++;
        return ['198.51.100.1'];
      },
    });
    expect(await p.evaluate(dst('www.Example.com.'))).toEqual({ blocked: true, rule: 'domain:example.com' });
    expect(asked).toBe(0);
    expect(await p.evaluate(dst('badexample.com'))).toEqual({ blocked: false, ips: ['198.51.100.1'] });
    expect(asked).toBe(1);
  });

  it('a domain resolving into a blocked CIDR is blocked (the resolver is the injected one)', async () => {
    const p = await load({
      blockCIDR4List: await file('c2.txt', '10.0.0.0/8\n'),
      blockCIDR6List: await file('c2-6.txt', 'fd00::/8\n'),
      resolve: table({
        'intranet.test': ['198.51.100.7', '10.1.2.3'],
        'v6.test': ['2001:db8::1', 'fd12::1'],
        'mapped.test': ['::ffff:10.0.0.9'],
        'fine.test': ['198.51.100.8', '2001:db8::8'],
      }),
    });
    expect(await p.evaluate(dst('intranet.test'))).toEqual({ blocked: true, rule: 'cidr4:10.0.0.0/8', ip: '10.1.2.3' });
    expect(await p.check(dst('intranet.test'))).toEqual({ rule: 'cidr4:10.0.0.0/8', ip: '10.1.2.3' });
    expect(await p.evaluate(dst('v6.test'))).toEqual({ blocked: true, rule: 'cidr6:fd00::/8', ip: 'fd12::1' });
    expect(await p.evaluate(dst('mapped.test'))).toMatchObject({ blocked: true, rule: 'cidr4:10.0.0.0/8' });
    // allowed: the checked addresses come back so the dialler uses exactly those
    expect(await p.evaluate(dst('fine.test'))).toEqual({ blocked: false, ips: ['198.51.100.8', '2001:db8::8'] });
    expect(await p.check(dst('fine.test'))).toBeNull();
    // a name that does not resolve is a DNS failure, as the dial would be
    const e = await p.evaluate(dst('nx.test')).catch((x) => x);
    expect(e.code).toBe(ErrorCodes.DNS_FAILED);
  });

  it('IP destinations, mapped IPv6 and IP literals sent as a domain are checked as IPs', async () => {
    const p = await load({
      blockDomainList: await file('d3.txt', 'example.com\n'),
      blockCIDR4List: await file('c3.txt', '127.0.0.0/8\n'),
      resolve: async () => {
        throw new Error('must not resolve an IP');
      },
    });
    expect(await p.check(dst('127.0.0.1'))).toEqual({ rule: 'cidr4:127.0.0.0/8' });
    expect(await p.check(dst('::ffff:127.0.0.1'))).toEqual({ rule: 'cidr4:127.0.0.0/8' });
    expect(await p.check({ type: 'domain', host: '127.0.0.2', port: 80 })).toEqual({ rule: 'cidr4:127.0.0.0/8' });
    expect(await p.check({ type: 'domain', host: '[::ffff:127.0.0.3]', port: 80 })).toEqual({ rule: 'cidr4:127.0.0.0/8' });
    expect(await p.check(dst('8.8.8.8'))).toBeNull();
    expect(await p.check(dst('::1'))).toBeNull(); // no IPv6 list: IPv6 is not blocked
  });

  it('with only a domain list, nothing is resolved', async () => {
    const p = await load({
      blockDomainList: await file('d4.txt', 'example.com\n'),
      resolve: async () => {
        throw new Error('must not resolve');
      },
    });
    expect(await p.evaluate(dst('other.org'))).toEqual({ blocked: false });
  });
});

describe('DestinationPolicy reloads', () => {
  it('reload() picks up a changed file; checks already made are not touched', async () => {
    const f = await file('r1.txt', 'old.example\n');
    const lines: LogEntry[] = [];
    const p = await load({ blockDomainList: f, log: (e) => lines.push(e) });
    const before = await p.check(dst('old.example'));
    expect(await p.reload()).toEqual([{ list: 'blockDomainList', result: 'unchanged' }]);
    await file('r1.txt', 'new.example\n');
    expect(await p.reload()).toEqual([{ list: 'blockDomainList', result: 'reloaded' }]);
    expect(before).toEqual({ rule: 'domain:old.example' });
    expect(await p.check(dst('old.example'))).toBeNull();
    expect(await p.check(dst('new.example'))).toEqual({ rule: 'domain:new.example' });
    expect(lines.at(-1)).toEqual({ msg: 'block list reloaded', list: 'blockDomainList', source: f, entries: 1 });
  });

  it('a failed reload keeps the last good list and logs why (removed file, bad line, URL down)', async () => {
    const f = await file('r2.txt', '10.0.0.0/8\n');
    const lines: LogEntry[] = [];
    const p = await load({ blockCIDR4List: f, blockDomainList: `${base}/domains.txt`, log: (e) => lines.push(e) });
    await unlink(f);
    served = null;
    const out = await p.reload();
    expect(out.map((o) => [o.list, typeof o.result === 'string' ? o.result : o.result.code])).toEqual([
      ['blockDomainList', ErrorCodes.LIST_UNREACHABLE],
      ['blockCIDR4List', ErrorCodes.LIST_UNREACHABLE],
    ]);
    const fails = lines.filter((l) => String(l['msg']).startsWith('block list reload failed'));
    expect(fails).toHaveLength(2);
    expect(fails.find((l) => l['list'] === 'blockCIDR4List')).toMatchObject({ code: ErrorCodes.LIST_UNREACHABLE, entries: 1 });
    expect(fails.find((l) => l['list'] === 'blockDomainList')?.['error']).toContain('HTTP 503');
    expect(await p.check(dst('10.1.1.1'))).toEqual({ rule: 'cidr4:10.0.0.0/8' });
    expect(await p.check(dst('x.served.example'))).toEqual({ rule: 'domain:served.example' });
    // a bad line on reload: the list stays as it was
    await file('r2.txt', '10.0.0.0/8\n172.16.0.0/12\nnot-a-cidr\n');
    served = 'other.example\n';
    const out2 = await p.reload();
    expect(out2.find((o) => o.list === 'blockCIDR4List')?.result).toMatchObject({ code: ErrorCodes.LIST_INVALID });
    expect(out2.find((o) => o.list === 'blockDomainList')?.result).toBe('reloaded'); // each list on its own
    expect(await p.check(dst('172.16.0.1'))).toBeNull();
    expect(await p.check(dst('10.1.1.1'))).toEqual({ rule: 'cidr4:10.0.0.0/8' });
    expect(await p.check(dst('other.example'))).toEqual({ rule: 'domain:other.example' });
    expect(lines.at(-1)).toMatchObject({ list: 'blockCIDR4List', code: ErrorCodes.LIST_INVALID });
    expect(String(lines.at(-1)?.['error'])).toContain('line 3');
  });

  it('--blockListUpdateInterval reloads on its timer; close() stops it', async () => {
    const f = await file('r3.txt', 'one.example\n');
    const lines: LogEntry[] = [];
    const p = await load({ blockDomainList: f, blockListUpdateInterval: 1, log: (e) => lines.push(e) });
    await file('r3.txt', 'two.example\n');
    const deadline = Date.now() + 20_000;
    while ((await p.check(dst('two.example'))) === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(await p.check(dst('two.example'))).toEqual({ rule: 'domain:two.example' });
    p.close();
    await file('r3.txt', 'three.example\n');
    await new Promise((r) => setTimeout(r, 1500));
    expect(await p.check(dst('three.example'))).toBeNull();
    expect(await p.check(dst('two.example'))).toEqual({ rule: 'domain:two.example' }); // still usable after close
  });
});
