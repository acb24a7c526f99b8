/**
 * The key lookup in plain node:crypto, the fallback of native/src/users_lookup.c (same arguments,
 * same answers; test/users-lookup.test.ts holds them to each other). Spec: protocol/users.md#key-lookup.
 *
 *   [ nonce : 12 ][ seal(u16 BE length) : 2 + 16 ] ...   the first 30 bytes of a client's Brook stream
 *
 * For each index in `order`: key = HKDF-SHA256(password, salt = nonce, info) (deriveKey), then
 * AES-256-GCM open of the 18 bytes with the nonce as received (the stream's first seal).
 */
import { createDecipheriv } from 'node:crypto';
import { BrookError, ErrorCodes } from '../errors.js';
import { deriveKey } from '../protocol/cipher.js';
import { KEY_SIZE, LENGTH_SIZE, NONCE_SIZE, SEALED_LENGTH_SIZE } from '../protocol/sizes.js';

/** Returned when no user's key opens the sealed length. */
export const LOOKUP_NONE = -1;

/**
 * findKey(nonce, sealed, passwords, offsets, info, order, keyOut?): the first index i of `order` whose
 * password passwords[offsets[i] .. offsets[i + 1]) opens `sealed`, else LOOKUP_NONE; the key goes to keyOut.
 */
export type FindKeyFn = (
  nonce: Uint8Array,
  sealed: Uint8Array,
  passwords: Uint8Array,
  offsets: Uint32Array,
  info: Uint8Array,
  order: Uint32Array,
  keyOut?: Uint8Array,
) => number;

/** Arguments both implementations refuse (BrookError NATIVE_ARGUMENT, as the addon's checks): wrong sizes. */
function checkSizes(nonce: Uint8Array, sealed: Uint8Array, offsets: Uint32Array, keyOut?: Uint8Array): void {
  if (nonce.length !== NONCE_SIZE || sealed.length !== SEALED_LENGTH_SIZE || offsets.length < 1 || (keyOut !== undefined && keyOut.length !== KEY_SIZE)) {
    throw new BrookError(ErrorCodes.NATIVE_ARGUMENT, `findKey: a ${NONCE_SIZE}-byte nonce, ${SEALED_LENGTH_SIZE} sealed bytes, n + 1 offsets and a ${KEY_SIZE}-byte keyOut`);
  }
}

function opens(key: Buffer, nonce: Uint8Array, sealed: Uint8Array): boolean {
  const d = createDecipheriv('aes-256-gcm', key, nonce);
  d.setAuthTag(sealed.subarray(LENGTH_SIZE));
  d.update(sealed.subarray(0, LENGTH_SIZE));
  try {
    d.final();
    return true;
  } catch {
    return false;
  }
}

export const findKeyJs: FindKeyFn = (nonce, sealed, passwords, offsets, info, order, keyOut) => {
  checkSizes(nonce, sealed, offsets, keyOut);
  const users = offsets.length - 1;
  for (let t = 0; t < order.length; t++) {
    const i = order[t]!;
    // offsets are checked for the users tried only: a warm lookup costs the same with 10 or 10,000 users
    if (i >= users || offsets[i]! > offsets[i + 1]! || offsets[i + 1]! > passwords.length) {
      throw new BrookError(ErrorCodes.NATIVE_ARGUMENT, `findKey: user ${i} of ${users} is outside the order's set or its offsets run backwards or past the passwords`);
    }
    const key = deriveKey(passwords.subarray(offsets[i]!, offsets[i + 1]!), nonce, info);
    if (opens(key, nonce, sealed)) {
      keyOut?.set(key);
      return i;
    }
  }
  return LOOKUP_NONE;
};
