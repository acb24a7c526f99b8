/**
 * AES-256-GCM backend selection for the Brook data path.
 *
 *   'node'   node:crypto (always available)
 *   'native' the native addon (native/); throws CONFIG when it is not available
 *   'auto'   native when available, else node:crypto (silently; see nativeStatus())
 *
 * selectBackend() also installs the choice as the default of src/protocol/cipher.ts
 * (BrookCipher uses it when no backend is passed explicitly).
 */
import { BrookError, ErrorCodes } from '../errors.js';
import { getDefaultBackend, nodeCryptoBackend, setDefaultBackend, type AeadBackend } from '../protocol/cipher.js';
import { loadNativeBackend, nativeLoadResult, type NativeLoadOptions, type NativeLoadResult } from './native.js';

export { NATIVE_BACKEND_NAME, loadNativeBackend, type NativeLoadOptions, type NativeLoadResult } from './native.js';

export const BACKEND_PREFERENCES = ['auto', 'native', 'node'] as const;
export type BackendPreference = (typeof BACKEND_PREFERENCES)[number];

export interface SelectBackendOptions {
  /** Load the addon from here instead of the default location (tests, unusual layouts). */
  native?: NativeLoadOptions;
  /** Install the result as the default backend of BrookCipher (default true). */
  setDefault?: boolean;
}

/** Parse a CLI/config value; throws CONFIG on anything else. */
export function parseBackendPreference(s: string): BackendPreference {
  if ((BACKEND_PREFERENCES as readonly string[]).includes(s)) return s as BackendPreference;
  throw new BrookError(ErrorCodes.CONFIG, `unknown crypto backend "${s}" (expected one of: ${BACKEND_PREFERENCES.join(', ')})`);
}

/** Resolve a preference to a backend and (by default) make it BrookCipher's default. */
export function selectBackend(pref: BackendPreference = 'auto', opts: SelectBackendOptions = {}): AeadBackend {
  let backend: AeadBackend;
  if (pref === 'node') {
    backend = nodeCryptoBackend;
  } else if (pref === 'native' || pref === 'auto') {
    const r = opts.native ? loadNativeBackend(opts.native) : nativeLoadResult();
    if (pref === 'native' && !r.native) {
      throw new BrookError(ErrorCodes.CONFIG, `crypto backend "native" requested but unavailable: ${r.reason}`);
    }
    backend = r.backend;
  } else {
    throw new BrookError(ErrorCodes.CONFIG, `unknown crypto backend "${String(pref)}"`);
  }
  if (opts.setDefault ?? true) setDefaultBackend(backend);
  return backend;
}

/** Name of the backend BrookCipher currently uses by default ('native' or 'node:crypto'). */
export function backendName(): string {
  return getDefaultBackend().name;
}

/** Whether the addon (at its default location) is usable, and if not why. */
export function nativeStatus(): NativeLoadResult {
  return nativeLoadResult();
}
