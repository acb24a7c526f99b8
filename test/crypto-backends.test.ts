import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gcm } from '@noble/ciphers/aes.js';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { backendName, loadNativeBackend, parseBackendPreference, selectBackend } from '../src/crypto/index.js';
import { BrookError, ErrorCodes } from '../src/errors.js';
import { NATIVE_ADDON_FILE } from '../src/native/addon.js';
import {
  BrookCipher,
  getDefaultBackend,
  incrementNonce,
  nodeCryptoBackend,
  setDefaultBackend,
  type AeadBackend,
  type AeadEngine,
} from '../src/protocol/cipher.js';
import {
  KEY_SIZE,
  LENGTH_SIZE,
  MAX_TCP_PAYLOAD,
  MAX_UDP_PAYLOAD,
  NONCE_SIZE,
  SEALED_LENGTH_SIZE,
  TAG_SIZE,
} from '../src/protocol/sizes.js';

/** Deterministic PRNG (xorshift32) so a failure reproduces. */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n: number) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s % n;
  };
}
function bytes(r: (n: number) => number, n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = r(256);
  return b;
}
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

function expectCode(fn: () => unknown, code: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(BrookError);
  expect((err as BrookError).code).toBe(code);
}

/** Reference: the wire bytes of `data` as Brook fragments, made of single seals. */
function referenceFragments(engine: AeadEngine, nonce: Uint8Array, data: Uint8Array, maxPayload: number): Uint8Array {
  const parts: Uint8Array[] = [];
  let pos = 0;
  do {
    const len = Math.min(maxPayload, data.length - pos);
    const lenBuf = new Uint8Array([len >> 8, len & 0xff]);
    const a = new Uint8Array(SEALED_LENGTH_SIZE);
    engine.seal(nonce, lenBuf, a, 0);
    incrementNonce(nonce);
    const b = new Uint8Array(len + TAG_SIZE);
    engine.seal(nonce, data.subarray(pos, pos + len), b, 0);
    incrementNonce(nonce);
    parts.push(a, b);
    pos += len;
  } while (pos < data.length);
  return Buffer.concat(parts);
}

const fragmentRoom = (n: number, max: number): number => n + Math.ceil(Math.max(1, n) / max) * (SEALED_LENGTH_SIZE + TAG_SIZE);

const SMALL_SIZES = Array.from({ length: 41 }, (_, i) => i);
const SPREAD_SIZES = [63, 64, 65, 127, 255, 256, 257, 511, 1000, 1023, 1024, 1500, 2000, 2013, MAX_TCP_PAYLOAD];
const LARGE_SIZES = [4096, 16384, 65535 - 1000, MAX_UDP_PAYLOAD];

const nativeLoad = loadNativeBackend();
const NATIVE_SKIP = nativeLoad.native ? '' : ` [SKIPPED: addon not available: ${nativeLoad.reason}]`;

const backends: { label: string; backend: AeadBackend; available: boolean }[] = [
  { label: 'node:crypto', backend: nodeCryptoBackend, available: true },
  { label: `native${NATIVE_SKIP}`, backend: nativeLoad.backend, available: nativeLoad.native },
];

