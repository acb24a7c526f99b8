/**
 * SOCKS5-style address (RFC 1928 section 5), used by the Brook first fragment,
 * the SOCKS5 server and the SOCKS5 UDP header.
 *
 *   +------+----------------------+------+
 *   | ATYP | ADDR                 | PORT |
 *   |  1   | 4 / 1+n / 16         |  2   |   (PORT u16 big-endian)
 *   +------+----------------------+------+
 *
 * ATYP 0x01 IPv4, 0x03 domain (first byte is its length), 0x04 IPv6.
 * Spec: protocol/brook-stream.md#destination-address
 */
import { BrookError, ErrorCodes } from '../errors.js';
import {
  ATYP_DOMAIN,
  ATYP_IPV4,
  ATYP_IPV6,
  ATYP_SIZE,
  DOMAIN_LENGTH_SIZE,
  IPV4_SIZE,
  IPV6_SIZE,
  MAX_DOMAIN_LENGTH,
  PORT_SIZE,
} from './sizes.js';

export type AddressType = 'ipv4' | 'ipv6' | 'domain';

export interface Address {
  type: AddressType;
  /** Dotted IPv4, IPv6 without brackets (compressed form), or the domain name. */
  host: string;
  port: number;
}

export interface DecodedAddress {
  address: Address;
  /** How many bytes of the input the address used. */
  bytesRead: number;
}

/** Build an Address from a host string and port, choosing the type from the host's form. */
export function makeAddress(host: string, port: number): Address {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new BrookError(ErrorCodes.ADDRESS_INVALID, `port out of range: ${port}`);
  }
  const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
  if (isIPv4(bare)) return { type: 'ipv4', host: bare, port };
  if (isIPv6(bare)) return { type: 'ipv6', host: formatIPv6(parseIPv6(bare)), port };
  if (bare.length === 0) throw new BrookError(ErrorCodes.ADDRESS_INVALID, 'empty host');
  if (Buffer.byteLength(bare) > MAX_DOMAIN_LENGTH) {
    throw new BrookError(ErrorCodes.DOMAIN_TOO_LONG, `domain longer than ${MAX_DOMAIN_LENGTH} bytes`);
  }
  return { type: 'domain', host: bare, port };
}

/** Parse "host:port", "[v6]:port". */
export function parseHostPort(s: string): Address {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]*):(\d+)$/.exec(s);
  if (!m) throw new BrookError(ErrorCodes.ADDRESS_INVALID, `not host:port: ${JSON.stringify(s)}`);
  const port = Number(m[2]);
  return makeAddress(m[1] ?? '', port);
}

