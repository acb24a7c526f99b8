/**
 * wsserver / wssserver: an Express app on an http(s) server. The WebSocket
 * upgrade is taken from the server's 'upgrade' event on the exact path, GET
 * only; after the 101 the raw socket carries the Brook stream (src/server/tunnel.ts).
 *
 * Non-upgrade answers match upstream: 404 with an empty body on other paths,
 * 400 on the path without a valid upgrade, 405 for another method, and
 * `Server: nginx` on every one of them.
 *
 * The front door (protocol/websocket-upgrade.md, "Connections that are not
 * tunnels yet"): every connection is pending in a ConnectionGate (src/server/gate.ts)
 * until its Brook header is accepted: head deadline, cap with eviction of the
 * oldest, and a refused request is read and discarded until the client closes
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
import express from 'express';
import { BrookError, ErrorCodes } from '../errors.js';
import { createLogger, type Logger, rateLimitLogger, type RateLimitedLogger } from '../log.js';
import { parseListen } from '../net/listen.js';
import type { Clock } from '../protocol/header.js';
import type { AeadBackend } from '../protocol/cipher.js';
import { buildUpgradeResponse, checkUpgradeRequest } from '../protocol/upgrade.js';
import {
  DEFAULT_DIAL_TIMEOUT_MS,
  DEFAULT_PROBE_BYTE_BUDGET,
  DEFAULT_PROBE_TIMEOUT_MS,
  DEFAULT_UDP_QUEUE_LIMIT,
  checkKeepalive,
  type ServerTunnelOptions,
  serveTunnel,
  type TunnelHandle,
} from './tunnel.js';
import { ConnectionGate, type EvictReason, rawSocketOf } from './gate.js';
import { defaultMaxPending, DescriptorWatch, isExhaustion } from './descriptors.js';
import type { Dialer } from '../dial/index.js';
import type { DestinationPolicy } from '../policy/index.js';
import { type Metrics, noMetrics } from '../ops/metrics.js';
import { createReplayCache, DEFAULT_MAX_HEADER_AHEAD_SECONDS, type ReplayGuard } from './replay.js';
import { createFallback, type Fallback, FALLBACK_REQUEST_TIMEOUT_MS } from './fallback.js';
import { clientAddress, TrustedProxies } from './clientaddr.js';
import { interceptProxyProtocol } from './proxyintake.js';
import { checkHostFlag, hostMatches } from './hostcheck.js';
import type { ProxyHeader } from './proxyproto.js';

export interface WsServerOptions {
  /** "host:port", ":port" (all interfaces), "[::1]:port". */
  listen: string;
  password: string;
  path?: string;
  tcpTimeout?: number;
  udpTimeout?: number;
  /** --keepalive: seconds without sending on a TCP tunnel before an empty Brook fragment (0 = off; Brook protocol only). */
  keepalive?: number;
  withoutBrookProtocol?: boolean;
  /** Log the first X-Forwarded-For address instead of the peer address (anyone's; see trustedProxies). */
  xForwardedFor?: boolean;
  /** --trustedProxies "CIDR,...": X-Forwarded-For and PROXY headers are believed only from these peers. */
  trustedProxies?: string;
  /** --proxyProtocol: every connection starts with a PROXY v1/v2 header (else closed). */
  proxyProtocol?: boolean;
  /** --fallback: a http(s) URL reverse-proxied, or a folder served, for every request that is not a tunnel. */
  fallback?: string;
  /** --host: tunnels only for upgrades with this Host (a name, or name:port); others get the non-tunnel answer. */
  host?: string;
  clientHKDFInfo?: Uint8Array;
  serverHKDFInfo?: Uint8Array;
  probeTimeoutMs?: number;
  probeByteBudget?: number;
  dialTimeoutMs?: number;
  udpQueueLimit?: number;
  /** Seconds a header time may be ahead of our clock (--maxTimeAhead, default 60; upstream: no bound). */
  maxTimeAheadSeconds?: number;
  /** Nonces the replay cache holds at most (--replayCacheSize); see src/server/replay.ts. */
  replayCacheSize?: number;
  /** Brook mode: the replay guard (default: a cache of this server's own; with --workers the primary's). */
  replay?: ReplayGuard;
  /** TLS: serve https (wssserver). ALPN is forced to http/1.1. */
  tls?: HttpsOptions;
  /** The request head (over TLS: the handshake and the head) must be complete within this (ms). */
  headTimeoutMs?: number;
  /** Connections that are not tunnels yet; at the cap the oldest is closed for each new one. Default: defaultMaxPending(). */
  maxPending?: number;
  /** How destinations are dialled (--dialWith*); default: directly, with the system resolver. */
  dialer?: Dialer;
  /** Block lists checked for every new tunnel (the owner closes it). */
  policy?: DestinationPolicy | null;
  metrics?: Metrics;
  /** Descriptor watch probe: throws EMFILE/ENFILE when no descriptor is free (tests inject one). */
  descriptorProbe?: () => void;
  log?: Logger;
  now?: Clock;
  backend?: AeadBackend;
}

