/**
 * Loader for the optional native AES-256-GCM addon (native/). Never throws.
 * It tries, in order:
 *   1. the prebuilt one shipped in the npm tarball, <package root>/prebuilds/<platform>-<arch>/
 *      (made by native/prebuild.mjs at `npm pack`; node-gyp-build picks the file whose tags fit
 *      this platform, arch and libc);
 *   2. the one built from source, <package root>/native/build/Release/brook_aead.node
 *      (`node native/build.mjs`, run at install when no prebuilt fits);
 *   3. else node:crypto, saying why (file missing, OpenSSL symbols not exported by this
 *      node, self-test mismatch).
 *
 * The native engine keeps one OpenSSL EVP_CIPHER_CTX per direction per key and
 * also implements the batch members of AeadEngine (sealFragments/openFragments):
 *
 *   fragment = [ seal(u16 BE len) : 18 ][ seal(payload) : len + 16 ]
 *   the nonce's first 8 bytes (LE u64) advance after every seal/open.
 * Spec: protocol/brook-stream.md
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BrookError, ErrorCodes } from '../errors.js';
import { nodeCryptoBackend, type AeadBackend, type AeadEngine } from '../protocol/cipher.js';
import { KEY_SIZE, NONCE_SIZE, TAG_SIZE } from '../protocol/sizes.js';

/** File name node-gyp produces (target_name in native/binding.gyp). */
export const NATIVE_ADDON_FILE = 'brook_aead.node';
/** Where the addon lives relative to the package root. */
export const NATIVE_ADDON_RELATIVE_PATH = join('native', 'build', 'Release', NATIVE_ADDON_FILE);
/** Name of the native backend (AeadBackend.name). */
export const NATIVE_BACKEND_NAME = 'native';
/** How many directories above this module to look for the package root (src/crypto and dist/src/crypto). */
const MAX_ROOT_SEARCH_DEPTH = 4;
/** Folder of the prebuilt addons under the package root (node-gyp-build's layout). */
export const PREBUILDS_DIR = 'prebuilds';
/** package.json "name" that marks the package root. */
const PACKAGE_NAME = 'brook-ts';

/** Status codes returned by the addon (mirrors native/src/brook_aead.c). */
const ST_AUTH = -1;
const ST_OVERSIZED = -2;
const ST_RANGE = -3;
const ST_INTERNAL = -4;
const ST_ARGS = -5;

type Handle = object;
interface AddonExports {
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

function statusError(status: number, op: string): Error {
  switch (status) {
    case ST_AUTH:
      return new BrookError(ErrorCodes.AUTH_FAILED, 'message authentication failed');
    case ST_OVERSIZED:
      return new BrookError(ErrorCodes.LENGTH_OVERSIZED, 'fragment declares a length above the maximum payload');
    case ST_RANGE:
      return new RangeError(`native ${op}: output buffer too small or offset out of range`);
    case ST_ARGS:
      return new TypeError(`native ${op}: bad arguments (Uint8Array buffers, 12-byte nonce, integer offsets)`);
    case ST_INTERNAL:
    default:
      return new BrookError(ErrorCodes.INTERNAL, `native ${op}: OpenSSL failure (status ${status})`);
  }
}

class NativeEngine implements AeadEngine {
  private readonly result = new Int32Array(2);

