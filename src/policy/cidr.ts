/**
 * --blockCIDR4List / --blockCIDR6List: destination IPs matched against CIDRs.
 *
 * An address is held as big-endian 32-bit words (1 for IPv4, 4 for IPv6).
 * Each entry is a range [start, end]. Two CIDRs are either disjoint or one
 * holds the other, so after sorting by (start, wider first) each entry has a
 * nearest enclosing entry (its parent). A lookup binary-searches the last
 * entry whose start ≤ ip; if that entry does not hold ip, only its ancestors
 * can, so it walks parents (at most 32 / 128 steps, in practice 0–2).
 * Cost: O(log n) word comparisons, no allocation; memory 2·W·4 + 5 bytes per
 * entry. The match reported is the most specific entry.
 *
 * IPv4-mapped IPv6 destinations (::ffff:a.b.c.d) are IPv4 (see ipKey).
 *
 * Upstream differences: upstream logs and skips a line that is not a CIDR
 * (here it is an error naming the line), accepts the other family's CIDRs in
 * either list (here an error: they could never match), and rejects a bare IP
 * (here a host route, /32 or /128). A non-canonical CIDR (10.1.2.3/8) is
 * masked, as Go's ParseCIDR does.
 */
import { parseIPv6, isIPv4, isIPv6, formatIPv6 } from '../protocol/address.js';
import { IPV6_SIZE } from '../protocol/sizes.js';
import { formatIPv4 } from './ipforms.js';
import { invalidLine, type ListLine } from './lists.js';

export type IpFamily = 4 | 6;

/** Words per address. */
const WORDS: Record<IpFamily, number> = { 4: 1, 6: 4 };
const BITS_PER_WORD = 32;
const MAX_PREFIX: Record<IpFamily, number> = { 4: 32, 6: 128 };

export interface IpKey {
  family: IpFamily;
  /** Big-endian 32-bit words. */
  words: Uint32Array;
}

/** Parse dotted IPv4 to its word (no validation: callers check isIPv4 first). */
function v4Word(text: string): number {
  let w = 0;
  let part = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 46 /* . */) {
      w = (w << 8) | part;
      part = 0;
    } else part = part * 10 + (c - 48);
  }
  return ((w << 8) | part) >>> 0;
}

function bytesToWords(b: Uint8Array): Uint32Array {
  const w = new Uint32Array(4);
  for (let i = 0; i < 4; i++) {
    w[i] = ((b[i * 4]! << 24) | (b[i * 4 + 1]! << 16) | (b[i * 4 + 2]! << 8) | b[i * 4 + 3]!) >>> 0;
  }
  return w;
}

/** True for ::ffff:0:0/96. */
function isMappedV4(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * The lookup key of an IP text, or null if it is not an IP. IPv4-mapped IPv6
 * becomes IPv4 (the kernel dials it as IPv4).
 */
export function ipKey(text: string): IpKey | null {
  if (isIPv4(text)) return { family: 4, words: Uint32Array.of(v4Word(text)) };
  if (!text.includes(':')) return null; // a domain: skip the IPv6 parser
  let b: Uint8Array;
  try {
    b = parseIPv6(text); // one parse (isIPv6 + parseIPv6 would parse twice)
  } catch {
    return null;
  }
  if (isMappedV4(b)) {
    return { family: 4, words: Uint32Array.of(((b[12]! << 24) | (b[13]! << 16) | (b[14]! << 8) | b[15]!) >>> 0) };
  }
  return { family: 6, words: bytesToWords(b) };
}

/** The text form of a key (IPv4 dotted, IPv6 RFC 5952). */
export function formatIpKey(k: IpKey): string {
  if (k.family === 4) return formatIPv4(k.words[0]!);
  const b = new Uint8Array(IPV6_SIZE);
  for (let i = 0; i < 4; i++) {
    const w = k.words[i]!;
    b[i * 4] = w >>> 24;
    b[i * 4 + 1] = (w >>> 16) & 0xff;
    b[i * 4 + 2] = (w >>> 8) & 0xff;
    b[i * 4 + 3] = w & 0xff;
  }
  return formatIPv6(b);
}

export interface ParsedCidr {
  family: IpFamily;
  /** Network address words (masked). */
  start: Uint32Array;
  end: Uint32Array;
  prefix: number;
}

/** Parse "a.b.c.d/n", "x::y/n" or a bare IP; returns a reason string when it is not one. */
export function parseCidr(text: string): ParsedCidr | string {
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  let family: IpFamily;
  let words: Uint32Array;
  if (isIPv4(addr)) {
    family = 4;
    words = Uint32Array.of(v4Word(addr));
  } else if (!addr.includes('%') && isIPv6(addr)) {
    family = 6;
    words = bytesToWords(parseIPv6(addr));
  } else {
    return 'not a CIDR (bad address)';
  }
  let prefix = MAX_PREFIX[family];
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > MAX_PREFIX[family]) return 'not a CIDR (bad prefix length)';
    prefix = Number(p);
  }
  const start = new Uint32Array(words.length);
  const end = new Uint32Array(words.length);
  for (let i = 0; i < words.length; i++) {
    const bits = Math.max(0, Math.min(BITS_PER_WORD, prefix - i * BITS_PER_WORD));
    const mask = bits === 0 ? 0 : (0xffffffff << (BITS_PER_WORD - bits)) >>> 0;
    start[i] = (words[i]! & mask) >>> 0;
    end[i] = (start[i]! | ~mask) >>> 0;
  }
  return { family, start, end, prefix };
}

