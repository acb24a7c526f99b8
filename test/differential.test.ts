/**
 * Differential tests: our codecs (node:crypto) against an independent Brook
 * implementation built only on @noble/ciphers + @noble/hashes
 * (test/helpers/noble.ts). Both directions, every TCP payload size, a spread of
 * UDP sizes up to the limit, nonces that carry across the little-endian u64,
 * HKDF info overrides, and whole sessions.
 */
import { describe, expect, it } from 'vitest';
import { BrookError, ErrorCodes } from '../src/errors.js';
import { makeAddress } from '../src/protocol/address.js';
import { BrookCipher, deriveKey, incrementNonce } from '../src/protocol/cipher.js';
import { FragmentDecoder, FragmentEncoder } from '../src/protocol/fragment.js';
import { createClientCodec, createServerCodec } from '../src/protocol/session.js';
import { FRAGMENT_OVERHEAD, MAX_TCP_FRAGMENT, MAX_TCP_PAYLOAD, MAX_UDP_FRAGMENT, MAX_UDP_PAYLOAD, NONCE_SIZE } from '../src/protocol/sizes.js';
import { concat, NobleClient, NobleDirection, nobleFirstPayload, nobleIncrement, nobleKey, NobleServer } from './helpers/noble.js';

const PASSWORD = 'differential password';
const TIME_SEC = 1_700_000_001; // odd on purpose: the TCP client must round up to even
const now = () => TIME_SEC * 1000 + 456;

/** xorshift32: deterministic, so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

/** A pool of pseudo-random bytes; payloads are slices at varying offsets. */
const POOL = (() => {
  const r = rng(0xb100c);
  const b = Buffer.allocUnsafe(70_000);
  for (let i = 0; i < b.length; i += 4) b.writeUInt32LE(r(), i);
  return b;
})();
function payload(n: number, salt: number): Buffer {
  const start = (salt * 7919) % (POOL.length - n + 1);
  return POOL.subarray(start, start + n);
}

function nonceOf(hex8: string, tail = 'a1b2c3d4'): Buffer {
  return Buffer.from(hex8 + tail, 'hex');
}

/** Start nonces: all ones (wraps to zero on the first seal), a carry across 8 bytes after 2048 seals, a carry after 2 seals, and plain. */
const NONCES: Record<string, Buffer> = {
  'ff*8 (u64 wraps at once)': nonceOf('ffffffffffffffff'),
  '00f8ff..ff (full carry after 2048 seals)': nonceOf('00f8ffffffffffff'),
  'feff..ff00 (carry in low bytes)': nonceOf('feffffffffffff00'),
  plain: nonceOf('0123456789abcdef'),
};

/** Split into chunks of pseudo-random size 1..max. */
function chunks(buf: Uint8Array, seed: number, max: number): Buffer[] {
  const r = rng(seed);
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; ) {
    const n = Math.min(buf.length - i, 1 + (r() % max));
    out.push(Buffer.from(buf.buffer, buf.byteOffset + i, n));
    i += n;
  }
  return out;
}

/** Same payloads in the same order (Buffer.equals: vitest's deep equality is slow on 64 KiB buffers). */
function expectSameList(got: Uint8Array[], want: Uint8Array[]): void {
  expect(got.map((g) => g.length)).toEqual(want.map((w) => w.length));
  got.forEach((g, i) => {
    if (!Buffer.from(g).equals(Buffer.from(want[i]!))) expect.fail(`payload ${i} (${g.length} bytes) differs`);
  });
}

function decodeAll(dec: FragmentDecoder, parts: Buffer[]): Buffer[] {
  const got: Buffer[] = [];
  for (const p of parts) dec.push(p, (x) => got.push(Buffer.from(x)));
  dec.end();
  return got;
}

describe('keys and nonces agree with noble', () => {
  it('HKDF-SHA256 key for default and overridden info', () => {
    for (const nonce of Object.values(NONCES)) {
      for (const info of [undefined, Buffer.from('brook'), Buffer.from('client-info'), Buffer.alloc(0)]) {
        const ours = deriveKey(Buffer.from(PASSWORD), nonce, info);
        const theirs = nobleKey(PASSWORD, nonce, info);
        expect(ours.toString('hex')).toBe(Buffer.from(theirs).toString('hex'));
      }
    }
    expect(deriveKey(Buffer.from(PASSWORD), NONCES.plain!, Buffer.from('x'))).not.toEqual(deriveKey(Buffer.from(PASSWORD), NONCES.plain!));
  });

  it('the little-endian u64 counter (incl. wrap) and untouched last 4 bytes', () => {
    for (const start of Object.values(NONCES)) {
      const a = Buffer.from(start);
      const b = Uint8Array.from(start);
      for (let i = 0; i < 3000; i++) {
        incrementNonce(a);
        nobleIncrement(b);
      }
      expect(a.toString('hex')).toBe(Buffer.from(b).toString('hex'));
      expect(a.subarray(8)).toEqual(start.subarray(8));
    }
    const w = nonceOf('ffffffffffffffff');
    incrementNonce(w);
    expect(w.toString('hex')).toBe('0000000000000000a1b2c3d4');
  });
});

