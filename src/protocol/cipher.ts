/**
 * Key derivation and the AES-256-GCM cipher of one direction of a Brook stream.
 *
 *   key   = HKDF-SHA256(secret = password, salt = nonce, info = "brook"), 32 bytes
 *   nonce = 12 bytes; after EVERY seal/open its first 8 bytes, read as a
 *           little-endian u64, are incremented (wrapping).
 *
 * The cipher owns its nonce: callers cannot forget to advance it.
 * Spec: protocol/brook-stream.md#keys-and-nonces
 */
import { createCipheriv, createDecipheriv, createHmac } from 'node:crypto';
import { BrookError, ErrorCodes } from '../errors.js';
import { KEY_SIZE, NONCE_COUNTER_SIZE, NONCE_SIZE, TAG_SIZE } from './sizes.js';

/** Default HKDF info: the bytes of "brook". */
export const DEFAULT_HKDF_INFO: Buffer = Buffer.from('brook', 'utf8');

/** HKDF-Expand's counter byte of its first block, T(1): KEY_SIZE (32) is one SHA-256 output, so the only block. */
const HKDF_FIRST_BLOCK = Buffer.from([0x01]);

/**
 * HKDF-SHA256 (RFC 5869) written as its two HMAC steps, since the key is one block:
 *   PRK = HMAC(salt = nonce, password)            (extract)
 *   key = HMAC(PRK, info || 0x01)[0..KEY_SIZE)    (expand, T(1))
 * Same bytes as crypto.hkdfSync (test/hkdf.test.ts), about half its time here: hkdfSync
 * goes through a KeyObject and a job per call.
 */
export function deriveKey(password: Uint8Array, nonce: Uint8Array, info: Uint8Array = DEFAULT_HKDF_INFO): Buffer {
  if (nonce.length !== NONCE_SIZE) {
    throw new BrookError(ErrorCodes.NONCE_SIZE, `nonce must be ${NONCE_SIZE} bytes, got ${nonce.length}`);
  }
  const prk = createHmac('sha256', nonce).update(password).digest();
  const t1 = createHmac('sha256', prk).update(info).update(HKDF_FIRST_BLOCK).digest();
  return t1.length === KEY_SIZE ? t1 : t1.subarray(0, KEY_SIZE);
}

/** Add one to the nonce's first 8 bytes as a little-endian u64 (wrapping), in place. */
export function incrementNonce(nonce: Uint8Array): void {
  for (let i = 0; i < NONCE_COUNTER_SIZE; i++) {
    nonce[i] = (nonce[i]! + 1) & 0xff;
    if (nonce[i] !== 0) return;
  }
}

/**
 * An AES-256-GCM engine for one key. Backends: node:crypto (always present) and
 * the optional native addon (src/crypto/). Both must give identical bytes.
 */
export interface AeadEngine {
  /** Seal `plain` with `nonce` into `out` at `offset` (ciphertext then tag). Returns bytes written. */
  seal(nonce: Uint8Array, plain: Uint8Array, out: Uint8Array, offset: number): number;
  /** Open `sealed` (ciphertext then tag) with `nonce` into `out` at `offset`. Returns plaintext bytes; throws AUTH_FAILED. */
  open(nonce: Uint8Array, sealed: Uint8Array, out: Uint8Array, offset: number): number;
  /** Batch seal: `data` as consecutive fragments [seal(u16 BE len)][seal(payload)], payload <= maxPayload
   *  (data.length===0 -> one empty fragment), advancing `nonce` in place twice per fragment.
   *  Writes into out at offset (caller guarantees room: data.length + ceil(max(1,data.length)/maxPayload)*34). Returns bytes written. */
  sealFragments?(nonce: Uint8Array, data: Uint8Array, maxPayload: number, out: Uint8Array, offset: number): number;
  /** Batch open: open as many COMPLETE fragments from `input` as present, each declared length <= maxPayload
   *  (else throw BrookError LENGTH_OVERSIZED), writing the payloads back to back into out at offset, advancing
   *  nonce twice per fragment. Returns { consumed, written } (stops before an incomplete fragment; consumed may be 0).
   *  A failed tag throws BrookError AUTH_FAILED. */
  openFragments?(
    nonce: Uint8Array,
    input: Uint8Array,
    maxPayload: number,
    out: Uint8Array,
    offset: number,
  ): { consumed: number; written: number };
}

