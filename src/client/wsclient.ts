/**
 * wsclient / wssclient: a local SOCKS5 server (and optionally an HTTP proxy)
 * that carries each TCP connection, and each UDP flow, in its own tunnel to
 * the wsserver.
 *
 * UDP flows (one tunnel per (association, destination), the queue while a
 * tunnel opens, idle close, drops): src/client/udp-flows.ts.
 *
 * Logging: one line per failed tunnel or flow, {from, dst, network, error,
 * code}. A failed CONNECT is logged by the SOCKS5 server when it sends the
 * failure reply (not here too). Every per-connection line, from here, the
 * UDP flows, the SOCKS5 server and the HTTP proxy, goes through one
 * rateLimitLogger keyed by network and code, so a misbehaving local
 * application (or anything that can reach the SOCKS5 UDP port) cannot set the
 * log volume.
 */
import type { Socket } from 'node:net';
import type { Dialer } from '../dial/index.js';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { createHttpProxyServer } from '../httpproxy/server.js';
import { createLogger, rateLimitLogger, type Logger, type RateLimitedLogger } from '../log.js';
import { AcceptBackoff } from '../net/accept-backoff.js';
import { startRelay, type RelayLike } from '../net/splice.js';
import { type Metrics, noMetrics } from '../ops/metrics.js';
import { parseListen } from '../net/listen.js';
import { type Address, formatAddress } from '../protocol/address.js';
import type { AeadBackend } from '../protocol/cipher.js';
import type { Clock } from '../protocol/header.js';
import { checkKeepalive, tunnelTransform } from '../net/tunnel-transform.js';
import { type ConnectRequest, createSocks5Server, type Socks5Server } from '../socks5/server.js';
import {
  connectUpgraded,
  DEFAULT_TUNNEL_TIMEOUT_MS,
  dialTunnel,
  type OpenTunnel,
  type ServerEndpoint,
  startTunnel,
  type UpgradedConnection,
} from './dial.js';
import { TunnelPool } from './pool.js';
import { type ProtocolMode, protocolMode } from '../protocol/mode.js';
import { TlsSessionCache } from './tls-session.js';
import { TunnelDuplex } from './duplex.js';
import { ClientUdpFlows, type FailureLine } from './udp-flows.js';

export interface WsClientOptions {
  endpoint: ServerEndpoint;
  password: string;
  withoutBrookProtocol?: boolean;
  clientHKDFInfo?: Uint8Array;
  serverHKDFInfo?: Uint8Array;
  /** SOCKS5 listen address, default 127.0.0.1:1080. */
  socks5?: string;
  /** IP announced in UDP ASSOCIATE replies (upstream --socks5ServerIP). */
  socks5ServerIP?: string;
  socks5Auth?: { username: string; password: string };
  /** SOCKS5 UDP relay port (default: the SOCKS5 TCP port; 0 = ephemeral, used by --workers). */
  socks5UdpPort?: number;
  /** HTTP proxy listen address (optional). */
  http?: string;
  tcpTimeout?: number;
  udpTimeout?: number;
  /**
   * --keepalive: seconds without sending on a TCP tunnel before an empty Brook fragment
   * is sent (0 or absent = off). Brook protocol only: refused with withoutBrookProtocol.
   */
  keepalive?: number;
  tunnelTimeoutMs?: number;
  /** Bytes queued per UDP flow while its tunnel opens. */
  udpQueueLimit?: number;
  log?: Logger;
  /** Per-connection log lines: at most one per (network, code) per this many ms, the rest counted (default 1000). */
  logIntervalMs?: number;
  /** How to reach the server (--dialWith*); default net.connect. */
  dialer?: Dialer;
  metrics?: Metrics;
  now?: Clock;
  backend?: AeadBackend;
  /**
   * Prewarmed tunnels (src/client/pool.ts): keep `size` upgraded connections ready (0 or
   * absent = off), each retired `maxIdleMs` after its 101. The CLI turns it on by default.
   */
  pool?: { size: number; maxIdleMs?: number; backoffMinMs?: number; backoffMaxMs?: number };
  /** wss: resume TLS sessions (src/client/tls-session.ts). The CLI turns it on by default. */
  tlsResume?: boolean;
}

export const DEFAULT_SOCKS5_LISTEN = '127.0.0.1:1080';
export { DEFAULT_UDP_FLOW_QUEUE_LIMIT, UDP_FLOW_MAX_LOGGED_DROPS, UDP_TUNNEL_BACKLOG_LIMIT } from './udp-flows.js';

