/**
 * The key lookup (src/users/lookup-js.ts, native/src/users_lookup.c through src/users/native.ts,
 * keytable.ts, lookup.ts; protocol/users.md#key-lookup): on real Brook streams (our client codec's and
 * upstream's captures) the native findKey, its portable GHASH and the node:crypto one find the same user
 * and the key the stream's own cipher uses; garbage, one flipped bit and bad arguments find no one or
 * throw the same way in both; withoutBrookProtocol is one hash lookup; warm, cold and budgeted lookups.
 */
import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { makeAddress, parseHostPort } from '../src/protocol/address.js';
import { DEFAULT_HKDF_INFO, deriveKey } from '../src/protocol/cipher.js';
import { createClientCodec, createServerCodec } from '../src/protocol/session.js';
import { KEY_SIZE, NONCE_SIZE, SEALED_LENGTH_SIZE, WOB_PASSWORD_SIZE } from '../src/protocol/sizes.js';
import { TrialBudget } from '../src/users/budget.js';
import { KeyTable } from '../src/users/keytable.js';
import { type FindKeyFn, findKeyJs, LOOKUP_NONE } from '../src/users/lookup-js.js';
import { UserLookup } from '../src/users/lookup.js';
import { forcePortableGhash, nativeFindKey } from '../src/users/native.js';
import { passwordHash } from '../src/users/userset.js';
import { loadVector } from './helpers/vectors.js';

const native = nativeFindKey();
/** The addon is built by prep and CI (make native); its absence must not pass silently. */
const nativeExpected = process.env['BROOK_TS_SKIP_NATIVE'] !== '1';

afterEach(() => {
  forcePortableGhash(false);
});

function pack(passwords: readonly (string | Uint8Array)[]): { buf: Buffer; offsets: Uint32Array } {
  const bufs = passwords.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p)));
  const offsets = new Uint32Array(bufs.length + 1);
  bufs.forEach((b, i) => (offsets[i + 1] = offsets[i]! + b.length));
  return { buf: Buffer.concat(bufs), offsets };
}

const iota = (n: number): Uint32Array => Uint32Array.from({ length: n }, (_, i) => i);
const reversed = (n: number): Uint32Array => Uint32Array.from({ length: n }, (_, i) => n - 1 - i);

/** A client's first 30 bytes for `password` (our client codec), the rest of its hello too. */
function hello(password: string | Uint8Array, info?: Uint8Array, network: 'tcp' | 'udp' = 'tcp'): { nonce: Buffer; sealed: Buffer; all: Buffer } {
  const all = createClientCodec({ password, network, destination: makeAddress('10.1.2.3', 443), ...(info ? { clientHKDFInfo: info } : {}) }).hello();
  return { nonce: all.subarray(0, NONCE_SIZE), sealed: all.subarray(NONCE_SIZE, NONCE_SIZE + SEALED_LENGTH_SIZE), all };
}

type Impl = [string, () => FindKeyFn];
const impls: Impl[] = [
  ['node:crypto', () => findKeyJs],
  [
    'native (PCLMULQDQ where present)',
    () => {
      forcePortableGhash(false);
      return native!;
    },
  ],
  [
    'native (portable GHASH)',
    () => {
      forcePortableGhash(true);
      return native!;
    },
  ],
];

describe('native lookup availability', () => {
  it('the native findKey loads and passed its self-test', () => {
    if (nativeExpected) expect(native).not.toBeNull();
  });
});

