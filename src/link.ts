/**
 * brook:// links (pure: no I/O). Spec: protocol/links.md.
 *
 *   brook://KIND?k1=v1&k2=v2...
 *
 * KIND is the URL host. The query is what Go's `url.Values.Encode()` writes:
 * keys sorted by byte order, key and value each escaped with Go's
 * `url.QueryEscape` (A-Za-z0-9 and `-_.~` kept, space -> `+`, every other
 * UTF-8 byte -> `%XX` uppercase). The server is the value of the key named
 * KIND, written as given (`ws://1.2.3.4:9999`, `wss://d.com:443/ws`): the link
 * never adds a path; a reader uses `/ws` when the server URL has no path.
 * HKDF info options are plain text (their bytes, query-escaped), not base64.
 */
import { BrookError, ErrorCodes } from './errors.js';
import { parseTlsFingerprint, type TlsFingerprint } from './tls/fingerprint.js';
import { parseFragmentSpec, type TlsFragmentSpec } from './tls/fragment-spec.js';

export const LINK_SCHEME = 'brook://';
/** Kinds brook-ts speaks. */
export const SUPPORTED_LINK_KINDS = ['wsserver', 'wssserver'] as const;
export type LinkKind = (typeof SUPPORTED_LINK_KINDS)[number];
/** Path a reader uses when the server URL has none (upstream NewBrookLink). */
export const DEFAULT_WS_PATH = '/ws';
/** Option values upstream treats as a set boolean (compared exactly). */
export const LINK_TRUE = 'true';

const SERVER_SCHEME: Record<LinkKind, string> = { wsserver: 'ws:', wssserver: 'wss:' };
const HEX = '0123456789ABCDEF';

/** Option values for buildLink: strings as-is, `true` -> "true", false/undefined omitted, Buffers as raw bytes. */
export type LinkOptionValue = string | boolean | Uint8Array | undefined;

export interface LinkOptions {
  address?: string;
  insecure?: boolean | string;
  /** PEM text of a CA certificate, embedded as is. */
  ca?: string;
  withoutBrookProtocol?: boolean | string;
  clientHKDFInfo?: string | Uint8Array;
  serverHKDFInfo?: string | Uint8Array;
  /** wssserver: `chrome` (checked when the link is built). */
  tlsfingerprint?: string;
  /** wssserver: `min_len:max_len:min_delay:max_delay` (checked when the link is built). */
  fragment?: string;
  name?: string;
  username?: string;
  /** Any other key (udpovertcp, token, ...) is kept. */
  [key: string]: LinkOptionValue;
}

export interface ParsedLink {
  kind: LinkKind;
  /** The server URL exactly as written in the link, e.g. `ws://1.2.3.4:9999`. */
  server: string;
  password: string;
  username?: string;
  /** Every query key except KIND and `password`, first value of each (UTF-8 decoded). */
  options: Record<string, string>;
  /** Authority of the server URL (`host:port`, IPv6 bracketed): the Host header value. */
  hostPort: string;
  /** Host of the server URL without brackets: the TLS server name for wss. */
  hostname: string;
  port: number;
  /** Path of the server URL, `/ws` when it has none. */
  path: string;
  /** Where to dial instead of hostPort (option `address`), if given. */
  address?: string;
  insecure: boolean;
  ca?: string;
  withoutBrookProtocol: boolean;
  clientHKDFInfo?: Buffer;
  serverHKDFInfo?: Buffer;
  name?: string;
  /** wssserver: option `tlsfingerprint` (only `chrome`). */
  tlsFingerprint?: TlsFingerprint;
  /** wssserver: option `fragment`, delays in microseconds. */
  fragment?: TlsFragmentSpec;
}

/**
 * The wssserver options read with meaning (upstream reads them for that kind
 * only; for wsserver they are kept, unread). An empty value is absent, as in
 * upstream; any other bad value is LINK_INVALID (upstream ignores it silently).
 */
function tlsClientOptions(kind: string, get: (k: string) => string | undefined): { tlsFingerprint?: TlsFingerprint; fragment?: TlsFragmentSpec } {
  if (kind !== 'wssserver') return {};
  const f = get('tlsfingerprint');
  const s = get('fragment');
  return {
    ...(f ? { tlsFingerprint: parseTlsFingerprint(f, ErrorCodes.LINK_INVALID) } : {}),
    ...(s ? { fragment: parseFragmentSpec(s, ErrorCodes.LINK_INVALID) } : {}),
  };
}

function isUnreserved(c: number): boolean {
  return (
    (c >= 0x41 && c <= 0x5a) || // A-Z
    (c >= 0x61 && c <= 0x7a) || // a-z
    (c >= 0x30 && c <= 0x39) || // 0-9
    c === 0x2d || // -
    c === 0x5f || // _
    c === 0x2e || // .
    c === 0x7e // ~
  );
}