describe('TCP: every payload size 0..2014', () => {
  const SIZES = Array.from({ length: MAX_TCP_PAYLOAD + 1 }, (_, i) => i);

  it.each(Object.entries(NONCES))('our encoder -> noble decoder, nonce %s', (_name, nonce) => {
    const enc = new FragmentEncoder(BrookCipher.fromPassword(Buffer.from(PASSWORD), nonce), MAX_TCP_PAYLOAD);
    const wire: Buffer[] = [];
    for (const n of SIZES) {
      const f = enc.encodeOne(payload(n, n));
      expect(f.length).toBe(n + FRAGMENT_OVERHEAD);
      wire.push(f);
    }
    expect(wire[MAX_TCP_PAYLOAD]!.length).toBe(MAX_TCP_FRAGMENT);
    const got = new NobleDirection(PASSWORD, nonce).unfragment(Buffer.concat(wire));
    expect(got.length).toBe(SIZES.length);
    for (const n of SIZES) {
      if (!payload(n, n).equals(got[n]!)) expect.fail(`fragment of ${n} bytes differs`);
    }
  });

  it.each(Object.entries(NONCES))('noble encoder -> our decoder (chunked, per fragment and coalesced), nonce %s', (_name, nonce) => {
    const nob = new NobleDirection(PASSWORD, nonce);
    const wire = concat(SIZES.map((n) => nob.fragment(payload(n, n + 1))));
    const per = decodeAll(
      new FragmentDecoder(BrookCipher.fromPassword(Buffer.from(PASSWORD), nonce), { maxPayload: MAX_TCP_PAYLOAD }),
      chunks(wire, 11, 5000),
    );
    expect(per.length).toBe(SIZES.length);
    for (const n of SIZES) {
      if (!payload(n, n + 1).equals(per[n]!)) expect.fail(`fragment of ${n} bytes differs`);
    }
    const co = decodeAll(
      new FragmentDecoder(BrookCipher.fromPassword(Buffer.from(PASSWORD), nonce), { maxPayload: MAX_TCP_PAYLOAD, coalesce: true }),
      chunks(wire, 12, 9000),
    );
    expect(Buffer.concat(co).equals(Buffer.concat(per))).toBe(true);
  });

  it('stream encode() splits at 2014 exactly as noble reads it', () => {
    for (const total of [1, 2013, 2014, 2015, 4028, 4029, 10_000]) {
      const data = payload(total, total);
      const wire = new FragmentEncoder(BrookCipher.fromPassword(Buffer.from(PASSWORD), NONCES.plain!), MAX_TCP_PAYLOAD).encode(data);
      const got = new NobleDirection(PASSWORD, NONCES.plain!).unfragment(wire);
      const expected = Array.from({ length: Math.ceil(total / MAX_TCP_PAYLOAD) }, (_, i) => Math.min(MAX_TCP_PAYLOAD, total - i * MAX_TCP_PAYLOAD));
      expect(got.map((g) => g.length)).toEqual(expected);
      expect(Buffer.from(concat(got)).equals(data)).toBe(true);
    }
  });
});

describe('UDP over the stream: one datagram per fragment up to 65473', () => {
  const SIZES = [0, 1, 15, 16, 17, 2014, 2015, 4096, 16_383, 32_768, 65_000, MAX_UDP_PAYLOAD - 1, MAX_UDP_PAYLOAD];

  it.each(Object.entries(NONCES))('both directions, nonce %s', (_name, nonce) => {
    const enc = new FragmentEncoder(BrookCipher.fromPassword(Buffer.from(PASSWORD), nonce), MAX_UDP_PAYLOAD);
    const ours = SIZES.map((n) => enc.encodeOne(payload(n, n)));
    expect(ours[ours.length - 1]!.length).toBe(MAX_UDP_FRAGMENT);
    const got = new NobleDirection(PASSWORD, nonce).unfragment(Buffer.concat(ours));
    expect(got.map((g) => g.length)).toEqual(SIZES);
    SIZES.forEach((n, i) => expect(Buffer.from(got[i]!).equals(payload(n, n))).toBe(true));

    const nob = new NobleDirection(PASSWORD, nonce);
    const wire = concat(SIZES.map((n) => nob.fragment(payload(n, n + 3))));
    const dec = new FragmentDecoder(BrookCipher.fromPassword(Buffer.from(PASSWORD), nonce), { maxPayload: MAX_UDP_PAYLOAD });
    const back = decodeAll(dec, chunks(wire, 5, 30_000));
    expect(back.map((g) => g.length)).toEqual(SIZES);
    SIZES.forEach((n, i) => expect(back[i]!.equals(payload(n, n + 3))).toBe(true));
  });
});

