/**
 * Server side of one upgraded connection: read the client's preamble through the ServerCodec
 * under the probe rule (src/server/probe-rule.ts, protocol/probing.md), check it, answer
 * (Brook: the server nonce) and relay to the destination over TCP or UDP.
 *
 * One tunnel is one ServerTunnel in one phase at a time (Phase below):
 *
 *   handshake --bad bytes--> draining --deadline | byte budget | client RST--> closed
 *       |
 *       +--header--> [checking: replay] --refused--> draining
 *                        | fresh
 *                        v
 *                    checking: policy --blocked--> closed (RST)
 *                        | allowed
 *                        v
 *                    dialling --TCP--> relaying --relay ends--> closed
 *                        +------UDP--> udp ------flow ends---> closed
 *
 * [checking: replay] is a phase only while an asynchronous answer is awaited (--workers: the
 * primary's cache); a local cache answers at once. From 'handshake' to the accepted header the
 * probe rule holds (deadline, byte budget, nothing sent, a reset); after it, payloads read
 * while the destination is checked and dialled wait in `early` (at most MAX_EARLY_PAYLOAD).
 * Every way out goes through finish(), the one teardown.
 */
import type { Socket } from 'node:net';
import { defaultDialer, type Dialer } from '../dial/index.js';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import type { Logger } from '../log.js';
import { type Metrics, noMetrics } from '../ops/metrics.js';
import type { DestinationPolicy, PolicyVerdict } from '../policy/index.js';
import { formatAddress } from '../protocol/address.js';
import type { ServerCredential } from '../protocol/credential.js';
import type { FirstPayload } from '../protocol/header.js';
import type { ProtocolMode } from '../protocol/mode.js';
import type { CodecOptions, ServerCodec } from '../protocol/session.js';
import { startRelay } from '../net/splice.js';
import { tunnelTransform } from '../net/tunnel-transform.js';
import { resetSocket } from '../net/reset.js';
import { handshakeFailureReason, type ProbeLimits, type ReplayWaiter, TunnelHandshake } from './probe-rule.js';
import { CLOSED, handshakeOf, headerOf, type Phase, statsOf } from './tunnel-phase.js';
import type { ReplayGuard } from './replay.js';
import { UdpFlow } from './udpflow.js';

export { DEFAULT_PROBE_BYTE_BUDGET, DEFAULT_PROBE_TIMEOUT_MS, handshakeFailureReason } from './probe-rule.js';

export interface ServerTunnelOptions extends CodecOptions, ProbeLimits {
  /** Brook or withoutBrookProtocol (the endpoint's flag, made a mode once: src/protocol/mode.ts). */
  mode: ProtocolMode;
  /** What the client's preamble is checked against (the password, made once per endpoint). */
  credential: ServerCredential;
  /** TCP idle timeout in seconds (0 = none), upstream --tcpTimeout. */
  tcpTimeout: number;
  /** UDP flow idle timeout in seconds, upstream --udpTimeout. */
  udpTimeout: number;
  /**
   * --keepalive: an empty Brook fragment after this long (ms) without sending on a TCP
   * tunnel (0 or absent = off; no effect without Brook protocol or on UDP). src/net/relay.ts
   */
  keepaliveMs?: number;
  /** Destination dial timeout (ms). */
  dialTimeoutMs: number;
  /** Bytes a UDP flow may queue toward a slow tunnel before datagrams are dropped. */
  udpQueueLimit: number;
  log: Logger;
  /** Where lines about failed handshakes and unreachable destinations go (rate-limited by the server); default `log`. */
  handshakeLog?: Logger;
  /** Brook mode: asked about each client nonce before its header is accepted; none = no replay protection. */
  replay?: ReplayGuard | null;
  /** How destinations are dialled (--dialWith*); default: directly, with the system resolver. */
  dialer?: Dialer;
  metrics?: Metrics;
  /** Block lists (--blockDomainList, --blockCIDR4List, --blockCIDR6List, --blockGeoIP); none = no check. */
  policy?: DestinationPolicy | null;
}

/** What the server's connection bookkeeping learns from a tunnel. */
export interface TunnelEvents {
  /** The header was accepted: the connection is a tunnel now (no longer a pending handshake). */
  onEstablished?: () => void;
}