export class WsClient {
  readonly socks: Socks5Server;
  private http: ReturnType<typeof createHttpProxyServer> | null = null;
  private readonly relays = new Set<RelayLike>();
  /** The client's UDP flows (src/client/udp-flows.ts). */
  private readonly udp: ClientUdpFlows;
  /** Per-connection lines (rate-limited, see the top of this file). */
  private readonly log: RateLimitedLogger;
  readonly stats = { tunnels: 0, tunnelFailures: 0, udpDropped: 0 };
  private readonly metrics: Metrics;
  /** Prewarmed tunnels (null: off). */
  readonly pool: TunnelPool | null;
  /** wss: kept TLS sessions (null: off). */
  readonly tlsSessions: TlsSessionCache | null;
  /** Brook or withoutBrookProtocol: the option's flag made a mode once (src/protocol/mode.ts). */
  private readonly mode: ProtocolMode;
  /** Both listeners stop accepting while dials run out of descriptors (src/net/accept-backoff.ts). */
  private readonly backoff: AcceptBackoff;

  constructor(private readonly o: WsClientOptions) {
    if (!o.password) throw new BrookError(ErrorCodes.CONFIG, '--password is required');
    checkKeepalive(o.keepalive, o.withoutBrookProtocol);
    this.mode = protocolMode(o.withoutBrookProtocol);
    const mode = this.mode;
    this.tlsSessions = o.tlsResume && o.endpoint.secure ? new TlsSessionCache() : null;
    const p = o.pool;
    this.pool =
      p && p.size > 0
        ? new TunnelPool({
            ...p,
            connect: (signal) =>
              connectUpgraded({
                endpoint: o.endpoint,
                timeoutMs: o.tunnelTimeoutMs ?? DEFAULT_TUNNEL_TIMEOUT_MS,
                dialer: o.dialer,
                tlsSessions: this.tlsSessions ?? undefined,
                signal,
              }),
            // each idle connection's client nonce + key, made while it waits (protocol/prewarm.md)
            ...(mode.preparable
              ? { prepare: () => mode.prepareClientKey({ password: o.password, clientHKDFInfo: o.clientHKDFInfo, backend: o.backend }) }
              : {}),
          })
        : null;
    this.metrics = o.metrics ?? noMetrics;
    // bytes of open tunnels, read at scrape time (the relay's plain side is the application: up is up)
    this.metrics.liveBytes(() => {
      const sum = { up: 0, down: 0 };
      for (const r of this.relays) {
        sum.up += r.stats.up;
        sum.down += r.stats.down;
      }
      return sum;
    });
    this.log = rateLimitLogger(o.log ?? createLogger(), {
      key: (e) => `${String(e.network ?? '')}|${String(e.code ?? e.error ?? '')}`,
      intervalMs: o.logIntervalMs,
    });
    this.backoff = new AcceptBackoff({ log: this.log });
    this.udp = new ClientUdpFlows({
      open: (destination) => this.dial('udp', destination),
      logError: (from, dst, err) => this.logError(from, dst, 'udp', err),
      stats: this.stats,
      metrics: this.metrics,
      mode,
      udpTimeout: o.udpTimeout,
      udpQueueLimit: o.udpQueueLimit,
    });
    const listen = parseListen(o.socks5 ?? DEFAULT_SOCKS5_LISTEN);
    this.socks = createSocks5Server({
      host: listen.host ?? '0.0.0.0',
      port: listen.port,
      udpPort: o.socks5UdpPort,
      auth: o.socks5Auth,
      announceIP: o.socks5ServerIP,
      log: this.log,
      now: o.now,
      acceptBackoff: this.backoff,
      onConnect: (req) => {
        const pooled = this.pool?.take() ?? null;
        if (pooled) {
          // a prewarmed connection: the application gets its answer at once (nothing left that can
          // fail before the relay), then the preamble goes out, in this same tick
          const local = req.accept();
          let t: OpenTunnel;
          try {
            t = this.startOn(pooled, 'tcp', req.destination);
          } catch (e) {
            local.destroy();
            this.logError(`${req.source.address}:${req.source.port}`, req.destination, 'tcp', toBrookError(e));
            return;
          }
          this.relayTcp(req, local, t, pooled.settled);
          return;
        }
        this.dial('tcp', req.destination, null).then(
          (t) => this.relayTcp(req, req.accept(), t),
          // the SOCKS5 server logs the failure with its reply: one line, not two
          (err: BrookError) => req.reject(err),
        );
      },
      onUdpDatagram: (assoc, dst, data) => this.udp.onDatagram(assoc, dst, data),
      onUdpAssociationClosed: (assoc) => this.udp.closeAssociation(assoc),
    });
  }

  /** One log line for a failed tunnel or flow, or a dropped datagram: {from, dst, network, error, code}. */
  private logError(from: string, dst: Address, network: 'tcp' | 'udp', err: FailureLine): void {
    this.log({ from, dst: formatAddress(dst), network, error: err.message, code: err.code });
  }