describe('whole sessions through createClientCodec / createServerCodec', () => {
  const DEST = makeAddress('example.com', 443);
  const NOBLE_DEST = { domain: 'example.com', port: 443 };
  const CNONCE = nonceOf('fffffffffffffff0', '01020304');
  const SNONCE = nonceOf('f0ffffffffffffff', '05060708');
  const INFOS: Record<string, { client?: Uint8Array; server?: Uint8Array }> = {
    'default info': {},
    'client/server info overrides': { client: Buffer.from('c2s-info'), server: Buffer.from('s2c-info') },
  };
  const once = (b: Buffer) => (size: number) => {
    if (size !== NONCE_SIZE) throw new Error(`unexpected random(${size})`);
    return Buffer.from(b);
  };

  for (const network of ['tcp', 'udp'] as const) {
    const data = network === 'tcp' ? [1, 2014, 2015, 5000].map((n) => payload(n, n)) : [0, 1, 2015, MAX_UDP_PAYLOAD].map((n) => payload(n, n));
    const back = network === 'tcp' ? [3, 4100].map((n) => payload(n, n + 9)) : [7, 2048, MAX_UDP_PAYLOAD].map((n) => payload(n, n + 9));

    describe.each(Object.entries(INFOS))(`${network}, %s`, (_name, info) => {
      const opts = { password: PASSWORD, now, clientHKDFInfo: info.client, serverHKDFInfo: info.server };

      it('our client <-> noble server', () => {
        const client = createClientCodec({ ...opts, network, destination: DEST, random: once(CNONCE) });
        const up = Buffer.concat([client.hello(), ...data.map((d) => client.seal(d))]);
        expect(up.subarray(0, NONCE_SIZE)).toEqual(CNONCE);
        const server = new NobleServer(PASSWORD, SNONCE, info);
        const [first, ...rest] = server.receive(up);
        expect(Buffer.from(first!).toString('hex')).toBe(Buffer.from(nobleFirstPayload(TIME_SEC, network, NOBLE_DEST)).toString('hex'));
        if (network === 'tcp') expect(Buffer.from(concat(rest)).equals(Buffer.concat(data))).toBe(true);
        else expectSameList(rest, data);

        const down = concat([server.accept(), ...back.map((b) => (network === 'tcp' ? server.down.stream(b, MAX_TCP_PAYLOAD) : server.down.fragment(b)))]);
        const got: Buffer[] = [];
        for (const c of chunks(down, 3, 3000)) client.push(c, (p) => got.push(Buffer.from(p)));
        client.end();
        if (network === 'tcp') expect(Buffer.concat(got).equals(Buffer.concat(back))).toBe(true);
        else expectSameList(got, back);
      });

      it('noble client <-> our server', () => {
        const nc = new NobleClient(PASSWORD, CNONCE, info);
        const up = concat([nc.hello(nobleFirstPayload(TIME_SEC, network, NOBLE_DEST)), ...data.map((d) => (network === 'tcp' ? nc.up.stream(d, MAX_TCP_PAYLOAD) : nc.up.fragment(d)))]);
        const server = createServerCodec({ ...opts, random: once(SNONCE) });
        const got: Buffer[] = [];
        let header = null;
        for (const c of chunks(up, 4, 3000)) header = server.push(c, (p) => got.push(Buffer.from(p))) ?? header;
        server.end();
        expect(header).toEqual({ time: TIME_SEC + (network === 'tcp' ? 1 : 0), network, destination: DEST });
        if (network === 'tcp') expect(Buffer.concat(got).equals(Buffer.concat(data))).toBe(true);
        else expectSameList(got, data);

        const down = Buffer.concat([server.accept(), ...back.map((b) => server.seal(b))]);
        expect(down.subarray(0, NONCE_SIZE)).toEqual(SNONCE);
        const recv = nc.receive(down);
        if (network === 'tcp') expect(Buffer.from(concat(recv)).equals(Buffer.concat(back))).toBe(true);
        else expectSameList(recv, back);
      });
    });

    it(`${network}: an info mismatch is an authentication failure on both sides`, () => {
      const client = createClientCodec({ password: PASSWORD, now, network, destination: DEST, random: once(CNONCE), clientHKDFInfo: Buffer.from('c2s-info') });
      const up = client.hello();
      expect(() => new NobleServer(PASSWORD, SNONCE).receive(up)).toThrow();
      const server = createServerCodec({ password: PASSWORD, now });
      const nc = new NobleClient(PASSWORD, CNONCE, { client: Buffer.from('other') });
      const err = (() => {
        try {
          server.push(Buffer.from(nc.hello(nobleFirstPayload(TIME_SEC, network, NOBLE_DEST))), () => {});
        } catch (e) {
          return e;
        }
        return null;
      })();
      expect(err).toBeInstanceOf(BrookError);
      expect((err as BrookError).code).toBe(ErrorCodes.AUTH_FAILED);
    });
  }
});