export class CidrSet {
  readonly family: IpFamily;
  private readonly w: number;
  private readonly starts: Uint32Array;
  private readonly ends: Uint32Array;
  private readonly prefixes: Uint8Array;
  private readonly parents: Int32Array;

  private constructor(family: IpFamily, entries: ParsedCidr[]) {
    this.family = family;
    const w = (this.w = WORDS[family]);
    entries.sort((a, b) => compareWords(a.start, 0, b.start, 0, w) || a.prefix - b.prefix);
    // Drop duplicates (same network and prefix).
    const uniq: ParsedCidr[] = [];
    for (const e of entries) {
      const last = uniq[uniq.length - 1];
      if (last && last.prefix === e.prefix && compareWords(last.start, 0, e.start, 0, w) === 0) continue;
      uniq.push(e);
    }
    const n = uniq.length;
    this.starts = new Uint32Array(n * w);
    this.ends = new Uint32Array(n * w);
    this.prefixes = new Uint8Array(n);
    this.parents = new Int32Array(n);
    const stack: number[] = [];
    for (let i = 0; i < n; i++) {
      const e = uniq[i]!;
      this.starts.set(e.start, i * w);
      this.ends.set(e.end, i * w);
      this.prefixes[i] = e.prefix;
      // Pop the entries that end before this one starts: they do not hold it.
      while (stack.length > 0 && compareWords(this.ends, stack[stack.length - 1]! * w, e.start, 0, w) < 0) stack.pop();
      this.parents[i] = stack.length > 0 ? stack[stack.length - 1]! : -1;
      stack.push(i);
    }
  }

  /** Build from list lines of one family; the first bad line throws LIST_INVALID. */
  static fromLines(family: IpFamily, source: string, lines: readonly ListLine[]): CidrSet {
    const entries: ParsedCidr[] = [];
    for (const l of lines) {
      const c = parseCidr(l.text);
      if (typeof c === 'string') throw invalidLine(source, l, c);
      if (c.family !== family) throw invalidLine(source, l, `IPv${c.family} CIDR in the IPv${family} list`);
      entries.push(c);
    }
    return new CidrSet(family, entries);
  }

  /** For tests and benchmarks: entries given directly (must be of `family`). */
  static of(family: IpFamily, cidrs: Iterable<string>): CidrSet {
    const lines: ListLine[] = [];
    let i = 0;
    for (const c of cidrs) lines.push({ line: ++i, text: c });
    return CidrSet.fromLines(family, '(inline)', lines);
  }

  get size(): number {
    return this.prefixes.length;
  }

  /** The most specific entry holding `k` as "net/len", or null. `k` must be of this set's family. */
  match(k: IpKey): string | null {
    const i = this.matchIndex(k.words);
    return i < 0 ? null : this.entryText(i);
  }

  private matchIndex(ip: Uint32Array): number {
    const w = this.w;
    // Last entry with start <= ip.
    let lo = 0;
    let hi = this.prefixes.length - 1;
    let i = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (compareWords(this.starts, mid * w, ip, 0, w) <= 0) {
        i = mid;
        lo = mid + 1;
      } else hi = mid - 1;
    }
    while (i >= 0) {
      if (compareWords(ip, 0, this.ends, i * w, w) <= 0) return i;
      i = this.parents[i]!;
    }
    return -1;
  }

  private entryText(i: number): string {
    const words = this.starts.slice(i * this.w, (i + 1) * this.w);
    return `${formatIpKey({ family: this.family, words })}/${this.prefixes[i]}`;
  }
}

function compareWords(a: Uint32Array, ao: number, b: Uint32Array, bo: number, w: number): number {
  for (let i = 0; i < w; i++) {
    const x = a[ao + i]!;
    const y = b[bo + i]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}
