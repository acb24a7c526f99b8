/**
 * Server side of one upgraded connection: read the client's preamble through
 * the ServerCodec, check it, answer (Brook: the server nonce) and relay to the
 * destination over TCP or UDP.
 *
 * Anti-probing, one rule for every connection without an accepted header
 * (protocol/probing.md): the server sends nothing and reads and discards every
 * byte; the deadline (probeTimeoutMs from the 101) or the byte budget
 * (probeByteBudget) closes with an RST, and only the client's RST closes
 * sooner. Nothing else changes the time or the way: not how many bytes came,
 * where they end in the preamble, whether the client half-closed, a failed
 * decrypt, a stale or future time, or a replayed nonce.
 *
 * Replays (Brook): a header is accepted only once the replay guard has seen its
 * client nonce for the first time (src/server/replay.ts; with --workers the
 * primary holds the cache). The socket stays paused while an asynchronous check
 * runs; a refusal is handled like any failed handshake.
 */
import type { Socket } from 'node:net';
import { defaultDialer, type Dialer } from '../dial/index.js';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import type { Logger } from '../log.js';
import { type HandshakeFailureReason, type Metrics, noMetrics } from '../ops/metrics.js';
import type { DestinationPolicy } from '../policy/index.js';
import { formatAddress } from '../protocol/address.js';
import type { FirstPayload } from '../protocol/header.js';
import { createServerCodec, type SessionOptions } from '../protocol/session.js';
import { startRelay, type RelayLike } from '../net/splice.js';
import { tunnelTransform } from '../net/tunnel-transform.js';
import { resetSocket } from '../net/reset.js';
import type { ReplayGuard, ReplayVerdict } from './replay.js';
import { UdpFlow } from './udpflow.js';

export interface ServerTunnelOptions extends SessionOptions {
  /** TCP idle timeout in seconds (0 = none), upstream --tcpTimeout. */
  tcpTimeout: number;
  /** UDP flow idle timeout in seconds, upstream --udpTimeout. */
  udpTimeout: number;
  /**
   * --keepalive: an empty Brook fragment after this long (ms) without sending on a TCP
   * tunnel (0 or absent = off; no effect without Brook protocol or on UDP). src/net/relay.ts
   */
  keepaliveMs?: number;
  /** Bound on the handshake and on the silent drain after a bad handshake (ms). */
  probeTimeoutMs: number;
  /** Bound on the bytes read and discarded after a bad handshake. */
  probeByteBudget: number;
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

/** The metrics reason of a failed handshake (a fixed set: protocol/probing.md). */
export function handshakeFailureReason(err: BrookError): HandshakeFailureReason {
  switch (err.code) {
    case ErrorCodes.AUTH_FAILED:
    case ErrorCodes.WOB_PASSWORD:
      return 'auth';
    case ErrorCodes.TIME_STALE:
    case ErrorCodes.TIME_AHEAD:
      return 'stale_time';
    case ErrorCodes.REPLAY:
      return 'replay';
    case ErrorCodes.PROBE_BUDGET:
      return 'probe_budget';
    case ErrorCodes.TIMEOUT:
      return 'timeout';
    default:
      return 'malformed';
  }
}

/** What the server's connection bookkeeping learns from a tunnel. */
export interface TunnelEvents {
  /** The header was accepted: the connection is a tunnel now (no longer a pending handshake). */
  onEstablished?: () => void;
}

export const DEFAULT_PROBE_TIMEOUT_MS = 30_000;
export const DEFAULT_PROBE_BYTE_BUDGET = 256 * 1024;
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
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  const codec = createServerCodec(o);
  const early: Buffer[] = [];
  /** Bytes in `early` (bounded by MAX_EARLY_PAYLOAD once the header is accepted). */
  let earlyBytes = 0;
  let relay: RelayLike | null = null;
  let udp: UdpFlow | null = null;
  let finished = false;
  let header: FirstPayload | null = null;
  /** The destination could not be had (its dial or its resolution failed): a dead destination's lines come in bulk. */
  let unreachable = false;

  const log = (error: BrookError | null, extra: Record<string, unknown> = {}, to: Logger = o.log) => {
    to({
      from,
      dst: header ? formatAddress(header.destination) : '',
      network: header?.network ?? '',
      ...(error ? { error: error.message, code: error.code } : {}),
      ...extra,
    });
  };

  const metrics = o.metrics ?? noMetrics;
  /** The network of a tunnel counted as opened (closed once with it). */
  let opened: FirstPayload['network'] | null = null;

