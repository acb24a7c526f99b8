/**
 * The handshake of one tunnel and the probe rule that bounds it (protocol/probing.md), free of
 * I/O: the tunnel (src/server/tunnel.ts) feeds it the client's bytes and does what it answers;
 * it never touches a socket, so another transport can drive it the same way.
 *
 * The rule, for every connection without an accepted header: the server sends nothing and
 * reads and discards every byte; the deadline (probeTimeoutMs from the 101) or the byte budget
 * (probeByteBudget) closes with an RST, and only the client's RST closes sooner. Nothing else
 * changes the time or the way: not how many bytes came, where they end in the preamble, whether
 * the client half-closed, a failed decrypt, a stale or future time, or a replayed nonce.
 *
 *   push(bytes)  -> 'more'    undecided, or failed and draining: keep reading
 *                -> 'header'  complete and fresh: ask checkReplay()
 *                -> 'failed'  failed just now: drain from here (count and discard)
 *                -> 'reset'   past the byte budget: close with a reset (overBudgetError())
 *   the deadline -> close with a reset (deadlineError())
 *
 * Replays (Brook): a header is accepted only once the replay guard has seen its client nonce
 * for the first time (src/server/replay.ts; with --workers the primary holds the cache). An
 * asynchronous check answers later (the tunnel keeps the socket paused meanwhile); a refusal
 * (refuse()) is handled like any failed handshake.
 */
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import type { HandshakeFailureReason } from '../ops/metrics.js';
import type { FirstPayload } from '../protocol/header.js';
import type { Emit, ServerCodec } from '../protocol/session.js';
import type { ReplayGuard, ReplayVerdict } from './replay.js';

export const DEFAULT_PROBE_TIMEOUT_MS = 30_000;
export const DEFAULT_PROBE_BYTE_BUDGET = 256 * 1024;

/** The probe rule's bounds. */
export interface ProbeLimits {
  /** Bound on the handshake and on the silent drain after a bad handshake (ms), from the 101. */
  probeTimeoutMs: number;
  /** Bound on the bytes read (and discarded after a bad handshake) before an accepted header. */
  probeByteBudget: number;
}

/** What push() says to do next (see the top of this file). */
export type HandshakeStep = 'more' | 'header' | 'failed' | 'reset';

/** Who waits for an asynchronous replay verdict: null = accepted, else why it is refused. */
export interface ReplayWaiter {
  replayAnswered(refusal: BrookError | null): void;
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

/** The replay guard's verdict on a header as a refusal (null: fresh, accept it). */
function replayRefusal(v: ReplayVerdict, nonce: Buffer, h: FirstPayload): BrookError | null {
  if (v === 'fresh') return null;
  if (v === 'replay') return new BrookError(ErrorCodes.REPLAY, `client nonce ${nonce.toString('hex')} (time ${h.time}) was accepted before: a replayed stream`);
  return new BrookError(ErrorCodes.TIME_STALE, `header time ${h.time} is below the replay cache's floor (the window shrinks when the cache is full)`);
}

/** One connection's handshake: the codec reading the preamble, under the probe rule. */
export class TunnelHandshake {
  /** Bytes received since the upgrade, before an accepted header (the byte budget). */
  received = 0;
  /** Why the handshake failed, once it has: from then on bytes are only counted and discarded. */
  failure: BrookError | null = null;
  /** The client half-closed before a valid header: noted for the log line, never acted on. */
  clientEnded = false;

  constructor(
    readonly codec: ServerCodec,
    private readonly limits: ProbeLimits,
    /** Asked about each client nonce before its header is accepted; null = no replay protection. */
    private readonly replay: ReplayGuard | null,
  ) {}

  /** Client bytes before an accepted header; payloads after the header (same chunk) go to `emit`. */
  push(chunk: Buffer, emit: Emit): HandshakeStep {
    this.received += chunk.length;
    if (this.failure === null) {
      let h: FirstPayload | null = null;
      try {
        h = this.codec.push(chunk, emit);
      } catch (e) {
        this.failure = toBrookError(e);
      }
      if (h !== null) return 'header';
      if (this.failure !== null) return this.overBudget() ? 'reset' : 'failed';
    }
    return this.overBudget() ? 'reset' : 'more';
  }

  /**
   * The client's FIN changes nothing: the connection is still closed at the deadline (or the
   * byte budget), with a reset, so whether and where a prober half-closed is not told by the
   * time or the way we close (protocol/probing.md).
   */
  clientEnd(): void {
    this.clientEnded = true;
  }

  /**
   * Whether header `h` (complete and fresh) may be used: null = yes, a BrookError = refused (a
   * replay, the cache's floor, the guard failing), or 'pending': the guard answers later through
   * `waiter` (the caller stops reading until then).
   */
  checkReplay(h: FirstPayload, waiter: ReplayWaiter): BrookError | null | 'pending' {
    const nonce = this.codec.clientNonce;
    if (!this.replay || !nonce) return null;
    let verdict: ReplayVerdict | Promise<ReplayVerdict>;
    try {
      verdict = this.replay.check(nonce, h.time);
    } catch (e) {
      return toBrookError(e);
    }
    if (typeof verdict === 'string') return replayRefusal(verdict, nonce, h);
    verdict.then(
      (v) => waiter.replayAnswered(replayRefusal(v, nonce, h)),
      (e: unknown) => waiter.replayAnswered(toBrookError(e)),
    );
    return 'pending';
  }

  /** A header that may not be used: failed from here on, like any bad handshake ('reset': past the budget already). */
  refuse(err: BrookError): 'failed' | 'reset' {
    this.failure = err;
    return this.overBudget() ? 'reset' : 'failed';
  }

  /** Why the connection is reset past the byte budget. */
  overBudgetError(): BrookError {
    return this.failure ?? new BrookError(ErrorCodes.PROBE_BUDGET, `no valid header within ${this.limits.probeByteBudget} bytes`);
  }

  /** Why the connection is reset at the deadline: silent, undecided, failed and half-closed ones alike. */
  deadlineError(): BrookError {
    if (this.failure) return this.failure;
    return this.clientEnded
      ? new BrookError(ErrorCodes.STREAM_TRUNCATED, `the client half-closed after ${this.received} bytes, before a valid header`)
      : new BrookError(ErrorCodes.TIMEOUT, `no valid header within ${this.limits.probeTimeoutMs} ms`);
  }

  private overBudget(): boolean {
    return this.received > this.limits.probeByteBudget;
  }
}
