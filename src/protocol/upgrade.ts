/**
 * The HTTP/1.1 upgrade exactly as upstream Brook sends it. After the 101 there
 * is NO WebSocket framing: the Brook layer runs on the raw stream.
 *
 *   client:  GET <path> HTTP/1.1\r\n
 *            Host: <host:port>\r\n
 *            Upgrade: websocket\r\n
 *            Connection: Upgrade\r\n
 *            Sec-WebSocket-Key: <base64 of 16 random bytes>\r\n
 *            Sec-WebSocket-Version: 13\r\n\r\n
 *   server:  HTTP/1.1 101 Switching Protocols\r\n
 *            Upgrade: websocket\r\n
 *            Connection: Upgrade\r\n
 *            Sec-WebSocket-Accept: base64(sha1(key + GUID))\r\n\r\n
 *
 * Spec: protocol/websocket-upgrade.md
 */
import { createHash, randomBytes } from 'node:crypto';
import { BrookError, ErrorCodes } from '../errors.js';
import { MAX_UPGRADE_HEAD, WS_GUID, WS_KEY_RANDOM_SIZE } from './sizes.js';

const HEAD_END = Buffer.from('\r\n\r\n');
const WS_VERSION = '13';

export type RandomSource = (size: number) => Buffer;

export function newWebSocketKey(random: RandomSource = randomBytes): string {
  return random(WS_KEY_RANDOM_SIZE).toString('base64');
}

export function computeAccept(key: string): string {
  return createHash('sha1').update(key + WS_GUID).digest('base64');
}

export interface UpgradeRequestOptions {
  /** Host header value, "host:port" as upstream writes it. */
  host: string;
  path: string;
  key: string;
}

export function buildUpgradeRequest(o: UpgradeRequestOptions): Buffer {
  return Buffer.from(
    `GET ${o.path} HTTP/1.1\r\n` +
      `Host: ${o.host}\r\n` +
      'Upgrade: websocket\r\n' +
      'Connection: Upgrade\r\n' +
      `Sec-WebSocket-Key: ${o.key}\r\n` +
      `Sec-WebSocket-Version: ${WS_VERSION}\r\n\r\n`,
    'latin1',
  );
}

export function buildUpgradeResponse(key: string): Buffer {
  return Buffer.from(
    'HTTP/1.1 101 Switching Protocols\r\n' +
      'Upgrade: websocket\r\n' +
      'Connection: Upgrade\r\n' +
      `Sec-WebSocket-Accept: ${computeAccept(key)}\r\n\r\n`,
    'latin1',
  );
}

export interface ParsedUpgradeResponse {
  status: number;
  headers: Map<string, string>;
  /** Length of the response head including the blank line. */
  headLength: number;
}

/**
 * Client side: find the response head in `buf` (everything received so far).
 * Returns null while incomplete; throws UPGRADE_TOO_LARGE past the bound,
 * UPGRADE_RESPONSE when the status is not 101, UPGRADE_ACCEPT for a wrong
 * Sec-WebSocket-Accept. Bytes after the head belong to the Brook stream
 * (upstream's client discards them; our server never sends any early).
 */
export function parseUpgradeResponse(buf: Uint8Array, key: string, maxHead = MAX_UPGRADE_HEAD): ParsedUpgradeResponse | null {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.length);
  const end = b.indexOf(HEAD_END);
  if (end < 0) {
    if (b.length > maxHead) throw new BrookError(ErrorCodes.UPGRADE_TOO_LARGE, `upgrade response head exceeds ${maxHead} bytes`);
    return null;
  }
  if (end + HEAD_END.length > maxHead) {
    throw new BrookError(ErrorCodes.UPGRADE_TOO_LARGE, `upgrade response head exceeds ${maxHead} bytes`);
  }
  const lines = b.subarray(0, end).toString('latin1').split('\r\n');
  const statusLine = lines[0] ?? '';
  const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(statusLine);
  if (!m) throw new BrookError(ErrorCodes.UPGRADE_RESPONSE, `malformed status line ${JSON.stringify(statusLine.slice(0, 80))}`);
  const status = Number(m[1]);
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    if (i <= 0) throw new BrookError(ErrorCodes.UPGRADE_RESPONSE, `malformed header line ${JSON.stringify(line.slice(0, 80))}`);
    headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  if (status !== 101) throw new BrookError(ErrorCodes.UPGRADE_RESPONSE, `server answered ${status} instead of 101`);
  const accept = headers.get('sec-websocket-accept');
  if (accept !== computeAccept(key)) {
    throw new BrookError(ErrorCodes.UPGRADE_ACCEPT, `Sec-WebSocket-Accept ${JSON.stringify(accept ?? null)} does not match the key`);
  }
  return { status, headers, headLength: end + HEAD_END.length };
}

export type HeaderBag = Record<string, string | string[] | undefined>;

export type UpgradeCheck =
  | { ok: true; key: string }
  | { ok: false; status: 400 | 405; reason: string; headers?: Record<string, string> };

function hasToken(value: string | string[] | undefined, token: string): boolean {
  const v = Array.isArray(value) ? value.join(',') : (value ?? '');
  return v
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .includes(token);
}

/**
 * Server side: check a request on the upgrade path as upstream's server does
 * (gorilla/websocket Upgrader behind a GET-only route). `headers` are Node's
 * lower-cased IncomingMessage headers.
 */
export function checkUpgradeRequest(method: string, headers: HeaderBag): UpgradeCheck {
  if (method !== 'GET') return { ok: false, status: 405, reason: `method ${method} not allowed` };
  if (!hasToken(headers['connection'], 'upgrade')) return { ok: false, status: 400, reason: "'upgrade' token not found in 'Connection' header" };
  if (!hasToken(headers['upgrade'], 'websocket')) return { ok: false, status: 400, reason: "'websocket' token not found in 'Upgrade' header" };
  if (headers['sec-websocket-version'] !== WS_VERSION) {
    return { ok: false, status: 400, reason: 'unsupported Sec-WebSocket-Version', headers: { 'Sec-WebSocket-Version': WS_VERSION } };
  }
  const key = headers['sec-websocket-key'];
  if (typeof key !== 'string' || Buffer.from(key, 'base64').length !== WS_KEY_RANDOM_SIZE || Buffer.from(key, 'base64').toString('base64') !== key) {
    return { ok: false, status: 400, reason: "'Sec-WebSocket-Key' header must be Base64 encoded value of 16-byte in length" };
  }
  return { ok: true, key };
}
