/**
 * The replay cache: every client nonce the server has ACCEPTED (first fragment
 * decrypted, time fresh), kept until its header time leaves the freshness
 * window. A second use of a nonce is a replayed stream. Pure: no I/O, the clock
 * and the hash seed are injected. Spec: protocol/probing.md#replays
 *
 *   accepted header times:  [floor, now + ahead]
 *   floor = max(now - window, eviction floor)    (never moves back)
 *
 * A nonce is remembered with its header time; once that time is below the
 * floor the entry is dead (a replay of it carries the same time, so it is
 * refused as stale without a lookup).
 *
 * Memory is bounded by `capacity` live entries at any rate. When the cache is
 * full, the entries with the oldest header time are evicted (a whole second at
 * a time) and the floor is raised past them: a replay of an evicted nonce is
 * refused as stale, never accepted. Under extreme load the window shrinks; the
 * protection is never lost.
 *
 * Layout: an open-addressing hash table (linear probing, keyed hash) in two
 * typed arrays, 16 bytes a slot: the nonce as three u32 words and the header
 * time + 1 (0 = empty slot). Dead entries keep their slot until the table is
 * rebuilt (when live + dead slots pass 3/4 of the table), which drops them and
 * grows or shrinks the table to twice the live count, up to
 * nextPow2(2 * capacity) slots.
 */
import { randomBytes } from 'node:crypto';
import { BrookError, ErrorCodes } from '../errors.js';
import type { Clock } from '../protocol/header.js';
import { DEFAULT_MAX_HEADER_AHEAD_SECONDS, MAX_HEADER_AGE_SECONDS, NONCE_SIZE } from '../protocol/sizes.js';
import type { RandomSource } from '../protocol/upgrade.js';

export { DEFAULT_MAX_HEADER_AHEAD_SECONDS } from '../protocol/sizes.js';

/** fresh: accepted (and now remembered); replay: seen before; stale: below the floor or too far ahead. */
export type ReplayVerdict = 'fresh' | 'replay' | 'stale';

/** What serveTunnel asks before accepting a Brook header: a local cache, or the primary over IPC. */
export interface ReplayGuard {
  check(nonce: Uint8Array, time: number): ReplayVerdict | Promise<ReplayVerdict>;
}

export interface ReplayCacheOptions {
  /** Most live entries held (--replayCacheSize). */
  capacity?: number;
  /** Freshness window in seconds (the header's max age, 60 as upstream). */
  windowSeconds?: number;
  /** Seconds a header time may be ahead of the clock (--maxTimeAhead). */
  aheadSeconds?: number;
  now?: Clock;
  random?: RandomSource;
}

/**
 * Default capacity: 100,000 handshakes a minute with honest clocks keep about
 * 100,000 entries live (each lives 60 s); 250,000 leaves room for clients whose
 * clocks run ahead and for bursts. 8 MiB of table at capacity.
 */
export const DEFAULT_REPLAY_CACHE_SIZE = 250_000;
/** Smallest table (slots); an idle server holds 16 KiB. */
const MIN_SLOTS = 1024;
/** u32 words of a stored nonce. */
const NONCE_WORDS = NONCE_SIZE / 4;
/** Rebuild when live + dead slots exceed this share of the table. */
const MAX_LOAD = 0.75;
/** A header time stored +1 must fit a u32 (0 marks an empty slot). */
const MAX_STORABLE_TIME = 0xffff_fffe;

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

export class ReplayCache implements ReplayGuard {
  readonly capacity: number;
  readonly windowSeconds: number;
  readonly aheadSeconds: number;
  private readonly now: Clock;
  private readonly maxSlots: number;
  private readonly seed: Uint32Array;
  private mask: number;
  private keys: Uint32Array;
  private times: Uint32Array;
  /** Slots in use, live or dead. */
  private occupied = 0;
  private liveCount = 0;
  /** Live entries by header time: at most window + ahead + 1 keys. */
  private readonly perSecond = new Map<number, number>();
  /** Lowest header time accepted; raised by the clock and by evictions, never lowered. */
  private floorSec = 0;