  /** The one teardown. `rst`: close with a reset (the handshake's deadline and byte budget; a failed or refused dial), else a FIN. */
  const finish = (err: BrookError | null, how: 'fin' | 'rst' = 'fin', extra: Record<string, unknown> = {}) => {
    if (finished) return;
    finished = true;
    clearTimeout(handshakeTimer);
    if (how === 'rst') resetSocket(socket);
    else socket.destroy();
    if (opened) metrics.tunnelClosed(opened, stats());
    // an upgraded connection the client closed without a byte (e.g. a retired prewarmed one) is no failure
    else if (!header && err && !(received === 0 && err.code === ErrorCodes.CLOSED)) metrics.handshakeFailed(handshakeFailureReason(err));
    // failed handshakes, blocked or unreachable destinations and dials without descriptors come in floods: the rate-limited log
    const limited = !header || unreachable || err?.code === ErrorCodes.BLOCKED || err?.code === ErrorCodes.OUT_OF_RESOURCES;
    if (err && err.code !== ErrorCodes.CLOSED) log(err, extra, limited ? (o.handshakeLog ?? o.log) : o.log);
    resolveClosed();
  };

  /**
   * Payload bytes relayed so far, up = client to destination (UDP: not counted here).
   * The relay's plain side is the destination, so its "up" (read from plain) is our down.
   */
  const stats = () => (relay ? { up: relay.stats.down, down: relay.stats.up } : { up: 0, down: 0 });

  // ---- handshake: until a header is accepted, one close rule (protocol/probing.md) ----

  /** Bytes received since the upgrade, before an accepted header (the probe byte budget). */
  let received = 0;
  /** Why the handshake failed, once it has: from then on bytes are only counted and discarded. */
  let failure: BrookError | null = null;

  /** The client half-closed before a valid header (only named in the log line). */
  let clientEnded = false;

  /** The deadline, from the upgrade: silent, undecided, failed and half-closed connections alike. */
  const handshakeTimer = setTimeout(() => {
    const why = clientEnded
      ? new BrookError(ErrorCodes.STREAM_TRUNCATED, `the client half-closed after ${received} bytes, before a valid header`)
      : new BrookError(ErrorCodes.TIMEOUT, `no valid header within ${o.probeTimeoutMs} ms`);
    finish(failure ?? why, 'rst');
  }, o.probeTimeoutMs);

  /**
   * The client's FIN changes nothing: the connection is still closed at the deadline (or
   * the byte budget), with a reset, so whether and where a prober half-closed is not told
   * by the time or the way we close (issue 10 item 2; protocol/probing.md).
   */
  const onHandshakeEnd = () => {
    clientEnded = true;
  };

  const onHandshakeData = (chunk: Buffer) => {
    received += chunk.length;
    if (!failure) {
      let h: FirstPayload | null = null;
      try {
        h = codec.push(chunk, (p) => early.push(p));
      } catch (e) {
        failure = toBrookError(e);
      }
      if (h) {
        checkReplay(h);
        return;
      }
    }
    if (received > o.probeByteBudget) {
      finish(failure ?? new BrookError(ErrorCodes.PROBE_BUDGET, `no valid header within ${o.probeByteBudget} bytes`), 'rst');
    }
  };

  /** A complete, fresh header: accept it unless its client nonce was seen before. */
  const checkReplay = (h: FirstPayload) => {
    const nonce = codec.clientNonce;
    if (!o.replay || !nonce) {
      establish(h);
      return;
    }
    let verdict: ReplayVerdict | Promise<ReplayVerdict>;
    try {
      verdict = o.replay.check(nonce, h.time);
    } catch (e) {
      refuse(toBrookError(e));
      return;
    }
    if (typeof verdict === 'string') {
      onVerdict(h, nonce, verdict);
      return;
    }
    socket.pause(); // nothing is read (and no FIN seen) until the answer
    verdict.then(
      (v) => onVerdict(h, nonce, v),
      (e: unknown) => refuse(toBrookError(e)),
    );
  };

  const onVerdict = (h: FirstPayload, nonce: Buffer, v: ReplayVerdict) => {
    if (v === 'fresh') establish(h);
    else if (v === 'replay') refuse(new BrookError(ErrorCodes.REPLAY, `client nonce ${nonce.toString('hex')} (time ${h.time}) was accepted before: a replayed stream`));
    else refuse(new BrookError(ErrorCodes.TIME_STALE, `header time ${h.time} is below the replay cache's floor (the window shrinks when the cache is full)`));
  };

  /** A header that may not be used: from here on like any failed handshake. */
  const refuse = (err: BrookError) => {
    if (finished) return;
    failure = err;
    early.length = 0;
    if (received > o.probeByteBudget) finish(failure, 'rst');
    else socket.resume();
  };

