/**
 * --fallback: what every request that is not a valid tunnel upgrade gets
 * (protocol/websocket-upgrade.md, "--fallback").
 *
 * - `--fallback http://127.0.0.1:8080[/base]` (or https://): a reverse proxy.
 *   The request goes to the site with its method, path, headers (minus the
 *   hop-by-hop ones) and body, streamed with backpressure; the site's status,
 *   headers and body come back as they are. The site sees Host as the client
 *   sent it, X-Forwarded-For with the client appended, X-Forwarded-Proto and
 *   X-Forwarded-Host, like nginx's usual proxy_set_header lines.
 * - `--fallback DIR`: static files from DIR (Express static, no redirects, no
 *   dot files); a missing file is nginx's 404 page, another method nginx's 405.
 *
 * What a prober learns: only the site's answers, or what nginx in front of a
 * site would answer itself (`Server: nginx` and nginx's own pages for 502,
 * 504 and 413). Nothing names brook-ts, Node or Express.
 *
 * Bounds (the client side keeps --headTimeout for the head and the pending
 * cap of the gate; the caller replaces the head deadline with
 * FALLBACK_REQUEST_TIMEOUT_MS once a request reaches the site):
 * - the site must answer and keep moving bytes: FALLBACK_IDLE_TIMEOUT_MS of
 *   silence on the site's connection (connect included) ends the request
 *   (504 if nothing was answered yet, else the client connection is cut);
 * - request bodies above FALLBACK_MAX_BODY are refused (413) or cut;
 * - at most FALLBACK_MAX_SOCKETS connections to the site at once (more wait
 *   in the agent's queue, within the same deadlines).
 */
import { statSync } from 'node:fs';
import { Agent as HttpAgent, type IncomingMessage, request as httpRequest, type ServerResponse } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { Transform, type TransformCallback } from 'node:stream';
import { createRequire } from 'node:module';
import type express from 'express';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';

/** Silence on the site's connection (connect, answer, body either way) that ends a request. */
export const FALLBACK_IDLE_TIMEOUT_MS = 30_000;
/** The longest one request to the site may take from its head to its last byte. */
export const FALLBACK_REQUEST_TIMEOUT_MS = 300_000;
/** Largest request body passed on (nginx's client_max_body_size is 1 MiB; we allow more). */
export const FALLBACK_MAX_BODY = 16 * 1024 * 1024;
/** Connections to the site at once. */
export const FALLBACK_MAX_SOCKETS = 256;
/** Idle keep-alive connections to the site kept. */
export const FALLBACK_MAX_FREE_SOCKETS = 16;

/** Headers of one hop only (RFC 9110 7.6.1), never passed on. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings']);

const REASON: Record<number, string> = { 404: 'Not Found', 405: 'Not Allowed', 413: 'Request Entity Too Large', 502: 'Bad Gateway', 504: 'Gateway Time-out' };

/** nginx's own error page, byte for byte in its layout. */
export function nginxErrorPage(status: number): string {
  const title = `${status} ${REASON[status] ?? ''}`;
  return `<html>\r\n<head><title>${title}</title></head>\r\n<body>\r\n<center><h1>${title}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n`;
}

/**
 * Our own Connection header: Node adds `Keep-Alive: timeout=N` to a
 * keep-alive answer unless the Connection header is set; nginx sends none.
 */
function connectionValue(res: ServerResponse): string {
  return res.shouldKeepAlive ? 'keep-alive' : 'close';
}

function sendNginxError(res: ServerResponse, status: number, close = false): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = nginxErrorPage(status);
  for (const h of res.getHeaderNames()) res.removeHeader(h);
  if (close) res.shouldKeepAlive = false;
  res.writeHead(status, {
    Server: 'nginx',
    'Content-Type': 'text/html',
    'Content-Length': String(Buffer.byteLength(body)),
    Connection: connectionValue(res),
  });
  res.end(body);
}

export interface FallbackContext {
  /** The client's address as the server logs it (appended to X-Forwarded-For). */
  client: string;
  /** The request arrived over TLS. */
  secure: boolean;
  /** An upgrade request that is not ours: its body is not HTTP-framed, none is passed on. */
  noBody: boolean;
}

export interface FallbackEvents {
  /** The site could not be reached or stopped answering (the caller logs it, rate-limited). */
  onError?: (err: BrookError) => void;
}

export interface Fallback {
  readonly kind: 'url' | 'dir';
  /** What the startup line shows. */
  readonly target: string;
  handle(req: IncomingMessage, res: ServerResponse, ctx: FallbackContext): void;
  close(): void;
}

/** Parse --fallback: a http(s) URL or an existing directory; a one-line CONFIG error otherwise. */
export function createFallback(spec: string, ev: FallbackEvents = {}): Fallback {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(spec)) return urlFallback(spec, ev);
  let isDir = false;
  try {
    isDir = statSync(spec).isDirectory();
  } catch (e) {
    throw new BrookError(ErrorCodes.CONFIG, `--fallback ${spec}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (e as Error).message}`);
  }
  if (!isDir) throw new BrookError(ErrorCodes.CONFIG, `--fallback ${spec}: not a directory`);
  return dirFallback(spec);
}

/** Express is loaded only for a --fallback folder (it adds ~13 MiB to a process that never serves one). */
const requireCjs = createRequire(import.meta.url);

