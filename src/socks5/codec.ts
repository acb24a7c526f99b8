/**
 * SOCKS5 wire codec (RFC 1928) and username/password sub-negotiation (RFC 1929).
 * Pure: bytes in, values or typed errors out; no I/O imports.
 *
 * Greeting (client -> server)      Method selection (server -> client)
 *   +-----+----------+----------+    +-----+--------+
 *   | VER | NMETHODS | METHODS  |    | VER | METHOD |
 *   |  1  |    1     | 1..255   |    |  1  |   1    |
 *   +-----+----------+----------+    +-----+--------+
 *
 * RFC 1929 auth request                          RFC 1929 auth reply
 *   +-----+------+-------+------+--------+         +-----+--------+
 *   | VER | ULEN | UNAME | PLEN | PASSWD |         | VER | STATUS |
 *   |  1  |  1   | 0-255 |  1   | 0-255  |         |  1  |   1    |
 *   +-----+------+-------+------+--------+         +-----+--------+
 *
 * Request (CMD 1 CONNECT, 2 BIND, 3 UDP ASSOCIATE) and Reply (REP, socks5ReplyFor)
 *   +-----+-----------+-----+------+----------+----------+
 *   | VER | CMD / REP | RSV | ATYP | DST/BND  | DST/BND  |
 *   |     |           |     |      |  .ADDR   |  .PORT   |
 *   |  1  |     1     |  1  |  1   | variable |    2     |
 *   +-----+-----------+-----+------+----------+----------+
 *   (ATYP+ADDR+PORT: src/protocol/address.ts)
 *
 * UDP request header (RFC 1928 section 7)
 *   +-----+------+------+----------+----------+----------+
 *   | RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
 *   |  2  |  1   |  1   | variable |    2     | variable |
 *   +-----+------+------+----------+----------+----------+
 *
 * Every parse* of a stream message returns `{ value, bytesRead }`, or `null`
 * when `buf` does not yet hold a whole message (never throws for that), and
 * throws BrookError (SOCKS_VERSION, SOCKS_MALFORMED, SOCKS_COMMAND,
 * ATYP_UNKNOWN) for bad input. Datagrams are whole, so parseUdpHeader throws
 * ADDRESS_TRUNCATED for a short one.
 */
import { BrookError, ErrorCodes, isBrookError } from '../errors.js';
import { decodeAddress, encodedAddressSize, writeAddress, type Address } from '../protocol/address.js';

export const SOCKS5_VERSION = 0x05;
/** RFC 1929 sub-negotiation version. */
export const USERPASS_VERSION = 0x01;

export const Socks5Method = {
  NO_AUTH: 0x00,
  GSSAPI: 0x01,
  USERNAME_PASSWORD: 0x02,
  NO_ACCEPTABLE: 0xff,
} as const;

export const Socks5Command = {
  CONNECT: 0x01,
  BIND: 0x02,
  UDP_ASSOCIATE: 0x03,
} as const;
export type Socks5CommandCode = (typeof Socks5Command)[keyof typeof Socks5Command];

/** RFC 1929 STATUS: 0x00 success, anything else failure. */
export const USERPASS_STATUS_SUCCESS = 0x00;
export const USERPASS_STATUS_FAILURE = 0x01;

const VERSION_SIZE = 1;
const NMETHODS_SIZE = 1;
const METHOD_SIZE = 1;
const ULEN_SIZE = 1;
const PLEN_SIZE = 1;
const STATUS_SIZE = 1;
const CMD_SIZE = 1;
const RSV_SIZE = 1;
/** VER CMD RSV (request) / VER REP RSV (reply). */
const REQUEST_HEAD_SIZE = VERSION_SIZE + CMD_SIZE + RSV_SIZE;
const GREETING_HEAD_SIZE = VERSION_SIZE + NMETHODS_SIZE;
const UDP_RSV_SIZE = 2;
const UDP_FRAG_SIZE = 1;
/** RSV(2) FRAG(1) before the address of a UDP datagram. */
export const UDP_HEADER_PREFIX_SIZE = UDP_RSV_SIZE + UDP_FRAG_SIZE;
const UDP_FRAG_OFFSET = UDP_RSV_SIZE;

