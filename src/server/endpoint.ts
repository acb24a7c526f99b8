/**
 * The tunnel endpoint: what turns a WebSocket upgrade on the tunnel path into
 * a Brook tunnel, on any http(s) server's 'upgrade' event. Two front doors use
 * it: our own server (src/server/wsserver.ts: gate, refused answers, PROXY
 * intake, fallback) and an application's server (src/server/attach.ts).
 *
 * Here: which upgrades are tunnels (path, --host, a valid WebSocket upgrade:
 * protocol/websocket-upgrade.md), the 101, and the tunnels' hardening, which
 * holds whoever owns the server: the close rule and probe bounds of
 * serveTunnel (protocol/probing.md), the replay cache, rate-limited handshake
 * lines. What a request that is not a tunnel gets is the front door's choice.
 */
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { BrookError, ErrorCodes } from '../errors.js';
import { createLogger, type Logger, rateLimitLogger, type RateLimitedLogger } from '../log.js';
import type { Clock } from '../protocol/header.js';
import type { AeadBackend } from '../protocol/cipher.js';
import { passwordCredential } from '../protocol/credential.js';
import { protocolMode } from '../protocol/mode.js';
import { buildUpgradeResponse, checkUpgradeRequest } from '../protocol/upgrade.js';
import {
  DEFAULT_DIAL_TIMEOUT_MS,
  DEFAULT_PROBE_BYTE_BUDGET,
  DEFAULT_PROBE_TIMEOUT_MS,
  DEFAULT_UDP_QUEUE_LIMIT,
  type ServerTunnelOptions,
  serveTunnel,
  type TunnelHandle,
} from './tunnel.js';
import { checkKeepalive } from '../net/tunnel-transform.js';
import type { Dialer } from '../dial/index.js';
import { DestinationPolicy } from '../policy/index.js';
import { type Metrics, noMetrics } from '../ops/metrics.js';
import { createReplayCache, DEFAULT_MAX_HEADER_AHEAD_SECONDS, type ReplayGuard } from './replay.js';
import { clientAddress, TrustedProxies } from './clientaddr.js';
import { checkHostFlag, hostMatches } from './hostcheck.js';
import type { ProxyEndpoint } from './proxyproto.js';

/** Everything about tunnels, whichever server carries them. */
export interface TunnelEndpointOptions {
  password: string;
  /** The tunnel path (default /ws); an upgrade on another path is not a tunnel. */
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
  /** --host: tunnels only for upgrades with this Host (a name, or name:port); others are not tunnels. */
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
  /** Brook mode: the replay guard (default: a cache of this endpoint's own; with --workers the primary's). */
  replay?: ReplayGuard;
  /** How destinations are dialled (--dialWith*); default: directly, with the system resolver. */
  dialer?: Dialer;
  /** Block lists checked for every new tunnel (the owner closes it); none: DestinationPolicy.baseline(), the unspecified addresses refused. */
  policy?: DestinationPolicy | null;
  metrics?: Metrics;
  /** Log lines (JSON objects); default: one JSON line each on stdout. */
  log?: Logger;
  now?: Clock;
  backend?: AeadBackend;
}

export const DEFAULT_PATH = '/ws';

/** Why an upgrade is not a tunnel: 'path' (another path, or another Host with --host), or a bad upgrade request. */
export type UpgradeVerdict =
  | { tunnel: true; key: string }
  | { tunnel: false; why: 'path' }
  | { tunnel: false; why: 'request'; status: number };

/** What the front door knows about a connection beyond the request. */
export interface AcceptContext {
  /** --proxyProtocol: the source the connection's PROXY header carried. */
  proxied?: ProxyEndpoint | null;
  /** The header was accepted: the connection is a tunnel now. */
  onEstablished?: () => void;
}

/** The path of a request target (without its query). */
export function requestPath(url: string | undefined): string {
  const u = url ?? '';
  const q = u.indexOf('?');
  return q >= 0 ? u.slice(0, q) : u;
}

export class TunnelEndpoint {
  readonly path: string;
  readonly log: Logger;
  readonly metrics: Metrics;
  private readonly tunnels = new Set<TunnelHandle>();
  private readonly tunnelOptions: ServerTunnelOptions;
  /** Failed handshakes (bad password, stale time, replay, silence...), blocked and unreachable destinations: one line per error code (and network) per second. */
  private readonly handshakeLog: RateLimitedLogger;
  private readonly trusted: TrustedProxies | null;
  private readonly xForwardedFor: boolean;
  /** --host, lower case. */
  private readonly host: string | null;

