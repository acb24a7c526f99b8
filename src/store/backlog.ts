/**
 * The nonces this instance accepted within the freshness window, in the order it
 * accepted them, each marked recorded (the store holds it) or not (accepted while
 * the store was out). src/store/replay.ts pushes the unrecorded ones when the store
 * is back, and marks every live one unrecorded when the store lost its data, so a
 * stream accepted here cannot be replayed to another instance for the rest of its
 * window. Pure: no I/O, times are passed in.
 *
 * Bounded: at most `capacity` entries (16 bytes + 1 each: 4.25 MiB at the default
 * 250,000); when full the oldest goes (it is the first to leave the window). The
 * arrays start at MIN_SLOTS and double as needed.
 */
import { NONCE_SIZE } from '../protocol/sizes.js';

/** Smallest ring (entries). */
const MIN_SLOTS = 1024;
const NONCE_WORDS = NONCE_SIZE / 4;

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

export interface BacklogBatch {
  /** Sequence numbers of the entries (for markRecorded). */
  seqs: number[];
  nonces: Buffer[];
  times: number[];
}

export class NonceBacklog {
  readonly capacity: number;
  private slots: number;
  private words: Uint32Array;
  private times: Uint32Array;
  private recorded: Uint8Array;
  /** Sequence number of the oldest entry held, and of the next one. */
  private head = 0;
  private tail = 0;
  private unrecordedCount = 0;

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`backlog capacity must be a positive integer, got ${capacity}`);
    this.capacity = nextPow2(capacity);
    this.slots = Math.min(MIN_SLOTS, this.capacity);
    this.words = new Uint32Array(this.slots * NONCE_WORDS);
    this.times = new Uint32Array(this.slots);
    this.recorded = new Uint8Array(this.slots);
  }

  get size(): number {
    return this.tail - this.head;
  }

  /** Entries the store does not hold yet. */
  get unrecorded(): number {
    return this.unrecordedCount;
  }

  add(nonce: Uint8Array, time: number, recorded: boolean): void {
    if (this.size === this.slots) {
      if (this.slots < this.capacity) this.grow();
      else this.dropHead();
    }
    const i = this.tail & (this.slots - 1);
    const dv = new DataView(nonce.buffer, nonce.byteOffset, NONCE_SIZE);
    for (let w = 0; w < NONCE_WORDS; w++) this.words[i * NONCE_WORDS + w] = dv.getUint32(w * 4, true);
    this.times[i] = time;
    this.recorded[i] = recorded ? 1 : 0;
    if (!recorded) this.unrecordedCount++;
    this.tail++;
  }

  /** Forget the oldest entries whose header time is below `floorSec` (they have left the window). */
  prune(floorSec: number): void {
    while (this.head < this.tail && this.times[this.head & (this.slots - 1)]! < floorSec) this.dropHead();
  }

  /** Up to `max` unrecorded entries with a time at or above floorSec, from sequence `from` on; `next` continues. */
  collect(from: number, max: number, floorSec: number): BacklogBatch & { next: number } {
    const out: BacklogBatch & { next: number } = { seqs: [], nonces: [], times: [], next: from };
    let seq = Math.max(from, this.head);
    for (; seq < this.tail && out.seqs.length < max; seq++) {
      const i = seq & (this.slots - 1);
      if (this.recorded[i] || this.times[i]! < floorSec) continue;
      const b = Buffer.allocUnsafe(NONCE_SIZE);
      for (let w = 0; w < NONCE_WORDS; w++) b.writeUInt32LE(this.words[i * NONCE_WORDS + w]!, w * 4);
      out.seqs.push(seq);
      out.nonces.push(b);
      out.times.push(this.times[i]!);
    }
    out.next = seq;
    return out;
  }

  /** The store holds these now (entries dropped meanwhile are skipped). */
  markRecorded(seqs: readonly number[]): void {
    for (const seq of seqs) {
      if (seq < this.head || seq >= this.tail) continue;
      const i = seq & (this.slots - 1);
      if (this.recorded[i]) continue;
      this.recorded[i] = 1;
      this.unrecordedCount--;
    }
  }

  /** The store lost its data: every entry held must be recorded again. */
  forgetRecorded(): void {
    for (let seq = this.head; seq < this.tail; seq++) this.recorded[seq & (this.slots - 1)] = 0;
    this.unrecordedCount = this.size;
  }

  private dropHead(): void {
    const i = this.head & (this.slots - 1);
    if (!this.recorded[i]) this.unrecordedCount--;
    this.head++;
  }

  /** Twice the slots, entries at their new places (sequence numbers unchanged). */
  private grow(): void {
    const slots = this.slots * 2;
    const words = new Uint32Array(slots * NONCE_WORDS);
    const times = new Uint32Array(slots);
    const recorded = new Uint8Array(slots);
    for (let seq = this.head; seq < this.tail; seq++) {
      const a = seq & (this.slots - 1);
      const b = seq & (slots - 1);
      words.set(this.words.subarray(a * NONCE_WORDS, a * NONCE_WORDS + NONCE_WORDS), b * NONCE_WORDS);
      times[b] = this.times[a]!;
      recorded[b] = this.recorded[a]!;
    }
    this.slots = slots;
    this.words = words;
    this.times = times;
    this.recorded = recorded;
  }
}