  constructor(
    private readonly addon: AddonExports,
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

function makeBackend(addon: AddonExports): AeadBackend {
  return {
    name: NATIVE_BACKEND_NAME,
    createEngine(key: Uint8Array): AeadEngine {
      if (key.length !== KEY_SIZE) throw new TypeError(`key must be ${KEY_SIZE} bytes, got ${key.length}`);
      return new NativeEngine(addon, addon.create(key));
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

export interface NativeLoadOptions {
  /** Load exactly this .node file (no prebuilt, no search). */
  path?: string;
  /** Package root to search (default: the brook-ts package this module belongs to). */
  root?: string;
}

/** Where the loaded (or last tried) addon came from. */
export type NativeSource = 'prebuilt' | 'source' | 'path';

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

/** The brook-ts package root above this module (holds package.json named brook-ts), or null. */
export function packageRoot(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i <= MAX_ROOT_SEARCH_DEPTH; i++) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown };
      if (pkg.name === PACKAGE_NAME) return dir;
    } catch {
      /* no package.json here */
    }
    const up = resolve(dir, '..');
    if (up === dir) break;
    dir = up;
  }
  return null;
}

/** Default location of the source build: search upward from this module for native/build/Release/brook_aead.node. */
export function defaultAddonPath(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i <= MAX_ROOT_SEARCH_DEPTH; i++) {
    const p = join(dir, NATIVE_ADDON_RELATIVE_PATH);
    if (existsSync(p)) return p;
    const up = resolve(dir, '..');
    if (up === dir) break;
    dir = up;
  }
  return null;
}

/** The prebuilt addon for this platform/arch/libc under root/prebuilds (node-gyp-build's choice), or null. */
export function prebuiltAddonPath(root: string | null = packageRoot()): string | null {
  if (root === null || !existsSync(join(root, PREBUILDS_DIR))) return null;
  try {
    const ngb = createRequire(import.meta.url)('node-gyp-build') as { path(dir: string): string };
    const p = ngb.path(root);
    // node-gyp-build also looks in root/build and next to the node binary: only prebuilds/ is ours
    return p.startsWith(join(root, PREBUILDS_DIR)) ? p : null;
  } catch {
    return null; // no file fits this platform (or node-gyp-build is missing)
  }
}

function sourceBuildPath(root: string): string | null {
  const p = join(root, NATIVE_ADDON_RELATIVE_PATH);
  return existsSync(p) ? p : null;
}

function fallback(path: string | null, source: NativeSource | null, reason: string): NativeLoadResult {
  return { backend: nodeCryptoBackend, native: false, path, source, reason };
}

function loadFile(path: string, source: NativeSource): NativeLoadResult {
  try {
    const addon = createRequire(import.meta.url)(path) as AddonExports;
    if (typeof addon?.create !== 'function' || typeof addon.openFragments !== 'function') {
      return fallback(path, source, `${path} is not the brook_aead addon`);
    }
    const backend = makeBackend(addon);
    const bad = selfTest(backend);
    if (bad !== null) return fallback(path, source, `${path}: ${bad}`);
    return { backend, native: true, path, source, reason: null, opensslHeaders: addon.opensslHeaders };
  } catch (e) {
    const msg = e instanceof Error ? e.message.split('\n')[0] : String(e);
    return fallback(path, source, `cannot load ${path}: ${msg}`);
  }
}

/** Try to load the addon (prebuilt, else source build; or exactly opts.path); never throws. */
export function loadNativeBackend(opts: NativeLoadOptions = {}): NativeLoadResult {
  if (opts.path !== undefined) return loadFile(opts.path, 'path');
  const root = opts.root ?? packageRoot();
  const tried: NativeLoadResult[] = [];
  const prebuilt = prebuiltAddonPath(root);
  if (prebuilt !== null) {
    const r = loadFile(prebuilt, 'prebuilt');
    if (r.native) return r;
    tried.push(r);
  }
  const built = opts.root === undefined ? defaultAddonPath() : sourceBuildPath(opts.root);
  if (built !== null) {
    const r = loadFile(built, 'source');
    if (r.native) return r;
    tried.push(r);
  }
  if (tried.length === 0) {
    return fallback(
      null,
      null,
      `native addon not found (no prebuilt for ${process.platform}-${process.arch} in ${PREBUILDS_DIR}/, no ${NATIVE_ADDON_RELATIVE_PATH}; to build it: node ${join(root ?? '.', 'native', 'build.mjs')})`,
    );
  }
  const last = tried[tried.length - 1]!;
  return fallback(last.path, last.source, tried.map((r) => r.reason).join('; '));
}

let cached: NativeLoadResult | undefined;

/** The default load, done once per process. */
export function nativeLoadResult(): NativeLoadResult {
  cached ??= loadNativeBackend();
  return cached;
}
