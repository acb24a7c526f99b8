/**
 * The allocation-free paths added for performance give the same bytes as the
 * plain ones: FragmentEncoder.encodeInto vs encode, codec sealInto vs seal
 * (both backends), and sealInto refuses what it cannot do (UDP, small buffers).
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadNativeBackend } from '../src/crypto/native.js';
import { type AeadBackend, BrookCipher, nodeCryptoBackend } from '../src/protocol/cipher.js';
import { encodedSize, FragmentDecoder, FragmentEncoder, releaseOpened } from '../src/protocol/fragment.js';
import { createClientCodec, createServerCodec } from '../src/protocol/session.js';
import { MAX_TCP_PAYLOAD } from '../src/protocol/sizes.js';

const PASSWORD = Buffer.from('perf-paths');
const NONCE = Buffer.alloc(12, 7);
const native = loadNativeBackend();
const backends: [string, AeadBackend][] = [['node:crypto', nodeCryptoBackend]];
if (native.native) backends.push(['native', native.backend]);
const SIZES = [1, MAX_TCP_PAYLOAD - 1, MAX_TCP_PAYLOAD, MAX_TCP_PAYLOAD + 1, 3 * MAX_TCP_PAYLOAD + 17, 65536];
const dst = { type: 'ipv4' as const, host: '127.0.0.1', port: 80 };

describe.each(backends)('encodeInto / sealInto (%s)', (_name, backend) => {
  it('encodeInto writes exactly what encode returns, and it decodes back', () => {
    const a = new FragmentEncoder(BrookCipher.fromPassword(PASSWORD, NONCE, undefined, { backend }), MAX_TCP_PAYLOAD);
    const b = new FragmentEncoder(BrookCipher.fromPassword(PASSWORD, NONCE, undefined, { backend }), MAX_TCP_PAYLOAD);
    const dec = new FragmentDecoder(BrookCipher.fromPassword(PASSWORD, NONCE, undefined, { backend }), { maxPayload: MAX_TCP_PAYLOAD, coalesce: true });
    const out = Buffer.alloc(encodedSize(65536, MAX_TCP_PAYLOAD) + 100, 0xee);
    for (const n of SIZES) {
      const data = randomBytes(n);
      const want = a.encode(data);
      const w = b.encodeInto(data, out);
      expect(w).toBe(want.length);
      expect(out.subarray(0, w).equals(want)).toBe(true);
      const got: Buffer[] = [];
        dec.push(Buffer.from(out.subarray(0, w)), (p) => got.push(Buffer.from(p)));
      expect(Buffer.concat(got).equals(data)).toBe(true);
    }
  });

  it('encodeInto refuses a buffer that is too small', () => {
    const e = new FragmentEncoder(BrookCipher.fromPassword(PASSWORD, NONCE, undefined, { backend }), MAX_TCP_PAYLOAD);
    expect(() => e.encodeInto(randomBytes(5000), Buffer.alloc(100))).toThrow(RangeError);
  });

  it('client and server sealInto match seal for TCP; -1 for UDP and small buffers', () => {
    const now = () => 1_700_000_000_000;
    const mk = () => createClientCodec({ password: PASSWORD, network: 'tcp', destination: dst, backend, now, random: (n) => Buffer.alloc(n, 3) });
    const c1 = mk();
    const c2 = mk();
    const hello = c1.hello();
    expect(c2.hello().equals(hello)).toBe(true);
    const data = randomBytes(40_000);
    const out = Buffer.alloc(encodedSize(data.length, MAX_TCP_PAYLOAD));
    const n = c2.sealInto!(data, out);
    expect(out.subarray(0, n).equals(c1.seal(data))).toBe(true);
    expect(c2.sealInto!(data, Buffer.alloc(10))).toBe(-1);

    const s = createServerCodec({ password: PASSWORD, backend, now });
    expect(s.sealInto!(data, out)).toBe(-1); // before the header
    expect(s.push(hello, () => {})).not.toBeNull();
    s.accept();
    const sn = s.sealInto!(data, out);
    expect(sn).toBeGreaterThan(data.length);

    const u = createClientCodec({ password: PASSWORD, network: 'udp', destination: dst, backend, now });
    u.hello();
    expect(u.sealInto!(randomBytes(100), Buffer.alloc(1000))).toBe(-1);
  });
});

describe('batch-open buffer reuse', () => {
  it('a released payload buffer is reused by the next batch; others are never taken in', () => {
    if (!native.native) return; // only the native engine has the batch open
    const enc = new FragmentEncoder(BrookCipher.fromPassword(PASSWORD, NONCE, undefined, { backend: native.backend }), MAX_TCP_PAYLOAD);
    const dec = new FragmentDecoder(BrookCipher.fromPassword(PASSWORD, NONCE, undefined, { backend: native.backend }), { maxPayload: MAX_TCP_PAYLOAD, coalesce: true });
    const a = randomBytes(20_000);
    const b = randomBytes(30_000);
    const got: Buffer[] = [];
    dec.push(enc.encode(a), (p) => got.push(p));
    expect(got).toHaveLength(1);
    expect(got[0]!.equals(a)).toBe(true);
    const first = got[0]!;
    releaseOpened(Buffer.from('not from the pool')); // no-op
    releaseOpened(first);
    dec.push(enc.encode(b), (p) => got.push(p));
    expect(got[1]!.equals(b)).toBe(true);
    expect(got[1]!.buffer).toBe(first.buffer);
  });
});
