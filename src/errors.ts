/**
 * Typed errors with stable codes. Every failure the project reports is a
 * BrookError whose `code` is one of ErrorCode; callers switch on the code,
 * never on the message. `socks5ReplyFor` maps codes to SOCKS5 reply codes.
 * Every code is listed in protocol/errors.md (what it means, where it arises, what
 * the user sees); a new code goes there too (test/errors-doc.test.ts checks both ways).
 */

export const ErrorCodes = {
  // Brook stream (protocol/brook-stream.md)
  LENGTH_TRUNCATED: 'BROOK_ERR_LENGTH_TRUNCATED',
  LENGTH_OVERSIZED: 'BROOK_ERR_LENGTH_OVERSIZED',
  PAYLOAD_OVERSIZED: 'BROOK_ERR_PAYLOAD_OVERSIZED',
  AUTH_FAILED: 'BROOK_ERR_AUTH_FAILED',
  NONCE_SIZE: 'BROOK_ERR_NONCE_SIZE',
  STREAM_TRUNCATED: 'BROOK_ERR_STREAM_TRUNCATED',
  // first fragment / header
  TIME_STALE: 'BROOK_ERR_TIME_STALE',
  TIME_PARITY: 'BROOK_ERR_TIME_PARITY',
  HEADER_TRUNCATED: 'BROOK_ERR_HEADER_TRUNCATED',
  /** A header time further in the future than the server accepts (--maxTimeAhead). */
  TIME_AHEAD: 'BROOK_ERR_TIME_AHEAD',
  /** A client nonce the server has accepted before (a replayed stream). */
  REPLAY: 'BROOK_ERR_REPLAY',
  /** More bytes than --probeBytes arrived before a valid header. */
  PROBE_BUDGET: 'BROOK_ERR_PROBE_BUDGET',
  // SOCKS5-style address
  ATYP_UNKNOWN: 'BROOK_ERR_ATYP_UNKNOWN',
  ADDRESS_TRUNCATED: 'BROOK_ERR_ADDRESS_TRUNCATED',
  DOMAIN_TOO_LONG: 'BROOK_ERR_DOMAIN_TOO_LONG',
  ADDRESS_INVALID: 'BROOK_ERR_ADDRESS_INVALID',
  // withoutBrookProtocol
  WOB_PASSWORD: 'BROOK_ERR_WOB_PASSWORD',
  WOB_HEADER_OVERSIZED: 'BROOK_ERR_WOB_HEADER_OVERSIZED',
  // HTTP upgrade
  UPGRADE_RESPONSE: 'BROOK_ERR_UPGRADE_RESPONSE',
  UPGRADE_ACCEPT: 'BROOK_ERR_UPGRADE_ACCEPT',
  UPGRADE_REQUEST: 'BROOK_ERR_UPGRADE_REQUEST',
  UPGRADE_TOO_LARGE: 'BROOK_ERR_UPGRADE_TOO_LARGE',
  // SOCKS5 server (RFC 1928 / 1929)
  SOCKS_VERSION: 'BROOK_ERR_SOCKS_VERSION',
  SOCKS_NO_METHOD: 'BROOK_ERR_SOCKS_NO_METHOD',
  SOCKS_AUTH: 'BROOK_ERR_SOCKS_AUTH',
  SOCKS_COMMAND: 'BROOK_ERR_SOCKS_COMMAND',
  SOCKS_MALFORMED: 'BROOK_ERR_SOCKS_MALFORMED',
  SOCKS_UDP_FRAG: 'BROOK_ERR_SOCKS_UDP_FRAG',
  // network outcomes (dial / relay)
  CONNECTION_REFUSED: 'BROOK_ERR_CONNECTION_REFUSED',
  HOST_UNREACHABLE: 'BROOK_ERR_HOST_UNREACHABLE',
  NETWORK_UNREACHABLE: 'BROOK_ERR_NETWORK_UNREACHABLE',
  DNS_FAILED: 'BROOK_ERR_DNS_FAILED',
  TIMEOUT: 'BROOK_ERR_TIMEOUT',
  TUNNEL_FAILED: 'BROOK_ERR_TUNNEL_FAILED',
  CLOSED: 'BROOK_ERR_CLOSED',
  /** Out of descriptors or kernel memory (EMFILE, ENFILE, ENOMEM, ENOBUFS): accept, dial or open failed. */
  OUT_OF_RESOURCES: 'BROOK_ERR_OUT_OF_RESOURCES',
  // brook:// links
  LINK_INVALID: 'BROOK_ERR_LINK_INVALID',
  LINK_KIND: 'BROOK_ERR_LINK_KIND',
  // TLS / certificates / ACME
  CERT_MISSING: 'BROOK_ERR_CERT_MISSING',
  CERT_UNREADABLE: 'BROOK_ERR_CERT_UNREADABLE',
  CERT_MISMATCH: 'BROOK_ERR_CERT_MISMATCH',
  CERT_EXPIRED: 'BROOK_ERR_CERT_EXPIRED',
  ACME_FAILED: 'BROOK_ERR_ACME_FAILED',
  /** Bytes read as a TLS ClientHello are not one (src/tls/clienthello.ts: the fingerprint tools). */
  CLIENT_HELLO_INVALID: 'BROOK_ERR_CLIENT_HELLO_INVALID',
  // configuration / CLI
  CONFIG: 'BROOK_ERR_CONFIG',
  // anything that escaped classification (always wraps a cause)
  INTERNAL: 'BROOK_ERR_INTERNAL',
  // the native addon (src/native/addon.ts)
  /** An argument the native addon refused (its C argument checks): a bug in the caller, never input from the wire. */
  NATIVE_ARGUMENT: 'BROOK_ERR_NATIVE_ARGUMENT',
  // HTTP proxy (src/httpproxy)
  HTTP_MALFORMED: 'BROOK_ERR_HTTP_MALFORMED',
  HTTP_HEAD_TOO_LARGE: 'BROOK_ERR_HTTP_HEAD_TOO_LARGE',
  // destination policy (src/policy)
  /** The destination matched a block rule (--blockDomainList, --blockCIDR4List/6List, --blockGeoIP). */
  BLOCKED: 'BROOK_ERR_BLOCKED',
  /** A block list has a line that is not a domain / CIDR of the right family, or is over its size bound. */
  LIST_INVALID: 'BROOK_ERR_LIST_INVALID',
  /** A block list could not be read: unreadable file, unreachable URL, HTTP error, timeout. */
  LIST_UNREACHABLE: 'BROOK_ERR_LIST_UNREACHABLE',
  /** The GeoIP database could not be loaded. */
  GEOIP_UNAVAILABLE: 'BROOK_ERR_GEOIP_UNAVAILABLE',
  // behind a proxy (--proxyProtocol, --trustedProxies, --fallback)
  /** --proxyProtocol: the connection does not start with a well-formed PROXY v1/v2 header. */
  PROXY_HEADER_INVALID: 'BROOK_ERR_PROXY_HEADER_INVALID',
  /** --proxyProtocol with --trustedProxies: a PROXY header from a direct peer outside the list. */
  PROXY_UNTRUSTED: 'BROOK_ERR_PROXY_UNTRUSTED',
  /** --fallback URL: the site did not answer (refused, timed out, reset). */
  FALLBACK_UNREACHABLE: 'BROOK_ERR_FALLBACK_UNREACHABLE',
  // many users (src/users, protocol/users.md)
  /** The users file does not parse or check out (bad line, unknown key, duplicate name or password, ...): the message names the line. */
  USERS_FILE: 'BROOK_ERR_USERS_FILE',
  /** The accounting state file (bytes per user) cannot be read, is corrupt, or cannot be written. */
  USERS_STATE: 'BROOK_ERR_USERS_STATE',
  /** A users command named a user the users file does not have. */
  USER_UNKNOWN: 'BROOK_ERR_USER_UNKNOWN',
  /** users add: the users file already has a user of that name. */
  USER_EXISTS: 'BROOK_ERR_USER_EXISTS',
  // the fleet's shared store (src/store, protocol/fleet.md)
  /** The store (Redis) is down, did not answer in time, answered an error, or too much waits for it. */
  STORE_UNAVAILABLE: 'BROOK_ERR_STORE_UNAVAILABLE',
} as const;

