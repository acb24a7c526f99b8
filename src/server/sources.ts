/**
 * Pending connections charged to their source (protocol/websocket-upgrade.md, "Connections that are
 * not tunnels yet"): which source holds most, and its oldest connection, in O(1).
 *
 * A source is an address block, not an address: an IPv4 /24 (SOURCE_PREFIX_V4) or an IPv6 /64
 * (SOURCE_PREFIX_V6, what one subscriber or one server is usually given), so that one attacker does not
 * count as 256 (or 2^64) sources by using its neighbours' addresses. An IPv4-mapped IPv6 address is the
 * IPv4 address; anything that is not an IP address (a pipe) is one source of its own.
 *
 * SourceLedger is bounded by what it tracks: a source exists only while it holds a pending connection,
 * so there are never more sources (nor count levels) than pending connections, whatever the number of
 * addresses an outsider uses. KnownSources (the sources that opened a tunnel lately) is bounded by
 * KNOWN_SOURCES_MAX, and only a client with the password adds to it.
 */
import { isIPv4, isIPv6, parseIPv6 } from '../protocol/address.js';

export const SOURCE_PREFIX_V4 = 24;
export const SOURCE_PREFIX_V6 = 64;
/** Bytes of an IPv6 address inside its source block (SOURCE_PREFIX_V6 / 8). */
const V6_PREFIX_BYTES = SOURCE_PREFIX_V6 / 8;
/** Octets of an IPv4 address inside its source block (SOURCE_PREFIX_V4 / 8). */
const V4_PREFIX_OCTETS = SOURCE_PREFIX_V4 / 8;
const MAPPED_V4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i;
/** The source of everything that is not an IP address. */
export const NON_IP_SOURCE = '-';

/** "198.51.100.0/24" for 198.51.100.7, "2001:db8:0:1::/64" for 2001:db8:0:1::5; NON_IP_SOURCE otherwise. */
export function sourceOf(address: string | undefined): string {
  if (!address) return NON_IP_SOURCE;
  const a = MAPPED_V4.exec(address)?.[1] ?? address;
  if (isIPv4(a)) {
    const o = a.split('.').slice(0, V4_PREFIX_OCTETS).map(Number);
    while (o.length < 4) o.push(0);
    return `${o.join('.')}/${SOURCE_PREFIX_V4}`;
  }
  if (!isIPv6(a)) return NON_IP_SOURCE;
  const b = parseIPv6(a);
  const words: string[] = [];
  for (let i = 0; i < V6_PREFIX_BYTES; i += 2) words.push(((b[i]! << 8) | b[i + 1]!).toString(16));
  return `${words.join(':')}::/${SOURCE_PREFIX_V6}`;
}

interface Source<T> {
  key: string;
  /** Its pending connections, oldest first (a Set keeps insertion order). */
  items: Set<T>;
}

/**
 * Items (pending connections) by source. `levels[n]` holds the sources with n items, in the order they
 * reached n; `max` is the highest non-empty level. Every operation is O(1).
 */
export class SourceLedger<T> {
  private readonly sources = new Map<string, Source<T>>();
  /** Every item's source, in the order they were charged (oldest first). */
  private readonly sourceOfItem = new Map<T, Source<T>>();
  private readonly levels = new Map<number, Set<Source<T>>>();
  private max = 0;

  get size(): number {
    return this.sourceOfItem.size;
  }

  /** How many sources hold at least one item. */
  get sourceCount(): number {
    return this.sources.size;
  }

  /** How many items the source holding most holds. */
  get maxCount(): number {
    return this.max;
  }

  /** How many items `key`'s source holds. */
  countOf(key: string): number {
    return this.sources.get(key)?.items.size ?? 0;
  }

  /** The item's source key, if it is tracked. */
  keyOf(item: T): string | undefined {
    return this.sourceOfItem.get(item)?.key;
  }

  /** Charge `item` to `key` (moving it if it was charged elsewhere: it becomes that source's newest). */
  add(item: T, key: string): void {
    const was = this.sourceOfItem.get(item);
    if (was?.key === key) return;
    if (was) this.delete(item);
    let s = this.sources.get(key);
    if (!s) {
      s = { key, items: new Set() };
      this.sources.set(key, s);
    }
    this.move(s, s.items.size, s.items.size + 1);
    s.items.add(item);
    this.sourceOfItem.set(item, s);
  }

  delete(item: T): boolean {
    const s = this.sourceOfItem.get(item);
    if (!s) return false;
    this.sourceOfItem.delete(item);
    s.items.delete(item);
    this.move(s, s.items.size + 1, s.items.size);
    if (s.items.size === 0) this.sources.delete(s.key);
    return true;
  }

  /** The item charged first, whatever its source. */
  oldest(): T | undefined {
    return this.sourceOfItem.keys().next().value;
  }

  /** The oldest item of the source holding most (ties: the source that reached that count first). */
  heaviestOldest(): T | undefined {
    const s = this.levels.get(this.max)?.values().next().value;
    return s?.items.values().next().value;
  }

  private move(s: Source<T>, from: number, to: number): void {
    if (from > 0) {
      const l = this.levels.get(from)!;
      l.delete(s);
      if (l.size === 0) {
        this.levels.delete(from);
        if (this.max === from) this.max = to;
      }
    }
    if (to > 0) {
      let l = this.levels.get(to);
      if (!l) {
        l = new Set();
        this.levels.set(to, l);
      }
      l.add(s);
      if (to > this.max) this.max = to;
    }
  }
}

/** Sources remembered as known at most (the least recently seen are forgotten first). */
export const KNOWN_SOURCES_MAX = 4096;
/** How long a source stays known after its last tunnel. */
export const KNOWN_SOURCE_TTL_MS = 60 * 60_000;

export interface KnownSourcesOptions {
  max?: number;
  ttlMs?: number;
  now?: () => number;
}

/**
 * Sources that opened a tunnel recently, i.e. whose client proved the password (a Brook header was
 * accepted from it). Only such a client adds an entry, and at most `max` are kept, least recently seen
 * dropped first, so an outsider without the password neither grows nor churns this.
 */
export class KnownSources {
  /** Source -> time of its last tunnel, least recent first (re-inserted on every tunnel). */
  private readonly seen = new Map<string, number>();
  private readonly max: number;
  private readonly ttlMs: number;
  private readonly now: () => number;

  constructor(o: KnownSourcesOptions = {}) {
    this.max = o.max ?? KNOWN_SOURCES_MAX;
    this.ttlMs = o.ttlMs ?? KNOWN_SOURCE_TTL_MS;
    this.now = o.now ?? Date.now;
  }

  get size(): number {
    return this.seen.size;
  }

  /** A tunnel from `key` now. */
  add(key: string): void {
    this.seen.delete(key);
    this.seen.set(key, this.now());
    if (this.seen.size > this.max) this.seen.delete(this.seen.keys().next().value!);
  }

  has(key: string): boolean {
    const t = this.seen.get(key);
    if (t === undefined) return false;
    if (this.now() - t <= this.ttlMs) return true;
    this.seen.delete(key);
    return false;
  }
}
