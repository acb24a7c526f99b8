/**
 * HTTP/1.x proxy request head codec (pure: no I/O). RFC 9112 sections 2-3, 9.
 *
 *   CONNECT host:port HTTP/1.1\r\n             -> tunnel to host:port
 *   Header: value\r\n ... \r\n
 *
 *   GET http://host[:port]/path?q HTTP/1.1\r\n  -> dial host:port (80 by default) and send
 *   Header: value\r\n ... \r\n                     GET /path?q HTTP/1.1 + end-to-end headers
 *
 * `parseRequestHead` is incremental: it returns null until the blank line
 * that ends the head has arrived, and throws HTTP_HEAD_TOO_LARGE once
 * MAX_HEAD_SIZE bytes hold no complete head. Lines may end in CRLF or LF.
 */
import { BrookError, ErrorCodes } from '../errors.js';
import { type Address, makeAddress } from '../protocol/address.js';

/** Largest request head (request line + headers + blank line) we buffer. */
export const MAX_HEAD_SIZE = 16 * 1024;
export const DEFAULT_HTTP_PORT = 80;
export const MAX_PORT = 0xffff;

/** Headers that concern only the client-proxy hop; never forwarded to the origin. */
const HOP_BY_HOP = new Set(['proxy-connection', 'proxy-authorization', 'keep-alive', 'connection']);

const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const VERSION_RE = /^HTTP\/1\.[01]$/;

export interface RequestHead {
  method: string;
  /** Request target as sent: authority for CONNECT, absolute URI for a proxied request. */
  target: string;
  version: string;
  /** Header lines in order, names and values as sent (values trimmed of surrounding blanks). */
  headers: Array<[name: string, value: string]>;
  /** Bytes the head took in the input, blank line included; what follows is body / tunnel data. */
  headSize: number;
}

export type ProxyRequest =
  | { kind: 'connect'; destination: Address; head: RequestHead }
  | {
      kind: 'forward';
      destination: Address;
      head: RequestHead;
      /** The request head to send to the origin: origin-form target, hop-by-hop headers removed. */
      rewrittenHead: Buffer;
    };

function malformed(why: string): BrookError {
  return new BrookError(ErrorCodes.HTTP_MALFORMED, `malformed HTTP request: ${why}`);
}

/** Offset just past the blank line ending the head, or -1. Accepts CRLF or LF line ends. */
function findHeadEnd(buf: Uint8Array, limit: number): number {
  const n = Math.min(buf.length, limit);
  for (let i = 0; i < n; i++) {
    if (buf[i] !== 0x0a) continue;
    // i is a LF; the head ends if the next line is empty ("\n" or "\r\n").
    if (i + 1 < buf.length && buf[i + 1] === 0x0a) return i + 2;
    if (i + 2 < buf.length && buf[i + 1] === 0x0d && buf[i + 2] === 0x0a) return i + 3;
  }
  return -1;
}

/**
 * Parse a request head from the start of `buf`. Returns null while the head
 * is incomplete; throws HTTP_HEAD_TOO_LARGE past `maxSize`, HTTP_MALFORMED for
 * anything that is not an HTTP/1.x request head.
 */
export function parseRequestHead(buf: Uint8Array, maxSize = MAX_HEAD_SIZE): RequestHead | null {
  const end = findHeadEnd(buf, maxSize);
  if (end < 0 || end > maxSize) {
    if (buf.length >= maxSize) {
      throw new BrookError(ErrorCodes.HTTP_HEAD_TOO_LARGE, `request head larger than ${maxSize} bytes`);
    }
    return null;
  }
  const text = Buffer.from(buf.buffer, buf.byteOffset, end).toString('latin1');
  const lines = text.split('\n').map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
  // lines ends with two empty strings (the blank line and what follows its LF).
  const requestLine = lines[0] ?? '';
  const parts = requestLine.split(' ');
  if (parts.length !== 3) throw malformed(`bad request line ${JSON.stringify(requestLine.slice(0, 80))}`);
  const [method, target, version] = parts as [string, string, string];
  if (!TOKEN_RE.test(method)) throw malformed('bad method');
  if (target === '' || /[\x00-\x20\x7f]/.test(target)) throw malformed('bad request target');
  if (!VERSION_RE.test(version)) throw malformed(`unsupported version ${JSON.stringify(version.slice(0, 16))}`);
  const headers: Array<[string, string]> = [];
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === '') break;
    if (line[0] === ' ' || line[0] === '\t') throw malformed('obsolete header line folding');
    const colon = line.indexOf(':');
    if (colon <= 0) throw malformed('header line without a name');
    const name = line.slice(0, colon);
    if (!TOKEN_RE.test(name)) throw malformed(`bad header name ${JSON.stringify(name.slice(0, 40))}`);
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) throw malformed('control character in header value');
    headers.push([name, value]);
  }
  return { method, target, version, headers, headSize: end };
}

/** First value of a header (case-insensitive name). */
export function headerValue(head: RequestHead, name: string): string | undefined {
  const lower = name.toLowerCase();
  return head.headers.find(([n]) => n.toLowerCase() === lower)?.[1];
}

function parsePort(text: string): number {
  if (!/^\d{1,5}$/.test(text)) throw malformed(`bad port ${JSON.stringify(text)}`);
  const port = Number(text);
  if (port < 1 || port > MAX_PORT) throw malformed(`port out of range: ${text}`);
  return port;
}