export interface AeadBackend {
  readonly name: string;
  createEngine(key: Uint8Array): AeadEngine;
}

/** node:crypto backend: one cipher context per call (OpenSSL underneath). */
export const nodeCryptoBackend: AeadBackend = {
  name: 'node:crypto',
  createEngine(key: Uint8Array): AeadEngine {
    const k = Buffer.from(key);
    return {
      seal(nonce, plain, out, offset) {
        const c = createCipheriv('aes-256-gcm', k, nonce);
        let n = 0;
        if (plain.length > 0) {
          const body = c.update(plain);
          out.set(body, offset);
          n = body.length;
        }
        c.final();
        out.set(c.getAuthTag(), offset + n);
        return n + TAG_SIZE;
      },
      open(nonce, sealed, out, offset) {
        if (sealed.length < TAG_SIZE) throw new BrookError(ErrorCodes.AUTH_FAILED, 'sealed data shorter than a tag');
        const bodyLen = sealed.length - TAG_SIZE;
        const d = createDecipheriv('aes-256-gcm', k, nonce);
        d.setAuthTag(sealed.subarray(bodyLen));
        let body: Buffer;
        try {
          body = bodyLen > 0 ? d.update(sealed.subarray(0, bodyLen)) : Buffer.alloc(0);
          d.final();
        } catch (e) {
          throw new BrookError(ErrorCodes.AUTH_FAILED, 'message authentication failed', { cause: e });
        }
        out.set(body, offset);
        return body.length;
      },
    };
  },
};

let defaultBackend: AeadBackend = nodeCryptoBackend;

/** The backend used when none is passed explicitly (set once at start by src/crypto/). */
export function getDefaultBackend(): AeadBackend {
  return defaultBackend;
}
export function setDefaultBackend(b: AeadBackend): void {
  defaultBackend = b;
}

export interface CipherOptions {
  backend?: AeadBackend;
}

/** One direction of a Brook stream: key + nonce, advancing the nonce on every seal and open. */
export class BrookCipher {
  readonly nonce: Buffer;
  /** The backend engine for this key (batch helpers are optional members). */
  readonly engine: AeadEngine;

  constructor(key: Uint8Array, nonce: Uint8Array, opts: CipherOptions = {}) {
    if (nonce.length !== NONCE_SIZE) {
      throw new BrookError(ErrorCodes.NONCE_SIZE, `nonce must be ${NONCE_SIZE} bytes, got ${nonce.length}`);
    }
    this.nonce = Buffer.from(nonce); // own copy: we mutate it
    this.engine = (opts.backend ?? defaultBackend).createEngine(key);
  }

  static fromPassword(password: Uint8Array, nonce: Uint8Array, info?: Uint8Array, opts?: CipherOptions): BrookCipher {
    return new BrookCipher(deriveKey(password, nonce, info), nonce, opts);
  }

  /** Seal into `out` at `offset`; returns bytes written (plain.length + TAG_SIZE). */
  sealInto(plain: Uint8Array, out: Uint8Array, offset: number): number {
    const n = this.engine.seal(this.nonce, plain, out, offset);
    incrementNonce(this.nonce);
    return n;
  }

  seal(plain: Uint8Array): Buffer {
    const out = Buffer.allocUnsafe(plain.length + TAG_SIZE);
    this.sealInto(plain, out, 0);
    return out;
  }

  /** Open into `out` at `offset`; returns plaintext bytes. Throws AUTH_FAILED (nonce not advanced then). */
  openInto(sealed: Uint8Array, out: Uint8Array, offset: number): number {
    const n = this.engine.open(this.nonce, sealed, out, offset);
    incrementNonce(this.nonce);
    return n;
  }

  open(sealed: Uint8Array): Buffer {
    if (sealed.length < TAG_SIZE) throw new BrookError(ErrorCodes.AUTH_FAILED, 'sealed data shorter than a tag');
    const out = Buffer.allocUnsafe(sealed.length - TAG_SIZE);
    this.openInto(sealed, out, 0);
    return out;
  }
}
