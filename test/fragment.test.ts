/**
 * Fragment encoder/decoder (protocol/brook-stream.md#fragments): the 2014-byte
 * split, a hex vector for a fixed key and nonce, byte-at-a-time decoding, the
 * coalescing mode (with a batch engine), and refusal after a failure.
 */
import { describe, expect, it } from 'vitest';
import { BrookError, ErrorCodes } from '../src/errors.js';
import { type AeadBackend, BrookCipher, deriveKey, incrementNonce, nodeCryptoBackend } from '../src/protocol/cipher.js';
import { encodedSize, FragmentDecoder, FragmentEncoder } from '../src/protocol/fragment.js';
import { FRAGMENT_OVERHEAD, LENGTH_SIZE, MAX_TCP_FRAGMENT, MAX_TCP_PAYLOAD, SEALED_LENGTH_SIZE, TAG_SIZE } from '../src/protocol/sizes.js';

const PASSWORD = Buffer.from('hello');
const NONCE = Buffer.from('000102030405060708090a0b', 'hex');

const cipher = (backend?: AeadBackend) => BrookCipher.fromPassword(PASSWORD, NONCE, undefined, { backend });
const encoder = (max = MAX_TCP_PAYLOAD) => new FragmentEncoder(cipher(), max);

/** Payload sizes of the fragments in `wire`, read by opening only the sealed lengths. */
function fragmentSizes(wire: Buffer): number[] {
  const c = cipher();
  const out: number[] = [];
  for (let o = 0; o < wire.length; ) {
    const n = c.open(wire.subarray(o, o + SEALED_LENGTH_SIZE)).readUInt16BE(0);
    incrementNonce(c.nonce); // skip the payload seal
    out.push(n);
    o += SEALED_LENGTH_SIZE + n + TAG_SIZE;
  }
  return out;
}

function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

describe('encoder', () => {
  it('2014 bytes make one fragment of exactly 2048 bytes; 2015 make two', () => {
    const one = encoder().encode(pattern(MAX_TCP_PAYLOAD));
    expect(one.length).toBe(MAX_TCP_FRAGMENT);
    expect(fragmentSizes(one)).toEqual([MAX_TCP_PAYLOAD]);
    const two = encoder().encode(pattern(MAX_TCP_PAYLOAD + 1));
    expect(two.length).toBe(MAX_TCP_FRAGMENT + 1 + FRAGMENT_OVERHEAD);
    expect(fragmentSizes(two)).toEqual([MAX_TCP_PAYLOAD, 1]);
    expect(fragmentSizes(encoder().encode(pattern(3 * MAX_TCP_PAYLOAD)))).toEqual([MAX_TCP_PAYLOAD, MAX_TCP_PAYLOAD, MAX_TCP_PAYLOAD]);
  });

  it('encodedSize matches the output; empty stream data gives no fragment, encodeOne of nothing one empty fragment', () => {
    for (const n of [1, 2013, 2014, 2015, 4028, 4029, 10_000]) {
      expect(encoder().encode(pattern(n)).length).toBe(encodedSize(n, MAX_TCP_PAYLOAD));
    }
    expect(encoder().encode(Buffer.alloc(0)).length).toBe(0);
    const empty = encoder().encodeOne(Buffer.alloc(0));
    expect(empty.length).toBe(FRAGMENT_OVERHEAD);
    expect(fragmentSizes(empty)).toEqual([0]);
  });

  it('hex vector: password "hello", nonce 000102..0b, payload "hi", then an empty fragment', () => {
    // key cross-checked with `openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt key:hello
    //   -kdfopt hexsalt:000102030405060708090a0b -kdfopt info:brook HKDF`; fragments with @noble/ciphers.
    expect(deriveKey(PASSWORD, NONCE).toString('hex')).toBe('75652f4ea2aa5fd096c94350f7a3dcbe7e89fe286bb6f87cfc50a8f4c7bb5900');
    const enc = encoder();
    const hi = enc.encodeOne(Buffer.from('hi'));
    expect(hi.toString('hex')).toBe(
      '0dab01dfcdda9d2275c0a7d625f9f8f4cfec' + // seal(00 02): 2 bytes + tag
        '29b9459a8b7fbe3383e1958ad82868915f28', // seal("hi"): 2 bytes + tag
    );
    expect(enc.encodeOne(Buffer.alloc(0)).toString('hex')).toBe('a3448ff9749662e6061e55ac8e418d54f927' + '12807a4d6cb1ab6f80f036f41f6c500f');
    // the same bytes from the stream path
    expect(encoder().encode(Buffer.from('hi'))).toEqual(hi);
  });

  it('advances the nonce twice per fragment, little-endian', () => {
    const c = cipher();
    const enc = new FragmentEncoder(c, MAX_TCP_PAYLOAD);
    enc.encodeOne(Buffer.from('a'));
    expect(c.nonce.toString('hex')).toBe('020102030405060708090a0b');
    enc.encode(pattern(MAX_TCP_PAYLOAD * 2 + 1)); // three fragments
    expect(c.nonce.toString('hex')).toBe('080102030405060708090a0b');
  });
});

