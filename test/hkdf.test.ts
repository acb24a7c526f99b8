/**
 * deriveKey (src/protocol/cipher.ts) is HKDF-SHA256 written as its two HMAC steps
 * (RFC 5869 extract + one expand block). It must give exactly what node's hkdfSync
 * and the independent @noble/hashes HKDF give, for every password length, the
 * default info "brook" and custom --clientHKDFInfo / --serverHKDFInfo infos.
 */
import { hkdfSync } from 'node:crypto';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';
import { describe, expect, it } from 'vitest';
import { DEFAULT_HKDF_INFO, deriveKey } from '../src/protocol/cipher.js';
import { ErrorCodes } from '../src/errors.js';
import { KEY_SIZE, NONCE_SIZE } from '../src/protocol/sizes.js';

/** Deterministic bytes (a seeded LCG), so a failure names its case. */
function bytes(n: number, seed: number): Buffer {
  const out = Buffer.alloc(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s >>> 24;
  }
  return out;
}

const PASSWORDS: [string, Buffer][] = [
  ['empty', Buffer.alloc(0)],
  ['x', Buffer.from('x')],
  ['utf-8', Buffer.from('пароль 密码 🔑', 'utf8')],
  // around HMAC's 64-byte block: the password is HMAC's message here, the nonce its key
  ...[63, 64, 65, 200].map((n): [string, Buffer] => [`${n} bytes`, bytes(n, n)]),
];

const INFOS: [string, Uint8Array][] = [
  ['default "brook"', DEFAULT_HKDF_INFO],
  ['c-info (as --clientHKDFInfo)', Buffer.from('c-info')],
  ['s-info (as --serverHKDFInfo)', Buffer.from('s-info')],
  ['empty', Buffer.alloc(0)],
  ['100 bytes', bytes(100, 7)],
];

const NONCES = [Buffer.alloc(NONCE_SIZE), Buffer.alloc(NONCE_SIZE, 0xff), ...Array.from({ length: 6 }, (_, i) => bytes(NONCE_SIZE, 100 + i))];

describe('deriveKey = HKDF-SHA256', () => {
  it.each(PASSWORDS)('password %s: equals hkdfSync and @noble/hashes for every info and nonce', (_name, password) => {
    for (const [, info] of INFOS) {
      for (const nonce of NONCES) {
        const ours = deriveKey(password, nonce, info);
        expect(ours).toHaveLength(KEY_SIZE);
        const node = Buffer.from(hkdfSync('sha256', password, nonce, info, KEY_SIZE));
        const noble = Buffer.from(hkdf(sha256, password, nonce, info, KEY_SIZE));
        expect(ours.toString('hex')).toBe(node.toString('hex'));
        expect(ours.toString('hex')).toBe(noble.toString('hex'));
      }
    }
  });

  it('info defaults to "brook"', () => {
    const n = NONCES[2]!;
    expect(deriveKey(Buffer.from('x'), n)).toEqual(deriveKey(Buffer.from('x'), n, Buffer.from('brook')));
  });

  it('a nonce of the wrong size is NONCE_SIZE', () => {
    for (const n of [0, 11, 13]) {
      expect(() => deriveKey(Buffer.from('x'), Buffer.alloc(n))).toThrow(expect.objectContaining({ code: ErrorCodes.NONCE_SIZE }));
    }
  });
});
