/**
 * Destination policy with big lists: 100,000 domains, 50,000 IPv4 and 50,000
 * IPv6 CIDRs (distinct networks; IPv4 /12../28, IPv6 /64) loaded from files through DestinationPolicy.load, and the GeoIP
 * database. Prints load time, the RSS / heap each adds, and the per-lookup
 * cost in µs (hits and misses; median of 5 runs).
 *
 *   node --expose-gc --import tsx bench/policy.ts
 *   node --expose-gc --import tsx bench/policy.ts --lookups=N   (default 200000)
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeAddress } from '../src/protocol/address.js';
import { ipKey } from '../src/policy/cidr.js';
import { loadCountryLookup } from '../src/policy/geoip.js';
import { DestinationPolicy } from '../src/policy/policy.js';

const DOMAINS = 100_000;
const CIDRS = 50_000;
const RUNS = 5;
const lookupArg = process.argv.find((a) => a.startsWith('--lookups='));
const LOOKUPS = lookupArg ? Number(lookupArg.slice('--lookups='.length)) : 200_000;

let seed = 0x2545f491;
/** xorshift32: deterministic, and unlike a power-of-two LCG its low bits are usable too. */
const rnd = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>>= 0);
};
const word = (n: number) => Array.from({ length: n }, () => String.fromCharCode(97 + (rnd() % 26))).join('');
const v4 = (x: number) => `${x >>> 24}.${(x >>> 16) & 255}.${(x >>> 8) & 255}.${x & 255}`;
const hex = () => (rnd() & 0xffff).toString(16);

const gc = (globalThis as { gc?: () => void }).gc;
function mem(): { rss: number; heap: number } {
  gc?.();
  gc?.();
  const m = process.memoryUsage();
  return { rss: m.rss, heap: m.heapUsed + m.external + m.arrayBuffers };
}
const mb = (b: number) => `${(b / 1048576).toFixed(1)} MB`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Median µs per call of fn over the inputs (cycled to LOOKUPS calls). */
async function perLookup<T>(inputs: T[], fn: (x: T) => unknown): Promise<number> {
  const times: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < LOOKUPS; i++) {
      const v = fn(inputs[i % inputs.length]!);
      if (v instanceof Promise) await v;
    }
    times.push(Number(process.hrtime.bigint() - t) / 1000 / LOOKUPS);
  }
  return median(times);
}