describe('decoder', () => {
  const SIZES = [0, 1, 100, 0, MAX_TCP_PAYLOAD, 17];
  const wireOf = (sizes: number[]) => {
    const enc = encoder(Math.max(MAX_TCP_PAYLOAD, ...sizes));
    return Buffer.concat(sizes.map((n, i) => enc.encodeOne(pattern(n, i))));
  };

  it('fed one byte at a time: one emit per fragment, exactly at its last byte', () => {
    const wire = wireOf(SIZES);
    const d = new FragmentDecoder(cipher(), { maxPayload: MAX_TCP_PAYLOAD });
    const got: { at: number; p: Buffer }[] = [];
    for (let i = 0; i < wire.length; i++) {
      d.push(wire.subarray(i, i + 1), (p) => got.push({ at: i, p: Buffer.from(p) }));
      expect(d.pendingBytes).toBeLessThanOrEqual(MAX_TCP_PAYLOAD + TAG_SIZE);
    }
    d.end();
    expect(d.atBoundary).toBe(true);
    expect(got.map((g) => g.p)).toEqual(SIZES.map((n, i) => pattern(n, i)));
    let end = -1;
    SIZES.forEach((n, i) => {
      end += n + FRAGMENT_OVERHEAD;
      expect(got[i]!.at).toBe(end);
    });
  });

  it('pendingBytes counts the partial sealed length, then the partial payload', () => {
    const wire = wireOf([10]);
    const d = new FragmentDecoder(cipher(), { maxPayload: MAX_TCP_PAYLOAD });
    d.push(wire.subarray(0, 5), () => {});
    expect(d.pendingBytes).toBe(5);
    d.push(wire.subarray(5, SEALED_LENGTH_SIZE + 3), () => {});
    expect(d.pendingBytes).toBe(3);
    expect(d.atBoundary).toBe(false);
  });

  it('maxPayload may be raised between fragments (first fragment limit, then the stream limit)', () => {
    const wire = wireOf([10, 3000]);
    const d = new FragmentDecoder(cipher(), { maxPayload: 10 });
    const got: number[] = [];
    d.push(wire, (p) => {
      got.push(p.length);
      d.maxPayload = 4000;
    });
    expect(got).toEqual([10, 3000]);
  });

  /** A backend whose engine has the optional batch open, built on node:crypto single opens. */
  const batchBackend: AeadBackend = {
    name: 'test-batch',
    createEngine(key) {
      const e = nodeCryptoBackend.createEngine(key);
      let batchCalls = 0;
      return {
        seal: e.seal,
        open: e.open,
        get batchCalls() {
          return batchCalls;
        },
        openFragments(nonce, input, maxPayload, out, offset) {
          batchCalls++;
          let consumed = 0;
          let written = 0;
          const len = Buffer.allocUnsafe(LENGTH_SIZE);
          while (input.length - consumed >= SEALED_LENGTH_SIZE) {
            const probe = Buffer.from(nonce);
            e.open(probe, input.subarray(consumed, consumed + SEALED_LENGTH_SIZE), len, 0);
            const n = len.readUInt16BE(0);
            if (n > maxPayload) throw new BrookError(ErrorCodes.LENGTH_OVERSIZED, 'too long');
            if (input.length - consumed < SEALED_LENGTH_SIZE + n + TAG_SIZE) break;
            incrementNonce(nonce);
            consumed += SEALED_LENGTH_SIZE;
            written += e.open(nonce, input.subarray(consumed, consumed + n + TAG_SIZE), out, offset + written);
            incrementNonce(nonce);
            consumed += n + TAG_SIZE;
          }
          return { consumed, written };
        },
      };
    },
  };

  it('coalesce mode with a batch engine: whole fragments of one chunk come out as one payload, the tail later', () => {
    const wire = wireOf(SIZES);
    const c = cipher(batchBackend);
    const d = new FragmentDecoder(c, { maxPayload: MAX_TCP_PAYLOAD, coalesce: true });
    const got: Buffer[] = [];
    const cut = wire.length - 5; // the last fragment arrives in two pieces
    d.push(wire.subarray(0, cut), (p) => got.push(Buffer.from(p)));
    expect(got.length).toBe(1);
    expect(got[0]).toEqual(Buffer.concat(SIZES.slice(0, -1).map((n, i) => pattern(n, i))));
    d.push(wire.subarray(cut), (p) => got.push(Buffer.from(p)));
    d.end();
    expect(Buffer.concat(got)).toEqual(Buffer.concat(SIZES.map((n, i) => pattern(n, i))));
    expect((c.engine as unknown as { batchCalls: number }).batchCalls).toBeGreaterThan(0);
  });

  it('coalesce mode: same bytes as per-fragment mode in every chunking (batch and plain engines)', () => {
    const wire = wireOf(SIZES);
    const want = Buffer.concat(SIZES.map((n, i) => pattern(n, i)));
    for (const backend of [batchBackend, nodeCryptoBackend]) {
      for (const step of [1, 7, 18, 35, 52, 1000, 5000]) {
        const d = new FragmentDecoder(cipher(backend), { maxPayload: MAX_TCP_PAYLOAD, coalesce: true });
        const got: Buffer[] = [];
        for (let i = 0; i < wire.length; i += step) d.push(wire.subarray(i, i + step), (p) => got.push(Buffer.from(p)));
        d.end();
        expect(Buffer.concat(got)).toEqual(want);
      }
    }
  });

  it('coalesce is ignored for datagram decoding (coalesce off): one emit per fragment even with a batch engine', () => {
    const wire = wireOf(SIZES);
    const d = new FragmentDecoder(cipher(batchBackend), { maxPayload: MAX_TCP_PAYLOAD });
    const got: Buffer[] = [];
    d.push(wire, (p) => got.push(Buffer.from(p)));
    expect(got).toEqual(SIZES.map((n, i) => pattern(n, i)));
  });

  it('refuses input after a failure (auth, oversize, and from the batch path), with the same error', () => {
    const wire = wireOf([5, 5]);
    const cases: { name: string; make: () => FragmentDecoder; input: Buffer; code: string }[] = [
      {
        name: 'auth',
        make: () => new FragmentDecoder(cipher(), { maxPayload: MAX_TCP_PAYLOAD }),
        input: Buffer.from(wire).fill(0, 20, 22),
        code: ErrorCodes.AUTH_FAILED,
      },
      { name: 'oversize', make: () => new FragmentDecoder(cipher(), { maxPayload: 4 }), input: wire, code: ErrorCodes.LENGTH_OVERSIZED },
      {
        name: 'batch auth',
        make: () => new FragmentDecoder(cipher(batchBackend), { maxPayload: MAX_TCP_PAYLOAD, coalesce: true }),
        input: Buffer.from(wire).fill(0, 20, 22),
        code: ErrorCodes.AUTH_FAILED,
      },
    ];
    for (const c of cases) {
      const d = c.make();
      let first: unknown;
      try {
        d.push(c.input, () => {});
      } catch (e) {
        first = e;
      }
      expect([c.name, (first as BrookError | undefined)?.code]).toEqual([c.name, c.code]);
      expect(() => d.push(wireOf([1]), () => expect.fail('no emit after failure'))).toThrow(first as Error);
      try {
        d.push(Buffer.alloc(0), () => {});
        expect.fail('must throw');
      } catch (e) {
        expect(e).toBe(first);
      }
      expect(() => d.end()).toThrow(first as Error);
    }
  });
});