for (const { label, backend, available } of backends) {
  describe(`AEAD backend ${label}`, () => {
    it.skipIf(!available)('seal equals @noble/ciphers and open round-trips, sizes 0..40, spread to 2014, up to 65473', () => {
      const r = rng(0xc0ffee);
      for (const size of [...SMALL_SIZES, ...SPREAD_SIZES, ...LARGE_SIZES]) {
        const key = bytes(r, KEY_SIZE);
        const nonce = bytes(r, NONCE_SIZE);
        const plain = bytes(r, size);
        const expected = gcm(key, nonce).encrypt(plain);
        const engine = backend.createEngine(key);
        // write at an offset inside a larger buffer, read from a subarray (non-zero byteOffset)
        const out = new Uint8Array(size + TAG_SIZE + 7).fill(0xaa);
        expect(engine.seal(nonce, plain, out, 3)).toBe(size + TAG_SIZE);
        expect(hex(out.subarray(3, 3 + size + TAG_SIZE))).toBe(hex(expected));
        expect(out[2]).toBe(0xaa);
        expect(out[3 + size + TAG_SIZE]).toBe(0xaa);
        const sealedView = out.subarray(3, 3 + size + TAG_SIZE);
        const back = new Uint8Array(size + 5);
        expect(engine.open(nonce, sealedView, back, 5)).toBe(size);
        expect(hex(back.subarray(5))).toBe(hex(plain));
      }
    });

    it.skipIf(!available)('one engine reused across many nonces stays correct (context reuse)', () => {
      const r = rng(7);
      const key = bytes(r, KEY_SIZE);
      const engine = backend.createEngine(key);
      const nonce = bytes(r, NONCE_SIZE);
      for (let i = 0; i < 50; i++) {
        const plain = bytes(r, r(300));
        const out = new Uint8Array(plain.length + TAG_SIZE);
        engine.seal(nonce, plain, out, 0);
        expect(hex(out)).toBe(hex(gcm(key, nonce).encrypt(plain)));
        // interleave an open on the same engine
        const back = new Uint8Array(plain.length);
        engine.open(nonce, out, back, 0);
        expect(hex(back)).toBe(hex(plain));
        incrementNonce(nonce);
      }
    });

    it.skipIf(!available)('tampered ciphertext, tag or nonce -> AUTH_FAILED', () => {
      const r = rng(11);
      const key = bytes(r, KEY_SIZE);
      const nonce = bytes(r, NONCE_SIZE);
      const engine = backend.createEngine(key);
      for (const size of [0, 2, 100]) {
        const plain = bytes(r, size);
        const sealed = new Uint8Array(size + TAG_SIZE);
        engine.seal(nonce, plain, sealed, 0);
        const out = new Uint8Array(size);
        for (const flip of size > 0 ? [0, size - 1, size, size + TAG_SIZE - 1] : [0, TAG_SIZE - 1]) {
          const bad = sealed.slice();
          bad[flip]! ^= 0x01;
          expectCode(() => engine.open(nonce, bad, out, 0), ErrorCodes.AUTH_FAILED);
        }
        const otherNonce = nonce.slice();
        incrementNonce(otherNonce);
        expectCode(() => engine.open(otherNonce, sealed, out, 0), ErrorCodes.AUTH_FAILED);
      }
      expectCode(() => engine.open(nonce, new Uint8Array(TAG_SIZE - 1), new Uint8Array(0), 0), ErrorCodes.AUTH_FAILED);
    });

    it.skipIf(!available)('BrookCipher with this backend interoperates with node:crypto', () => {
      const r = rng(3);
      const key = bytes(r, KEY_SIZE);
      const nonce = new Uint8Array(NONCE_SIZE).fill(0xff); // carry across all 8 counter bytes
      const a = new BrookCipher(key, nonce, { backend });
      const b = new BrookCipher(key, nonce, { backend: nodeCryptoBackend });
      for (const size of [0, 2, 2014]) {
        const p = bytes(r, size);
        expect(hex(b.open(a.seal(p)))).toBe(hex(p));
      }
      expect(hex(a.nonce)).toBe(hex(b.nonce));
    });
  });
}

describe('node:crypto backend', () => {
  it('has no batch members (the fragment codec falls back to single seals)', () => {
    const e = nodeCryptoBackend.createEngine(new Uint8Array(KEY_SIZE));
    expect(e.sealFragments).toBeUndefined();
    expect(e.openFragments).toBeUndefined();
  });
});

