/**
 * The client side of SOCKS5 (RFC 1928) with username/password (RFC 1929), as
 * bytes: no I/O. Parsers take what has arrived so far and return null when
 * more is needed, or what they read and how many bytes it took.
 *
 *   greeting  ->  VER(5) NMETHODS METHODS...
 *   choice    <-  VER(5) METHOD
 *   auth      ->  VER(1) ULEN UNAME PLEN PASSWD        (METHOD 0x02 only)
 *   status    <-  VER(1) STATUS                        (0 = success)
 *   request   ->  VER(5) CMD RSV(0) ATYP DST.ADDR DST.PORT
 *   reply     <-  VER(5) REP RSV ATYP BND.ADDR BND.PORT (REP 0 = succeeded)
 */
import { BrookError, ErrorCodes, Socks5Reply } from '../errors.js';
import { type Address, decodeAddress, encodeAddress } from '../protocol/address.js';
import { SOCKS5_VERSION, Socks5Method, USERPASS_STATUS_SUCCESS, USERPASS_VERSION } from '../socks5/codec.js';

/** RFC 1929: ULEN and PLEN are one byte. */
export const MAX_USERPASS_FIELD = 255;
const CHOICE_SIZE = 2;
const STATUS_SIZE = 2;
/** VER REP RSV before the bound address. */
const REPLY_HEAD_SIZE = 3;

export interface Parsed<T> {
  value: T;
  bytesRead: number;
}

/** VER NMETHODS METHODS: offers exactly one method, as upstream's client does. */
export function buildGreeting(method: number): Buffer {
  return Buffer.from([SOCKS5_VERSION, 1, method]);
}

export function parseChoice(buf: Uint8Array): Parsed<number> | null {
  if (buf.length < CHOICE_SIZE) return null;
  if (buf[0] !== SOCKS5_VERSION) throw new BrookError(ErrorCodes.SOCKS_VERSION, `proxy answered version ${buf[0]}, not 5`);
  return { value: buf[1]!, bytesRead: CHOICE_SIZE };
}

export function buildUserPass(username: string, password: string): Buffer {
  const u = Buffer.from(username, 'utf8');
  const p = Buffer.from(password, 'utf8');
  if (u.length < 1 || u.length > MAX_USERPASS_FIELD || p.length < 1 || p.length > MAX_USERPASS_FIELD) {
    throw new BrookError(ErrorCodes.CONFIG, `SOCKS5 username and password must each be 1..${MAX_USERPASS_FIELD} bytes`);
  }
  return Buffer.concat([Buffer.from([USERPASS_VERSION, u.length]), u, Buffer.from([p.length]), p]);
}

/** True when the proxy accepted the username/password. */
export function parseUserPassStatus(buf: Uint8Array): Parsed<boolean> | null {
  if (buf.length < STATUS_SIZE) return null;
  if (buf[0] !== USERPASS_VERSION) {
    throw new BrookError(ErrorCodes.SOCKS_MALFORMED, `proxy answered auth version ${buf[0]}, not ${USERPASS_VERSION}`);
  }
  return { value: buf[1] === USERPASS_STATUS_SUCCESS, bytesRead: STATUS_SIZE };
}

export function buildRequest(command: number, dst: Address): Buffer {
  return Buffer.concat([Buffer.from([SOCKS5_VERSION, command, 0]), encodeAddress(dst)]);
}

export interface Socks5ReplyInfo {
  rep: number;
  bound: Address;
}

export function parseReply(buf: Uint8Array): Parsed<Socks5ReplyInfo> | null {
  if (buf.length < REPLY_HEAD_SIZE + 1) return null;
  if (buf[0] !== SOCKS5_VERSION) throw new BrookError(ErrorCodes.SOCKS_VERSION, `proxy answered version ${buf[0]}, not 5`);
  let d;
  try {
    d = decodeAddress(buf, REPLY_HEAD_SIZE);
  } catch (e) {
    if (e instanceof BrookError && e.code === ErrorCodes.ADDRESS_TRUNCATED) return null;
    throw new BrookError(ErrorCodes.SOCKS_MALFORMED, `proxy reply: ${(e as Error).message}`, { cause: e });
  }
  return { value: { rep: buf[1]!, bound: d.address }, bytesRead: REPLY_HEAD_SIZE + d.bytesRead };
}

/** The error for a failed reply, with the code that maps back to the same SOCKS5 reply (socks5ReplyFor). */
export function replyError(rep: number, what: string): BrookError {
  const m = `${what}: proxy replied ${rep}`;
  switch (rep) {
    case Socks5Reply.NETWORK_UNREACHABLE:
      return new BrookError(ErrorCodes.NETWORK_UNREACHABLE, `${m} (network unreachable)`);
    case Socks5Reply.HOST_UNREACHABLE:
      return new BrookError(ErrorCodes.HOST_UNREACHABLE, `${m} (host unreachable)`);
    case Socks5Reply.CONNECTION_REFUSED:
      return new BrookError(ErrorCodes.CONNECTION_REFUSED, `${m} (connection refused)`);
    case Socks5Reply.TTL_EXPIRED:
      return new BrookError(ErrorCodes.TIMEOUT, `${m} (TTL expired)`);
    case Socks5Reply.COMMAND_NOT_SUPPORTED:
      return new BrookError(ErrorCodes.SOCKS_COMMAND, `${m} (command not supported)`);
    case Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED:
      return new BrookError(ErrorCodes.ATYP_UNKNOWN, `${m} (address type not supported)`);
    default:
      return new BrookError(ErrorCodes.TUNNEL_FAILED, `${m} (${rep === Socks5Reply.NOT_ALLOWED ? 'not allowed' : 'general failure'})`);
  }
}

export { Socks5Method };