describe.each(impls)('findKey: %s', (name, get) => {
  const run = name === 'node:crypto' || native !== null;

  it.runIf(run)('finds each user of 40 on our client codec\'s stream, with the key the stream uses', () => {
    const find = get();
    const passwords = Array.from({ length: 40 }, (_, i) => `user-${i}-${'x'.repeat(i * 3)}`);
    const { buf, offsets } = pack(passwords);
    for (const target of [0, 1, 17, 39]) {
      const h = hello(passwords[target]!);
      const key = new Uint8Array(KEY_SIZE);
      expect(find(h.nonce, h.sealed, buf, offsets, DEFAULT_HKDF_INFO, iota(40), key)).toBe(target);
      expect(Buffer.from(key)).toEqual(deriveKey(Buffer.from(passwords[target]!), h.nonce));
      expect(find(h.nonce, h.sealed, buf, offsets, DEFAULT_HKDF_INFO, reversed(40))).toBe(target);
      // the found password opens the whole hello as a server would
      const server = createServerCodec({ password: passwords[target]! });
      expect(server.push(h.all, () => {})).toMatchObject({ network: 'tcp', destination: makeAddress('10.1.2.3', 443) });
    }
  });

  it.runIf(run)('passwords and infos across SHA-256 block edges, empty ones too; UDP streams', () => {
    const find = get();
    const lengths = [0, 1, 31, 32, 54, 55, 56, 63, 64, 65, 118, 119, 120, 128, 200, 1000];
    const passwords = lengths.map((n, i) => Buffer.alloc(n, 0x41 + i));
    const { buf, offsets } = pack(passwords);
    for (const info of [DEFAULT_HKDF_INFO, Buffer.alloc(0), Buffer.alloc(54, 1), Buffer.alloc(55, 2), Buffer.alloc(64, 3), Buffer.alloc(200, 4)]) {
      lengths.forEach((_, target) => {
        const h = hello(passwords[target]!, info, target % 2 ? 'udp' : 'tcp');
        const key = new Uint8Array(KEY_SIZE);
        expect(find(h.nonce, h.sealed, buf, offsets, info, iota(lengths.length), key)).toBe(target);
        expect(Buffer.from(key)).toEqual(deriveKey(passwords[target]!, h.nonce, info));
      });
    }
  });

  it.runIf(run)('upstream Brook\'s captured streams (TCP and UDP): the capture\'s password among others', () => {
    const find = get();
    for (const vector of ['tcp', 'udp'] as const) {
      const v = loadVector(vector);
      const c2s = Buffer.from(v.after_upgrade_client_to_server_hex, 'hex');
      const passwords = ['a', 'b', v.password, 'hello2', 'Hello'];
      const { buf, offsets } = pack(passwords);
      const key = new Uint8Array(KEY_SIZE);
      expect(find(c2s.subarray(0, NONCE_SIZE), c2s.subarray(NONCE_SIZE, NONCE_SIZE + SEALED_LENGTH_SIZE), buf, offsets, DEFAULT_HKDF_INFO, iota(5), key)).toBe(2);
      expect(Buffer.from(key).toString('hex')).toBe(v.decoded['client_key_hex']);
    }
  });

  it.runIf(run)('no one for garbage, for any single flipped bit, for a user left out of the order', () => {
    const find = get();
    const passwords = Array.from({ length: 20 }, (_, i) => `pw${i}`);
    const { buf, offsets } = pack(passwords);
    for (let i = 0; i < 50; i++) {
      expect(find(randomBytes(NONCE_SIZE), randomBytes(SEALED_LENGTH_SIZE), buf, offsets, DEFAULT_HKDF_INFO, iota(20))).toBe(LOOKUP_NONE);
    }
    const h = hello('pw7');
    for (let bit = 0; bit < (NONCE_SIZE + SEALED_LENGTH_SIZE) * 8; bit++) {
      const n = Buffer.from(h.nonce);
      const s = Buffer.from(h.sealed);
      if (bit < NONCE_SIZE * 8) n[bit >> 3]! ^= 1 << (bit & 7);
      else s[(bit >> 3) - NONCE_SIZE]! ^= 1 << (bit & 7);
      expect(find(n, s, buf, offsets, DEFAULT_HKDF_INFO, iota(20))).toBe(LOOKUP_NONE);
    }
    expect(find(h.nonce, h.sealed, buf, offsets, DEFAULT_HKDF_INFO, Uint32Array.from([0, 1, 2, 8, 9]))).toBe(LOOKUP_NONE);
    expect(find(h.nonce, h.sealed, buf, offsets, DEFAULT_HKDF_INFO, new Uint32Array(0))).toBe(LOOKUP_NONE);
    expect(find(h.nonce, h.sealed, buf, offsets, DEFAULT_HKDF_INFO, Uint32Array.from([7, 7]))).toBe(7);
    expect(find(h.nonce, h.sealed, buf, offsets, Buffer.from('other info'), iota(20))).toBe(LOOKUP_NONE);
  });

  it.runIf(run)('bad arguments throw BROOK_ERR_NATIVE_ARGUMENT', () => {
    const find = get();
    const { buf, offsets } = pack(['a', 'b']);
    const h = hello('a');
    const info = DEFAULT_HKDF_INFO;
    expect(() => find(h.nonce.subarray(1), h.sealed, buf, offsets, info, iota(2))).toThrow(expect.objectContaining({ code: ErrorCodes.NATIVE_ARGUMENT }));
    expect(() => find(h.nonce, h.sealed.subarray(1), buf, offsets, info, iota(2))).toThrow(expect.objectContaining({ code: ErrorCodes.NATIVE_ARGUMENT }));
    // offsets are checked for the users tried: running backwards, or past the passwords
    expect(() => find(h.nonce, h.sealed, buf, Uint32Array.from([0, 2, 1]), info, Uint32Array.from([1]))).toThrow(expect.objectContaining({ code: ErrorCodes.NATIVE_ARGUMENT }));
    expect(() => find(h.nonce, h.sealed, buf, Uint32Array.from([0, 1, 9]), info, Uint32Array.from([1]))).toThrow(expect.objectContaining({ code: ErrorCodes.NATIVE_ARGUMENT }));
    expect(find(h.nonce, h.sealed, buf, Uint32Array.from([0, 1, 9]), info, Uint32Array.from([0]))).toBe(0);
    expect(() => find(h.nonce, h.sealed, buf, new Uint32Array(0), info, new Uint32Array(0))).toThrow(expect.objectContaining({ code: ErrorCodes.NATIVE_ARGUMENT }));
    expect(() => find(h.nonce, h.sealed, buf, offsets, info, Uint32Array.from([2]))).toThrow(expect.objectContaining({ code: ErrorCodes.NATIVE_ARGUMENT }));
    expect(() => find(h.nonce, h.sealed, buf, offsets, info, iota(2), new Uint8Array(16))).toThrow(expect.objectContaining({ code: ErrorCodes.NATIVE_ARGUMENT }));
  });
});

