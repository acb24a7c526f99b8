/**
 * wsserver / wssserver: the front door, an Express app on an http(s) server
 * of our own. The WebSocket upgrade is taken from the server's 'upgrade'
 * event; which upgrades are tunnels and the tunnels themselves are the tunnel
 * endpoint's (src/server/endpoint.ts, also used by src/server/attach.ts to
 * carry tunnels on an application's own server). Here: everything else.
 *
 * Non-upgrade answers match upstream: 404 with an empty body on other paths,
 * 400 on the path without a valid upgrade, 405 for another method, and
 * `Server: nginx` on every one of them.
 *
 * The front door (protocol/websocket-upgrade.md, "Connections that are not
 * tunnels yet"): every connection is pending in a ConnectionGate (src/server/gate.ts)
 * until its Brook header is accepted: head deadline, cap with eviction chosen
 * by source, and a refused request is read and discarded until the client closes
 * or the deadline passes. Out of descriptors: src/server/descriptors.ts.
 *
 * Beyond upstream (protocol/websocket-upgrade.md, "--fallback" and "Behind a
 * proxy"): --fallback hands every request that is not a valid
 * tunnel upgrade to a site or a folder (src/server/fallback.ts), --host
 * limits tunnels to one Host, --proxyProtocol reads a PROXY header first
 * (src/server/proxyintake.ts), --trustedProxies decides whose
 * X-Forwarded-For / PROXY header is believed (src/server/clientaddr.ts).
 */
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions as HttpsOptions } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { BrookError, ErrorCodes } from '../errors.js';
import { type Logger, rateLimitLogger, type RateLimitedLogger } from '../log.js';
import { parseListen } from '../net/listen.js';
import { formatHostPort } from '../protocol/address.js';
import { clientEndpoint } from './clientaddr.js';
import { ConnectionGate, type EvictReason, rawSocketOf } from './gate.js';
import { defaultMaxPending, DescriptorWatch, isExhaustion } from './descriptors.js';
import type { Metrics } from '../ops/metrics.js';
import { createFallback, type Fallback, FALLBACK_REQUEST_TIMEOUT_MS } from './fallback.js';
import { interceptProxyProtocol } from './proxyintake.js';
import type { ProxyHeader } from './proxyproto.js';
import { TunnelEndpoint, type TunnelEndpointOptions } from './endpoint.js';

export { DEFAULT_PATH } from './endpoint.js';

/** Our own server: the tunnel endpoint's options, and the front door's. */
export interface WsServerOptions extends TunnelEndpointOptions {
  /** "host:port", ":port" (all interfaces), "[::1]:port". */
  listen: string;
  /** --proxyProtocol: every connection starts with a PROXY v1/v2 header (else closed). */
  proxyProtocol?: boolean;
  /** --fallback: a http(s) URL reverse-proxied, or a folder served, for every request that is not a tunnel. */
  fallback?: string;
  /** TLS: serve https (wssserver). ALPN is forced to http/1.1. */
  tls?: HttpsOptions;
  /** The request head (over TLS: the handshake and the head) must be complete within this (ms). */
  headTimeoutMs?: number;
  /** Connections that are not tunnels yet; at the cap one, chosen by source (src/server/gate.ts), is closed for each new one. Default: defaultMaxPending(). */
  maxPending?: number;
  /** Descriptor watch probe: throws EMFILE/ENFILE when no descriptor is free (tests inject one). */
  descriptorProbe?: () => void;
}

/** Upstream's Go http.Server ReadTimeout: a head not complete after 5 s is closed without an answer. */
export const DEFAULT_HEAD_TIMEOUT_MS = 5_000;
/** Share of the pending connections closed (chosen as at the cap) when descriptors run out: 1/SHED_DIVISOR. */
export const SHED_DIVISOR = 4;

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed' };

/** Go's own answer to a request it cannot parse (net/http, before any handler: no Server, no Date). */
const GO_PARSE_ERROR = 'HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request';

/** Upstream's handler headers for each non-tunnel answer, in Go's (sorted) order, and its body. */
const UPSTREAM_ANSWERS: Record<400 | 404 | 405, { headers: [string, string][]; body: string }> = {
  400: {
    headers: [
      ['Content-Type', 'text/plain; charset=utf-8'],
      ['Sec-Websocket-Version', '13'],
      ['Server', 'nginx'],
      ['X-Content-Type-Options', 'nosniff'],
    ],
    body: 'Bad Request\n',
  },
  404: { headers: [['Server', 'nginx']], body: '' },
  405: { headers: [['Server', 'nginx']], body: '' },
};