  constructor(o: ReplayCacheOptions = {}) {
    this.capacity = o.capacity ?? DEFAULT_REPLAY_CACHE_SIZE;
    if (!Number.isInteger(this.capacity) || this.capacity < 1) throw new RangeError(`replay cache capacity must be a positive integer, got ${this.capacity}`);
    this.windowSeconds = o.windowSeconds ?? MAX_HEADER_AGE_SECONDS;
    this.aheadSeconds = o.aheadSeconds ?? DEFAULT_MAX_HEADER_AHEAD_SECONDS;
    this.now = o.now ?? Date.now;
    this.maxSlots = Math.max(MIN_SLOTS, nextPow2(this.capacity * 2));
    // a keyed hash: nonces chosen to collide cannot be aimed at our slots
    const r = (o.random ?? randomBytes)(3 * 4);
    const dv = new DataView(r.buffer, r.byteOffset, r.byteLength);
    this.seed = Uint32Array.from([0, 1, 2], (i) => dv.getUint32(i * 4, true));
    this.keys = new Uint32Array(MIN_SLOTS * NONCE_WORDS);
    this.times = new Uint32Array(MIN_SLOTS);
    this.mask = MIN_SLOTS - 1;
  }

  /** Live entries. */
  get size(): number {
    return this.liveCount;
  }

  /** Lowest header time accepted now. */
  get floor(): number {
    return this.floorSec;
  }

  /** Bytes held by the table now (its typed arrays). */
  get tableBytes(): number {
    return this.keys.byteLength + this.times.byteLength;
  }

  /** Check a nonce and, when fresh, remember it: one step, so two checks of one nonce never both pass. */
  check(nonce: Uint8Array, time: number): ReplayVerdict {
    if (nonce.length !== NONCE_SIZE) throw new RangeError(`nonce must be ${NONCE_SIZE} bytes, got ${nonce.length}`);
    const nowSec = Math.floor(this.now() / 1000);
    this.raiseFloor(nowSec - this.windowSeconds);
    if (time < this.floorSec || time > nowSec + this.aheadSeconds || time > MAX_STORABLE_TIME) return 'stale';

    const dv = new DataView(nonce.buffer, nonce.byteOffset, NONCE_SIZE);
    const w0 = dv.getUint32(0, true);
    const w1 = dv.getUint32(4, true);
    const w2 = dv.getUint32(8, true);
    const keys = this.keys;
    const times = this.times;
    let i = this.hash(w0, w1, w2) & this.mask;
    let reuse = false;
    for (;;) {
      const t = times[i]!;
      if (t === 0) break;
      const k = i * NONCE_WORDS;
      if (keys[k] === w0 && keys[k + 1] === w1 && keys[k + 2] === w2) {
        if (t - 1 >= this.floorSec) return 'replay';
        reuse = true; // a dead entry of the same nonce: take its slot
        break;
      }
      i = (i + 1) & this.mask;
    }

    if (this.liveCount >= this.capacity) {
      this.evictOldest();
      if (time < this.floorSec) return 'stale';
    }
    const k = i * NONCE_WORDS;
    keys[k] = w0;
    keys[k + 1] = w1;
    keys[k + 2] = w2;
    times[i] = time + 1;
    if (!reuse) this.occupied++;
    this.liveCount++;
    this.perSecond.set(time, (this.perSecond.get(time) ?? 0) + 1);
    if (this.occupied > this.times.length * MAX_LOAD) this.rebuild();
    return 'fresh';
  }

  private hash(w0: number, w1: number, w2: number): number {
    let h = Math.imul(w0 ^ this.seed[0]!, 0x9e3779b1);
    h = Math.imul(h ^ (h >>> 15) ^ w1 ^ this.seed[1]!, 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13) ^ w2 ^ this.seed[2]!, 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  }

  /** Move the floor up to `to` (never down); entries below it die. */
  private raiseFloor(to: number): void {
    if (to <= this.floorSec) return;
    this.floorSec = to;
    for (const [t, n] of this.perSecond) {
      if (t >= to) continue;
      this.perSecond.delete(t);
      this.liveCount -= n;
    }
  }

