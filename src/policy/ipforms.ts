/**
 * IP address forms beyond the canonical text, for the destination checks
 * (src/policy/local.ts, policy.ts). Pure: no I/O.
 *
 * 1. IPv4 as the system resolver reads it. Node dials a host that net.isIP
 *    does not call an IP (only the dotted quad a.b.c.d, no leading zeros)
 *    through dns.lookup, libuv's getaddrinfo, and glibc's getaddrinfo first
 *    tries inet_aton on it (exactly: nothing may follow). So `127.1`,
 *    `0x7f.1`, `0177.0.0.1`, `2130706433`, `0x7f000001` and `0` are dialled
 *    as 127.0.0.1 / 0.0.0.0 without a DNS query (test/policy-local.test.ts
 *    checks this parser against dns.lookup and a real connect). The rules
 *    (glibc 2.36 resolv/inet_addr.c, musl's __inet_aton read the same way):
 *      1 to 4 parts split on '.', none empty; each part is decimal, octal
 *      (leading 0) or hex (0x/0X, at least one digit after it); every part
 *      but the last is one byte; the last fills the remaining bytes (a:
 *      32 bits, a.b: 24, a.b.c: 16, a.b.c.d: 8). No sign, no space, no
 *      trailing dot.
 *
 * 2. IPv4 addresses carried inside IPv6 ones, which a translator or tunnel
 *    on the path (or on this host) turns into that IPv4 destination:
 *      ::a.b.c.d           IPv4-compatible (RFC 4291, deprecated), ::/96 but :: and ::1
 *      ::ffff:0:a.b.c.d    IPv4-translated (SIIT, RFC 2765), ::ffff:0:0:0/96
 *      64:ff9b::a.b.c.d    NAT64 well-known prefix (RFC 6052), 64:ff9b::/96
 *      2002:AABB:CCDD::    6to4 (RFC 3056), the IPv4 in bits 16..47
 *      2001:0:S:S:f:p:C:C  Teredo (RFC 4380), the client's IPv4 inverted in bits 96..127
 *    (IPv4-mapped ::ffff:a.b.c.d is plain IPv4 already: cidr.ts ipKey.)
 */
import type { IpKey } from './cidr.js';

/** Most parts in an inet_aton form. */
const MAX_ATON_PARTS = 4;
/** The largest value of the last part, by the number of parts before it. */
const ATON_LAST_MAX = [0xffffffff, 0xffffff, 0xffff, 0xff] as const;
const BYTE_MAX = 0xff;
const ATON_PART_RE = /^(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)$/;
/** Longer than any inet_aton form worth reading (4 parts of 0x + 8 hex digits with leading zeros is not useful past this). */
const MAX_ATON_TEXT = 64;

/**
 * The IPv4 (as a u32) that getaddrinfo reads `text` as, or null when it is
 * not a numeric IPv4 form (then it would be a DNS name).
 */
export function parseInetAton(text: string): number | null {
  const c0 = text.charCodeAt(0);
  if (!(c0 >= 48 && c0 <= 57) || text.length > MAX_ATON_TEXT) return null; // a name: the common case, one compare
  const parts = text.split('.');
  if (parts.length > MAX_ATON_PARTS) return null;
  let acc = 0;
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (!ATON_PART_RE.test(p)) return null;
    const v = partValue(p);
    const last = i === parts.length - 1;
    if (v > (last ? ATON_LAST_MAX[i]! : BYTE_MAX)) return null;
    acc = last ? acc + v : acc + v * 2 ** (8 * (3 - i));
  }
  return acc >>> 0;
}

function partValue(p: string): number {
  if (p.length > 1 && (p[1] === 'x' || p[1] === 'X')) return parseBig(p.slice(2), 16);
  if (p.length > 1 && p[0] === '0') return parseBig(p.slice(1), 8);
  return parseBig(p, 10);
}

/** A digit string's value; anything over 2^32 is returned as Infinity (it fails every bound). */
function parseBig(digits: string, base: number): number {
  let v = 0;
  for (let i = 0; i < digits.length; i++) {
    v = v * base + parseInt(digits[i]!, base);
    if (v > 0xffffffff) return Infinity;
  }
  return v;
}

/** How an IPv6 address carries an IPv4 one (the names used in log lines). */
export type Embedding = 'compat' | 'siit' | 'nat64' | '6to4' | 'teredo';

/** The IPv4 (u32) an IPv6 key carries and how, or null. `k` must be IPv6 (mapped IPv4 is IPv4 already). */
export function embeddedIPv4(k: IpKey): { v4: number; via: Embedding } | null {
  const [w0, w1, w2, w3] = k.words as unknown as [number, number, number, number];
  if (w0 === 0 && w1 === 0) {
    if (w2 === 0 && w3 > 1) return { v4: w3, via: 'compat' }; // :: and ::1 are IPv6's own
    if (w2 === 0xffff0000) return { v4: w3, via: 'siit' };
    return null;
  }
  if (w0 === 0x0064ff9b && w1 === 0 && w2 === 0) return { v4: w3, via: 'nat64' };
  if (w0 >>> 16 === 0x2002) return { v4: ((w0 << 16) | (w1 >>> 16)) >>> 0, via: '6to4' };
  if (w0 === 0x20010000) return { v4: ~w3 >>> 0, via: 'teredo' };
  return null;
}

/** Dotted text of a u32 IPv4. */
export function formatIPv4(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 0xff}.${(v >>> 8) & 0xff}.${v & 0xff}`;
}
