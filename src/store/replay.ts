/**
 * Replay protection across a fleet (protocol/fleet.md#replay): a ReplayGuard
 * (src/server/replay.ts) with this instance's ReplayCache in front of the store.
 *
 *   check(nonce, time)
 *     local cache: replay or stale   -> that verdict, at once (no round trip)
 *     local cache: fresh             -> SET <prefix>r:<nonce hex> <instance> NX PX <ttl>
 *        "OK"                        -> fresh (this instance is the first in the fleet)
 *        nil                         -> replay (another instance accepted it)
 *        down / timeout / error      -> fresh, from the local cache alone (default),
 *                                       or refused with STORE_UNAVAILABLE (required)
 *
 * The TTL covers the nonce's whole window on every instance: its header time plus
 * the window, plus skewMs for instances whose clocks are behind this one's.
 *
 * Accepted while the store was out: every accepted nonce is kept in a NonceBacklog
 * for its window; those the store does not hold are pushed (SET NX, in batches, one
 * script per batch) at the first heartbeat that finds the store back, and all of them
 * again when the store lost its data (restarted empty). A pushed nonce that another
 * instance holds was replayed during the outage: counted (lateReplays) and logged.
 */
import type { Clock } from '../protocol/header.js';
import { NONCE_SIZE } from '../protocol/sizes.js';
import { DEFAULT_MAX_HEADER_AHEAD_SECONDS, DEFAULT_REPLAY_CACHE_SIZE, ReplayCache, type ReplayGuard, type ReplayVerdict } from '../server/replay.js';
import { NonceBacklog } from './backlog.js';
import { PUSH } from './scripts.js';
import { storeCallBytes, storeUnavailable, type FleetStore } from './store.js';

/** A replay check waits this long for the store before it falls back (it is on the connect path). */
export const DEFAULT_REPLAY_TIMEOUT_MS = 250;
/** The fleet's clocks agree within this (NTP does far better). */
export const DEFAULT_CLOCK_SKEW_MS = 5000;
/** Nonces per push script. */
export const PUSH_BATCH = 256;
/** Time a push batch may take. */
const PUSH_TIMEOUT_MS = 2000;

export interface FleetReplayOptions {
  store: FleetStore;
  /** The local cache in front (default: a new ReplayCache with the options below). */
  local?: ReplayCache;
  /** --replayCacheSize: the local cache's and the backlog's capacity. */
  capacity?: number;
  aheadSeconds?: number;
  /** Refuse a handshake the store could not check (default: fall back to the local cache). */
  required?: boolean;
  timeoutMs?: number;
  skewMs?: number;
  now?: Clock;
}

export class FleetReplayGuard implements ReplayGuard {
  readonly local: ReplayCache;
  readonly required: boolean;
  private readonly store: FleetStore;
  private readonly backlog: NonceBacklog;
  private readonly timeoutMs: number;
  private readonly skewMs: number;
  private readonly now: Clock;
  private pushing = false;

  constructor(o: FleetReplayOptions) {
    this.store = o.store;
    this.now = o.now ?? Date.now;
    const capacity = o.capacity ?? o.local?.capacity ?? DEFAULT_REPLAY_CACHE_SIZE;
    this.local = o.local ?? new ReplayCache({ capacity, aheadSeconds: o.aheadSeconds ?? DEFAULT_MAX_HEADER_AHEAD_SECONDS, now: this.now });
    this.backlog = new NonceBacklog(capacity);
    this.required = o.required ?? false;
    this.timeoutMs = o.timeoutMs ?? DEFAULT_REPLAY_TIMEOUT_MS;
    this.skewMs = o.skewMs ?? DEFAULT_CLOCK_SKEW_MS;
    this.store.addPendingSource(() => this.backlog.unrecorded);
    this.store.onBeat((empty) => {
      if (empty) this.backlog.forgetRecorded();
      if (this.backlog.unrecorded > 0) void this.push();
    });
  }

  /** Nonces accepted and not yet recorded in the store. */
  get unrecorded(): number {
    return this.backlog.unrecorded;
  }

  check(nonce: Uint8Array, time: number): ReplayVerdict | Promise<ReplayVerdict> {
    const v = this.local.check(nonce, time);
    if (v !== 'fresh') return v;
    this.backlog.prune(this.floor());
    if (this.store.state === 'down') return this.withoutStore(nonce, time, null);
    const key = this.key(nonce);
    const ttl = String(this.ttlMs(time));
    const inst = this.store.instanceId;
    return this.store.call({ op: 'replay', bytes: storeCallBytes(['SET', key, inst, 'PX', ttl, 'NX']), timeoutMs: this.timeoutMs }, (r) => r.set(key, inst, 'PX', ttl, 'NX')).then(
      (res) => {
        if (res !== 'OK') return 'replay';
        this.backlog.add(nonce, time, true);
        return 'fresh';
      },
      (e: unknown) => this.withoutStore(nonce, time, e),
    );
  }

  /** The store could not say: required refuses (throws the STORE_UNAVAILABLE error), else the local verdict stands. */
  private withoutStore(nonce: Uint8Array, time: number, e: unknown): 'fresh' {
    if (this.required) throw e ?? storeUnavailable('replay: the store is down (--redisRequired)');
    this.backlog.add(nonce, time, false);
    this.store.health.fellBack('replay');
    return 'fresh';
  }

  private key(nonce: Uint8Array): string {
    if (nonce.length !== NONCE_SIZE) throw new RangeError(`nonce must be ${NONCE_SIZE} bytes, got ${nonce.length}`);
    return this.store.key('r', Buffer.from(nonce.buffer, nonce.byteOffset, NONCE_SIZE).toString('hex'));
  }

  /** Until the header time leaves the window on the slowest clock of the fleet. */
  private ttlMs(time: number): number {
    return Math.max(1, (time + this.local.windowSeconds + 1) * 1000 - this.now() + this.skewMs);
  }

  /** Lowest header time still inside the window (older entries are dead). */
  private floor(): number {
    return Math.floor(this.now() / 1000) - this.local.windowSeconds;
  }

  /** Push the unrecorded nonces, a batch per script, until none is left or a batch fails (the next heartbeat goes on). */
  private async push(): Promise<void> {
    if (this.pushing) return;
    this.pushing = true;
    try {
      let from = 0;
      for (;;) {
        const b = this.backlog.collect(from, PUSH_BATCH, this.floor());
        if (b.seqs.length === 0) return;
        from = b.next;
        const keys = b.nonces.map((n) => this.key(n));
        const ttls = b.times.map((t) => String(this.ttlMs(t)));
        const taken = await this.store.script<number>({ op: 'replay_push', timeoutMs: PUSH_TIMEOUT_MS }, PUSH.name, keys, [this.store.instanceId, ...ttls]);
        this.backlog.markRecorded(b.seqs);
        if (taken > 0) {
          this.store.metrics.lateReplays(taken);
          this.store.health.lateReplays(taken);
        }
      }
    } catch {
      // counted and logged by the store; the next heartbeat tries again
    } finally {
      this.pushing = false;
    }
  }
}