  /** Full: drop the oldest second of entries (all of it) by raising the floor past it. */
  private evictOldest(): void {
    while (this.liveCount >= this.capacity) {
      let oldest = Infinity;
      for (const t of this.perSecond.keys()) if (t < oldest) oldest = t;
      if (oldest === Infinity) return;
      this.raiseFloor(oldest + 1);
    }
  }

  /** A new table of twice the live count (bounded), holding only the live entries. */
  private rebuild(): void {
    const slots = Math.min(this.maxSlots, Math.max(MIN_SLOTS, nextPow2(this.liveCount * 2 + 1)));
    const oldKeys = this.keys;
    const oldTimes = this.times;
    const keys = new Uint32Array(slots * NONCE_WORDS);
    const times = new Uint32Array(slots);
    const mask = slots - 1;
    const floorStored = this.floorSec + 1;
    let occupied = 0;
    for (let j = 0; j < oldTimes.length; j++) {
      const t = oldTimes[j]!;
      if (t === 0 || t < floorStored) continue;
      const k = j * NONCE_WORDS;
      const w0 = oldKeys[k]!;
      const w1 = oldKeys[k + 1]!;
      const w2 = oldKeys[k + 2]!;
      let i = this.hash(w0, w1, w2) & mask;
      while (times[i] !== 0) i = (i + 1) & mask;
      keys[i * NONCE_WORDS] = w0;
      keys[i * NONCE_WORDS + 1] = w1;
      keys[i * NONCE_WORDS + 2] = w2;
      times[i] = t;
      occupied++;
    }
    this.keys = keys;
    this.times = times;
    this.mask = mask;
    this.occupied = occupied;
  }
}

/** The cache a server uses by default (its own, in one process). */
export function createReplayCache(o: ReplayCacheOptions = {}): ReplayCache {
  return new ReplayCache(o);
}

/*
 * One cache for several processes (--workers, protocol/probing.md#replays): a replayed
 * stream may land on any worker, so one process (the primary) holds the cache and the
 * others ask it about each accepted Brook header, their socket paused, through a channel
 * they are given (src/cluster.ts carries the messages; the CLI connects the two). No answer
 * within REPLAY_ANSWER_TIMEOUT_MS, or no channel, refuses the handshake: the check fails
 * closed, like a replay.
 */

/** How long a worker waits for the cache's verdict before refusing the handshake. */
export const REPLAY_ANSWER_TIMEOUT_MS = 2_000;

/** A question to the remote cache: the client nonce (hex) and the header time. */
export interface ReplayQuestion {
  nonce: string;
  time: number;
}

function isReplayQuestion(q: unknown): q is ReplayQuestion {
  const r = q as ReplayQuestion | null;
  return typeof r === 'object' && r !== null && typeof r.nonce === 'string' && r.nonce.length === NONCE_SIZE * 2 && /^[0-9a-f]+$/.test(r.nonce) && Number.isSafeInteger(r.time);
}

/** The cache's side: the verdict for a well-formed question (remembering a fresh nonce), undefined for anything else. */
export function answerReplayQuestions(cache: ReplayCache): (q: unknown) => ReplayVerdict | undefined {
  return (q) => (isReplayQuestion(q) ? cache.check(Buffer.from(q.nonce, 'hex'), q.time) : undefined);
}

/**
 * The asking side: a guard whose verdicts come from `ask` (the question carried to the cache
 * and its answer brought back). An answer that is not a verdict counts as stale; a failed ask
 * is a TIMEOUT error ("replay check: ..."), and the handshake is refused.
 */
export function remoteReplayGuard(ask: (q: ReplayQuestion) => Promise<unknown>): ReplayGuard {
  return {
    check: (nonce, time) =>
      ask({ nonce: Buffer.from(nonce).toString('hex'), time }).then(
        (v) => (v === 'fresh' || v === 'replay' ? v : 'stale'),
        (e: unknown) => {
          throw new BrookError(ErrorCodes.TIMEOUT, `replay check: ${(e as Error)?.message ?? String(e)}`);
        },
      ),
  };
}