/** "host:port" authority (CONNECT target) to an Address. Port required. */
export function parseAuthority(authority: string, defaultPort?: number): Address {
  let host: string;
  let portText: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(.*))?$/.exec(authority);
  if (v6) {
    host = v6[1]!;
    portText = v6[2];
  } else {
    const colon = authority.lastIndexOf(':');
    if (colon >= 0 && authority.indexOf(':') !== colon) throw malformed('IPv6 host must be in brackets');
    host = colon >= 0 ? authority.slice(0, colon) : authority;
    portText = colon >= 0 ? authority.slice(colon + 1) : undefined;
  }
  if (host === '' || /[\s/?#@\\]/.test(host)) throw malformed(`bad host ${JSON.stringify(host)}`);
  let port: number;
  if (portText === undefined || portText === '') {
    if (defaultPort === undefined) throw malformed('CONNECT target needs host:port');
    port = defaultPort;
  } else {
    port = parsePort(portText);
  }
  try {
    return v6 ? makeAddress(`[${host}]`, port) : makeAddress(host, port);
  } catch (e) {
    throw malformed(e instanceof Error ? e.message : String(e));
  }
}

/** Split an `http://` absolute URI into its authority (without userinfo) and origin-form target. */
export function splitAbsoluteUri(target: string): { authority: string; originForm: string } {
  const m = /^http:\/\/([^/?#]*)([^#]*)/i.exec(target);
  if (!m) {
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(target)) throw malformed(`unsupported scheme in ${JSON.stringify(target.slice(0, 80))}`);
    throw malformed('a proxy request needs an absolute http:// URI or CONNECT');
  }
  let authority = m[1]!;
  const at = authority.lastIndexOf('@');
  if (at >= 0) authority = authority.slice(at + 1);
  if (authority === '') throw malformed('empty host in URI');
  const rest = m[2]!;
  const originForm = rest === '' ? '/' : rest.startsWith('?') ? `/${rest}` : rest;
  return { authority, originForm };
}

/** Header names listed in Connection headers (lowercase). */
function connectionTokens(head: RequestHead): Set<string> {
  const out = new Set<string>();
  for (const [n, v] of head.headers) {
    if (n.toLowerCase() !== 'connection') continue;
    for (const t of v.split(',')) {
      const tok = t.trim().toLowerCase();
      if (tok) out.add(tok);
    }
  }
  return out;
}

/**
 * The head to send to the origin for a proxied absolute-URI request:
 * origin-form target, Proxy-Connection / Proxy-Authorization / Keep-Alive /
 * Connection and every header named in Connection removed, Host kept (added
 * from the URI when missing), then `Connection: close` so the origin ends the
 * connection after one response (the proxy serves one request per client
 * connection; see server.ts). A protocol upgrade (Connection: upgrade plus an
 * Upgrade header) keeps `Connection: Upgrade` and its Upgrade header instead.
 */
export function rewriteForOrigin(head: RequestHead, authority: string, originForm: string): Buffer {
  const listed = connectionTokens(head);
  const upgrading = listed.has('upgrade') && headerValue(head, 'upgrade') !== undefined;
  const lines = [`${head.method} ${originForm} ${head.version}`];
  let hasHost = false;
  for (const [name, value] of head.headers) {
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower)) continue;
    if (listed.has(lower) && !(upgrading && lower === 'upgrade')) continue;
    if (lower === 'host') {
      if (hasHost) continue;
      hasHost = true;
    }
    lines.push(`${name}: ${value}`);
  }
  if (!hasHost) lines.splice(1, 0, `Host: ${authority}`);
  lines.push(upgrading ? 'Connection: Upgrade' : 'Connection: close');
  return Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1');
}

/** Decide what a parsed head asks of the proxy. Throws HTTP_MALFORMED. */
export function interpretRequest(head: RequestHead): ProxyRequest {
  if (head.method.toUpperCase() === 'CONNECT') {
    return { kind: 'connect', destination: parseAuthority(head.target), head };
  }
  const { authority, originForm } = splitAbsoluteUri(head.target);
  const destination = parseAuthority(authority, DEFAULT_HTTP_PORT);
  return { kind: 'forward', destination, head, rewrittenHead: rewriteForOrigin(head, authority, originForm) };
}

/**
 * Incremental front end: feed the bytes received so far; returns null while
 * incomplete, else the request and the bytes after the head (body or tunnel
 * data the client pipelined).
 */
export function parseProxyRequest(
  buf: Uint8Array,
  maxSize = MAX_HEAD_SIZE,
): { request: ProxyRequest; rest: Buffer } | null {
  const head = parseRequestHead(buf, maxSize);
  if (!head) return null;
  const rest = Buffer.from(buf.buffer, buf.byteOffset + head.headSize, buf.length - head.headSize);
  return { request: interpretRequest(head), rest };
}

/** Minimal response for proxy-side failures (always closes). */
export function errorResponse(status: number, reason: string, body = `${status} ${reason}\n`): Buffer {
  return Buffer.from(
    `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
    'utf8',
  );
}

export const CONNECT_ESTABLISHED = Buffer.from('HTTP/1.1 200 Connection established\r\n\r\n', 'latin1');