/** Go's url.QueryEscape over raw bytes. */
export function queryEscapeBytes(bytes: Uint8Array): string {
  let out = '';
  for (const c of bytes) {
    if (isUnreserved(c)) out += String.fromCharCode(c);
    else if (c === 0x20) out += '+';
    else out += '%' + HEX[c >> 4] + HEX[c & 0x0f];
  }
  return out;
}

/** Go's url.QueryEscape of a string (its UTF-8 bytes). */
export function queryEscape(s: string): string {
  return queryEscapeBytes(Buffer.from(s, 'utf8'));
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  return -1;
}

/** Go's url.QueryUnescape, to raw bytes; a bad `%` escape is LINK_INVALID. */
export function queryUnescapeBytes(s: string): Buffer {
  const src = Buffer.from(s, 'utf8');
  const out = Buffer.allocUnsafe(src.length);
  let n = 0;
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c === 0x2b) {
      out[n++] = 0x20;
    } else if (c === 0x25) {
      const hi = i + 2 < src.length ? hexValue(src[i + 1]!) : -1;
      const lo = i + 2 < src.length ? hexValue(src[i + 2]!) : -1;
      if (hi < 0 || lo < 0) {
        throw new BrookError(ErrorCodes.LINK_INVALID, `invalid escape ${JSON.stringify(s.slice(i, i + 3))} in link`);
      }
      out[n++] = (hi << 4) | lo;
      i += 2;
    } else {
      out[n++] = c;
    }
  }
  return out.subarray(0, n);
}

function isSupportedKind(kind: string): kind is LinkKind {
  return (SUPPORTED_LINK_KINDS as readonly string[]).includes(kind);
}

function kindError(kind: string): BrookError {
  return new BrookError(
    ErrorCodes.LINK_KIND,
    `link kind ${JSON.stringify(kind)} is not supported by brook-ts (supported: ${SUPPORTED_LINK_KINDS.join(', ')})`,
  );
}

/** The kind upstream's `brook link -s` picks for a server string: ws:// -> wsserver, wss:// -> wssserver. */
export function linkKindForServer(server: string): LinkKind {
  if (server.startsWith('ws://')) return 'wsserver';
  if (server.startsWith('wss://')) return 'wssserver';
  let kind = 'server';
  if (server.startsWith('socks5://')) kind = 'socks5';
  else if (server.startsWith('quic://')) kind = 'quicserver';
  throw kindError(kind);
}

export interface ServerUrl {
  hostPort: string;
  hostname: string;
  port: number;
  path: string;
}

/**
 * Split a `ws://host:port[/path]` / `wss://...` server URL. A port is
 * required (upstream dials the authority as is). Query and fragment are not
 * part of the path (upstream uses url.URL.Path).
 */
