/**
 * PROXY protocol v1 and v2 headers (HAProxy's `send-proxy` / `send-proxy-v2`),
 * decoded before the HTTP (or TLS) bytes of a connection. No I/O: bytes in, a
 * header or a typed error out. See protocol/websocket-upgrade.md, "Behind a
 * proxy".
 *
 * v1 (text, at most V1_MAX_SIZE bytes with the CRLF):
 *
 *   "PROXY TCP4 <src ip> <dst ip> <src port> <dst port>\r\n"
 *   "PROXY TCP6 <src ip> <dst ip> <src port> <dst port>\r\n"
 *   "PROXY UNKNOWN[ anything]\r\n"                (address unknown: use the peer)
 *
 * v2 (binary):
 *
 *   +------------------------+---------+--------+---------+-------------------------+
 *   | V2_SIGNATURE (12)      | ver/cmd | family | len u16 | addresses, then TLVs    |
 *   | 0D0A0D0A000D0A51554954 | 0x20 L  | 0x11   | BE      | (len bytes, skipped     |
 *   | 0A                     | 0x21 P  | 0x21.. |         |  past the addresses)    |
 *   +------------------------+---------+--------+---------+-------------------------+
 *   IPv4 block: src(4) dst(4) sport(2) dport(2); IPv6 block: src(16) dst(16) sport(2) dport(2).
 *   LOCAL (health checks), UNSPEC and UNIX carry no client address: use the peer.
 *
 * decodeProxyHeader(buf) may be called with any prefix of the stream (byte at
 * a time is fine): it returns { done: false } while more bytes are needed, and
 * throws as soon as the bytes cannot start a header, so a caller buffers at
 * most MAX_PROXY_HEADER_SIZE bytes.
 */
import { BrookError, ErrorCodes } from '../errors.js';
import { formatIPv6, isIPv4, isIPv6 } from '../protocol/address.js';
import { IPV4_SIZE, IPV6_SIZE, PORT_SIZE } from '../protocol/sizes.js';

/** "PROXY " */
export const V1_PREFIX = Buffer.from('PROXY ', 'latin1');
/** Longest v1 line, CRLF included (the spec's 107). */
export const V1_MAX_SIZE = 107;
export const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** Signature, version/command, family, length. */
export const V2_FIXED_SIZE = V2_SIGNATURE.length + 1 + 1 + 2;
/** Longest v2 address block + TLVs we accept (HAProxy's own TLVs fit well within). */
export const V2_MAX_PAYLOAD = 2048;
/** The most bytes a caller ever buffers for a header. */
export const MAX_PROXY_HEADER_SIZE = V2_FIXED_SIZE + V2_MAX_PAYLOAD;

const V2_VERSION = 0x2;
const V2_CMD_LOCAL = 0x0;
const V2_CMD_PROXY = 0x1;
const V2_AF_UNSPEC = 0x0;
const V2_AF_INET = 0x1;
const V2_AF_INET6 = 0x2;
const V2_AF_UNIX = 0x3;
const V2_PROTO_UNSPEC = 0x0;
const V2_PROTO_STREAM = 0x1;
const V2_PROTO_DGRAM = 0x2;
/** Two addresses and two ports. */
const V2_INET_BLOCK = 2 * IPV4_SIZE + 2 * PORT_SIZE;
const V2_INET6_BLOCK = 2 * IPV6_SIZE + 2 * PORT_SIZE;
const V2_UNIX_BLOCK = 2 * 108;
const CR = 0x0d;
const LF = 0x0a;
const MAX_PORT = 65535;

export interface ProxyEndpoint {
  address: string;
  port: number;
}

export interface ProxyHeader {
  version: 1 | 2;
  /** 'local': the proxy's own connection (health check); 'proxy': a relayed client. */
  command: 'local' | 'proxy';
  /** The relayed client and the address it reached; null when the header carries none (UNKNOWN, LOCAL, UNSPEC, UNIX). */
  source: ProxyEndpoint | null;
  destination: ProxyEndpoint | null;
}

export type ProxyDecode = { done: false } | { done: true; header: ProxyHeader; /** Header bytes to drop from the stream. */ length: number };

const bad = (msg: string): BrookError => new BrookError(ErrorCodes.PROXY_HEADER_INVALID, msg);

/** True when the first bytes of `buf` may still grow into `sig`. */
function prefixOf(buf: Uint8Array, sig: Uint8Array): boolean {
  const n = Math.min(buf.length, sig.length);
  for (let i = 0; i < n; i++) if (buf[i] !== sig[i]) return false;
  return true;
}

export function decodeProxyHeader(buf: Uint8Array): ProxyDecode {
  if (buf.length === 0) return { done: false };
  if (prefixOf(buf, V2_SIGNATURE)) return buf.length < V2_SIGNATURE.length ? { done: false } : decodeV2(buf);
  if (prefixOf(buf, V1_PREFIX)) return buf.length < V1_PREFIX.length ? { done: false } : decodeV1(buf);
  throw bad('no PROXY protocol header');
}

