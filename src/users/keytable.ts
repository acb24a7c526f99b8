/**
 * Every user's credential in the shapes the handshake needs (protocol/users.md#key-lookup):
 *   Brook                 passwords packed back to back with their offsets, for one findKey call
 *                         per connection (native when the addon has it, else node:crypto);
 *   withoutBrookProtocol  SHA-256(password) -> user, one Map lookup, the match compared in constant time.
 * Built once per users set (start, reload); holds no per-connection state.
 */
import { timingSafeEqual } from 'node:crypto';
import { DEFAULT_HKDF_INFO } from '../protocol/cipher.js';
import { WOB_PASSWORD_SIZE } from '../protocol/sizes.js';
import { type FindKeyFn, findKeyJs, LOOKUP_NONE } from './lookup-js.js';
import { nativeFindKey } from './native.js';

export interface KeyTableUser {
  readonly password: string;
  /** SHA-256 of the password's UTF-8 bytes. */
  readonly passwordHash: Uint8Array;
}

export interface KeyTableOptions {
  /** HKDF info of the client -> server direction (the server's clientHKDFInfo; default "brook"). */
  info?: Uint8Array;
  /** The lookup to use; default the native one when it loads, else findKeyJs. */
  findKey?: FindKeyFn;
}

export class KeyTable {
  readonly size: number;
  /** Which lookup this table calls ('native' or 'node:crypto'; 'custom' when one was passed). */
  readonly backend: string;
  private readonly passwords: Buffer;
  private readonly offsets: Uint32Array;
  private readonly info: Buffer;
  private readonly findKey: FindKeyFn;
  private readonly byHash = new Map<string, number>();
  private readonly hashes: readonly Uint8Array[];

  constructor(users: readonly KeyTableUser[], opts: KeyTableOptions = {}) {
    this.size = users.length;
    const bytes = users.map((u) => Buffer.from(u.password, 'utf8'));
    this.passwords = Buffer.concat(bytes);
    this.offsets = new Uint32Array(users.length + 1);
    let at = 0;
    bytes.forEach((b, i) => {
      this.offsets[i] = at;
      at += b.length;
    });
    this.offsets[users.length] = at;
    this.info = Buffer.from(opts.info ?? DEFAULT_HKDF_INFO);
    const native = opts.findKey ? null : nativeFindKey();
    this.findKey = opts.findKey ?? native ?? findKeyJs;
    this.backend = opts.findKey ? 'custom' : native ? 'native' : 'node:crypto';
    this.hashes = users.map((u) => u.passwordHash);
    users.forEach((u, i) => this.byHash.set(Buffer.from(u.passwordHash).toString('latin1'), i));
  }

  /**
   * Brook: the first user of `order` whose key opens `sealed` (the 18 bytes after the 12-byte nonce),
   * else LOOKUP_NONE (-1). The key found goes to keyOut (32 bytes) when given.
   */
  findBrook(nonce: Uint8Array, sealed: Uint8Array, order: Uint32Array, keyOut?: Uint8Array): number {
    if (order.length === 0) return LOOKUP_NONE;
    return this.findKey(nonce, sealed, this.passwords, this.offsets, this.info, order, keyOut);
  }

  /** withoutBrookProtocol: the user whose SHA-256(password) the first 32 bytes are, else LOOKUP_NONE. */
  findWob(hash: Uint8Array): number {
    if (hash.length !== WOB_PASSWORD_SIZE) return LOOKUP_NONE;
    const i = this.byHash.get(Buffer.from(hash.buffer, hash.byteOffset, hash.length).toString('latin1'));
    return i !== undefined && timingSafeEqual(this.hashes[i]!, hash) ? i : LOOKUP_NONE;
  }
}
