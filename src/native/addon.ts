/**
 * The one loader of the native addon (native/, node-gyp target brook_native). One .node file
 * carries two features: AES-256-GCM for the data path (src/crypto/native.ts) and the splice(2)
 * relay (src/net/splice-addon.ts). This module only finds and loads the file; each feature
 * checks on its own what it needs (the AES self-test, the splice relay's presence), so one
 * feature failing never takes the other with it. Never throws.
 *
 * Candidates, in order:
 *   1. the prebuilt shipped in the npm tarball, <package root>/prebuilds/<platform>-<arch>/
 *      (made by native/prebuild.mjs at `npm pack`; node-gyp-build picks the file whose tags fit
 *      this platform, arch and libc);
 *   2. the one built from source, <package root>/native/build/Release/brook_native.node
 *      (`node native/build.mjs`, run at install when no prebuilt fits);
 *   or exactly AddonLoadOptions.path.
 * A feature takes the first candidate that loads and passes its check (a prebuilt whose AES
 * self-test fails: crypto tries the source build; splice may still take the prebuilt).
 * A file is loaded once per process (require's cache), whichever feature asks first.
 *
 * Errors the addon throws (its C argument checks, napi_throw_* with a BROOK_ERR_* code) become
 * BrookErrors at the JS boundary: addonError().
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BrookError, ErrorCodes, isErrorCode } from '../errors.js';

/** The node-gyp target (native/binding.gyp): the addon's name in messages and its file name. */
export const NATIVE_ADDON_NAME = 'brook_native';
/** File name node-gyp produces. */
export const NATIVE_ADDON_FILE = `${NATIVE_ADDON_NAME}.node`;
/** Where the source build lives relative to the package root. */
export const NATIVE_ADDON_RELATIVE_PATH = join('native', 'build', 'Release', NATIVE_ADDON_FILE);
/** Folder of the prebuilt addons under the package root (node-gyp-build's layout). */
export const PREBUILDS_DIR = 'prebuilds';
/** How many directories above this module to look for the package root (src/native and dist/src/native). */
const MAX_ROOT_SEARCH_DEPTH = 4;
/** package.json "name" that marks the package root. */
const PACKAGE_NAME = 'brook-ts';

export interface AddonLoadOptions {
  /** Load exactly this file (no prebuilt, no search). */
  path?: string;
  /** Package root to search (default: the brook-ts package this module belongs to). */
  root?: string;
}

/** Where a loaded (or tried) addon came from: prebuilds/, native/build/Release, or AddonLoadOptions.path. */
export type AddonSource = 'prebuilt' | 'source' | 'path';

/** The addon's exports as loaded: each feature reads the members it needs. */
export type AddonExports = Readonly<Record<string, unknown>>;

/** A feature's verdict on one loaded file: what it will use, or why this file will not do. */
export type AddonCheck<T> = (addon: AddonExports, path: string) => { ok: true; value: T } | { ok: false; reason: string };

export interface AddonLoad<T> {
  /** What the feature's check returned for the file it took; null when none passed. */
  value: T | null;
  /** The file taken, or the last one tried (null when none was found). */
  path: string | null;
  source: AddonSource | null;
  /** Why no file was taken (each candidate's reason, joined by "; "); null when one was. */
  reason: string | null;
  /** Some candidate loaded (so the reason includes the feature's own refusal). */
  loaded: boolean;
}

interface Candidate {
  path: string;
  source: AddonSource;
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

/** Default location of the source build: search upward from this module for native/build/Release/brook_native.node. */
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

function candidates(opts: AddonLoadOptions, root: string | null): Candidate[] {
  if (opts.path !== undefined) return [{ path: opts.path, source: 'path' }];
  const list: Candidate[] = [];
  const prebuilt = prebuiltAddonPath(root);
  if (prebuilt !== null) list.push({ path: prebuilt, source: 'prebuilt' });
  const built = opts.root === undefined ? defaultAddonPath() : sourceBuildPath(opts.root);
  if (built !== null) list.push({ path: built, source: 'source' });
  return list;
}

function firstLine(e: unknown): string {
  return e instanceof Error ? (e.message.split('\n')[0] ?? '') : String(e);
}

/**
 * Load the addon for one feature: the first candidate that loads and passes `check`
 * (prebuilt, else source build; or exactly opts.path). Never throws: a check that throws
 * counts as a file that does not load.
 */
export function loadAddon<T>(check: AddonCheck<T>, opts: AddonLoadOptions = {}): AddonLoad<T> {
  const root = opts.root ?? packageRoot();
  const reasons: string[] = [];
  let loaded = false;
  let last: Candidate | null = null;
  for (const c of candidates(opts, root)) {
    last = c;
    try {
      const addon = createRequire(import.meta.url)(c.path) as AddonExports;
      loaded = true;
      const r = check(addon, c.path);
      if (r.ok) return { value: r.value, path: c.path, source: c.source, reason: null, loaded };
      reasons.push(r.reason);
    } catch (e) {
      reasons.push(`cannot load ${c.path}: ${firstLine(e)}`);
    }
  }
  if (last === null) {
    reasons.push(
      `native addon not found (no prebuilt for ${process.platform}-${process.arch} in ${PREBUILDS_DIR}/, no ${NATIVE_ADDON_RELATIVE_PATH}; to build it: node ${join(root ?? '.', 'native', 'build.mjs')})`,
    );
  }
  return { value: null, path: last?.path ?? null, source: last?.source ?? null, reason: reasons.join('; '), loaded };
}

/**
 * What an addon call threw, as a BrookError: the addon throws with a BROOK_ERR_* code
 * (napi_throw_*(env, code, msg): its argument checks BROOK_ERR_NATIVE_ARGUMENT); a TypeError
 * without one (an older build) is an argument error too, anything else INTERNAL.
 */
export function addonError(e: unknown): BrookError {
  if (e instanceof BrookError) return e;
  const code = (e as { code?: unknown } | null)?.code;
  const message = e instanceof Error ? e.message : String(e);
  if (isErrorCode(code)) return new BrookError(code, message, { cause: e });
  return new BrookError(e instanceof TypeError ? ErrorCodes.NATIVE_ARGUMENT : ErrorCodes.INTERNAL, message, { cause: e });
}