describe.runIf(native !== null)('native and node:crypto agree', () => {
  it('on 300 random cases (random passwords, infos, orders, right key present or not), both GHASH paths', () => {
    let seed = 12345;
    const rand = (n: number): number => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    for (const portable of [false, true]) {
      forcePortableGhash(portable);
      for (let c = 0; c < 150; c++) {
        const passwords = Array.from({ length: 1 + rand(12) }, () => randomBytes(rand(90)));
        const { buf, offsets } = pack(passwords);
        const info = randomBytes(rand(70));
        const target = rand(passwords.length + 1); // == length: a stranger
        const h = hello(target < passwords.length ? passwords[target]! : randomBytes(8), info);
        const order = Uint32Array.from({ length: rand(passwords.length + 1) }, () => rand(passwords.length));
        const a = new Uint8Array(KEY_SIZE);
        const b = new Uint8Array(KEY_SIZE);
        expect(native!(h.nonce, h.sealed, buf, offsets, info, order, a)).toBe(findKeyJs(h.nonce, h.sealed, buf, offsets, info, order, b));
        expect(a).toEqual(b);
      }
    }
    forcePortableGhash(false);
  });
});

describe('KeyTable', () => {
  const users = ['alice-pw', 'bob-pw', 'carol-pw'].map((password) => ({ password, passwordHash: passwordHash(password) }));

  it('withoutBrookProtocol: SHA-256 of the password finds the user; others, short or long hashes find no one', () => {
    const t = new KeyTable(users);
    expect(t.findWob(passwordHash('bob-pw'))).toBe(1);
    expect(t.findWob(passwordHash('nobody'))).toBe(LOOKUP_NONE);
    expect(t.findWob(passwordHash('bob-pw').subarray(1))).toBe(LOOKUP_NONE);
    expect(t.findWob(Buffer.alloc(WOB_PASSWORD_SIZE + 1))).toBe(LOOKUP_NONE);
    // a view into a larger buffer (the first 32 bytes of a chunk)
    const chunk = Buffer.concat([passwordHash('carol-pw'), Buffer.from('rest of the stream')]);
    expect(t.findWob(chunk.subarray(0, WOB_PASSWORD_SIZE))).toBe(2);
  });

  it('withoutBrookProtocol: upstream\'s captured preamble', () => {
    const v = loadVector('tcp-wob');
    const c2s = Buffer.from(v.after_upgrade_client_to_server_hex, 'hex');
    const t = new KeyTable([...users, { password: v.password, passwordHash: passwordHash(v.password) }]);
    expect(t.findWob(c2s.subarray(0, WOB_PASSWORD_SIZE))).toBe(3);
  });

  it('uses the native lookup when it loads; the server\'s clientHKDFInfo', () => {
    expect(new KeyTable(users).backend).toBe(native ? 'native' : 'node:crypto');
    const info = Buffer.from('c-info');
    const t = new KeyTable(users, { info });
    const h = hello('carol-pw', info);
    expect(t.findBrook(h.nonce, h.sealed, iota(3))).toBe(2);
    expect(new KeyTable(users).findBrook(h.nonce, h.sealed, iota(3))).toBe(LOOKUP_NONE);
  });
});