describe(`native batch fragments${NATIVE_SKIP}`, () => {
  const ok = nativeLoad.native;
  const backend = nativeLoad.backend;

  it.skipIf(!ok)('sealFragments equals the sequence of single seals, with LE nonce carry', () => {
    const r = rng(99);
    const nonceStarts: Uint8Array[] = [
      new Uint8Array(NONCE_SIZE).fill(0xff), // whole counter wraps to 0, bytes 8..11 untouched
      Uint8Array.from([0xff, 0xff, 0x00, 0, 0, 0, 0, 0, 1, 2, 3, 4]), // carry into byte 2
      Uint8Array.from([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 9, 9, 9, 9]), // wrap on the second seal
      bytes(r, NONCE_SIZE),
    ];
    const cases: [number, number][] = [
      [0, MAX_TCP_PAYLOAD],
      [1, MAX_TCP_PAYLOAD],
      [MAX_TCP_PAYLOAD, MAX_TCP_PAYLOAD],
      [MAX_TCP_PAYLOAD + 1, MAX_TCP_PAYLOAD],
      [3 * MAX_TCP_PAYLOAD, MAX_TCP_PAYLOAD],
      [10_000, MAX_TCP_PAYLOAD],
      [70_000, MAX_UDP_PAYLOAD],
      [37, 5],
    ];
    for (const start of nonceStarts) {
      for (const [size, max] of cases) {
        const key = bytes(r, KEY_SIZE);
        const engine = backend.createEngine(key);
        const data = bytes(r, size);
        const refNonce = start.slice();
        const expected = referenceFragments(nodeCryptoBackend.createEngine(key), refNonce, data, max);
        const nonce = start.slice();
        const room = fragmentRoom(size, max);
        const out = new Uint8Array(room + 4).fill(0x55);
        const n = engine.sealFragments!(nonce, data, max, out, 4);
        expect(n).toBe(expected.length);
        expect(n).toBe(room);
        expect(hex(out.subarray(4, 4 + n))).toBe(hex(expected));
        expect(hex(nonce)).toBe(hex(refNonce));
      }
    }
    // the fully wrapped counter: 2 seals from ff..ff land on 01 00 .. 00
    const n0 = new Uint8Array(NONCE_SIZE).fill(0xff);
    backend.createEngine(new Uint8Array(KEY_SIZE)).sealFragments!(n0, new Uint8Array(0), MAX_TCP_PAYLOAD, new Uint8Array(34), 0);
    expect(hex(n0)).toBe('0100000000000000ffffffff');
  });

  it.skipIf(!ok)('openFragments handles any split of the input', () => {
    const r = rng(1234);
    const key = bytes(r, KEY_SIZE);
    const start = Uint8Array.from([0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
    const sender = backend.createEngine(key);
    const sendNonce = start.slice();
    const chunks: Uint8Array[] = [];
    const plains: Uint8Array[] = [];
    for (const size of [0, 1, 17, 2014, 2015, 5000, 3, 0, 700]) {
      const data = bytes(r, size);
      plains.push(data);
      const out = new Uint8Array(fragmentRoom(size, MAX_TCP_PAYLOAD));
      chunks.push(out.subarray(0, sender.sealFragments!(sendNonce, data, MAX_TCP_PAYLOAD, out, 0)));
    }
    const wire = Buffer.concat(chunks);
    const plain = Buffer.concat(plains);

    for (let trial = 0; trial < 20; trial++) {
      const receiver = backend.createEngine(key);
      const nonce = start.slice();
      const out = new Uint8Array(plain.length + 3);
      let written = 0;
      let pending: Uint8Array = new Uint8Array(0);
      let fed = 0;
      let steps = 0;
      while (fed < wire.length || pending.length > 0) {
        expect(++steps).toBeLessThanOrEqual(wire.length + 1);
        const take = trial === 0 ? 1 : Math.min(wire.length - fed, 1 + r(trial < 10 ? 64 : 4096));
        // feed through a subarray of a bigger buffer: exercise non-zero byteOffset
        const buf = new Uint8Array(pending.length + take + 2);
        buf.set(pending, 1);
        buf.set(wire.subarray(fed, fed + take), 1 + pending.length);
        fed += take;
        const view = buf.subarray(1, 1 + pending.length + take);
        const res = receiver.openFragments!(nonce, view, MAX_TCP_PAYLOAD, out, 3 + written);
        written += res.written;
        pending = view.slice(res.consumed);
        if (fed >= wire.length && res.consumed === 0) break;
      }
      expect(pending.length).toBe(0);
      expect(written).toBe(plain.length);
      expect(hex(out.subarray(3))).toBe(hex(plain));
      expect(hex(nonce)).toBe(hex(sendNonce));
    }
  });

  it.skipIf(!ok)('openFragments stops before an incomplete fragment without advancing the nonce', () => {
    const key = bytes(rng(5), KEY_SIZE);
    const engine = backend.createEngine(key);
    const sn = new Uint8Array(NONCE_SIZE);
    const data = bytes(rng(6), 100);
    const wire = new Uint8Array(fragmentRoom(100, MAX_TCP_PAYLOAD));
    engine.sealFragments!(sn, data, MAX_TCP_PAYLOAD, wire, 0);
    const out = new Uint8Array(100);
    for (const cut of [0, 1, SEALED_LENGTH_SIZE - 1, SEALED_LENGTH_SIZE, SEALED_LENGTH_SIZE + 50, wire.length - 1]) {
      const nonce = new Uint8Array(NONCE_SIZE);
      expect(engine.openFragments!(nonce, wire.subarray(0, cut), MAX_TCP_PAYLOAD, out, 0)).toEqual({ consumed: 0, written: 0 });
      expect(hex(nonce)).toBe(hex(new Uint8Array(NONCE_SIZE)));
    }
    const nonce = new Uint8Array(NONCE_SIZE);
    expect(engine.openFragments!(nonce, wire, MAX_TCP_PAYLOAD, out, 0)).toEqual({ consumed: wire.length, written: 100 });
    expect(nonce[0]).toBe(2);
    expect(hex(out)).toBe(hex(data));
  });

  it.skipIf(!ok)('tampered length or payload tag -> AUTH_FAILED', () => {
    const key = bytes(rng(8), KEY_SIZE);
    const engine = backend.createEngine(key);
    const wire = new Uint8Array(fragmentRoom(50, MAX_TCP_PAYLOAD));
    engine.sealFragments!(new Uint8Array(NONCE_SIZE), bytes(rng(9), 50), MAX_TCP_PAYLOAD, wire, 0);
    for (const flip of [0, LENGTH_SIZE, SEALED_LENGTH_SIZE - 1, SEALED_LENGTH_SIZE, wire.length - 1]) {
      const bad = wire.slice();
      bad[flip]! ^= 0x80;
      expectCode(
        () => engine.openFragments!(new Uint8Array(NONCE_SIZE), bad, MAX_TCP_PAYLOAD, new Uint8Array(50), 0),
        ErrorCodes.AUTH_FAILED,
      );
    }
  });

  it.skipIf(!ok)('declared length above maxPayload -> LENGTH_OVERSIZED (even before the payload arrives)', () => {
    const key = bytes(rng(10), KEY_SIZE);
    const engine = backend.createEngine(key);
    const size = MAX_TCP_PAYLOAD + 1;
    const wire = new Uint8Array(fragmentRoom(size, size));
    engine.sealFragments!(new Uint8Array(NONCE_SIZE), bytes(rng(12), size), size, wire, 0);
    for (const cut of [SEALED_LENGTH_SIZE, wire.length]) {
      expectCode(
        () => engine.openFragments!(new Uint8Array(NONCE_SIZE), wire.subarray(0, cut), MAX_TCP_PAYLOAD, new Uint8Array(size), 0),
        ErrorCodes.LENGTH_OVERSIZED,
      );
    }
  });

  it.skipIf(!ok)('never writes past the caller buffer (NATIVE_ARGUMENT instead)', () => {
    const engine = backend.createEngine(new Uint8Array(KEY_SIZE));
    const nonce = new Uint8Array(NONCE_SIZE);
    expectCode(() => engine.seal(nonce, new Uint8Array(10), new Uint8Array(25), 0), ErrorCodes.NATIVE_ARGUMENT);
    expectCode(() => engine.seal(nonce, new Uint8Array(10), new Uint8Array(26), 1), ErrorCodes.NATIVE_ARGUMENT);
    expectCode(() => engine.sealFragments!(nonce, new Uint8Array(100), 50, new Uint8Array(100 + 67), 0), ErrorCodes.NATIVE_ARGUMENT);
    const wire = new Uint8Array(fragmentRoom(10, 50));
    engine.sealFragments!(new Uint8Array(NONCE_SIZE), new Uint8Array(10), 50, wire, 0);
    expectCode(() => engine.openFragments!(new Uint8Array(NONCE_SIZE), wire, 50, new Uint8Array(9), 0), ErrorCodes.NATIVE_ARGUMENT);
    expect(hex(nonce)).toBe(hex(new Uint8Array(NONCE_SIZE)));
  });
});

describe('backend selection and fallback', () => {
  const saved = getDefaultBackend();
  const dir = mkdtempSync(join(tmpdir(), 'brook-native-'));
  const garbage = join(dir, NATIVE_ADDON_FILE);
  writeFileSync(garbage, 'not an ELF file');

  afterEach(() => setDefaultBackend(saved));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('a missing .node falls back to node:crypto and says why', () => {
    const missing = join(dir, 'nope', NATIVE_ADDON_FILE);
    const r = loadNativeBackend({ path: missing });
    expect(r.native).toBe(false);
    expect(r.backend).toBe(nodeCryptoBackend);
    expect(r.reason).toContain(missing);
  });

  it('a corrupt .node falls back to node:crypto and says why', () => {
    const r = loadNativeBackend({ path: garbage });
    expect(r.native).toBe(false);
    expect(r.backend).toBe(nodeCryptoBackend);
    expect(r.reason).toMatch(/cannot load/);
  });

  it("'auto' with an unusable addon yields node:crypto and installs it as default", () => {
    setDefaultBackend({ name: 'placeholder', createEngine: () => nodeCryptoBackend.createEngine(new Uint8Array(KEY_SIZE)) });
    const b = selectBackend('auto', { native: { path: garbage } });
    expect(b).toBe(nodeCryptoBackend);
    expect(backendName()).toBe('node:crypto');
    expect(getDefaultBackend()).toBe(nodeCryptoBackend);
  });

  it("'native' with an unusable addon throws CONFIG with the reason", () => {
    let err: unknown;
    try {
      selectBackend('native', { native: { path: garbage } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(BrookError);
    expect((err as BrookError).code).toBe(ErrorCodes.CONFIG);
    expect((err as Error).message).toMatch(/native.*unavailable.*cannot load/);
    expect(getDefaultBackend()).toBe(saved);
  });

  it("'node' is always node:crypto; setDefault:false leaves the default alone", () => {
    expect(selectBackend('node', { setDefault: false })).toBe(nodeCryptoBackend);
    expect(getDefaultBackend()).toBe(saved);
  });

  it('parseBackendPreference accepts auto|native|node only', () => {
    expect(parseBackendPreference('native')).toBe('native');
    expectCode(() => parseBackendPreference('openssl'), ErrorCodes.CONFIG);
  });

  it.skipIf(!nativeLoad.native)(`'auto' and 'native' pick the built addon${NATIVE_SKIP}`, () => {
    expect(selectBackend('auto').name).toBe('native');
    expect(backendName()).toBe('native');
    expect(selectBackend('native', { setDefault: false }).name).toBe('native');
  });
});
