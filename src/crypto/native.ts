/**
 * The native AES-256-GCM backend: the AES half of the native addon (native/src/brook_aead.c),
 * loaded through the one addon loader (src/native/addon.ts: prebuilt, else source build), then
 * checked here with a known-answer self-test against node:crypto. When no file passes, the
 * backend is node:crypto and the result says why (file missing, OpenSSL symbols not exported by
 * this node, self-test mismatch). The splice relay in the same file has its own check
 * (src/net/splice-addon.ts): a failed self-test here does not turn it off.
 *
 * The native engine keeps one OpenSSL EVP_CIPHER_CTX per direction per key and
 * also implements the batch members of AeadEngine (sealFragments/openFragments):
 *
 *   fragment = [ seal(u16 BE len) : 18 ][ seal(payload) : len + 16 ]
 *   the nonce's first 8 bytes (LE u64) advance after every seal/open.
 * Spec: protocol/brook-stream.md
 *
 * Errors: the addon's argument checks (a key that is not a 32-byte Uint8Array, bad buffers,
 * an output too small) are BrookError NATIVE_ARGUMENT; a failed tag AUTH_FAILED; an oversized
 * declared length LENGTH_OVERSIZED; an OpenSSL failure INTERNAL.
 */
import { BrookError, ErrorCodes } from '../errors.js';
import { addonError, loadAddon, NATIVE_ADDON_NAME, type AddonCheck, type AddonLoadOptions, type AddonSource } from '../native/addon.js';
import { nodeCryptoBackend, type AeadBackend, type AeadEngine } from '../protocol/cipher.js';
import { KEY_SIZE, NONCE_SIZE, TAG_SIZE } from '../protocol/sizes.js';

/** Name of the native backend (AeadBackend.name). */
export const NATIVE_BACKEND_NAME = 'native';

/** Status codes returned by the addon (mirrors native/src/brook_aead.c). */
const ST_AUTH = -1;
const ST_OVERSIZED = -2;
const ST_RANGE = -3;
const ST_INTERNAL = -4;
const ST_ARGS = -5;

type Handle = object;
interface AddonFunctions {
  create(key: Uint8Array): Handle;
  seal(h: Handle, nonce: Uint8Array, plain: Uint8Array, out: Uint8Array, offset: number): number;
  open(h: Handle, nonce: Uint8Array, sealed: Uint8Array, out: Uint8Array, offset: number): number;
  sealFragments(h: Handle, nonce: Uint8Array, data: Uint8Array, maxPayload: number, out: Uint8Array, offset: number): number;
  openFragments(
    h: Handle,
    nonce: Uint8Array,
    input: Uint8Array,
    maxPayload: number,
    out: Uint8Array,
    offset: number,
    result: Int32Array,
  ): number;
  opensslHeaders: string;
}

function statusError(status: number, op: string): BrookError {
  switch (status) {
    case ST_AUTH:
      return new BrookError(ErrorCodes.AUTH_FAILED, 'message authentication failed');
    case ST_OVERSIZED:
      return new BrookError(ErrorCodes.LENGTH_OVERSIZED, 'fragment declares a length above the maximum payload');
    case ST_RANGE:
      return new BrookError(ErrorCodes.NATIVE_ARGUMENT, `native ${op}: output buffer too small or offset out of range`);
    case ST_ARGS:
      return new BrookError(ErrorCodes.NATIVE_ARGUMENT, `native ${op}: bad arguments (Uint8Array buffers, 12-byte nonce, integer offsets)`);
    case ST_INTERNAL:
    default:
      return new BrookError(ErrorCodes.INTERNAL, `native ${op}: OpenSSL failure (status ${status})`);
  }
}

class NativeEngine implements AeadEngine {
  private readonly result = new Int32Array(2);

  constructor(
    private readonly addon: AddonFunctions,
    private readonly handle: Handle,
  ) {}

  seal(nonce: Uint8Array, plain: Uint8Array, out: Uint8Array, offset: number): number {
    const r = this.addon.seal(this.handle, nonce, plain, out, offset);
    if (r < 0) throw statusError(r, 'seal');
    return r;
  }

  open(nonce: Uint8Array, sealed: Uint8Array, out: Uint8Array, offset: number): number {
    if (sealed.length < TAG_SIZE) throw new BrookError(ErrorCodes.AUTH_FAILED, 'sealed data shorter than a tag');
    const r = this.addon.open(this.handle, nonce, sealed, out, offset);
    if (r < 0) throw statusError(r, 'open');
    return r;
  }