export const DEFAULT_PATH = '/ws';
/** Upstream's Go http.Server ReadTimeout: a head not complete after 5 s is closed without an answer. */
export const DEFAULT_HEAD_TIMEOUT_MS = 5_000;
/** Share of the pending connections closed (oldest first) when descriptors run out: 1/SHED_DIVISOR. */
export const SHED_DIVISOR = 4;

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed' };

/** A complete HTTP/1.1 response for a raw (upgrade or unparsable) socket. */
function rawResponse(status: number, body = '', extra: Record<string, string> = {}): string {
  const headers = { Server: 'nginx', ...extra, 'Content-Length': String(Buffer.byteLength(body)), Connection: 'close' };
  const head =
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? ''}\r\n` +
    Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('') +
    '\r\n';
  return head + body;
}

const discard = (): void => undefined;

function formatPeer(a: string | undefined, port: number | undefined): string {
  return (a ?? '').includes(':') ? `[${a}]:${port}` : `${a}:${port}`;
}


/**
 * Only a request that does not parse (llhttp's HPE_* codes) gets an answer
 * (400, as Go answers a malformed request). Every other 'clientError' (Node's
 * request timeout, a TLS handshake error or timeout, a reset) is closed
 * without an answer, as Go closes on a read timeout or a failed handshake.
 */
const answersParseError = (err: NodeJS.ErrnoException): boolean => (err.code ?? '').startsWith('HPE_');

export class WsServer {
  readonly server: HttpServer;
  private readonly tunnels = new Set<TunnelHandle>();
  private readonly o: Required<Pick<WsServerOptions, 'path'>> & WsServerOptions;
  private readonly tunnelOptions: ServerTunnelOptions;
  private readonly log: Logger;
  /** Lines outsiders can cause in bulk (evictions, descriptor exhaustion). */
  private readonly frontLog: RateLimitedLogger;
  /** Failed handshakes (bad password, stale time, replay, silence...): one line per error code per second. */
  private readonly handshakeLog: RateLimitedLogger;
  private readonly metrics: Metrics;
  private readonly gate: ConnectionGate;
  private readonly watch: DescriptorWatch;
  /** Sockets answered by refuse(): later parse errors on them are ignored. */
  private readonly refused = new WeakSet<Socket>();
  private readonly fallback: Fallback | null;
  private readonly trusted: TrustedProxies | null;
  /** --proxyProtocol: the header each accepted TCP socket began with. */
  private readonly proxied = new WeakMap<Socket, ProxyHeader>();
  /** --host, lower case. */
  private readonly host: string | null;

  constructor(opts: WsServerOptions) {
    const path = opts.path ?? DEFAULT_PATH;
    if (!path.startsWith('/')) throw new BrookError(ErrorCodes.CONFIG, `--path must start with "/": ${path}`);
    if (!opts.password) throw new BrookError(ErrorCodes.CONFIG, '--password is required');
    checkKeepalive(opts.keepalive, opts.withoutBrookProtocol);
    this.o = { ...opts, path };
    this.log = opts.log ?? createLogger();
    this.metrics = opts.metrics ?? noMetrics;
    this.handshakeLog = rateLimitLogger(this.log, { key: (e) => String(e['code'] ?? '') });
    this.tunnelOptions = {
      password: opts.password,
      withoutBrookProtocol: opts.withoutBrookProtocol ?? false,
      clientHKDFInfo: opts.clientHKDFInfo,
      serverHKDFInfo: opts.serverHKDFInfo,
      now: opts.now,
      backend: opts.backend,
      tcpTimeout: opts.tcpTimeout ?? 0,
      udpTimeout: opts.udpTimeout ?? 60,
      keepaliveMs: (opts.keepalive ?? 0) * 1000,
      probeTimeoutMs: opts.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS,
      probeByteBudget: opts.probeByteBudget ?? DEFAULT_PROBE_BYTE_BUDGET,
      dialTimeoutMs: opts.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS,
      udpQueueLimit: opts.udpQueueLimit ?? DEFAULT_UDP_QUEUE_LIMIT,
      maxAheadSeconds: opts.maxTimeAheadSeconds ?? DEFAULT_MAX_HEADER_AHEAD_SECONDS,
      // withoutBrookProtocol has no nonce: nothing to remember (protocol/probing.md#replays)
      replay: opts.withoutBrookProtocol
        ? null
        : (opts.replay ??
          createReplayCache({ capacity: opts.replayCacheSize, aheadSeconds: opts.maxTimeAheadSeconds ?? DEFAULT_MAX_HEADER_AHEAD_SECONDS, now: opts.now })),
      log: this.log,
      handshakeLog: this.handshakeLog,
      dialer: opts.dialer,
      policy: opts.policy,
      metrics: this.metrics,
    };
    // bytes of open tunnels, read at scrape time
    this.metrics.liveBytes(() => {
      const sum = { up: 0, down: 0 };
      for (const t of this.tunnels) {
        const b = t.stats();
        sum.up += b.up;
        sum.down += b.down;
      }
      return sum;
    });

    const headTimeoutMs = opts.headTimeoutMs ?? DEFAULT_HEAD_TIMEOUT_MS;
    if (!(headTimeoutMs > 0)) throw new BrookError(ErrorCodes.CONFIG, `head timeout must be positive: ${headTimeoutMs}`);
    const maxPending = opts.maxPending ?? defaultMaxPending();
    if (!(maxPending >= 1)) throw new BrookError(ErrorCodes.CONFIG, `maxPending must be at least 1: ${maxPending}`);
    this.frontLog = rateLimitLogger(this.log, { key: (e) => `${String(e['msg'])}:${String(e['reason'] ?? e['errno'] ?? e['code'] ?? '')}` });
    this.trusted = opts.trustedProxies !== undefined ? new TrustedProxies(opts.trustedProxies) : null;
    this.host = opts.host !== undefined ? checkHostFlag(opts.host) : null;
    this.fallback = opts.fallback
      ? createFallback(opts.fallback, { onError: (e) => this.frontLog({ msg: 'fallback failed', code: e.code, error: e.message }) })
      : null;
    this.gate = new ConnectionGate({ headTimeoutMs, maxPending, onEvict: (reason, pending) => this.onEvict(reason, pending) });
    this.watch = new DescriptorWatch({
      probe: opts.descriptorProbe,
      onExhausted: (err) => this.onExhausted(err, 'probe'),
      onRecovered: () => this.frontLog({ msg: 'descriptors available again', pending: this.gate.size, tunnels: this.tunnels.size }),
    });

    const app = express();
    app.disable('x-powered-by');
    app.disable('etag');
    app.use((req, res, next) => {
      res.setHeader('Server', 'nginx');
      // keep-alive: the next request gets the same bound from this answer on
      res.once('finish', () => this.gate.arm(req.socket, headTimeoutMs));
      next();
    });
    app.use((req, res) => {
      if (this.fallback) {
        if (req.path === path) this.metrics.handshakeFailed('bad_upgrade');
        this.toFallback(req, res, false);
      } else if (req.path !== path) {
        res.status(404).end();
      } else if (req.method !== 'GET') {
        this.metrics.handshakeFailed('bad_upgrade');
        res.status(405).end();
      } else {
        this.metrics.handshakeFailed('bad_upgrade');
        res.status(400).type('text/plain').send('Bad Request\n');
      }
    });

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
        trusted: this.trusted,
        admit: (socket) => this.gate.admit(socket),
        onHeader: (socket, header) => this.proxied.set(socket, header),
        onRefused: (socket, err) =>
          this.frontLog({ msg: 'refused connection', code: err.code, error: err.message, peer: formatPeer(socket.remoteAddress, socket.remotePort) }),
      });
    } else {
      this.server.on('connection', (socket: Socket) => this.gate.admit(socket));
    }
    if (opts.tls) this.server.on('secureConnection', (socket: TLSSocket) => this.gate.attach(socket));
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.handleUpgrade(req, socket, head));
    this.server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
      if (this.refused.has(socket)) return; // bytes after our answer: being discarded
      if (!socket.writable || !answersParseError(err)) socket.destroy();
      else this.refuse(socket, rawResponse(400));
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

  private onEvict(reason: EvictReason, pending: number): void {
    if (reason === 'cap') this.frontLog({ msg: 'maxPending reached: closed the oldest pending connection', reason, pending, tunnels: this.tunnels.size });
  }

  /**
   * Out of descriptors (EMFILE/ENFILE at accept, or the watch's probe): log
   * (rate-limited), close the oldest quarter of the pending connections so
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
      tunnels: this.tunnels.size,
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
   * The tunnel endpoint: a server's 'upgrade' event (req, socket, head). Any
   * http(s) server's 'upgrade' event may call it; a request that is not a
   * tunnel gets the upstream-like answer, or the fallback.
   */
  handleUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    this.gate.attach(socket);
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const reqPath = q >= 0 ? url.slice(0, q) : url;
    // --host: another Host is answered as another path is
    if (reqPath !== this.o.path || (this.host !== null && !hostMatches(this.host, req.headers.host))) {
      if (this.fallback) this.upgradeToFallback(req, socket);
      else this.refuse(socket, rawResponse(404));
      return;
    }
    const check = checkUpgradeRequest(req.method ?? '', req.headers);
    if (!check.ok) {
      if (this.fallback) this.upgradeToFallback(req, socket);
      else this.refuse(socket, rawResponse(check.status, check.status === 400 ? 'Bad Request\n' : '', check.headers));
      return;
    }
    // still pending (and evictable), but serveTunnel bounds the Brook handshake
    this.gate.arm(socket, null);
    socket.write(buildUpgradeResponse(check.key));
    const handle = serveTunnel(socket, head, this.from(req, socket), this.tunnelOptions, {
      onEstablished: () => this.gate.established(socket),
    });
    this.tunnels.add(handle);
    void handle.closed.then(() => this.tunnels.delete(handle));
  }

  /** The client for log lines (src/server/clientaddr.ts). */
  private from(req: IncomingMessage, socket: Socket): string {
    const proxied = this.proxied.get(rawSocketOf(socket));
    return clientAddress(
      { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 },
      proxied?.source ?? null,
      req.headers['x-forwarded-for'],
      { trusted: this.trusted, xForwardedFor: Boolean(this.o.xForwardedFor) },
    );
  }

  get openTunnels(): number {
    return this.tunnels.size;
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
    if (graceMs > 0 && this.tunnels.size > 0) {
      const all = Promise.all([...this.tunnels].map((t) => t.closed));
      await Promise.race([all, new Promise((r) => setTimeout(r, graceMs).unref())]);
    }
    for (const t of this.tunnels) t.destroy();
    this.server.closeAllConnections?.();
    await closing;
    this.fallback?.close();
    this.frontLog.close();
    this.handshakeLog.close();
  }
}