/** "1.2.3.4:80", "[::1]:80", "example.com:80" */
export function formatAddress(a: Address): string {
  return a.type === 'ipv6' ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** The same text for an IP as a socket reports it (a peer, a source): an IPv6 in brackets. */
export function formatHostPort(host: string, port: number | null | undefined): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

export function encodedAddressSize(a: Address): number {
  switch (a.type) {
    case 'ipv4':
      return ATYP_SIZE + IPV4_SIZE + PORT_SIZE;
    case 'ipv6':
      return ATYP_SIZE + IPV6_SIZE + PORT_SIZE;
    case 'domain':
      return ATYP_SIZE + DOMAIN_LENGTH_SIZE + Buffer.byteLength(a.host) + PORT_SIZE;
  }
}

/** Write the address into `out` at `offset`; returns the bytes written. */
export function writeAddress(a: Address, out: Uint8Array, offset = 0): number {
  if (!Number.isInteger(a.port) || a.port < 0 || a.port > 0xffff) {
    throw new BrookError(ErrorCodes.ADDRESS_INVALID, `port out of range: ${a.port}`);
  }
  let o = offset;
  switch (a.type) {
    case 'ipv4': {
      out[o++] = ATYP_IPV4;
      const parts = a.host.split('.').map(Number);
      if (!isIPv4(a.host)) {
        throw new BrookError(ErrorCodes.ADDRESS_INVALID, `bad IPv4 address ${a.host}`);
      }
      for (const p of parts) out[o++] = p;
      break;
    }
    case 'ipv6': {
      out[o++] = ATYP_IPV6;
      out.set(parseIPv6(a.host), o);
      o += IPV6_SIZE;
      break;
    }
    case 'domain': {
      const name = Buffer.from(a.host, 'utf8');
      if (name.length > MAX_DOMAIN_LENGTH) {
        throw new BrookError(ErrorCodes.DOMAIN_TOO_LONG, `domain longer than ${MAX_DOMAIN_LENGTH} bytes`);
      }
      if (name.length === 0) throw new BrookError(ErrorCodes.ADDRESS_INVALID, 'empty domain');
      out[o++] = ATYP_DOMAIN;
      out[o++] = name.length;
      out.set(name, o);
      o += name.length;
      break;
    }
  }
  out[o++] = (a.port >>> 8) & 0xff;
  out[o++] = a.port & 0xff;
  return o - offset;
}

export function encodeAddress(a: Address): Buffer {
  const out = Buffer.allocUnsafe(encodedAddressSize(a));
  writeAddress(a, out, 0);
  return out;
}

/**
 * Decode an address at `offset`. Throws ADDRESS_TRUNCATED when `buf` ends
 * early (an incremental caller may wait for more bytes), ATYP_UNKNOWN for an
 * unknown type.
 */
export function decodeAddress(buf: Uint8Array, offset = 0): DecodedAddress {
  const avail = buf.length - offset;
  if (avail < ATYP_SIZE) throw truncated();
  const atyp = buf[offset]!;
  let o = offset + ATYP_SIZE;
  let address: Address;
  switch (atyp) {
    case ATYP_IPV4: {
      if (buf.length < o + IPV4_SIZE + PORT_SIZE) throw truncated();
      const host = `${buf[o]}.${buf[o + 1]}.${buf[o + 2]}.${buf[o + 3]}`;
      o += IPV4_SIZE;
      address = { type: 'ipv4', host, port: readPort(buf, o) };
      break;
    }
    case ATYP_IPV6: {
      if (buf.length < o + IPV6_SIZE + PORT_SIZE) throw truncated();
      const host = formatIPv6(buf.subarray(o, o + IPV6_SIZE));
      o += IPV6_SIZE;
      address = { type: 'ipv6', host, port: readPort(buf, o) };
      break;
    }
    case ATYP_DOMAIN: {
      if (buf.length < o + DOMAIN_LENGTH_SIZE) throw truncated();
      const n = buf[o]!;
      o += DOMAIN_LENGTH_SIZE;
      if (n === 0) throw new BrookError(ErrorCodes.ADDRESS_INVALID, 'empty domain');
      if (buf.length < o + n + PORT_SIZE) throw truncated();
      const host = Buffer.from(buf.buffer, buf.byteOffset + o, n).toString('utf8');
      o += n;
      address = { type: 'domain', host, port: readPort(buf, o) };
      break;
    }
    default:
      throw new BrookError(ErrorCodes.ATYP_UNKNOWN, `unknown address type 0x${atyp.toString(16).padStart(2, '0')}`);
  }
  o += PORT_SIZE;
  return { address, bytesRead: o - offset };
}

function readPort(buf: Uint8Array, o: number): number {
  return (buf[o]! << 8) | buf[o + 1]!;
}

function truncated(): BrookError {
  return new BrookError(ErrorCodes.ADDRESS_TRUNCATED, 'address truncated');
}

const IPV4_OCTET = '(25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)';
const IPV4_RE = new RegExp(`^${IPV4_OCTET}(\\.${IPV4_OCTET}){3}$`);
const HEX_GROUP_RE = /^[0-9a-fA-F]{1,4}$/;

/** Pure check (codecs do not import node:net). */
export function isIPv4(text: string): boolean {
  return IPV4_RE.test(text);
}

export function isIPv6(text: string): boolean {
  return tryParseIPv6(text) !== null;
}

/** 16 bytes from an IPv6 text form (accepts '::', an embedded IPv4 tail, a %zone). */
export function parseIPv6(text: string): Uint8Array {
  const b = tryParseIPv6(text);
  if (!b) throw new BrookError(ErrorCodes.ADDRESS_INVALID, `bad IPv6 address ${text}`);
  return b;
}

function tryParseIPv6(text: string): Uint8Array | null {
  let s = text;
  const pct = s.indexOf('%');
  if (pct >= 0) s = pct === s.length - 1 ? '' : s.slice(0, pct); // an empty zone is invalid
  const groups: number[] = [];
  const v4 = /(?:^|:)(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  let tailWords: number[] = [];
  if (v4) {
    const dotted = v4[1]!;
    if (!isIPv4(dotted)) return null;
    const p = dotted.split('.').map(Number);
    tailWords = [(p[0]! << 8) | p[1]!, (p[2]! << 8) | p[3]!];
    s = s.slice(0, s.length - dotted.length);
    if (s.endsWith(':') && !s.endsWith('::')) s = s.slice(0, -1);
  }
  const dbl = s.indexOf('::');
  if (dbl >= 0 && s.indexOf('::', dbl + 1) >= 0) return null;
  const parse = (part: string): number[] | null => {
    if (part === '') return [];
    const out: number[] = [];
    for (const g of part.split(':')) {
      if (!HEX_GROUP_RE.test(g)) return null;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  if (dbl >= 0) {
    const head = parse(s.slice(0, dbl));
    const tail = parse(s.slice(dbl + 2));
    if (!head || !tail) return null;
    const given = head.length + tail.length + tailWords.length;
    if (given > 7) return null;
    groups.push(...head);
    for (let i = given; i < 8; i++) groups.push(0);
    groups.push(...tail, ...tailWords);
  } else {
    const all = parse(s);
    if (!all) return null;
    groups.push(...all, ...tailWords);
    if (groups.length !== 8) return null;
  }
  if (groups.length !== 8) return null;
  const out = new Uint8Array(IPV6_SIZE);
  for (let i = 0; i < 8; i++) {
    out[i * 2] = (groups[i]! >>> 8) & 0xff;
    out[i * 2 + 1] = groups[i]! & 0xff;
  }
  return out;
}

/** RFC 5952 text form: lowercase, longest zero run compressed. */
export function formatIPv6(b: Uint8Array): string {
  const w: number[] = [];
  for (let i = 0; i < 8; i++) w.push((b[i * 2]! << 8) | b[i * 2 + 1]!);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = w.map((x) => x.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}
