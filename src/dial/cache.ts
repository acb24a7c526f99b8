/**
 * A bounded TTL cache with least-recently-used eviction, for DNS answers.
 * A Map keeps insertion order: a hit re-inserts the key, so the first key is
 * always the least recently used one. The clock is injected.
 */
export class TtlCache<V> {
  private readonly map = new Map<string, { value: V; expiresAt: number }>();

  constructor(
    readonly maxEntries: number,
    private readonly now: () => number,
  ) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1) throw new RangeError(`maxEntries must be a positive integer: ${maxEntries}`);
  }

  get size(): number {
    return this.map.size;
  }

  /** The value, or undefined when absent or expired (an expired entry is removed). */
  get(key: string): V | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    this.map.delete(key);
    if (e.expiresAt <= this.now()) return undefined;
    this.map.set(key, e);
    return e.value;
  }

  /** Keep `value` for `ttlMs` (nothing is kept when ttlMs <= 0). Evicts the least recently used entry when full. */
  set(key: string, value: V, ttlMs: number): void {
    this.map.delete(key);
    if (!(ttlMs > 0)) return;
    while (this.map.size >= this.maxEntries) {
      const oldest = this.map.keys().next();
      if (oldest.done) break;
      this.map.delete(oldest.value);
    }
    this.map.set(key, { value, expiresAt: this.now() + ttlMs });
  }

  clear(): void {
    this.map.clear();
  }
}
