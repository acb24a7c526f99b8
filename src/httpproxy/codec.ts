/**
 * HTTP/1.x proxy request head codec (pure: no I/O). RFC 9112 sections 2-3, 9.
 *
 *   CONNECT host:port HTTP/1.1\r\n             -> tunnel to host:port
 *   Header: value\r\n ... \r\n
 *
 *   GET http://host[:port]/path?q HTTP/1.1\r\n  -> dial host:port (80 by default) and send
 *   Header: value\r\n ... \r\n                     GET /path?q HTTP/1.1 + end-to-end headers
 *
 * `parseRequestHead` returns null until the blank line that ends the head
 * has arrived, and throws HTTP_HEAD_TOO_LARGE once MAX_HEAD_SIZE bytes hold
 * no complete head. Lines may end in CRLF or LF. A connection feeds its pieces
 * to a `ProxyRequestReader`, which searches each byte once (linear in the head).
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

/** Where a scan for the end of the head stands: the next offset to look at, and how many bytes it has looked at. */
export interface HeadScan {
  from: number;
  examined: number;
}

const LF = 0x0a;
const CR = 0x0d;

/**
 * Offset just past the blank line ending the head, or -1. Accepts CRLF or LF line ends.
 * Looks at buf[scan.from .. min(length, limit)) and leaves scan.from where the next call
 * goes on: after the bytes looked at, or at a LF whose next bytes have not arrived yet.
 * So feeding a head in pieces looks at each byte once (plus that LF again per piece).
 */
function findHeadEnd(buf: Uint8Array, limit: number, scan: HeadScan): number {
  const n = Math.min(buf.length, limit);
  let i = scan.from;
  let end = -1;
  for (; i < n; i++) {
    if (buf[i] !== LF) continue;
    // i is a LF; the head ends if the next line is empty ("\n" or "\r\n").
    if (i + 1 >= buf.length) break;
    if (buf[i + 1] === LF) end = i + 2;
    else if (buf[i + 1] !== CR) continue;
    else if (i + 2 >= buf.length) break;
    else if (buf[i + 2] === LF) end = i + 3;
    if (end >= 0) break;
  }
  // up to and with the byte the loop stopped at (a LF looked at again next time, or the end's LF)
  scan.examined += Math.min(i + 1, n) - scan.from;
  scan.from = i;
  return end;
}

function tooLarge(maxSize: number): BrookError {
  return new BrookError(ErrorCodes.HTTP_HEAD_TOO_LARGE, `request head larger than ${maxSize} bytes`);
}

/**
 * Parse a request head from the start of `buf`. Returns null while the head
 * is incomplete; throws HTTP_HEAD_TOO_LARGE past `maxSize`, HTTP_MALFORMED for
 * anything that is not an HTTP/1.x request head. Called again with more bytes it
 * starts over: a connection feeds its chunks to a ProxyRequestReader instead.
 */
export function parseRequestHead(buf: Uint8Array, maxSize = MAX_HEAD_SIZE): RequestHead | null {
  const end = findHeadEnd(buf, maxSize, { from: 0, examined: 0 });
  if (end < 0 || end > maxSize) {
    if (buf.length >= maxSize) throw tooLarge(maxSize);
    return null;
  }
  return parseHeadLines(buf, end);
}

/** The request line and header lines of buf[0, end), `end` just past the blank line. */
function parseHeadLines(buf: Uint8Array, end: number): RequestHead {
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

/** First size of a reader's buffer; it doubles as the head grows (at most to maxSize plus the last piece). */
const INITIAL_READER_SIZE = 1024;

/**
 * The incremental front end a connection uses: push() each piece as it arrives; null while the
 * head is incomplete, then what parseProxyRequest gives for all the bytes pushed (and the reader
 * is done). Throws as parseProxyRequest does. The pieces are copied into one buffer that doubles,
 * and the search for the blank line goes on where the last piece ended, so a head of n bytes costs
 * O(n) however it is split (re-parsing everything on each piece cost O(n^2): one byte at a time,
 * 16 KiB of head meant ~134 M bytes searched and copied).
 */
export class ProxyRequestReader {
  private store: Buffer = Buffer.alloc(0);
  private length = 0;
  private readonly scan: HeadScan = { from: 0, examined: 0 };
  private done = false;

  constructor(private readonly maxSize = MAX_HEAD_SIZE) {}

  /** Bytes the search has looked at so far: at most the bytes pushed plus one a push. */
  get examined(): number {
    return this.scan.examined;
  }

  push(piece: Buffer): { request: ProxyRequest; rest: Buffer } | null {
    if (this.done) throw new BrookError(ErrorCodes.INTERNAL, 'ProxyRequestReader used after its head');
    // the common case, the whole head in the first piece: no copy
    const buf = this.length === 0 ? piece : this.append(piece);
    const end = findHeadEnd(buf, this.maxSize, this.scan);
    if (end < 0 || end > this.maxSize) {
      if (buf.length >= this.maxSize) throw tooLarge(this.maxSize);
      if (this.length === 0) this.append(piece);
      return null;
    }
    this.done = true;
    this.store = Buffer.alloc(0);
    this.length = 0;
    const head = parseHeadLines(buf, end);
    return { request: interpretRequest(head), rest: buf.subarray(end) };
  }

  /** Add `piece` to the stored bytes; the view of all of them. */
  private append(piece: Buffer): Buffer {
    const need = this.length + piece.length;
    if (need > this.store.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, 2 * this.store.length, INITIAL_READER_SIZE));
      this.store.copy(grown, 0, 0, this.length);
      this.store = grown;
    }
    piece.copy(this.store, this.length);
    this.length = need;
    return this.store.subarray(0, need);
  }
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