  const establish = (h: FirstPayload) => {
    if (finished) return;
    header = h;
    clearTimeout(handshakeTimer);
    socket.removeListener('data', onHandshakeData);
    socket.removeListener('end', onHandshakeEnd);
    // TCP: keep reading while the destination is dialled, so the first payloads are ready for it the
    // moment it connects (UDP: its flow starts reading)
    for (const p of early) earlyBytes += p.length;
    if (h.network === 'tcp' && earlyBytes < MAX_EARLY_PAYLOAD) {
      socket.on('data', onEarlyData);
      socket.resume();
    } else {
      socket.pause();
    }
    events.onEstablished?.();
    const policy = o.policy;
    if (!policy) {
      open(h, h.destination.host);
      return;
    }
    // block lists: a blocked destination is never dialled; an allowed one is dialled at the
    // address that was checked (resolving again could give another: DNS rebinding)
    policy.evaluate(h.destination).then(
      (v) => {
        if (finished) return;
        if (!v.blocked) {
          open(h, v.ips?.[0] ?? h.destination.host);
          return;
        }
        metrics.blocked(h.network);
        finish(new BrookError(ErrorCodes.BLOCKED, `destination blocked by ${v.rule}${v.ip ? ` (${v.ip})` : ''}`), 'rst', { rule: v.rule });
      },
      (e: unknown) => {
        const err = toBrookError(e);
        metrics.dialFailed(err.code);
        unreachable = true;
        finish(err, 'rst');
      },
    );
  };

  /** Fragments after an accepted header, before the relay (or UDP flow) takes the socket over. */
  const onEarlyData = (chunk: Buffer) => {
    try {
      codec.push(chunk, (p) => {
        early.push(p);
        earlyBytes += p.length;
      });
    } catch (e) {
      // a stream that fails to open after its header is an abort, as in the relay
      finish(toBrookError(e), 'rst');
      return;
    }
    if (earlyBytes >= MAX_EARLY_PAYLOAD) socket.pause();
  };

  /** The relay (or UDP flow) reads from here on: stop reading for it; what was read is handed over. */
  const stopEarly = () => {
    socket.removeListener('data', onEarlyData);
    socket.pause();
    earlyBytes = 0;
    return early.splice(0);
  };

  /** Answer (the server nonce) and dial `host` (the destination's, or the address the block check resolved). */
  const open = (h: FirstPayload, host: string) => {
    opened = h.network;
    metrics.tunnelOpened(h.network);
    if (h.network === 'tcp') {
      dialTcp(h, host);
      return;
    }
    sendHello();
    startUdp(h, host);
  };

  /**
   * Our answer's first bytes (the server nonce; nothing without Brook protocol). For TCP they go out once the
   * destination is connected, as upstream's first write does: a refused dial then resets a tunnel that has
   * received nothing, which the client reads as ECONNRESET for sure (bytes waiting unread would let Node report
   * the reset as a plain end).
   */
  const sendHello = () => {
    const hello = codec.accept();
    if (hello.length > 0) socket.write(hello);
  };

  const dialTcp = (h: FirstPayload, host: string) => {
    const dst = h.destination;
    (o.dialer ?? defaultDialer()).connectTcp({ host, port: dst.port }, { timeoutMs: o.dialTimeoutMs }).then(
      (remote) => {
        if (finished) {
          remote.destroy();
          return;
        }
        remote.setNoDelay(true);
        sendHello();
        // withoutBrookProtocol TCP is raw bytes both ways: spliced in the kernel when it can be
        // (src/net/splice.ts; never over wss, never in Brook mode). The payloads read while dialling
        // go to the destination at once.
        relay = startRelay(remote, socket, tunnelTransform(codec), {
          splice: o.withoutBrookProtocol === true,
          idleTimeoutMs: o.tcpTimeout * 1000,
          keepaliveMs: o.keepaliveMs,
          initialPlain: stopEarly(),
          onClose: (err) => finish(err),
        });
      },
      (e: unknown) => {
        const err = toBrookError(e);
        metrics.dialFailed(err.code);
        unreachable = true;
        // a tunnel whose destination could not be reached is an abort, not an empty answer (protocol/resets.md)
        finish(err, 'rst');
      },
    );
  };

  const startUdp = (h: FirstPayload, host: string) => {
    udp = new UdpFlow(socket, codec, h, o, stopEarly(), (err) => finish(err), host);
  };

  // a reset by the client before a header: close at once, logging why the handshake had failed
  socket.on('error', (e) => finish(header ? toBrookError(e) : (failure ?? toBrookError(e))));
  socket.on('close', () => {
    if (!relay && !udp) finish(header ? null : failure);
  });
  socket.setNoDelay(true);
  // Half-close is the client's to make, ours only when the relay ends our side. Plain sockets of the
  // http server already allow it; the https server's TLS sockets do not (a client FIN would end our side
  // at once: a close rule that depends on the FIN during the handshake, a truncated answer after it).
  socket.allowHalfOpen = true;
  socket.on('data', onHandshakeData);
  socket.on('end', onHandshakeEnd);
  if (head.length > 0) onHandshakeData(head);

  return {
    destroy: () => {
      if (relay) relay.close();
      else if (udp) udp.close();
      else finish(null);
    },
    stats,
    closed,
  };
}