/** BND.ADDR/BND.PORT used when the caller has nothing better: 0.0.0.0:0. */
export const UNSPECIFIED_BOUND: Address = Object.freeze({ type: 'ipv4', host: '0.0.0.0', port: 0 }) as Address;

export interface Parsed<T> {
  value: T;
  bytesRead: number;
}

export interface Greeting {
  methods: number[];
}

export interface UserPassAuth {
  /** Raw bytes, compared byte-wise by the server. */
  username: Buffer;
  password: Buffer;
}

export interface Socks5Request {
  command: Socks5CommandCode;
  destination: Address;
}

export interface UdpHeader {
  frag: number;
  address: Address;
  /** A view into the datagram (no copy). */
  data: Buffer;
}

function versionError(what: string, got: number, want: number): BrookError {
  return new BrookError(
    ErrorCodes.SOCKS_VERSION,
    `${what}: version 0x${got.toString(16).padStart(2, '0')}, want 0x${want.toString(16).padStart(2, '0')}`,
  );
}

/** Greeting: VER NMETHODS METHODS. An empty method list parses (it selects NO_ACCEPTABLE). */
export function parseGreeting(buf: Uint8Array): Parsed<Greeting> | null {
  if (buf.length < VERSION_SIZE) return null;
  if (buf[0] !== SOCKS5_VERSION) throw versionError('greeting', buf[0]!, SOCKS5_VERSION);
  if (buf.length < GREETING_HEAD_SIZE) return null;
  const n = buf[VERSION_SIZE]!;
  const total = GREETING_HEAD_SIZE + n * METHOD_SIZE;
  if (buf.length < total) return null;
  return { value: { methods: Array.from(buf.subarray(GREETING_HEAD_SIZE, total)) }, bytesRead: total };
}

/**
 * Pick the method: USERNAME_PASSWORD when auth is required (and offered),
 * NO_AUTH when no auth is required (and offered), else NO_ACCEPTABLE.
 */
export function chooseMethod(offered: readonly number[], authRequired: boolean): number {
  const want = authRequired ? Socks5Method.USERNAME_PASSWORD : Socks5Method.NO_AUTH;
  return offered.includes(want) ? want : Socks5Method.NO_ACCEPTABLE;
}

export function buildMethodReply(method: number): Buffer {
  const out = Buffer.allocUnsafe(VERSION_SIZE + METHOD_SIZE);
  out[0] = SOCKS5_VERSION;
  out[1] = method;
  return out;
}

/** RFC 1929 request: VER(1)=0x01 ULEN UNAME PLEN PASSWD. */
export function parseUserPassAuth(buf: Uint8Array): Parsed<UserPassAuth> | null {
  if (buf.length < VERSION_SIZE) return null;
  if (buf[0] !== USERPASS_VERSION) throw versionError('username/password auth', buf[0]!, USERPASS_VERSION);
  if (buf.length < VERSION_SIZE + ULEN_SIZE) return null;
  const ulen = buf[VERSION_SIZE]!;
  const uStart = VERSION_SIZE + ULEN_SIZE;
  const plenAt = uStart + ulen;
  if (buf.length < plenAt + PLEN_SIZE) return null;
  const plen = buf[plenAt]!;
  const pStart = plenAt + PLEN_SIZE;
  const total = pStart + plen;
  if (buf.length < total) return null;
  return {
    value: {
      username: Buffer.from(buf.subarray(uStart, plenAt)),
      password: Buffer.from(buf.subarray(pStart, total)),
    },
    bytesRead: total,
  };
}

export function buildUserPassReply(ok: boolean): Buffer {
  const out = Buffer.allocUnsafe(VERSION_SIZE + STATUS_SIZE);
  out[0] = USERPASS_VERSION;
  out[1] = ok ? USERPASS_STATUS_SUCCESS : USERPASS_STATUS_FAILURE;
  return out;
}

function isKnownCommand(c: number): c is Socks5CommandCode {
  return c === Socks5Command.CONNECT || c === Socks5Command.BIND || c === Socks5Command.UDP_ASSOCIATE;
}

/**
 * Request: VER CMD RSV ATYP ADDR PORT. Commands CONNECT, BIND and UDP
 * ASSOCIATE parse (the server decides which it supports); any other CMD
 * throws SOCKS_COMMAND. RSV is not checked (RFC says 0x00; clients vary).
 */
