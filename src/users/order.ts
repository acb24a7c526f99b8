/**
 * The order in which the server tries users' keys on a new Brook connection (protocol/users.md#try-order),
 * outline-ss-server's way: first the users last seen from this client address (most recent first), then
 * every other user, most recently used first. A client that connected before is found on the first try.
 *
 * Bounded: at most maxAddresses addresses (the least recently seen is forgotten first), perAddress users
 * each; the global list is one slot per user. `fill` writes into the caller's Uint32Array (the findKey
 * argument) and allocates nothing; `used` is O(1) for the global list.
 */

/** Client addresses remembered. */
export const DEFAULT_ORDER_ADDRESSES = 4096;
/** Users remembered per address (a household or an office behind one IP). */
export const DEFAULT_ORDER_PER_ADDRESS = 4;
const NONE = -1;

export interface TryOrderOptions {
  maxAddresses?: number;
  perAddress?: number;
}

export class TryOrder {
  readonly size: number;
  readonly maxAddresses: number;
  readonly perAddress: number;
  /** The global most-recently-used list, doubly linked over user indices. */
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private head = NONE;
  /** Per address, its users, most recent first; Map order = address recency (oldest first). */
  private readonly recent = new Map<string, number[]>();
  /** fill() marks the users it wrote with the current generation. */
  private readonly mark: Uint32Array;
  private generation = 0;

  /** `initial`: the global order to start from, most recent first (default 0, 1, ..., size - 1); users left out follow in index order. */
  constructor(size: number, opts: TryOrderOptions = {}, initial?: readonly number[]) {
    this.size = size;
    this.maxAddresses = opts.maxAddresses ?? DEFAULT_ORDER_ADDRESSES;
    this.perAddress = opts.perAddress ?? DEFAULT_ORDER_PER_ADDRESS;
    this.prev = new Int32Array(size).fill(NONE);
    this.next = new Int32Array(size).fill(NONE);
    this.mark = new Uint32Array(size);
    const placed = new Uint8Array(size);
    const order: number[] = [];
    for (const i of initial ?? []) {
      if (i >= 0 && i < size && !placed[i]) {
        placed[i] = 1;
        order.push(i);
      }
    }
    for (let i = 0; i < size; i++) if (!placed[i]) order.push(i);
    for (let k = order.length - 1; k >= 0; k--) this.pushFront(order[k]!);
  }

  private pushFront(i: number): void {
    this.prev[i] = NONE;
    this.next[i] = this.head;
    if (this.head !== NONE) this.prev[this.head] = i;
    this.head = i;
  }

  private unlink(i: number): void {
    const p = this.prev[i]!;
    const n = this.next[i]!;
    if (p !== NONE) this.next[p] = n;
    else this.head = n;
    if (n !== NONE) this.prev[n] = p;
  }

  /**
   * The try order for a connection from `address` into `out`: at most `limit` (default out.length)
   * distinct users. Returns how many were written.
   */
  fill(address: string, out: Uint32Array, limit = out.length): number {
    const max = Math.min(limit, out.length, this.size);
    if (++this.generation === 0xffffffff) {
      this.mark.fill(0);
      this.generation = 1;
    }
    const g = this.generation;
    let n = 0;
    for (const i of this.recent.get(address) ?? []) {
      if (n >= max) return n;
      this.mark[i] = g;
      out[n++] = i;
    }
    for (let i = this.head; i !== NONE && n < max; i = this.next[i]!) {
      if (this.mark[i] !== g) out[n++] = i;
    }
    return n;
  }

  /** User `index` opened a connection from `address`: first for that address and first overall. */
  used(address: string, index: number): void {
    if (index < 0 || index >= this.size) throw new RangeError(`TryOrder.used: no user ${index} of ${this.size}`);
    if (this.head !== index) {
      this.unlink(index);
      this.pushFront(index);
    }
    const list = this.recent.get(address);
    if (list) {
      this.recent.delete(address); // re-inserted below: the most recent address
      const at = list.indexOf(index);
      if (at >= 0) list.splice(at, 1);
      else if (list.length >= this.perAddress) list.pop();
      list.unshift(index);
      this.recent.set(address, list);
      return;
    }
    if (this.recent.size >= this.maxAddresses) this.recent.delete(this.recent.keys().next().value!);
    this.recent.set(address, [index]);
  }

  /** Addresses remembered now. */
  get addresses(): number {
    return this.recent.size;
  }

  /** The global order, most recent first. */
  globalOrder(): number[] {
    const out: number[] = [];
    for (let i = this.head; i !== NONE; i = this.next[i]!) out.push(i);
    return out;
  }

  /**
   * The order for a new users set (a reload): `map[old]` is the user's new index, or -1 when it is gone.
   * Recency carries over; users new to the set come after the known ones.
   */
  remap(newSize: number, map: Int32Array): TryOrder {
    const to = (i: number): number => (i < map.length ? map[i]! : NONE);
    const order = this.globalOrder().map(to).filter((i) => i >= 0 && i < newSize);
    const o = new TryOrder(newSize, { maxAddresses: this.maxAddresses, perAddress: this.perAddress }, order);
    for (const [address, list] of this.recent) {
      const kept = list.map(to).filter((i) => i >= 0 && i < newSize);
      if (kept.length > 0) o.recent.set(address, kept);
    }
    return o;
  }
}