export type ErrorCode = (typeof ErrorCodes)[keyof typeof ErrorCodes];

const CODES: ReadonlySet<string> = new Set(Object.values(ErrorCodes));

/** Whether a value is one of the codes above (e.g. the code on an error the native addon threw). */
export function isErrorCode(v: unknown): v is ErrorCode {
  return typeof v === 'string' && CODES.has(v);
}

export class BrookError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'BrookError';
    this.code = code;
  }
}

export function isBrookError(e: unknown, code?: ErrorCode): e is BrookError {
  return e instanceof BrookError && (code === undefined || e.code === code);
}

/** Classify any thrown value (e.g. a Node system error from a dial) as a BrookError. */
export function toBrookError(e: unknown): BrookError {
  if (e instanceof BrookError) return e;
  const sys = e as NodeJS.ErrnoException | undefined;
  const msg = sys && typeof sys.message === 'string' ? sys.message : String(e);
  switch (sys?.code) {
    case 'ECONNREFUSED':
      return new BrookError(ErrorCodes.CONNECTION_REFUSED, msg, { cause: e });
    case 'EHOSTUNREACH':
    case 'EHOSTDOWN':
      return new BrookError(ErrorCodes.HOST_UNREACHABLE, msg, { cause: e });
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
    case 'EAFNOSUPPORT':
      return new BrookError(ErrorCodes.NETWORK_UNREACHABLE, msg, { cause: e });
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EAI_FAIL':
    case 'EAI_NONAME':
    case 'ENODATA':
      return new BrookError(ErrorCodes.DNS_FAILED, msg, { cause: e });
    case 'ETIMEDOUT':
      return new BrookError(ErrorCodes.TIMEOUT, msg, { cause: e });
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ERR_STREAM_PREMATURE_CLOSE':
      return new BrookError(ErrorCodes.CLOSED, msg, { cause: e });
    case 'EMFILE':
    case 'ENFILE':
    case 'ENOMEM':
    case 'ENOBUFS':
      return new BrookError(ErrorCodes.OUT_OF_RESOURCES, msg, { cause: e });
    default:
      return new BrookError(ErrorCodes.INTERNAL, msg, { cause: e });
  }
}

/** SOCKS5 reply codes (RFC 1928 section 6). */
export const Socks5Reply = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;

/** The one place that maps an error to the SOCKS5 reply a client should see. */
export function socks5ReplyFor(e: unknown): number {
  const err = toBrookError(e);
  switch (err.code) {
    case ErrorCodes.CONNECTION_REFUSED:
      return Socks5Reply.CONNECTION_REFUSED;
    case ErrorCodes.HOST_UNREACHABLE:
    case ErrorCodes.DNS_FAILED:
    case ErrorCodes.TIMEOUT:
      return Socks5Reply.HOST_UNREACHABLE;
    case ErrorCodes.NETWORK_UNREACHABLE:
      return Socks5Reply.NETWORK_UNREACHABLE;
    case ErrorCodes.SOCKS_COMMAND:
      return Socks5Reply.COMMAND_NOT_SUPPORTED;
    case ErrorCodes.BLOCKED:
      return Socks5Reply.NOT_ALLOWED;
    case ErrorCodes.ATYP_UNKNOWN:
      return Socks5Reply.ADDRESS_TYPE_NOT_SUPPORTED;
    default:
      return Socks5Reply.GENERAL_FAILURE;
  }
}
