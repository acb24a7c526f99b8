/**
 * A budget of key trials (protocol/users.md#the-attackers-lever). Every connection that no recent user
 * opens makes the server try every key; garbage always does. So a full scan ("cold" lookup) is allowed
 * only while both the client's source and the server as a whole have trials left:
 *
 *   per source   a token bucket of `perSource` trials a second, at most `perSourceBurst` saved up;
 *                the source is the client IPv4 address or its IPv6 /64 (one machine's usual share)
 *   global       one bucket of `global` trials a second, at most `globalBurst` saved up
 *
 * A scan that starts with trials left is charged in full even past zero (a debt paid back at the rate),
 * so a client's first connect from a new address always gets its one full scan while the average stays
 * bounded. The warm tries (the users last seen from the address) are not budgeted: a handful per
 * connection. At most `maxSources` sources are remembered (least recently seen forgotten first).
 */
import { isIPv4, isIPv6, parseIPv6 } from '../protocol/address.js';

/** Bytes of an IPv6 address that name a source: its /64. */
const IPV6_SOURCE_BYTES = 8;
/** ::ffff:a.b.c.d */
const V4_MAPPED_RE = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i;
const MS_PER_SECOND = 1000;

/** Defaults: see protocol/users.md#the-attackers-lever for the figures behind them. */
export const DEFAULT_TRIALS_PER_SOURCE = 20_000;
export const DEFAULT_TRIALS_PER_SOURCE_BURST = 40_000;
export const DEFAULT_TRIALS_GLOBAL = 400_000;
export const DEFAULT_TRIALS_GLOBAL_BURST = 800_000;
export const DEFAULT_BUDGET_SOURCES = 16_384;

export interface TrialBudgetOptions {
  perSource?: number;
  perSourceBurst?: number;
  global?: number;
  globalBurst?: number;
  maxSources?: number;
  /** Milliseconds; default Date.now. */
  now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
}

/** The budget's key for a client IP: IPv4 as is (also when IPv4-mapped), IPv6 by its /64. */
export function sourceKey(ip: string): string {
  const mapped = V4_MAPPED_RE.exec(ip);
  if (mapped) return mapped[1]!;
  if (isIPv4(ip) || !isIPv6(ip)) return ip;
  return `${Buffer.from(parseIPv6(ip).subarray(0, IPV6_SOURCE_BYTES)).toString('hex')}/64`;
}

export class TrialBudget {
  readonly perSource: number;
  readonly perSourceBurst: number;
  readonly global: number;
  readonly globalBurst: number;
  readonly maxSources: number;
  private readonly now: () => number;
  private readonly sources = new Map<string, Bucket>();
  private readonly all: Bucket;

  constructor(o: TrialBudgetOptions = {}) {
    this.perSource = o.perSource ?? DEFAULT_TRIALS_PER_SOURCE;
    this.perSourceBurst = o.perSourceBurst ?? DEFAULT_TRIALS_PER_SOURCE_BURST;
    this.global = o.global ?? DEFAULT_TRIALS_GLOBAL;
    this.globalBurst = o.globalBurst ?? DEFAULT_TRIALS_GLOBAL_BURST;
    this.maxSources = o.maxSources ?? DEFAULT_BUDGET_SOURCES;
    this.now = o.now ?? Date.now;
    this.all = { tokens: this.globalBurst, at: this.now() };
  }

  private refill(b: Bucket, rate: number, burst: number, now: number): void {
    if (now > b.at) b.tokens = Math.min(burst, b.tokens + ((now - b.at) * rate) / MS_PER_SECOND);
    b.at = now;
  }

  private bucket(source: string, now: number): Bucket {
    let b = this.sources.get(source);
    if (b) {
      this.sources.delete(source); // re-inserted: the most recent
      this.refill(b, this.perSource, this.perSourceBurst, now);
    } else {
      if (this.sources.size >= this.maxSources) this.sources.delete(this.sources.keys().next().value!);
      b = { tokens: this.perSourceBurst, at: now };
    }
    this.sources.set(source, b);
    return b;
  }

  /** May a full scan start for this source (a sourceKey) now? */
  allow(source: string): boolean {
    const now = this.now();
    this.refill(this.all, this.global, this.globalBurst, now);
    return this.all.tokens > 0 && this.bucket(source, now).tokens > 0;
  }

  /** Charge the trials a scan made to the source and the server (may go below zero). */
  charge(source: string, trials: number): void {
    const now = this.now();
    this.refill(this.all, this.global, this.globalBurst, now);
    this.all.tokens -= trials;
    this.bucket(source, now).tokens -= trials;
  }

  /** Sources remembered now. */
  get size(): number {
    return this.sources.size;
  }
}