function dirFallback(dir: string): Fallback {
  const { static: serveStatic } = requireCjs('express') as typeof express;
  const serve = serveStatic(dir, { redirect: false, dotfiles: 'ignore', cacheControl: false, fallthrough: true, index: ['index.html'] });
  return {
    kind: 'dir',
    target: dir,
    handle(req, res) {
      const notFound = (): void => sendNginxError(res, req.method === 'GET' || req.method === 'HEAD' ? 404 : 405);
      res.setHeader('Connection', connectionValue(res));
      // serve-static reads req.url; an error (bad encoding, unreadable file) is a 404 like a missing one
      serve(req as express.Request, res as express.Response, notFound);
    },
    close() {},
  };
}

/** Counts request body bytes; errors past FALLBACK_MAX_BODY. */
class BodyLimit extends Transform {
  private n = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.n += chunk.length;
    if (this.n > FALLBACK_MAX_BODY) cb(new BrookError(ErrorCodes.CONFIG, `request body over ${FALLBACK_MAX_BODY} bytes`));
    else cb(null, chunk);
  }
}

function forwardedHeaders(req: IncomingMessage, ctx: FallbackContext): Record<string, string | string[]> {
  const named = new Set(
    String(req.headers.connection ?? '')
      .split(',')
      .map((s) => s.trim().toLowerCase()),
  );
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(req.headers)) {
    if (v === undefined || HOP_BY_HOP.has(k) || named.has(k)) continue;
    out[k] = v;
  }
  const ip = ctx.client.replace(/^\[?([^\]]*?)\]?(:\d+)?$/, '$1');
  const prior = req.headers['x-forwarded-for'];
  out['x-forwarded-for'] = prior ? `${Array.isArray(prior) ? prior.join(', ') : prior}, ${ip}` : ip;
  out['x-forwarded-proto'] = ctx.secure ? 'https' : 'http';
  if (req.headers.host) out['x-forwarded-host'] = req.headers.host;
  if (ctx.noBody) delete out['content-length'];
  return out;
}

/** rawHeaders without the hop-by-hop ones (and those the Connection header names), case and order kept. */
function passedRawHeaders(raw: string[], connection: string | undefined): string[] {
  const named = new Set((connection ?? '').split(',').map((s) => s.trim().toLowerCase()));
  const out: string[] = [];
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const k = raw[i]!.toLowerCase();
    if (HOP_BY_HOP.has(k) || named.has(k)) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

function urlFallback(spec: string, ev: FallbackEvents): Fallback {
  let url: URL;
  try {
    url = new URL(spec);
  } catch {
    throw new BrookError(ErrorCodes.CONFIG, `--fallback ${spec}: not a URL or a directory`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new BrookError(ErrorCodes.CONFIG, `--fallback ${spec}: only http:// and https:// sites`);
  if (url.search || url.hash || url.username || url.password) throw new BrookError(ErrorCodes.CONFIG, `--fallback ${spec}: no query, fragment or credentials`);
  const secure = url.protocol === 'https:';
  const agentOptions = { keepAlive: true, maxSockets: FALLBACK_MAX_SOCKETS, maxFreeSockets: FALLBACK_MAX_FREE_SOCKETS, timeout: FALLBACK_IDLE_TIMEOUT_MS };
  const agent = secure ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
  const request = secure ? httpsRequest : httpRequest;
  const base = url.pathname.replace(/\/+$/, '');
  const unreachable = (e: unknown, what: string): BrookError => {
    const b = toBrookError(e);
    return new BrookError(ErrorCodes.FALLBACK_UNREACHABLE, `fallback ${url.host}: ${what}: ${b.message}`, { cause: e });
  };

  return {
    kind: 'url',
    target: url.href,
    handle(req, res, ctx) {
      const declared = Number(req.headers['content-length'] ?? 0);
      if (!ctx.noBody && declared > FALLBACK_MAX_BODY) {
        sendNginxError(res, 413, true);
        return;
      }
      let answered = false;
      const up = request({
        protocol: url.protocol,
        hostname: url.hostname.replace(/^\[|\]$/g, ''),
        port: url.port || (secure ? 443 : 80),
        method: req.method,
        path: base + (req.url ?? '/'),
        headers: forwardedHeaders(req, ctx),
        agent,
        timeout: FALLBACK_IDLE_TIMEOUT_MS,
      });
      up.on('timeout', () => {
        ev.onError?.(unreachable(Object.assign(new Error('no answer'), { code: 'ETIMEDOUT' }), 'timed out'));
        if (!answered) sendNginxError(res, 504, true);
        else res.destroy();
        up.destroy();
      });
      let clientGone = false;
      up.on('error', (e) => {
        if (clientGone) return;
        ev.onError?.(unreachable(e, answered ? 'cut' : 'no answer'));
        if (!answered) sendNginxError(res, 502, true);
        else res.destroy();
      });
      up.on('response', (back) => {
        answered = true;
        for (const h of res.getHeaderNames()) res.removeHeader(h);
        res.writeHead(back.statusCode ?? 502, back.statusMessage, [...passedRawHeaders(back.rawHeaders, back.headers.connection), 'Connection', connectionValue(res)]);
        back.pipe(res);
        back.on('error', () => res.destroy());
        back.on('aborted', () => res.destroy());
      });
      // the client went away: stop asking the site
      res.on('close', () => {
        clientGone = true;
        if (!res.writableFinished) up.destroy();
      });
      if (ctx.noBody || req.readableEnded) {
        up.end();
        return;
      }
      const limit = new BodyLimit();
      limit.on('error', () => {
        up.destroy();
        sendNginxError(res, 413, true);
      });
      req.pipe(limit).pipe(up);
    },
    close() {
      agent.destroy();
    },
  };
}