export function parseServerUrl(kind: LinkKind, server: string): ServerUrl {
  const scheme = SERVER_SCHEME[kind];
  const bad = (why: string): BrookError =>
    new BrookError(ErrorCodes.LINK_INVALID, `${kind} ${JSON.stringify(server)}: ${why}`);
  if (!server.toLowerCase().startsWith(scheme + '//')) throw bad(`expected ${scheme}//host:port[/path]`);
  const rest = server.slice(scheme.length + 2);
  const end = rest.search(/[/?#]/);
  const hostPort = end < 0 ? rest : rest.slice(0, end);
  let tail = end < 0 ? '' : rest.slice(end);
  const cut = tail.search(/[?#]/);
  if (cut >= 0) tail = tail.slice(0, cut);
  const m = /^\[([0-9A-Fa-f:.%]+)\]:(\d{1,5})$/.exec(hostPort) ?? /^([^:@\[\]\s]+):(\d{1,5})$/.exec(hostPort);
  if (!m) throw bad('expected host:port after the scheme');
  const port = Number(m[2]);
  if (port < 1 || port > 0xffff) throw bad(`port out of range: ${m[2]}`);
  let path = tail;
  if (path.includes('%')) {
    try {
      path = decodeURIComponent(path);
    } catch {
      throw bad('invalid escape in path');
    }
  }
  return { hostPort, hostname: m[1]!, port, path: path === '' ? DEFAULT_WS_PATH : path };
}

function optionToBytes(v: LinkOptionValue): Uint8Array | undefined {
  if (v === undefined || v === false) return undefined;
  if (v === true) return Buffer.from(LINK_TRUE, 'utf8');
  if (typeof v === 'string') return Buffer.from(v, 'utf8');
  return v;
}

function byteCompare(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * Build `brook://KIND?...` exactly as upstream's `brook.Link(kind, server, v)`:
 * the password is always present (possibly empty, like `brook link`), the
 * server is stored under the key KIND (overriding an option of that name).
 * Options that are undefined or false are left out.
 */
export function buildLink(kind: string, server: string, password: string, options: LinkOptions = {}): string {
  if (!isSupportedKind(kind)) throw kindError(kind);
  parseServerUrl(kind, server); // never write a link we could not read back
  tlsClientOptions(kind, (k) => {
    const v = options[k];
    return typeof v === 'string' ? v : v === undefined || v === false ? undefined : Buffer.from(optionToBytes(v)!).toString('utf8');
  });
  const values = new Map<string, Uint8Array>();
  for (const [k, v] of Object.entries(options)) {
    const b = optionToBytes(v);
    if (b !== undefined) values.set(k, b);
  }
  values.set('password', Buffer.from(password, 'utf8'));
  values.set(kind, Buffer.from(server, 'utf8'));
  const keys = [...values.keys()].sort(byteCompare);
  const query = keys.map((k) => `${queryEscape(k)}=${queryEscapeBytes(values.get(k)!)}`).join('&');
  return `${LINK_SCHEME}${kind}?${query}`;
}

/**
 * Parse a brook:// link. LINK_INVALID for anything malformed (no brook://,
 * no kind, bad escape, missing or malformed server; for wssserver a
 * tlsfingerprint other than chrome or a malformed fragment), LINK_KIND for a kind
 * brook-ts does not speak. Stricter than upstream, which silently drops
 * query pairs with a bad escape.
 */
export function parseLink(text: string): ParsedLink {
  const link = text.trim();
  const invalid = (why: string): BrookError => new BrookError(ErrorCodes.LINK_INVALID, `invalid brook link: ${why}`);
  if (link.slice(0, LINK_SCHEME.length).toLowerCase() !== LINK_SCHEME) throw invalid('it must start with brook://');
  // Go's url.Parse refuses control characters anywhere in a URL.
  if (/[\x00-\x1f\x7f]/.test(link)) throw invalid('control character in link');
  let rest = link.slice(LINK_SCHEME.length);
  const hash = rest.indexOf('#');
  if (hash >= 0) rest = rest.slice(0, hash); // a URL fragment, like url.Parse; values escape '#'
  const q = rest.indexOf('?');
  const authorityAndPath = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? '' : rest.slice(q + 1);
  const slash = authorityAndPath.indexOf('/');
  const kind = slash < 0 ? authorityAndPath : authorityAndPath.slice(0, slash);
  if (kind === '') throw invalid('no kind after brook://');
  if (!/^[A-Za-z0-9._~-]+$/.test(kind)) throw invalid(`malformed kind ${JSON.stringify(kind)}`);
  if (!isSupportedKind(kind)) throw kindError(kind);

  const raw = new Map<string, Buffer>();
  for (const pair of query.split('&')) {
    if (pair === '') continue;
    if (pair.includes(';')) throw invalid('semicolon in query');
    const eq = pair.indexOf('=');
    const k = queryUnescapeBytes(eq < 0 ? pair : pair.slice(0, eq)).toString('utf8');
    const v = queryUnescapeBytes(eq < 0 ? '' : pair.slice(eq + 1));
    if (!raw.has(k)) raw.set(k, v); // url.Values.Get returns the first value
  }
  const serverBytes = raw.get(kind);
  if (serverBytes === undefined || serverBytes.length === 0) throw invalid(`no ${kind}= server in link`);
  const server = serverBytes.toString('utf8');
  const url = parseServerUrl(kind, server);

  const options: Record<string, string> = {};
  for (const [k, v] of raw) if (k !== kind && k !== 'password') options[k] = v.toString('utf8');
  const nonEmpty = (k: string): string | undefined => (options[k] ? options[k] : undefined);
  const bytes = (k: string): Buffer | undefined => {
    const b = raw.get(k);
    return b && b.length > 0 ? Buffer.from(b) : undefined;
  };

  const parsed: ParsedLink = {
    kind,
    server,
    password: raw.get('password')?.toString('utf8') ?? '',
    options,
    ...url,
    insecure: options.insecure === LINK_TRUE,
    withoutBrookProtocol: options.withoutBrookProtocol === LINK_TRUE,
  };
  const optional = {
    username: nonEmpty('username'),
    address: nonEmpty('address'),
    ca: nonEmpty('ca'),
    name: nonEmpty('name'),
    clientHKDFInfo: bytes('clientHKDFInfo'),
    serverHKDFInfo: bytes('serverHKDFInfo'),
    ...tlsClientOptions(kind, nonEmpty),
  };
  for (const [k, v] of Object.entries(optional)) if (v !== undefined) (parsed as unknown as Record<string, unknown>)[k] = v;
  return parsed;
}