  sealFragments(nonce: Uint8Array, data: Uint8Array, maxPayload: number, out: Uint8Array, offset: number): number {
    const r = this.addon.sealFragments(this.handle, nonce, data, maxPayload, out, offset);
    if (r < 0) throw statusError(r, 'sealFragments');
    return r;
  }

  /**
   * On a throw (AUTH_FAILED / LENGTH_OVERSIZED) the fragments before the bad one
   * have been written and the nonce advanced past them; the stream is dead anyway.
   */
  openFragments(
    nonce: Uint8Array,
    input: Uint8Array,
    maxPayload: number,
    out: Uint8Array,
    offset: number,
  ): { consumed: number; written: number } {
    const st = this.addon.openFragments(this.handle, nonce, input, maxPayload, out, offset, this.result);
    if (st < 0) throw statusError(st, 'openFragments');
    return { consumed: this.result[0]!, written: this.result[1]! };
  }
}

function makeBackend(addon: AddonFunctions): AeadBackend {
  return {
    name: NATIVE_BACKEND_NAME,
    createEngine(key: Uint8Array): AeadEngine {
      let handle: Handle;
      try {
        handle = addon.create(key); // the addon checks the key (a 32-byte Uint8Array)
      } catch (e) {
        throw addonError(e);
      }
      return new NativeEngine(addon, handle);
    },
  };
}

/** Known-answer check against node:crypto (same OpenSSL, but a wrong build must never go unnoticed). */
function selfTest(backend: AeadBackend): string | null {
  const key = new Uint8Array(KEY_SIZE).map((_, i) => (i * 7 + 3) & 0xff);
  const nonce = new Uint8Array(NONCE_SIZE).map((_, i) => (i * 13 + 1) & 0xff);
  const plain = new Uint8Array(37).map((_, i) => (i * 31 + 5) & 0xff);
  const a = new Uint8Array(plain.length + TAG_SIZE);
  const b = new Uint8Array(plain.length + TAG_SIZE);
  backend.createEngine(key).seal(nonce, plain, a, 0);
  nodeCryptoBackend.createEngine(key).seal(nonce, plain, b, 0);
  if (!Buffer.from(a).equals(b)) return 'self-test failed: native seal differs from node:crypto';
  const back = new Uint8Array(plain.length);
  backend.createEngine(key).open(nonce, a, back, 0);
  if (!Buffer.from(back).equals(plain)) return 'self-test failed: native open does not round-trip';
  return null;
}

export type NativeLoadOptions = AddonLoadOptions;

/** Where the loaded (or last tried) addon came from. */
export type NativeSource = AddonSource;

export interface NativeLoadResult {
  /** The native backend when it loaded, else nodeCryptoBackend. */
  backend: AeadBackend;
  native: boolean;
  /** The .node file loaded, or the last one tried (null when none was found). */
  path: string | null;
  /** prebuilt (prebuilds/), source (native/build/Release) or path (NativeLoadOptions.path); null when none was found. */
  source: NativeSource | null;
  /** Why the native backend is not used (null when it is). */
  reason: string | null;
  /** OpenSSL version the addon was compiled against, when loaded. */
  opensslHeaders?: string;
}

interface LoadedBackend {
  backend: AeadBackend;
  opensslHeaders: string | undefined;
}

/** The AES feature's check of a loaded addon file: its functions are there and it seals like node:crypto. */
const aeadCheck: AddonCheck<LoadedBackend> = (exports, path) => {
  const addon = exports as Partial<AddonFunctions>;
  if (typeof addon.create !== 'function' || typeof addon.openFragments !== 'function') {
    return { ok: false, reason: `${path} is not the ${NATIVE_ADDON_NAME} addon` };
  }
  const backend = makeBackend(addon as AddonFunctions);
  const bad = selfTest(backend);
  if (bad !== null) return { ok: false, reason: `${path}: ${bad}` };
  return { ok: true, value: { backend, opensslHeaders: addon.opensslHeaders } };
};

/** Load the AES backend (prebuilt, else source build; or exactly opts.path); never throws. */
export function loadNativeBackend(opts: NativeLoadOptions = {}): NativeLoadResult {
  const r = loadAddon(aeadCheck, opts);
  if (r.value === null) return { backend: nodeCryptoBackend, native: false, path: r.path, source: r.source, reason: r.reason };
  return { backend: r.value.backend, native: true, path: r.path, source: r.source, reason: null, opensslHeaders: r.value.opensslHeaders };
}

let cached: NativeLoadResult | undefined;

/** The default load, done once per process. */
export function nativeLoadResult(): NativeLoadResult {
  cached ??= loadNativeBackend();
  return cached;
}