  /** The TCP relay of an accepted SOCKS5 CONNECT (`local`: the application's socket, already answered). */
  private relayTcp(req: ConnectRequest, local: Socket, t: OpenTunnel, settled?: () => void): void {
    const o = this.o;
    if (local.destroyed) {
      t.socket.destroy();
      return;
    }
    // a splicable mode's TCP (withoutBrookProtocol: raw bytes both ways) is spliced in the kernel when it can be (src/net/splice.ts)
    const relay = startRelay(local, t.socket, tunnelTransform(t.codec), {
      splice: t.codec.mode.splicable,
      idleTimeoutMs: (o.tcpTimeout ?? 0) * 1000,
      keepaliveMs: (o.keepalive ?? 0) * 1000,
      initialTunnel: t.leftover,
      // a pooled tunnel's first answer: the pool may refill now (src/client/pool.ts; a spliced relay
      // never calls it, the pool's timer does)
      onFirstDown: settled,
      onClose: (err) => {
        this.relays.delete(relay);
        this.metrics.tunnelClosed('tcp', relay.stats);
        if (err && err.code !== ErrorCodes.CLOSED) {
          this.logError(`${req.source.address}:${req.source.port}`, req.destination, 'tcp', err);
        }
      },
    });
    this.relays.add(relay);
  }

  /** The preamble on a pooled connection, now (synchronous; a failure is counted and thrown). */
  private startOn(pooled: UpgradedConnection, network: 'tcp' | 'udp', destination: Address): OpenTunnel {
    this.stats.tunnels++;
    try {
      const t = startTunnel(pooled, this.tunnelOptions(network, destination));
      this.metrics.tunnelOpened(network);
      return t;
    } catch (e) {
      pooled.socket.destroy();
      throw this.dialFailed(e);
    }
  }

  private tunnelOptions(network: 'tcp' | 'udp', destination: Address) {
    return {
      endpoint: this.o.endpoint,
      password: this.o.password,
      mode: this.mode,
      clientHKDFInfo: this.o.clientHKDFInfo,
      serverHKDFInfo: this.o.serverHKDFInfo,
      now: this.o.now,
      backend: this.o.backend,
      network,
      destination,
      timeoutMs: this.o.tunnelTimeoutMs ?? DEFAULT_TUNNEL_TIMEOUT_MS,
      dialer: this.o.dialer,
      tlsSessions: this.tlsSessions ?? undefined,
    };
  }

  private dialFailed(e: unknown): BrookError {
    this.stats.tunnelFailures++;
    this.backoff.dialFailed(e);
    const err = toBrookError(e);
    this.metrics.dialFailed(err.code);
    return err;
  }

  /** A tunnel: on a pooled connection when there is one (`pooled`, taken by the caller, or now), else dialled. */
  private dial(network: 'tcp' | 'udp', destination: Address, pooled: UpgradedConnection | null = this.pool?.take() ?? null): Promise<OpenTunnel> {
    if (pooled) {
      try {
        return Promise.resolve(this.startOn(pooled, network, destination));
      } catch (e) {
        return Promise.reject(e);
      }
    }
    this.stats.tunnels++;
    // out of descriptors: waits for them (a bounded time) instead of failing at once
    return this.backoff.retry(() => dialTunnel(this.tunnelOptions(network, destination))).then(
      (t) => {
        this.metrics.tunnelOpened(network);
        return t;
      },
      (e: unknown) => {
        throw this.dialFailed(e);
      },
    );
  }

  /** Open UDP flows (for tests and stats). */
  get udpFlows(): number {
    return this.udp.size;
  }

  async listen(): Promise<void> {
    await this.socks.listen();
    this.pool?.start();
    if (this.o.http) {
      const h = parseListen(this.o.http);
      this.http = createHttpProxyServer({
        host: h.host ?? '0.0.0.0',
        port: h.port,
        acceptBackoff: this.backoff,
        log: (e) => {
          // access lines stay quiet; failures are logged like the SOCKS5 side
          if (e.event === 'request') return;
          this.log({ from: e.client ?? '', dst: e.destination ?? '', network: 'tcp', error: e.message ?? e.event, code: e.code });
        },
        dial: async (dst) => {
          const d = new TunnelDuplex(await this.dial('tcp', dst));
          d.once('close', () => this.metrics.tunnelClosed('tcp', { up: 0, down: 0 }));
          return d;
        },
      });
      await this.http.listen();
    }
  }

  httpAddress(): { host: string; port: number } | null {
    return this.http ? this.http.address() : null;
  }

  async close(graceMs = 0): Promise<void> {
    this.pool?.close();
    const closing = [this.socks.close(), this.http?.close()];
    if (graceMs > 0 && this.relays.size > 0) {
      const deadline = Date.now() + graceMs;
      while (this.relays.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    }
    for (const r of this.relays) r.close();
    this.udp.closeAll();
    this.backoff.close();
    await Promise.all(closing);
    this.log.close();
  }
}
