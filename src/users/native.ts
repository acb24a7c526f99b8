/**
 * The native key lookup (native/src/users_lookup.c, in the brook_native addon): findKey in one call per
 * connection, checked once against the node:crypto lookup before it is used; null when the addon is
 * missing, lacks findKey (an older build, or a node without SHA256_Transform) or answers wrongly.
 */
import { BrookError, ErrorCodes } from '../errors.js';
import { type AddonCheck, loadAddon } from '../native/addon.js';
import { deriveKey, nodeCryptoBackend } from '../protocol/cipher.js';
import { KEY_SIZE, LENGTH_SIZE, NONCE_SIZE } from '../protocol/sizes.js';
import { type FindKeyFn, LOOKUP_NONE } from './lookup-js.js';

/** Statuses of findKey below LOOKUP_NONE (mirrors native/src/users_lookup.c). */
const ST_INTERNAL = -4;
const ST_ARGS = -5;

interface LookupAddon {
  findKey(...args: Parameters<FindKeyFn>): number;
  findKeyPortable(force: boolean): boolean;
}

let addon: LookupAddon | null | undefined;

/** The addon file carries findKey (an older build, or a node without SHA256_Transform, has none). */
const lookupCheck: AddonCheck<LookupAddon> = (a, path) =>
  typeof a['findKey'] === 'function' && typeof a['findKeyPortable'] === 'function'
    ? { ok: true, value: a as unknown as LookupAddon }
    : { ok: false, reason: `${path} has no findKey` };

/** The addon's exports when they include findKey, through the one addon loader (src/native/addon.ts). */
function lookupAddon(): LookupAddon | null {
  if (addon === undefined) addon = loadAddon(lookupCheck).value;
  return addon;
}

function wrap(a: LookupAddon): FindKeyFn {
  return (nonce, sealed, passwords, offsets, info, order, keyOut) => {
    const r = a.findKey(nonce, sealed, passwords, offsets, info, order, keyOut);
    if (r >= LOOKUP_NONE) return r;
    if (r === ST_ARGS) throw new BrookError(ErrorCodes.NATIVE_ARGUMENT, 'native findKey: bad arguments (12-byte nonce, 18 sealed bytes, Uint32Array offsets and order, 32-byte keyOut)');
    throw new BrookError(ErrorCodes.INTERNAL, `native findKey: OpenSSL failure (status ${r === ST_INTERNAL ? 'internal' : r})`);
  };
}

/** A known answer: the third of three passwords opens, with the key HKDF gives. */
function selfTest(find: FindKeyFn): boolean {
  const nonce = new Uint8Array(NONCE_SIZE).map((_, i) => (i * 29 + 7) & 0xff);
  const pws = ['brook-self-test-a', 'brook-self-test-b', 'brook-self-test-c'.repeat(5)].map((p) => Buffer.from(p));
  const key = deriveKey(pws[2]!, nonce);
  const sealed = new Uint8Array(LENGTH_SIZE + 16);
  nodeCryptoBackend.createEngine(key).seal(nonce, new Uint8Array([0x01, 0x02]), sealed, 0);
  const offsets = new Uint32Array([0, pws[0]!.length, pws[0]!.length + pws[1]!.length, Buffer.concat(pws).length]);
  const out = new Uint8Array(KEY_SIZE);
  try {
    const r = find(nonce, sealed, Buffer.concat(pws), offsets, Buffer.from('brook'), new Uint32Array([0, 1, 2]), out);
    return r === 2 && key.equals(out);
  } catch {
    return false;
  }
}

let native: FindKeyFn | null | undefined;

/** The native findKey, or null (then use findKeyJs); loaded and checked once. */
export function nativeFindKey(): FindKeyFn | null {
  if (native !== undefined) return native;
  const a = lookupAddon();
  const f = a ? wrap(a) : null;
  native = f && selfTest(f) ? f : null;
  return native;
}

/**
 * Tests: force the portable GHASH of the native lookup (true) or go back to PCLMULQDQ where the CPU
 * has it (false). Returns whether PCLMULQDQ is in use; null without the native lookup.
 */
export function forcePortableGhash(force: boolean): boolean | null {
  const a = lookupAddon();
  return a ? a.findKeyPortable(force) : null;
}
