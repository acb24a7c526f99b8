/**
 * The one addon loader (src/native/addon.ts) and its two features: AES-256-GCM
 * (src/crypto/native.ts) and the splice relay (src/net/splice-addon.ts) each check their own
 * half of the file, so either works when the other's check fails; errors the addon throws
 * (its C argument checks) reach JS as BrookErrors with a code.
 *
 * The "broken half" cases load the real addon through a small CommonJS wrapper (a .cjs file
 * given as the exact path) that re-exports it with one half spoiled.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadNativeBackend } from '../src/crypto/native.js';
import { BrookError, ErrorCodes } from '../src/errors.js';
import { addonError, loadAddon, NATIVE_ADDON_FILE } from '../src/native/addon.js';
import { findSpliceAddon } from '../src/net/splice-addon.js';
import { nodeCryptoBackend } from '../src/protocol/cipher.js';
import { KEY_SIZE, NONCE_SIZE, TAG_SIZE } from '../src/protocol/sizes.js';

const real = loadNativeBackend();
const SKIP = !real.native || real.path === null;
const SPLICE = process.platform === 'linux';

const dir = mkdtempSync(join(tmpdir(), 'brook-addon-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A .cjs file that re-exports the real addon with `patch` (JS source) applied to the copy `o`. */
function wrapper(name: string, patch: string): string {
  const p = join(dir, `${name}.cjs`);
  writeFileSync(
    p,
    `const a = require(${JSON.stringify(real.path)});
const o = {};
for (const k of Object.getOwnPropertyNames(a)) o[k] = a[k];
${patch}
module.exports = o;
`,
  );
  return p;
}

function thrown(fn: () => unknown): BrookError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(BrookError);
    return e as BrookError;
  }
  throw new Error('did not throw');
}

describe.skipIf(SKIP)('one addon, two features, each with its own check', () => {
  it('the AES self-test fails: crypto falls back to node:crypto, the splice relay is still found', () => {
    const p = wrapper('bad-aes', `o.seal = (h, n, x, out, off) => { const r = a.seal(h, n, x, out, off); if (r > 0) out[off] ^= 1; return r; };`);
    const crypto = loadNativeBackend({ path: p });
    expect(crypto.native).toBe(false);
    expect(crypto.backend).toBe(nodeCryptoBackend);
    expect(crypto.reason).toBe(`${p}: self-test failed: native seal differs from node:crypto`);
    const splice = findSpliceAddon({ path: p });
    expect(splice.reason).toBe(SPLICE ? null : 'splice(2) is not available on this platform');
    expect(splice.value !== null).toBe(SPLICE);
    expect(splice.path).toBe(p);
  });

  it('no AES functions at all: crypto says so, splice does not care', () => {
    const p = wrapper('no-aes', `delete o.create; delete o.openFragments;`);
    expect(loadNativeBackend({ path: p }).reason).toBe(`${p} is not the brook_native addon`);
    expect(findSpliceAddon({ path: p }).value !== null).toBe(SPLICE);
  });

  it('no splice relay: splice says so, crypto is native', () => {
    const p = wrapper('no-splice', `delete o.spliceSupported; delete o.spliceInit;`);
    const splice = findSpliceAddon({ path: p });
    expect([splice.value, splice.loaded, splice.reason]).toEqual([null, true, 'the addon has no splice relay (rebuild it)']);
    const crypto = loadNativeBackend({ path: p });
    expect([crypto.native, crypto.reason, crypto.path]).toEqual([true, null, p]);
  });

  it('a file that does not load: both features say why, the loader saw nothing loaded', () => {
    const p = join(dir, NATIVE_ADDON_FILE);
    writeFileSync(p, 'not an ELF file');
    const splice = findSpliceAddon({ path: p });
    expect(splice.loaded).toBe(false);
    expect(splice.reason).toMatch(new RegExp(`^cannot load ${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: `));
    expect(loadNativeBackend({ path: p }).reason).toBe(splice.reason);
  });

  it('the features load the same file once: the default loads of both name the same path', () => {
    expect(findSpliceAddon().path).toBe(real.path);
    const seen: unknown[] = [];
    loadAddon((a) => (seen.push(a), { ok: false, reason: 'x' }), { path: real.path! });
    loadAddon((a) => (seen.push(a), { ok: false, reason: 'x' }), { path: real.path! });
    expect(seen[0]).toBe(seen[1]);
  });

  it('a check that throws counts as a file that does not load', () => {
    const r = loadAddon(() => {
      throw new Error('boom\nsecond line');
    }, { path: real.path! });
    expect(r).toMatchObject({ value: null, loaded: true, reason: `cannot load ${real.path}: boom` });
  });

  it('src/net/splice-addon.ts does not go through the AES loader', () => {
    const src = readFileSync(new URL('../src/net/splice-addon.ts', import.meta.url), 'utf8');
    expect(src).not.toMatch(/crypto\/native/);
  });
});

describe.skipIf(SKIP)("the addon's argument checks are BrookErrors at the JS boundary", () => {
  const backend = real.backend;

  it('create: a key that is not a 32-byte Uint8Array -> NATIVE_ARGUMENT (thrown by the C side with that code)', () => {
    for (const key of [new Uint8Array(KEY_SIZE - 1), new Uint8Array(KEY_SIZE + 1), new Uint16Array(KEY_SIZE), new Array(KEY_SIZE).fill(0)]) {
      const e = thrown(() => backend.createEngine(key as Uint8Array));
      expect(e.code).toBe(ErrorCodes.NATIVE_ARGUMENT);
      expect(e.message).toBe('brook_aead.create: key must be a 32-byte Uint8Array');
      expect(e.cause).toBeInstanceOf(TypeError);
      expect((e.cause as { code?: string }).code).toBe(ErrorCodes.NATIVE_ARGUMENT);
    }
  });

  it('seal/open with a nonce that is not 12 bytes or a buffer that is not a Uint8Array -> NATIVE_ARGUMENT', () => {
    const engine = backend.createEngine(new Uint8Array(KEY_SIZE));
    const out = new Uint8Array(64);
    expect(thrown(() => engine.seal(new Uint8Array(NONCE_SIZE - 1), new Uint8Array(4), out, 0)).code).toBe(ErrorCodes.NATIVE_ARGUMENT);
    expect(thrown(() => engine.seal(new Uint8Array(NONCE_SIZE), 'text' as unknown as Uint8Array, out, 0)).code).toBe(ErrorCodes.NATIVE_ARGUMENT);
    expect(thrown(() => engine.open(new Uint8Array(NONCE_SIZE), new Uint8Array(TAG_SIZE), out, -1)).code).toBe(ErrorCodes.NATIVE_ARGUMENT);
  });
});

describe('addonError', () => {
  it('keeps a BROOK_ERR_* code the addon set, maps a bare TypeError to NATIVE_ARGUMENT and the rest to INTERNAL', () => {
    const coded = Object.assign(new Error('out of memory'), { code: ErrorCodes.OUT_OF_RESOURCES });
    expect([addonError(coded).code, addonError(coded).message, addonError(coded).cause]).toEqual([ErrorCodes.OUT_OF_RESOURCES, 'out of memory', coded]);
    expect(addonError(new TypeError('bad')).code).toBe(ErrorCodes.NATIVE_ARGUMENT);
    expect(addonError(Object.assign(new Error('x'), { code: 'EWHATEVER' })).code).toBe(ErrorCodes.INTERNAL);
    expect(addonError('a string').code).toBe(ErrorCodes.INTERNAL);
    const b = new BrookError(ErrorCodes.AUTH_FAILED, 'kept');
    expect(addonError(b)).toBe(b);
  });
});