export function parseRequest(buf: Uint8Array): Parsed<Socks5Request> | null {
  if (buf.length < VERSION_SIZE) return null;
  if (buf[0] !== SOCKS5_VERSION) throw versionError('request', buf[0]!, SOCKS5_VERSION);
  if (buf.length < VERSION_SIZE + CMD_SIZE) return null;
  const cmd = buf[VERSION_SIZE]!;
  if (!isKnownCommand(cmd)) {
    throw new BrookError(ErrorCodes.SOCKS_COMMAND, `unknown command 0x${cmd.toString(16).padStart(2, '0')}`);
  }
  if (buf.length < REQUEST_HEAD_SIZE) return null;
  const decoded = decodeAddressOrNull(buf, REQUEST_HEAD_SIZE);
  if (decoded === null) return null;
  return {
    value: { command: cmd, destination: decoded.address },
    bytesRead: REQUEST_HEAD_SIZE + decoded.bytesRead,
  };
}

/** decodeAddress, mapping "incomplete" to null and an invalid address to SOCKS_MALFORMED. */
function decodeAddressOrNull(buf: Uint8Array, offset: number): { address: Address; bytesRead: number } | null {
  try {
    return decodeAddress(buf, offset);
  } catch (e) {
    if (isBrookError(e, ErrorCodes.ADDRESS_TRUNCATED)) return null;
    throw malformedFrom(e);
  }
}

function malformedFrom(e: unknown): unknown {
  if (isBrookError(e, ErrorCodes.ADDRESS_INVALID) || isBrookError(e, ErrorCodes.DOMAIN_TOO_LONG)) {
    return new BrookError(ErrorCodes.SOCKS_MALFORMED, `malformed address: ${e.message}`, { cause: e });
  }
  return e;
}

/** Reply: VER REP RSV BND.ADDR BND.PORT (one allocation). */
export function buildReply(rep: number, bound: Address = UNSPECIFIED_BOUND): Buffer {
  const out = Buffer.allocUnsafe(REQUEST_HEAD_SIZE + encodedAddressSize(bound));
  out[0] = SOCKS5_VERSION;
  out[1] = rep;
  out[2] = 0x00;
  writeAddress(bound, out, REQUEST_HEAD_SIZE);
  return out;
}

/**
 * Parse a whole SOCKS5 UDP datagram. Throws ADDRESS_TRUNCATED (short),
 * ATYP_UNKNOWN, SOCKS_MALFORMED (e.g. empty domain), SOCKS_UDP_FRAG
 * (FRAG != 0: fragmentation is not supported, RFC 1928 lets us drop it).
 */
export function parseUdpHeader(buf: Buffer): UdpHeader {
  if (buf.length < UDP_HEADER_PREFIX_SIZE) {
    throw new BrookError(ErrorCodes.ADDRESS_TRUNCATED, `UDP header truncated (${buf.length} bytes)`);
  }
  const frag = buf[UDP_FRAG_OFFSET]!;
  if (frag !== 0) throw new BrookError(ErrorCodes.SOCKS_UDP_FRAG, `UDP fragment ${frag} not supported`);
  let decoded: { address: Address; bytesRead: number };
  try {
    decoded = decodeAddress(buf, UDP_HEADER_PREFIX_SIZE);
  } catch (e) {
    throw malformedFrom(e);
  }
  const start = UDP_HEADER_PREFIX_SIZE + decoded.bytesRead;
  return { frag, address: decoded.address, data: buf.subarray(start) };
}

/** RSV(0) FRAG(0) ADDR DATA in one allocation. */
export function buildUdpHeader(address: Address, data: Uint8Array): Buffer {
  const addrSize = encodedAddressSize(address);
  const out = Buffer.allocUnsafe(UDP_HEADER_PREFIX_SIZE + addrSize + data.length);
  out[0] = 0;
  out[1] = 0;
  out[UDP_FRAG_OFFSET] = 0;
  writeAddress(address, out, UDP_HEADER_PREFIX_SIZE);
  out.set(data, UDP_HEADER_PREFIX_SIZE + addrSize);
  return out;
}