function decodeV1(buf: Uint8Array): ProxyDecode {
  const limit = Math.min(buf.length, V1_MAX_SIZE);
  let end = -1;
  for (let i = V1_PREFIX.length; i < limit; i++) {
    const c = buf[i]!;
    if (c === LF) {
      if (buf[i - 1] !== CR) throw bad('PROXY v1 line ends without CRLF');
      end = i + 1;
      break;
    }
    // printable ASCII and the CR before the LF only
    if ((c < 0x20 || c > 0x7e) && c !== CR) throw bad('PROXY v1 line has a control byte');
  }
  if (end < 0) {
    if (buf.length >= V1_MAX_SIZE) throw bad(`PROXY v1 line longer than ${V1_MAX_SIZE} bytes`);
    return { done: false };
  }
  const line = Buffer.from(buf.buffer, buf.byteOffset + V1_PREFIX.length, end - 2 - V1_PREFIX.length).toString('latin1');
  const parts = line.split(' ');
  const proto = parts[0];
  if (proto === 'UNKNOWN') return { done: true, length: end, header: { version: 1, command: 'proxy', source: null, destination: null } };
  if (proto !== 'TCP4' && proto !== 'TCP6') throw bad(`PROXY v1 protocol ${JSON.stringify(proto?.slice(0, 16))}`);
  if (parts.length !== 5) throw bad('PROXY v1 line needs 2 addresses and 2 ports');
  const isIp = proto === 'TCP4' ? isIPv4 : (s: string) => isIPv6(s) && !s.includes('%');
  const [, src, dst, sport, dport] = parts as [string, string, string, string, string];
  if (!isIp(src) || !isIp(dst)) throw bad(`PROXY v1 ${proto} address is not an ${proto === 'TCP4' ? 'IPv4' : 'IPv6'} address`);
  return {
    done: true,
    length: end,
    header: { version: 1, command: 'proxy', source: { address: src, port: v1Port(sport) }, destination: { address: dst, port: v1Port(dport) } },
  };
}

function v1Port(s: string): number {
  if (!/^(0|[1-9]\d{0,4})$/.test(s) || Number(s) > MAX_PORT) throw bad('PROXY v1 port is not 0-65535');
  return Number(s);
}

function decodeV2(buf: Uint8Array): ProxyDecode {
  const sig = V2_SIGNATURE.length;
  if (buf.length > sig) {
    const verCmd = buf[sig]!;
    if (verCmd >> 4 !== V2_VERSION) throw bad(`PROXY v2 version ${verCmd >> 4}`);
    const cmd = verCmd & 0x0f;
    if (cmd !== V2_CMD_LOCAL && cmd !== V2_CMD_PROXY) throw bad(`PROXY v2 command ${cmd}`);
  }
  if (buf.length > sig + 1) {
    const fam = buf[sig + 1]!;
    const af = fam >> 4;
    const proto = fam & 0x0f;
    if (af > V2_AF_UNIX || proto > V2_PROTO_DGRAM) throw bad(`PROXY v2 family 0x${fam.toString(16)}`);
  }
  if (buf.length < V2_FIXED_SIZE) return { done: false };
  const len = (buf[sig + 2]! << 8) | buf[sig + 3]!;
  if (len > V2_MAX_PAYLOAD) throw bad(`PROXY v2 length ${len} over ${V2_MAX_PAYLOAD}`);
  const total = V2_FIXED_SIZE + len;
  if (buf.length < total) return { done: false };
  const cmd = buf[sig]! & 0x0f;
  const af = buf[sig + 1]! >> 4;
  const proto = buf[sig + 1]! & 0x0f;
  const need = af === V2_AF_INET ? V2_INET_BLOCK : af === V2_AF_INET6 ? V2_INET6_BLOCK : af === V2_AF_UNIX ? V2_UNIX_BLOCK : 0;
  if (len < need) throw bad(`PROXY v2 address block of ${len} bytes, family needs ${need}`);
  const none = { done: true as const, length: total, header: { version: 2 as const, command: cmd === V2_CMD_LOCAL ? ('local' as const) : ('proxy' as const), source: null, destination: null } };
  // LOCAL: the proxy's own connection; UNSPEC / UNIX / not a stream: no client address to use
  if (cmd === V2_CMD_LOCAL || af === V2_AF_UNSPEC || af === V2_AF_UNIX || proto === V2_PROTO_UNSPEC) return none;
  if (proto !== V2_PROTO_STREAM) throw bad('PROXY v2 header for a datagram connection');
  const p = V2_FIXED_SIZE;
  const size = af === V2_AF_INET ? IPV4_SIZE : IPV6_SIZE;
  const ip = (o: number): string =>
    af === V2_AF_INET ? `${buf[o]}.${buf[o + 1]}.${buf[o + 2]}.${buf[o + 3]}` : formatIPv6(buf.subarray(o, o + IPV6_SIZE));
  const port = (o: number): number => (buf[o]! << 8) | buf[o + 1]!;
  return {
    done: true,
    length: total,
    header: {
      version: 2,
      command: 'proxy',
      source: { address: ip(p), port: port(p + 2 * size) },
      destination: { address: ip(p + size), port: port(p + 2 * size + PORT_SIZE) },
    },
  };
}

/** A v1 line (tests, and a reference for the format). */
export function encodeProxyV1(src: ProxyEndpoint, dst: ProxyEndpoint): Buffer {
  const fam = src.address.includes(':') ? 'TCP6' : 'TCP4';
  return Buffer.from(`PROXY ${fam} ${src.address} ${dst.address} ${src.port} ${dst.port}\r\n`, 'latin1');
}