export const DEFAULT_DIAL_TIMEOUT_MS = 10_000;
export const DEFAULT_UDP_QUEUE_LIMIT = 1024 * 1024;
/**
 * Payload bytes read from an accepted tunnel while its destination is being dialled (or its
 * block check runs): beyond them the socket is paused until the relay takes over.
 */
export const MAX_EARLY_PAYLOAD = 64 * 1024;

export interface TunnelHandle {
  /** Stop now (shutdown past its grace period). */
  destroy(): void;
  /** Payload bytes relayed so far (TCP). */
  stats(): { up: number; down: number };
  readonly closed: Promise<void>;
}

/** Take over an upgraded socket. `head` holds bytes that arrived with the request. */
export function serveTunnel(socket: Socket, head: Buffer, from: string, o: ServerTunnelOptions, events: TunnelEvents = {}): TunnelHandle {
  return new ServerTunnel(socket, head, from, o, events);
}

class ServerTunnel implements TunnelHandle, ReplayWaiter {
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private phase: Phase;
  private readonly codec: ServerCodec;
  private readonly metrics: Metrics;
  /** The probe rule's deadline, from the upgrade (cleared when the header is accepted). */
  private readonly deadline: NodeJS.Timeout;
  /** Payloads read after the header, before the relay (or UDP flow) takes the socket over. */
  private early: Buffer[] = [];
  /** Bytes in `early` (bounded by MAX_EARLY_PAYLOAD once the header is accepted). */
  private earlyBytes = 0;

  constructor(
    private readonly socket: Socket,
    head: Buffer,
    private readonly from: string,
    private readonly o: ServerTunnelOptions,
    private readonly events: TunnelEvents,
  ) {
    this.closed = new Promise<void>((r) => (this.resolveClosed = r));
    this.codec = o.mode.serverCodec(o.credential, o);
    this.metrics = o.metrics ?? noMetrics;
    this.phase = { name: 'handshake', hs: new TunnelHandshake(this.codec, o, o.replay ?? null) };
    this.deadline = setTimeout(this.onDeadline, o.probeTimeoutMs);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
    socket.setNoDelay(true);
    // Half-close is the client's to make, ours only when the relay ends our side. Plain sockets of the
    // http server already allow it; the https server's TLS sockets do not (a client FIN would end our side
    // at once: a close rule that depends on the FIN during the handshake, a truncated answer after it).
    socket.allowHalfOpen = true;
    socket.on('data', this.onData);
    socket.on('end', this.onHandshakeEnd);
    if (head.length > 0) this.onData(head);
  }

  destroy(): void {
    const p = this.phase;
    if (p.name === 'relaying') p.relay.close();
    else if (p.name === 'udp') p.flow.close();
    else this.finish(null);
  }

  /** Payload bytes relayed so far (statsOf). */
  stats(): { up: number; down: number } {
    return statsOf(this.phase);
  }

  // ---- the socket's events ----

  /** Our one 'data' listener until the relay (or UDP flow) takes the socket over. */
  private readonly onData = (chunk: Buffer): void => {
    const hs = handshakeOf(this.phase);
    if (hs) this.handshakeData(hs, chunk);
    else this.earlyData(chunk);
  };

  private readonly onHandshakeEnd = (): void => {
    handshakeOf(this.phase)?.clientEnd();
  };

  // a reset by the client before a header: close at once, logging why the handshake had failed
  private readonly onError = (e: Error): void => {
    this.finish(handshakeOf(this.phase)?.failure ?? toBrookError(e));
  };

  private readonly onClose = (): void => {
    const p = this.phase;
    if (p.name !== 'relaying' && p.name !== 'udp') this.finish(handshakeOf(p)?.failure ?? null);
  };

  private readonly onDeadline = (): void => {
    const hs = handshakeOf(this.phase);
    if (hs) this.finish(hs.deadlineError(), 'rst');
  };

  private readonly pushEarly = (p: Buffer): void => {
    this.early.push(p);
    this.earlyBytes += p.length;
  };

