/**
 * Which user a new connection is (protocol/users.md#key-lookup): the key table, the try order and the
 * trial budget together, for the server's handshake to call once per connection.
 *
 *   Brook                 1. warm: the users last seen from this address, then the most recently used,
 *                            at most `warmTries` keys (not budgeted);
 *                         2. cold: every other user, only while the trial budget allows (else refused
 *                            as a wrong password is, with `limited` set for the log and the metric).
 *   withoutBrookProtocol  one Map lookup of SHA-256(password).
 * A user found moves to the front for its address and overall.
 */
import { KEY_SIZE } from '../protocol/sizes.js';
import { sourceKey, TrialBudget } from './budget.js';
import { KeyTable, type KeyTableOptions, type KeyTableUser } from './keytable.js';
import { LOOKUP_NONE } from './lookup-js.js';
import { TryOrder, type TryOrderOptions } from './order.js';

/** Keys tried before the budget is asked: the address's recent users (4) and the most recently used. */
export const DEFAULT_WARM_TRIES = 8;

export interface UserLookupOptions extends KeyTableOptions {
  order?: TryOrderOptions;
  /** The trial budget; null: none (every connection may try every key). Default: a TrialBudget with its defaults. */
  budget?: TrialBudget | null;
  warmTries?: number;
}

export interface LookupResult {
  /** The user's index in the set, or -1. */
  index: number;
  /** Keys tried. */
  tries: number;
  /** True when the cold scan was not made because the trial budget was spent. */
  limited: boolean;
}

export class UserLookup {
  readonly table: KeyTable;
  readonly warmTries: number;
  private order: TryOrder;
  private readonly budget: TrialBudget | null;
  /** The try order of the connection being looked up (one lookup at a time: the handshake is synchronous). */
  private readonly scratch: Uint32Array;
  private readonly key = new Uint8Array(KEY_SIZE);

  constructor(users: readonly KeyTableUser[], opts: UserLookupOptions = {}, order?: TryOrder) {
    this.table = new KeyTable(users, opts);
    this.order = order && order.size === users.length ? order : new TryOrder(users.length, opts.order);
    this.budget = opts.budget === undefined ? new TrialBudget() : opts.budget;
    this.warmTries = opts.warmTries ?? DEFAULT_WARM_TRIES;
    this.scratch = new Uint32Array(users.length);
  }

  /** The try order, to carry over to the lookup of a reloaded set (TryOrder.remap). */
  get tryOrder(): TryOrder {
    return this.order;
  }

  private found(address: string, index: number, tries: number): LookupResult {
    this.order.used(address, index);
    return { index, tries, limited: false };
  }

  /**
   * Brook: the user whose key opens `sealed` (the 18 bytes after the client's 12-byte nonce) on a
   * connection from `address` (the client IP). keyOut, when given, receives the key (32 bytes) so the
   * client direction's cipher needs no second derivation.
   */
  brook(address: string, nonce: Uint8Array, sealed: Uint8Array, keyOut: Uint8Array = this.key): LookupResult {
    const order = this.scratch;
    const warm = this.order.fill(address, order, this.warmTries);
    let i = this.table.findBrook(nonce, sealed, order.subarray(0, warm), keyOut);
    if (i !== LOOKUP_NONE) return this.found(address, i, order.subarray(0, warm).indexOf(i) + 1);
    if (warm >= this.table.size) return { index: LOOKUP_NONE, tries: warm, limited: false };
    const source = sourceKey(address);
    if (this.budget && !this.budget.allow(source)) return { index: LOOKUP_NONE, tries: warm, limited: true };
    const all = this.order.fill(address, order); // same state as above: the first `warm` are the ones tried
    const cold = order.subarray(warm, all);
    i = this.table.findBrook(nonce, sealed, cold, keyOut);
    const tries = warm + (i === LOOKUP_NONE ? cold.length : cold.indexOf(i) + 1);
    this.budget?.charge(source, tries - warm);
    return i === LOOKUP_NONE ? { index: LOOKUP_NONE, tries, limited: false } : this.found(address, i, tries);
  }

  /** withoutBrookProtocol: the user whose SHA-256(password) `hash` is (the stream's first 32 bytes), or -1. */
  wob(address: string, hash: Uint8Array): number {
    const i = this.table.findWob(hash);
    if (i !== LOOKUP_NONE) this.order.used(address, i);
    return i;
  }
}