/**
 * The answer to a refused upgrade, written on the raw socket (Node has detached it from its HTTP parser), with
 * upstream's headers in upstream's order (see answerLikeUpstream) plus Connection: close where Go puts it, since
 * this connection is closed after the answer.
 */
function rawResponse(status: 400 | 404 | 405): string {
  const { headers, body } = UPSTREAM_ANSWERS[status];
  return (
    `HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\n${headers.map(([k, v]) => `${k}: ${v}\r\n`).join('')}Connection: close\r\n` +
    `Date: ${new Date().toUTCString()}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}

/**
 * A non-tunnel answer with the headers, in the order, that upstream's Go server sends (gorilla/mux 404 and 405,
 * gorilla/websocket's refusal: http.Error with Sec-Websocket-Version): Go sorts the handler's headers, then adds
 * Date and Content-Length, and sends no Connection or Keep-Alive header on an HTTP/1.1 keep-alive answer (only
 * Connection: close, before Date, when the client asked to close). Removing Connection keeps keep-alive without
 * the header (and without Node's Keep-Alive: timeout=N, a Node fingerprint); Node adds Content-Length last.
 */
export function answerLikeUpstream(res: ServerResponse, status: 400 | 404 | 405): void {
  const { headers, body } = UPSTREAM_ANSWERS[status];
  for (const [k, v] of headers) res.setHeader(k, v);
  // Go's extra headers come in this order: Connection (only when closing), Date, Content-Length (Node's, last)
  if (/(^|,)\s*close\s*(,|$)/i.test(String(res.req?.headers.connection ?? ''))) res.setHeader('Connection', 'close');
  else res.removeHeader('Connection');
  res.setHeader('Date', new Date().toUTCString());
  res.statusCode = status;
  res.end(body);
}

const discard = (): void => undefined;



/**
 * Only a request that does not parse (llhttp's HPE_* codes) gets an answer
 * (400, as Go answers a malformed request). Every other 'clientError' (Node's
 * request timeout, a TLS handshake error or timeout, a reset) is closed
 * without an answer, as Go closes on a read timeout or a failed handshake.
 */
const answersParseError = (err: NodeJS.ErrnoException): boolean => (err.code ?? '').startsWith('HPE_');

export class WsServer {
  readonly server: HttpServer;
  /** The tunnels: which upgrades are tunnels, the 101, serveTunnel (src/server/endpoint.ts). */
  readonly endpoint: TunnelEndpoint;
  private readonly o: WsServerOptions;
  private readonly log: Logger;
  /** Lines outsiders can cause in bulk (evictions, descriptor exhaustion). */
  private readonly frontLog: RateLimitedLogger;
  private readonly metrics: Metrics;
  private readonly gate: ConnectionGate;
  private readonly watch: DescriptorWatch;
  /** Sockets answered by refuse(): later parse errors on them are ignored. */
  private readonly refused = new WeakSet<Socket>();
  private readonly fallback: Fallback | null;
  /** --proxyProtocol: the header each accepted TCP socket began with. */
  private readonly proxied = new WeakMap<Socket, ProxyHeader>();

  constructor(opts: WsServerOptions) {
    this.endpoint = new TunnelEndpoint(opts);
    const path = this.endpoint.path;
    this.o = opts;
    this.log = this.endpoint.log;
    this.metrics = this.endpoint.metrics;

    const headTimeoutMs = opts.headTimeoutMs ?? DEFAULT_HEAD_TIMEOUT_MS;
    if (!(headTimeoutMs > 0)) throw new BrookError(ErrorCodes.CONFIG, `head timeout must be positive: ${headTimeoutMs}`);
    const maxPending = opts.maxPending ?? defaultMaxPending();
    if (!(maxPending >= 1)) throw new BrookError(ErrorCodes.CONFIG, `maxPending must be at least 1: ${maxPending}`);
    this.frontLog = rateLimitLogger(this.log, { key: (e) => `${String(e['msg'])}:${String(e['reason'] ?? e['errno'] ?? e['code'] ?? '')}` });
    this.fallback = opts.fallback
      ? createFallback(opts.fallback, { onError: (e) => this.frontLog({ msg: 'fallback failed', code: e.code, error: e.message }) })
      : null;
    this.gate = new ConnectionGate({ headTimeoutMs, maxPending, onEvict: (reason, pending, source, known) => this.onEvict(reason, pending, source, known) });
    this.watch = new DescriptorWatch({
      probe: opts.descriptorProbe,
      onExhausted: (err) => this.onExhausted(err, 'probe'),
      onRecovered: () => this.frontLog({ msg: 'descriptors available again', pending: this.gate.size, tunnels: this.openTunnels }),
    });

    // The non-tunnel answers, as upstream's Go server gives them (see answerLikeUpstream)
    const app = (req: IncomingMessage, res: ServerResponse) => {
      // keep-alive: the next request gets the same bound from this answer on
      res.once('finish', () => this.gate.arm(req.socket, headTimeoutMs));
      this.chargeSource(req.socket, req);
      const url = req.url ?? '';
      const q = url.indexOf('?');
      const reqPath = q >= 0 ? url.slice(0, q) : url;
      if (this.fallback) {
        res.setHeader('Server', 'nginx');
        if (reqPath === path) this.metrics.handshakeFailed('bad_upgrade');
        this.toFallback(req, res, false);
      } else if (reqPath !== path) {
        answerLikeUpstream(res, 404);
      } else if (req.method !== 'GET') {
        this.metrics.handshakeFailed('bad_upgrade');
        answerLikeUpstream(res, 405);
      } else {
        this.metrics.handshakeFailed('bad_upgrade');
        answerLikeUpstream(res, 400);
      }
    };

    // Node's own bounds, as a backstop of the gate's exact deadlines (Node checks
    // headersTimeout/requestTimeout only every connectionsCheckingInterval)
    const httpBounds = {
      headersTimeout: headTimeoutMs,
      requestTimeout: headTimeoutMs,
      keepAliveTimeout: headTimeoutMs,
      connectionsCheckingInterval: headTimeoutMs,
    };
    this.server = opts.tls
      ? createHttpsServer({ ...opts.tls, ...httpBounds, handshakeTimeout: headTimeoutMs, ALPNProtocols: ['http/1.1'] }, app)
      : createHttpServer(httpBounds, app);
    if (opts.proxyProtocol) {
      interceptProxyProtocol(this.server, {
        trusted: this.endpoint.trustedProxies,
        admit: (socket) => this.gate.admit(socket),
        onHeader: (socket, header) => {
          this.proxied.set(socket, header);
          this.chargeSource(socket, null);
        },
        onRefused: (socket, err) =>
          this.frontLog({ msg: 'refused connection', code: err.code, error: err.message, peer: formatHostPort(String(socket.remoteAddress), socket.remotePort) }),
      });
    } else {
      this.server.on('connection', (socket: Socket) => this.gate.admit(socket));
    }
    if (opts.tls) this.server.on('secureConnection', (socket: TLSSocket) => this.gate.attach(socket));
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.handleUpgrade(req, socket, head));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      if (this.refused.has(socket)) return; // bytes after our answer: being discarded
      if (!socket.writable || !answersParseError(err)) socket.destroy();
      else this.refuse(socket, GO_PARSE_ERROR);
    });
  }

  /**
   * Answer and close a refused request without leaking its descriptor: the
   * answer and our FIN go out at once; whatever the client sends after is read
   * and discarded; its FIN, a reset or the head deadline closes the socket.
   */
  private refuse(socket: Socket, answer: string): void {
    this.refused.add(socket);
    this.metrics.handshakeFailed('bad_upgrade');
    this.linger(socket);
    socket.end(answer);
    this.gate.arm(socket, this.gate.headTimeoutMs);
  }

  /** After our answer: read and discard until the client's FIN (then close) or the deadline. */
  private linger(socket: Socket): void {
    socket.on('error', () => socket.destroy());
    socket.on('data', discard);
    socket.once('end', () => {
      if (socket.writableFinished) socket.destroy();
      else socket.once('finish', () => socket.destroy());
    });
    socket.resume();
  }

  /** A request for the fallback: the head deadline becomes the fallback's request bound. */
  private toFallback(req: IncomingMessage, res: ServerResponse, noBody: boolean): void {
    this.gate.arm(req.socket, FALLBACK_REQUEST_TIMEOUT_MS);
    this.fallback!.handle(req, res, { client: this.from(req, req.socket), secure: Boolean(this.o.tls), noBody });
  }

  /**
   * An upgrade request that is not a tunnel, with --fallback: answered by the
   * fallback like any request (no body is passed on: after an upgrade head
   * the bytes are not HTTP-framed), then closed as a refused request is.
   */
  private upgradeToFallback(req: IncomingMessage, socket: Socket): void {
    this.metrics.handshakeFailed('bad_upgrade');
    const res = new ServerResponse(req);
    res.shouldKeepAlive = false;
    res.assignSocket(socket);
    this.linger(socket);
    res.once('finish', () => {
      res.detachSocket(socket);
      socket.end();
      this.gate.arm(socket, this.gate.headTimeoutMs);
    });
    this.toFallback(req, res, true);
  }

  private onEvict(reason: EvictReason, pending: number, source: string, known: boolean): void {
    if (reason === 'cap') {
      this.frontLog({ msg: 'maxPending reached: closed a pending connection', reason, source, known, pending, tunnels: this.openTunnels });
    }
  }

  /**
   * Out of descriptors (EMFILE/ENFILE at accept, or the watch's probe): log
   * (rate-limited), close a quarter of the pending connections (chosen as at the cap) so
   * accept and dials recover. Tunnels are not touched.
   */
  private onExhausted(err: NodeJS.ErrnoException, where: 'accept' | 'probe'): void {
    const shed = this.gate.shed(Math.ceil(this.gate.size / SHED_DIVISOR));
    this.frontLog({
      msg: 'out of descriptors',
      code: ErrorCodes.OUT_OF_RESOURCES,
      errno: err.code,
      error: `${where}: ${err.code}: ${err.message}`,
      shed,
      pending: this.gate.size,
      tunnels: this.openTunnels,
    });
  }

  /** net.Server 'error' after listen: accept failures (libuv reports them only when its EMFILE trick fails). */
  private onServerError(err: NodeJS.ErrnoException): void {
    if (isExhaustion(err)) {
      this.onExhausted(err, 'accept');
      return;
    }
    this.frontLog({ msg: 'accept failed', errno: err.code, error: err.message });
  }

  /**
   * Our server's 'upgrade' event (req, socket, head): a tunnel, or the
   * upstream-like answer to a request that is not one (or the fallback).
   */
  handleUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    this.gate.attach(socket);
    this.chargeSource(socket, req);
    const v = this.endpoint.check(req);
    if (!v.tunnel) {
      if (this.fallback) this.upgradeToFallback(req, socket);
      else if (v.why === 'path') this.refuse(socket, rawResponse(404));
      else this.refuse(socket, rawResponse(v.status === 405 ? 405 : 400));
      return;
    }
    // still pending (and evictable), but serveTunnel bounds the Brook handshake
    this.gate.arm(socket, null);
    this.endpoint.accept(req, socket, head, v.key, {
      proxied: this.proxied.get(rawSocketOf(socket))?.source ?? null,
      onEstablished: () => this.gate.established(socket),
    });
  }

  /**
   * Charge a pending connection to the client we believe once we know it (protocol/websocket-upgrade.md,
   * "Connections that are not tunnels yet"): the PROXY header's source as soon as it is read; with
   * --trustedProxies, the X-Forwarded-For walk at each request head. X-Forwarded-For without
   * --trustedProxies (anyone can write it) is never used here.
   */
  private chargeSource(socket: Socket, req: IncomingMessage | null): void {
    const trusted = this.endpoint.trustedProxies;
    if (req && !trusted) return; // nothing a request head could change
    const peer = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
    const proxied = this.proxied.get(rawSocketOf(socket))?.source ?? null;
    const xff = req ? req.headers['x-forwarded-for'] : undefined;
    this.gate.charge(socket, clientEndpoint(peer, proxied, xff, { trusted, xForwardedFor: false }).address);
  }

  /** The client for log lines (src/server/clientaddr.ts). */
  private from(req: IncomingMessage, socket: Socket): string {
    return this.endpoint.clientOf(req, socket, this.proxied.get(rawSocketOf(socket))?.source ?? null);
  }

  get openTunnels(): number {
    return this.endpoint.openTunnels;
  }

  /** Connections that are not tunnels yet (see ConnectionGate). */
  get pendingConnections(): number {
    return this.gate.size;
  }

  async listen(): Promise<AddressInfo> {
    const { host, port } = parseListen(this.o.listen);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port }, () => {
        this.server.removeListener('error', reject);
        resolve();
      });
    });
    this.server.on('error', (e: NodeJS.ErrnoException) => this.onServerError(e));
    this.watch.start();
    return this.server.address() as AddressInfo;
  }

  /** Stop accepting; let open tunnels finish within `graceMs`, then cut them. */
  async close(graceMs = 0): Promise<void> {
    const closing = new Promise<void>((r) => this.server.close(() => r()));
    this.watch.stop();
    this.gate.closeAll();
    this.server.closeIdleConnections?.();
    await this.endpoint.closeTunnels(graceMs);
    this.server.closeAllConnections?.();
    await closing;
    this.fallback?.close();
    this.frontLog.close();
    this.endpoint.close();
  }
}