  // ---- handshake, draining, checking: until a header is accepted, the probe rule ----

  private handshakeData(hs: TunnelHandshake, chunk: Buffer): void {
    switch (hs.push(chunk, this.pushEarly)) {
      case 'header':
        this.checkReplay(hs, hs.codec.header!);
        return;
      case 'failed':
        this.phase = { name: 'draining', hs };
        return;
      case 'reset':
        this.finish(hs.overBudgetError(), 'rst');
        return;
      case 'more':
        return;
    }
  }

  private checkReplay(hs: TunnelHandshake, header: FirstPayload): void {
    const refusal = hs.checkReplay(header, this);
    if (refusal === null) {
      this.accept(header);
    } else if (refusal === 'pending') {
      this.phase = { name: 'checking', step: 'replay', hs, header };
      this.socket.pause(); // nothing is read (and no FIN seen) until the answer
    } else {
      this.refuse(hs, refusal);
    }
  }

  /** The replay guard's late answer (ReplayWaiter). */
  replayAnswered(refusal: BrookError | null): void {
    const p = this.phase;
    if (p.name !== 'checking' || p.step !== 'replay') return; // closed meanwhile
    if (refusal) this.refuse(p.hs, refusal);
    else this.accept(p.header);
  }

  /** A header that may not be used: from here on like any failed handshake. */
  private refuse(hs: TunnelHandshake, err: BrookError): void {
    this.phase = { name: 'draining', hs };
    this.early.length = 0;
    this.earlyBytes = 0;
    if (hs.refuse(err) === 'reset') this.finish(err, 'rst');
    else this.socket.resume();
  }

  // ---- checking (policy), dialling ----

  private accept(h: FirstPayload): void {
    this.phase = { name: 'checking', step: 'policy', header: h };
    clearTimeout(this.deadline);
    this.socket.removeListener('end', this.onHandshakeEnd);
    // TCP: keep reading while the destination is dialled, so the first payloads are ready for it the
    // moment it connects (UDP: its flow starts reading)
    if (h.network === 'tcp' && this.earlyBytes < MAX_EARLY_PAYLOAD) this.socket.resume();
    else this.socket.pause();
    this.events.onEstablished?.();
    const policy = this.o.policy;
    if (!policy) {
      this.open(h, h.destination.host);
      return;
    }
    // block lists: a blocked destination is never dialled; an allowed one is dialled at the
    // address that was checked (resolving again could give another: DNS rebinding)
    policy.evaluate(h.destination).then(
      (v) => this.admit(h, v),
      (e: unknown) => this.unreachable(e),
    );
  }

  /** The block lists' verdict on an accepted header. */
  private admit(h: FirstPayload, v: PolicyVerdict): void {
    if (this.isClosed()) return;
    if (!v.blocked) {
      this.open(h, v.ips?.[0] ?? h.destination.host);
      return;
    }
    this.metrics.blocked(h.network);
    this.finish(new BrookError(ErrorCodes.BLOCKED, `destination blocked by ${v.rule}${v.ip ? ` (${v.ip})` : ''}`), 'rst', { rule: v.rule });
  }

  /** Payloads after an accepted header, before the relay (or UDP flow) takes the socket over. */
  private earlyData(chunk: Buffer): void {
    try {
      this.codec.push(chunk, this.pushEarly);
    } catch (e) {
      // a stream that fails to open after its header is an abort, as in the relay
      this.finish(toBrookError(e), 'rst');
      return;
    }
    if (this.earlyBytes >= MAX_EARLY_PAYLOAD) this.socket.pause();
  }

  /** The relay (or UDP flow) reads from here on: stop reading for it; what was read is handed over. */
  private stopEarly(): Buffer[] {
    this.socket.removeListener('data', this.onData);
    this.socket.pause();
    this.earlyBytes = 0;
    return this.early.splice(0);
  }

  /** Answer (the server nonce) and dial `host` (the destination's, or the address the block check resolved). */
  private open(h: FirstPayload, host: string): void {
    this.phase = { name: 'dialling', header: h };
    this.metrics.tunnelOpened(h.network);
    if (h.network === 'tcp') {
      this.dialTcp(h, host);
      return;
    }
    this.sendHello();
    const flow = new UdpFlow(this.socket, this.codec, h, this.o, this.stopEarly(), (err) => this.finish(err), host);
    if (!this.isClosed()) this.phase = { name: 'udp', header: h, flow };
  }