describe('UserLookup', () => {
  const make = (n: number) => Array.from({ length: n }, (_, i) => ({ password: `u${i}`, passwordHash: passwordHash(`u${i}`) }));

  it('cold: every key; warm from the same address: one try, from another address: among the most recent', () => {
    const l = new UserLookup(make(50), { budget: null });
    let h = hello('u42');
    expect(l.brook('192.0.2.1', h.nonce, h.sealed)).toEqual({ index: 42, tries: 43, limited: false });
    h = hello('u42');
    expect(l.brook('192.0.2.1', h.nonce, h.sealed)).toEqual({ index: 42, tries: 1, limited: false });
    h = hello('u42');
    expect(l.brook('198.51.100.7', h.nonce, h.sealed)).toEqual({ index: 42, tries: 1, limited: false });
    h = hello('u3');
    expect(l.brook('192.0.2.1', h.nonce, h.sealed)).toEqual({ index: 3, tries: 5, limited: false }); // 42, then 0, 1, 2, 3
    h = hello('u42');
    expect(l.brook('192.0.2.1', h.nonce, h.sealed)).toEqual({ index: 42, tries: 2, limited: false }); // 3 first now
  });

  it('garbage tries every key, then no one', () => {
    const l = new UserLookup(make(30), { budget: null });
    expect(l.brook('192.0.2.1', randomBytes(NONCE_SIZE), randomBytes(SEALED_LENGTH_SIZE))).toEqual({ index: -1, tries: 30, limited: false });
  });

  it('the budget stops cold scans of a source that spent it, not its warm tries nor other sources', () => {
    let now = 0;
    const budget = new TrialBudget({ perSource: 100, perSourceBurst: 100, global: 1e6, globalBurst: 1e6, now: () => now });
    const l = new UserLookup(make(60), { budget, warmTries: 4 });
    const garbage = () => [randomBytes(NONCE_SIZE), randomBytes(SEALED_LENGTH_SIZE)] as const;
    expect(l.brook('203.0.113.9', ...garbage())).toEqual({ index: -1, tries: 60, limited: false }); // 100 -> 44
    expect(l.brook('203.0.113.9', ...garbage())).toEqual({ index: -1, tries: 60, limited: false }); // 44 -> -12
    expect(l.brook('203.0.113.9', ...garbage())).toEqual({ index: -1, tries: 4, limited: true });
    const h = hello('u59');
    expect(l.brook('203.0.113.9', h.nonce, h.sealed)).toMatchObject({ index: -1, limited: true });
    expect(l.brook('203.0.113.10', h.nonce, h.sealed)).toEqual({ index: 59, tries: 60, limited: false });
    const w = hello('u59');
    expect(l.brook('203.0.113.9', w.nonce, w.sealed)).toEqual({ index: 59, tries: 1, limited: false }); // warm: the most recent user
    now += 1000; // +100 trials: back above zero
    expect(l.brook('203.0.113.9', ...garbage()).limited).toBe(false);
  });

  it('keyOut gets the key; wob marks the user as used', () => {
    const l = new UserLookup(make(10), { budget: null });
    const key = new Uint8Array(KEY_SIZE);
    const h = hello('u6');
    expect(l.brook('192.0.2.1', h.nonce, h.sealed, key).index).toBe(6);
    expect(Buffer.from(key)).toEqual(deriveKey(Buffer.from('u6'), h.nonce));
    expect(l.wob('192.0.2.2', passwordHash('u8'))).toBe(8);
    expect(l.tryOrder.globalOrder().slice(0, 2)).toEqual([8, 6]);
    expect(l.wob('192.0.2.2', passwordHash('nobody'))).toBe(-1);
  });

  it('an empty set finds no one', () => {
    const l = new UserLookup([], { budget: null });
    expect(l.brook('192.0.2.1', randomBytes(NONCE_SIZE), randomBytes(SEALED_LENGTH_SIZE))).toEqual({ index: -1, tries: 0, limited: false });
  });

  it('parseHostPort-style IPv6 sources work as addresses', () => {
    const l = new UserLookup(make(3), { budget: new TrialBudget() });
    const h = hello('u2');
    expect(l.brook(parseHostPort('[2001:db8::1]:1').host, h.nonce, h.sealed).index).toBe(2);
  });
});