async function main(): Promise<void> {
  if (!gc) console.log('(run with node --expose-gc for steadier memory figures)');
  const dir = await mkdtemp(join(tmpdir(), 'brook-bench-policy-'));
  try {
    // Lists: domains of 2-3 labels, IPv4 CIDRs in 16.0.0.0-127.255.255.255, IPv6 /64s in 2000::/4.
    const domains = Array.from({ length: DOMAINS }, (_, i) => (i % 3 ? `${word(8)}.${word(6)}.com` : `${word(10)}.net`));
    // Distinct networks (masked), so the sets really hold CIDRS entries each.
    const c4 = new Set<string>();
    while (c4.size < CIDRS) {
      const p = 12 + (rnd() % 17);
      c4.add(`${v4((((rnd() & 0x6fffffff) | 0x10000000) & (0xffffffff << (32 - p))) >>> 0)}/${p}`);
    }
    const c6 = new Set<string>();
    while (c6.size < CIDRS) c6.add(`2${hex().padStart(4, '0').slice(1)}:${hex()}:${hex()}:${hex()}::/64`);
    const cidr4 = [...c4];
    const cidr6 = [...c6];
    const files = { d: join(dir, 'd.txt'), c4: join(dir, 'c4.txt'), c6: join(dir, 'c6.txt') };
    await writeFile(files.d, domains.join('\n'));
    await writeFile(files.c4, cidr4.join('\n'));
    await writeFile(files.c6, cidr6.join('\n'));

    // Lookup inputs (made before the baseline so they do not count as the policy's memory).
    const domHits = domains.slice(0, 5000).map((d) => makeAddress(`www.${d}`, 443));
    const domMiss = Array.from({ length: 5000 }, () => makeAddress(`${word(7)}.${word(9)}.org`, 443));
    const ip4Hits = cidr4.slice(0, 5000).map((c) => makeAddress(c.slice(0, c.indexOf('/')), 443));
    const ip4Miss = Array.from({ length: 5000 }, () => makeAddress(v4(((rnd() & 0x3fffffff) | 0x80000000) >>> 0), 443)); // 128.0.0.0+
    const ip6Hits = cidr6.slice(0, 5000).map((c) => makeAddress(c.slice(0, c.indexOf('/')), 443));
    const ip6Miss = Array.from({ length: 5000 }, () => makeAddress(`3${hex().slice(1)}:${hex()}::${hex()}`, 443)); // 3000::/4
    const geoIps = Array.from({ length: 5000 }, () => v4(rnd()));
    const resolved = new Map(domMiss.map((a, i) => [a.host, [ip4Miss[i]!.host]]));

    console.log(`node ${process.version}, ${DOMAINS} domains, ${CIDRS} CIDRs per family, ${LOOKUPS} lookups x ${RUNS} runs`);
    const m0 = mem();
    let t = performance.now();
    const policy = (await DestinationPolicy.load({
      blockDomainList: files.d,
      blockCIDR4List: files.c4,
      blockCIDR6List: files.c6,
      resolve: async (h) => resolved.get(h) ?? ['192.0.2.1'],
    }))!;
    const loadMs = performance.now() - t;
    const m1 = mem();
    console.log(`lists load: ${loadMs.toFixed(0)} ms, sizes ${JSON.stringify(policy.sizes())}`);
    console.log(`lists memory: RSS +${mb(m1.rss - m0.rss)}, heap+external +${mb(m1.heap - m0.heap)}`);

    const row = async (name: string, inputs: Parameters<typeof policy.evaluate>[0][], expectBlocked: boolean) => {
      const sample = await policy.evaluate(inputs[0]!);
      if (sample.blocked !== expectBlocked) throw new Error(`${name}: expected blocked=${expectBlocked}`);
      const us = await perLookup(inputs, (a) => policy.evaluate(a));
      console.log(`  ${name.padEnd(44)} ${us.toFixed(3)} µs`);
    };
    console.log('evaluate() per new tunnel (includes the async call):');
    await row('domain hit (www.<entry>)', domHits, true);
    await row('domain miss -> resolve (stub) -> IPv4 miss', domMiss, false);
    await row('IPv4 hit', ip4Hits, true);
    await row('IPv4 miss', ip4Miss, false);
    await row('IPv6 hit', ip6Hits, true);
    await row('IPv6 miss', ip6Miss, false);
    const keys4 = ip4Miss.map((a) => a.host);
    console.log('parts (synchronous):');
    const us = await perLookup(keys4, (h) => ipKey(h));
    console.log(`  ${'ipKey() IPv4 parse'.padEnd(44)} ${us.toFixed(3)} µs`);
    const us6 = await perLookup(ip6Miss.map((a) => a.host), (h) => ipKey(h));
    console.log(`  ${'ipKey() IPv6 parse'.padEnd(44)} ${us6.toFixed(3)} µs`);
    policy.close();

    const g0 = mem();
    t = performance.now();
    const country = await loadCountryLookup();
    const geoMs = performance.now() - t;
    country('8.8.8.8');
    const g1 = mem();
    console.log(`GeoIP load: ${geoMs.toFixed(0)} ms, RSS +${mb(g1.rss - g0.rss)}, heap+external +${mb(g1.heap - g0.heap)}`);
    const gus = await perLookup(geoIps, (ip) => country(ip));
    const geo6 = ip6Hits.map((a) => a.host);
    const gus6 = await perLookup(geo6, (ip) => country(ip));
    console.log(`  ${'GeoIP country() IPv4'.padEnd(44)} ${gus.toFixed(3)} µs`);
    console.log(`  ${'GeoIP country() IPv6'.padEnd(44)} ${gus6.toFixed(3)} µs`);
    const g2 = mem();
    console.log(`after GeoIP lookups: RSS +${mb(g2.rss - g0.rss)} over before GeoIP load`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