  /**
   * Our answer's first bytes (the server nonce; nothing without Brook protocol). For TCP they go out once the
   * destination is connected, as upstream's first write does: a refused dial then resets a tunnel that has
   * received nothing, which the client reads as ECONNRESET for sure (bytes waiting unread would let Node report
   * the reset as a plain end).
   */
  private sendHello(): void {
    const hello = this.codec.accept();
    if (hello.length > 0) this.socket.write(hello);
  }

  private dialTcp(h: FirstPayload, host: string): void {
    (this.o.dialer ?? defaultDialer()).connectTcp({ host, port: h.destination.port }, { timeoutMs: this.o.dialTimeoutMs }).then(
      (remote) => this.startRelaying(h, remote),
      (e: unknown) => this.unreachable(e),
    );
  }

  // ---- relaying ----

  private startRelaying(h: FirstPayload, remote: Socket): void {
    if (this.isClosed()) {
      remote.destroy();
      return;
    }
    remote.setNoDelay(true);
    this.sendHello();
    // a splicable mode's TCP (withoutBrookProtocol: raw bytes both ways) is spliced in the kernel
    // when it can be (src/net/splice.ts; never over wss). The payloads read while dialling go to
    // the destination at once.
    const relay = startRelay(remote, this.socket, tunnelTransform(this.codec), {
      splice: this.codec.mode.splicable,
      idleTimeoutMs: this.o.tcpTimeout * 1000,
      keepaliveMs: this.o.keepaliveMs,
      initialPlain: this.stopEarly(),
      onClose: (err) => this.finish(err),
    });
    if (!this.isClosed()) this.phase = { name: 'relaying', header: h, relay };
  }

  // ---- closed: the one teardown ----

  private isClosed(): boolean {
    return this.phase === CLOSED;
  }

  /**
   * The destination could not be had (its resolution or its dial failed): an abort, not an empty answer
   * (protocol/resets.md); a dead destination's lines come in bulk, so they go to the rate-limited log.
   */
  private unreachable(e: unknown): void {
    const err = toBrookError(e);
    this.metrics.dialFailed(err.code);
    this.finish(err, 'rst', {}, true);
  }

  /** The one teardown. `rst`: close with a reset (the handshake's deadline and byte budget; a failed or refused dial), else a FIN. */
  private finish(err: BrookError | null, how: 'fin' | 'rst' = 'fin', extra: Record<string, unknown> = {}, bulk = false): void {
    const p = this.phase;
    if (p.name === 'closed') return;
    this.phase = CLOSED;
    clearTimeout(this.deadline);
    if (how === 'rst') resetSocket(this.socket);
    else this.socket.destroy();
    const hs = handshakeOf(p);
    const header = headerOf(p);
    if (p.name === 'dialling' || p.name === 'relaying' || p.name === 'udp') this.metrics.tunnelClosed(p.header.network, statsOf(p));
    // an upgraded connection the client closed without a byte (e.g. a retired prewarmed one) is no failure
    else if (hs && err && !(hs.received === 0 && err.code === ErrorCodes.CLOSED)) this.metrics.handshakeFailed(handshakeFailureReason(err));
    // failed handshakes, blocked or unreachable destinations and dials without descriptors come in floods: the rate-limited log
    const limited = !header || bulk || err?.code === ErrorCodes.BLOCKED || err?.code === ErrorCodes.OUT_OF_RESOURCES;
    if (err && err.code !== ErrorCodes.CLOSED) this.log(header, err, extra, limited ? (this.o.handshakeLog ?? this.o.log) : this.o.log);
    this.resolveClosed();
  }

  private log(header: FirstPayload | null, error: BrookError, extra: Record<string, unknown>, to: Logger): void {
    to({
      from: this.from,
      dst: header ? formatAddress(header.destination) : '',
      network: header?.network ?? '',
      error: error.message,
      code: error.code,
      ...extra,
    });
  }
}