  /** Throws CONFIG (a BrookError) for a bad option. */
  constructor(opts: TunnelEndpointOptions) {
    const path = opts.path ?? DEFAULT_PATH;
    if (!path.startsWith('/')) throw new BrookError(ErrorCodes.CONFIG, `--path must start with "/": ${path}`);
    if (!opts.password) throw new BrookError(ErrorCodes.CONFIG, '--password is required');
    checkKeepalive(opts.keepalive, opts.withoutBrookProtocol);
    this.path = path;
    this.log = opts.log ?? createLogger();
    this.metrics = opts.metrics ?? noMetrics;
    this.trusted = opts.trustedProxies !== undefined ? new TrustedProxies(opts.trustedProxies) : null;
    this.xForwardedFor = Boolean(opts.xForwardedFor);
    this.host = opts.host !== undefined ? checkHostFlag(opts.host) : null;
    // by code; a destination's lines (network set) apart from a handshake's with the same code (a timeout)
    this.handshakeLog = rateLimitLogger(this.log, { key: (e) => (e['network'] ? `${String(e['network'])}|` : '') + String(e['code'] ?? '') });
    const aheadSeconds = opts.maxTimeAheadSeconds ?? DEFAULT_MAX_HEADER_AHEAD_SECONDS;
    // the flag becomes the mode here, once; the password its credential (src/protocol/mode.ts, credential.ts)
    const mode = protocolMode(opts.withoutBrookProtocol);
    this.tunnelOptions = {
      mode,
      credential: passwordCredential(opts.password),
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
      maxAheadSeconds: aheadSeconds,
      // a mode without a client nonce (withoutBrookProtocol) has nothing to remember (protocol/probing.md#replays)
      replay: mode.replayNonce
        ? (opts.replay ?? createReplayCache({ capacity: opts.replayCacheSize, aheadSeconds, now: opts.now }))
        : null,
      log: this.log,
      handshakeLog: this.handshakeLog,
      dialer: opts.dialer,
      policy: opts.policy ?? DestinationPolicy.baseline(),
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
  }

  /** Whether this upgrade request is a tunnel (nothing is written). */
  check(req: IncomingMessage): UpgradeVerdict {
    // --host: another Host is treated as another path
    if (requestPath(req.url) !== this.path || (this.host !== null && !hostMatches(this.host, req.headers.host))) {
      return { tunnel: false, why: 'path' };
    }
    const c = checkUpgradeRequest(req.method ?? '', req.headers);
    if (!c.ok) return { tunnel: false, why: 'request', status: c.status };
    return { tunnel: true, key: c.key };
  }

  /** Answer the upgrade (101) and serve the tunnel on the socket; `key` from check(). */
  accept(req: IncomingMessage, socket: Socket, head: Buffer, key: string, ctx: AcceptContext = {}): TunnelHandle {
    socket.write(buildUpgradeResponse(key));
    const handle = serveTunnel(socket, head, this.clientOf(req, socket, ctx.proxied ?? null), this.tunnelOptions, {
      ...(ctx.onEstablished ? { onEstablished: ctx.onEstablished } : {}),
    });
    this.tunnels.add(handle);
    void handle.closed.then(() => this.tunnels.delete(handle));
    return handle;
  }

  /** The client for log lines (src/server/clientaddr.ts). */
  clientOf(req: IncomingMessage, socket: Socket, proxied: ProxyEndpoint | null): string {
    return clientAddress(
      { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 },
      proxied,
      req.headers['x-forwarded-for'],
      { trusted: this.trusted, xForwardedFor: this.xForwardedFor },
    );
  }

  /** The TrustedProxies list (--trustedProxies), for the PROXY intake. */
  get trustedProxies(): TrustedProxies | null {
    return this.trusted;
  }

  get openTunnels(): number {
    return this.tunnels.size;
  }

  /** Let open tunnels finish within `graceMs`, then cut the rest. */
  async closeTunnels(graceMs = 0): Promise<void> {
    if (graceMs > 0 && this.tunnels.size > 0) {
      const all = Promise.all([...this.tunnels].map((t) => t.closed));
      await Promise.race([all, new Promise((r) => setTimeout(r, graceMs).unref())]);
    }
    for (const t of this.tunnels) t.destroy();
  }

  /** Stop the rate-limited log's timers (after closeTunnels). */
  close(): void {
    this.handshakeLog.close();
  }
}
