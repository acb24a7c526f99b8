/**
 * Every error code the pure codecs (src/protocol) can produce, produced and its
 * `code` asserted; plus a bounded fuzz loop proving that only BrookError ever
 * escapes a decoder or parser.
 */
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { BrookError, type ErrorCode, ErrorCodes } from '../src/errors.js';
import { decodeAddress, encodeAddress, makeAddress, parseHostPort, parseIPv6, writeAddress } from '../src/protocol/address.js';
import { BrookCipher, deriveKey } from '../src/protocol/cipher.js';
import { FragmentDecoder, FragmentEncoder } from '../src/protocol/fragment.js';
import { buildFirstPayload, parseFirstPayload } from '../src/protocol/header.js';
import { createClientCodec, createServerCodec } from '../src/protocol/session.js';
import {
  MAX_FIRST_PAYLOAD,
  MAX_TCP_PAYLOAD,
  MAX_UDP_PAYLOAD,
  MAX_UPGRADE_HEAD,
  MAX_WOB_HEADER,
  MAX_WOB_UDP_PAYLOAD,
  NONCE_SIZE,
  SEALED_LENGTH_SIZE,
  TAG_SIZE,
  WOB_LENGTH_SIZE,
  WOB_PASSWORD_SIZE,
} from '../src/protocol/sizes.js';
import { buildUpgradeResponse, checkUpgradeRequest, computeAccept, parseUpgradeResponse } from '../src/protocol/upgrade.js';
import { buildWobHeader, encodeWobDatagram, WobDatagramDecoder, WobHeaderDecoder, wobPasswordHash } from '../src/protocol/wob.js';

const PASSWORD = Buffer.from('hello');
const NONCE = Buffer.from('000102030405060708090a0b', 'hex');
const T = 1_700_000_000; // even: TCP
const at = (sec: number) => () => sec * 1000;
const DEST = makeAddress('1.2.3.4', 80);

/** Run fn; it must throw a BrookError; returns it. */
function thrown(fn: () => unknown): BrookError {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof BrookError)) throw new Error(`expected a BrookError, got ${String(e)}`, { cause: e });
    return e;
  }
  throw new Error('expected a throw, got none');
}
/** Codes produced by the tests above; checked against the codes src/protocol can throw at the end. */
const SEEN = new Set<string>();
function expectCode(fn: () => unknown, code: ErrorCode): BrookError {
  const e = thrown(fn);
  expect(e.code).toBe(code);
  SEEN.add(e.code);
  return e;
}

const cipher = (nonce = NONCE, password = PASSWORD) => BrookCipher.fromPassword(password, nonce);
const encoder = (max = MAX_TCP_PAYLOAD) => new FragmentEncoder(cipher(), max);
const decoder = (max = MAX_TCP_PAYLOAD, password = PASSWORD) => new FragmentDecoder(cipher(NONCE, password), { maxPayload: max });
const noEmit = () => {
  throw new Error('nothing may be emitted');
};

describe('Brook stream errors', () => {
  it('LENGTH_TRUNCATED: the stream ends inside a sealed length', () => {
    const wire = encoder().encodeOne(Buffer.from('abc'));
    for (const cut of [1, SEALED_LENGTH_SIZE - 1]) {
      const d = decoder();
      d.push(wire.subarray(0, cut), noEmit);
      expect(d.pendingBytes).toBe(cut);
      expectCode(() => d.end(), ErrorCodes.LENGTH_TRUNCATED);
    }
    const w = new WobDatagramDecoder();
    w.push(Buffer.from([0x00]), noEmit);
    expectCode(() => w.end(), ErrorCodes.LENGTH_TRUNCATED);
  });

  it('an empty stream and a stream ending on a boundary end cleanly', () => {
    const d = decoder();
    d.end();
    const got: Buffer[] = [];
    d.push(encoder().encodeOne(Buffer.from('x')), (p) => got.push(p));
    expect(d.atBoundary).toBe(true);
    d.end();
    expect(got.map(String)).toEqual(['x']);
  });

  it('LENGTH_OVERSIZED: refused from the sealed length alone, nothing buffered or emitted', () => {
    const big = new FragmentEncoder(cipher(), MAX_UDP_PAYLOAD).encodeOne(Buffer.alloc(MAX_TCP_PAYLOAD + 1));
    // only the 18-byte sealed length arrives: the refusal must not wait for the payload
    const d = decoder();
    const e = expectCode(() => d.push(big.subarray(0, SEALED_LENGTH_SIZE), noEmit), ErrorCodes.LENGTH_OVERSIZED);
    expect(e.message).toContain(String(MAX_TCP_PAYLOAD + 1));
    expect(d.pendingBytes).toBe(0);
    // the whole fragment in one chunk: same refusal, no emit
    const d2 = decoder();
    expectCode(() => d2.push(big, noEmit), ErrorCodes.LENGTH_OVERSIZED);
    expect(d2.pendingBytes).toBe(0);
    // byte at a time: the error comes at byte 18, before any payload byte is taken
    const d3 = decoder();
    for (let i = 0; i < SEALED_LENGTH_SIZE - 1; i++) d3.push(big.subarray(i, i + 1), noEmit);
    expectCode(() => d3.push(big.subarray(SEALED_LENGTH_SIZE - 1, SEALED_LENGTH_SIZE + 5), noEmit), ErrorCodes.LENGTH_OVERSIZED);
    expect(d3.pendingBytes).toBeLessThanOrEqual(SEALED_LENGTH_SIZE);
    // the boundary itself is accepted
    const ok: Buffer[] = [];
    decoder().push(encoder().encodeOne(Buffer.alloc(MAX_TCP_PAYLOAD)), (p) => ok.push(p));
    expect(ok[0]!.length).toBe(MAX_TCP_PAYLOAD);
  });

  it('LENGTH_OVERSIZED: the server refuses a first fragment over 2014 bytes, also for UDP', () => {
    const enc = new FragmentEncoder(cipher(), MAX_UDP_PAYLOAD);
    const first = Buffer.concat([buildFirstPayload({ network: 'udp', destination: DEST, now: at(T) }), Buffer.alloc(MAX_FIRST_PAYLOAD)]);
    const server = createServerCodec({ password: PASSWORD, now: at(T) });
    expectCode(() => server.push(Buffer.concat([NONCE, enc.encodeOne(first)]), noEmit), ErrorCodes.LENGTH_OVERSIZED);
    expect(server.header).toBeNull();
  });

  it('LENGTH_OVERSIZED: withoutBrookProtocol datagram length over the limit', () => {
    const w = new WobDatagramDecoder(100);
    expectCode(() => w.push(Buffer.from([0x00, 101]), noEmit), ErrorCodes.LENGTH_OVERSIZED);
    const w2 = new WobDatagramDecoder();
    expectCode(() => w2.push(Buffer.from([0xff, 0xff]), noEmit), ErrorCodes.LENGTH_OVERSIZED);
  });

  it('STREAM_TRUNCATED: the stream ends inside a payload, a datagram, or the server nonce', () => {
    const wire = encoder().encodeOne(Buffer.from('hello world'));
    for (const cut of [SEALED_LENGTH_SIZE, SEALED_LENGTH_SIZE + 3, wire.length - 1]) {
      const d = decoder();
      d.push(wire.subarray(0, cut), noEmit);
      expectCode(() => d.end(), ErrorCodes.STREAM_TRUNCATED);
    }
    const w = new WobDatagramDecoder();
    w.push(Buffer.from([0x00, 0x05, 0x61]), noEmit);
    expectCode(() => w.end(), ErrorCodes.STREAM_TRUNCATED);
    const client = createClientCodec({ password: PASSWORD, network: 'tcp', destination: DEST, now: at(T) });
    client.hello();
    client.push(Buffer.alloc(NONCE_SIZE - 1), noEmit);
    expectCode(() => client.end(), ErrorCodes.STREAM_TRUNCATED);
  });

  it('PAYLOAD_OVERSIZED: one fragment or datagram over its limit is refused on encode', () => {
    expectCode(() => encoder().encodeOne(Buffer.alloc(MAX_TCP_PAYLOAD + 1)), ErrorCodes.PAYLOAD_OVERSIZED);
    expectCode(() => encodeWobDatagram(Buffer.alloc(MAX_WOB_UDP_PAYLOAD + 1)), ErrorCodes.PAYLOAD_OVERSIZED);
    expect(encodeWobDatagram(Buffer.alloc(MAX_WOB_UDP_PAYLOAD)).length).toBe(MAX_WOB_UDP_PAYLOAD + WOB_LENGTH_SIZE);
    const udp = createClientCodec({ password: PASSWORD, network: 'udp', destination: DEST, now: at(T) });
    udp.hello();
    expect(udp.seal(Buffer.alloc(MAX_UDP_PAYLOAD)).length).toBe(MAX_UDP_PAYLOAD + SEALED_LENGTH_SIZE + TAG_SIZE);
    expectCode(() => udp.seal(Buffer.alloc(MAX_UDP_PAYLOAD + 1)), ErrorCodes.PAYLOAD_OVERSIZED);
  });

  it('AUTH_FAILED: a flipped bit in the length tag, the payload body, the payload tag; a wrong password', () => {
    const wire = encoder().encodeOne(Buffer.from('payload'));
    for (const at of [SEALED_LENGTH_SIZE - 1, 0, SEALED_LENGTH_SIZE, wire.length - 1]) {
      const bad = Buffer.from(wire);
      bad[at]! ^= 0x01;
      const d = decoder();
      expectCode(() => d.push(bad, noEmit), ErrorCodes.AUTH_FAILED);
    }
    expectCode(() => decoder(MAX_TCP_PAYLOAD, Buffer.from('wrong')).push(wire, noEmit), ErrorCodes.AUTH_FAILED);
    // a server with the wrong password: no header, AUTH_FAILED
    const client = createClientCodec({ password: PASSWORD, network: 'tcp', destination: DEST, now: at(T) });
    const server = createServerCodec({ password: 'not hello', now: at(T) });
    expectCode(() => server.push(client.hello(), noEmit), ErrorCodes.AUTH_FAILED);
    expect(server.header).toBeNull();
    // BrookCipher.open on less than a tag
    expectCode(() => cipher().open(Buffer.alloc(TAG_SIZE - 1)), ErrorCodes.AUTH_FAILED);
  });

  it('a failed decoder refuses further input with the same error', () => {
    const bad = Buffer.from(encoder().encodeOne(Buffer.from('x')));
    bad[0]! ^= 0x80;
    const d = decoder();
    const first = expectCode(() => d.push(bad, noEmit), ErrorCodes.AUTH_FAILED);
    expect(thrown(() => d.push(encoder().encodeOne(Buffer.from('x')), noEmit))).toBe(first);
    expect(thrown(() => d.end())).toBe(first);
  });

  it('NONCE_SIZE: key derivation and cipher refuse a nonce that is not 12 bytes', () => {
    expectCode(() => deriveKey(PASSWORD, Buffer.alloc(11)), ErrorCodes.NONCE_SIZE);
    expectCode(() => new BrookCipher(Buffer.alloc(32), Buffer.alloc(13)), ErrorCodes.NONCE_SIZE);
  });
});

describe('first fragment errors', () => {
  const tcp = buildFirstPayload({ network: 'tcp', destination: DEST, now: at(T) });
  const udp = buildFirstPayload({ network: 'udp', destination: DEST, now: at(T) });

  it('TIME_STALE: 61 s old is refused, 60 s old accepted, future accepted', () => {
    expect(parseFirstPayload(tcp, { now: at(T + 60) }).time).toBe(T);
    expect(parseFirstPayload(tcp, { now: () => (T + 60) * 1000 + 999 }).time).toBe(T);
    expectCode(() => parseFirstPayload(tcp, { now: at(T + 61) }), ErrorCodes.TIME_STALE);
    expect(parseFirstPayload(tcp, { now: at(T - 3600) }).time).toBe(T);
    expectCode(() => parseFirstPayload(tcp, { now: at(T + 11), maxAgeSeconds: 10 }), ErrorCodes.TIME_STALE);
  });

  it('TIME_STALE through the server codec (Brook and withoutBrookProtocol), no header', () => {
    for (const wob of [false, true]) {
      const client = createClientCodec({ password: PASSWORD, network: 'tcp', destination: DEST, now: at(T), withoutBrookProtocol: wob });
      const hello = client.hello();
      const fresh = createServerCodec({ password: PASSWORD, now: at(T + 60), withoutBrookProtocol: wob });
      expect(fresh.push(hello, noEmit)?.time).toBe(T);
      const stale = createServerCodec({ password: PASSWORD, now: at(T + 61), withoutBrookProtocol: wob });
      expectCode(() => stale.push(hello, noEmit), ErrorCodes.TIME_STALE);
      expect(stale.header).toBeNull();
    }
  });

  it('TIME_AHEAD: with maxAheadSeconds, 61 s ahead is refused and 60 s accepted (parser and both server codecs)', () => {
    expect(parseFirstPayload(tcp, { now: at(T - 60), maxAheadSeconds: 60 }).time).toBe(T);
    expectCode(() => parseFirstPayload(tcp, { now: at(T - 61), maxAheadSeconds: 60 }), ErrorCodes.TIME_AHEAD);
    expectCode(() => parseFirstPayload(tcp, { now: at(T - 1), maxAheadSeconds: 0 }), ErrorCodes.TIME_AHEAD);
    for (const wob of [false, true]) {
      const hello = createClientCodec({ password: PASSWORD, network: 'tcp', destination: DEST, now: at(T), withoutBrookProtocol: wob }).hello();
      const within = createServerCodec({ password: PASSWORD, now: at(T - 60), maxAheadSeconds: 60, withoutBrookProtocol: wob });
      expect(within.push(hello, noEmit)?.time).toBe(T);
      const ahead = createServerCodec({ password: PASSWORD, now: at(T - 61), maxAheadSeconds: 60, withoutBrookProtocol: wob });
      expectCode(() => ahead.push(hello, noEmit), ErrorCodes.TIME_AHEAD);
      expect(ahead.header).toBeNull();
    }
  });

  it('TIME_PARITY: expectNetwork refuses the other parity', () => {
    expect(parseFirstPayload(tcp, { now: at(T), expectNetwork: 'tcp' }).network).toBe('tcp');
    expectCode(() => parseFirstPayload(tcp, { now: at(T), expectNetwork: 'udp' }), ErrorCodes.TIME_PARITY);
    expectCode(() => parseFirstPayload(udp, { now: at(T), expectNetwork: 'tcp' }), ErrorCodes.TIME_PARITY);
  });

  it('HEADER_TRUNCATED: shorter than the time, or ending inside the address', () => {
    for (let n = 0; n < tcp.length; n++) {
      expectCode(() => parseFirstPayload(tcp.subarray(0, n), { now: at(T) }), ErrorCodes.HEADER_TRUNCATED);
    }
  });

  it('ATYP_UNKNOWN and ADDRESS_INVALID (stray bytes, empty domain) inside a header', () => {
    const bad = Buffer.from(tcp);
    bad[4] = 0x02;
    expectCode(() => parseFirstPayload(bad, { now: at(T) }), ErrorCodes.ATYP_UNKNOWN);
    expectCode(() => parseFirstPayload(Buffer.concat([tcp, Buffer.from([0])]), { now: at(T) }), ErrorCodes.ADDRESS_INVALID);
    expectCode(() => parseFirstPayload(Buffer.concat([tcp.subarray(0, 4), Buffer.from([0x03, 0x00, 0x00, 0x50])]), { now: at(T) }), ErrorCodes.ADDRESS_INVALID);
  });
});

describe('address errors', () => {
  it('ATYP_UNKNOWN for 0x00, 0x02, 0x05, 0xff', () => {
    for (const atyp of [0x00, 0x02, 0x05, 0xff]) expectCode(() => decodeAddress(Buffer.from([atyp, 1, 2, 3, 4, 5, 6])), ErrorCodes.ATYP_UNKNOWN);
  });

  it('ADDRESS_TRUNCATED for every proper prefix', () => {
    for (const a of [makeAddress('1.2.3.4', 80), makeAddress('::1', 443), makeAddress('example.com', 8080)]) {
      const b = encodeAddress(a);
      for (let n = 0; n < b.length; n++) expectCode(() => decodeAddress(b.subarray(0, n)), ErrorCodes.ADDRESS_TRUNCATED);
      expect(decodeAddress(b).address).toEqual(a);
    }
  });

  it('DOMAIN_TOO_LONG: a 256-byte domain on encode (255 is fine)', () => {
    const d256 = { type: 'domain' as const, host: 'a'.repeat(256), port: 1 };
    expectCode(() => encodeAddress(d256), ErrorCodes.DOMAIN_TOO_LONG);
    expectCode(() => writeAddress(d256, Buffer.alloc(300)), ErrorCodes.DOMAIN_TOO_LONG);
    expectCode(() => makeAddress('a'.repeat(256), 1), ErrorCodes.DOMAIN_TOO_LONG);
    expectCode(() => makeAddress('é'.repeat(128), 1), ErrorCodes.DOMAIN_TOO_LONG); // 256 bytes of UTF-8
    expect(encodeAddress(makeAddress('a'.repeat(255), 1)).length).toBe(1 + 1 + 255 + 2);
  });

  it('ADDRESS_INVALID: port out of range, empty host, not host:port, bad IPv4/IPv6, empty domain', () => {
    for (const port of [-1, 65536, 1.5, Number.NaN]) expectCode(() => makeAddress('1.2.3.4', port), ErrorCodes.ADDRESS_INVALID);
    expectCode(() => makeAddress('', 1), ErrorCodes.ADDRESS_INVALID);
    for (const s of ['nohost', '1.2.3.4', '::1:80', 'host:', 'host:port', '[::1]']) expectCode(() => parseHostPort(s), ErrorCodes.ADDRESS_INVALID);
    expectCode(() => encodeAddress({ type: 'ipv4', host: '1.2.3', port: 1 }), ErrorCodes.ADDRESS_INVALID);
    expectCode(() => encodeAddress({ type: 'ipv4', host: '1.2.3.256', port: 1 }), ErrorCodes.ADDRESS_INVALID);
    expectCode(() => encodeAddress({ type: 'ipv6', host: '1::2::3', port: 1 }), ErrorCodes.ADDRESS_INVALID);
    expectCode(() => parseIPv6('12345::'), ErrorCodes.ADDRESS_INVALID);
    expectCode(() => encodeAddress({ type: 'domain', host: '', port: 1 }), ErrorCodes.ADDRESS_INVALID);
    expectCode(() => decodeAddress(Buffer.from([0x03, 0x00, 0x00, 0x50])), ErrorCodes.ADDRESS_INVALID);
  });
});

describe('withoutBrookProtocol errors', () => {
  const hash = wobPasswordHash('hello');

  it('WOB_PASSWORD: a wrong hash is refused as soon as 34 bytes are in', () => {
    const header = buildWobHeader(wobPasswordHash('other'), { network: 'tcp', destination: DEST, now: at(T) });
    const d = new WobHeaderDecoder(hash, { now: at(T) });
    expect(d.push(header.subarray(0, WOB_PASSWORD_SIZE + 1))).toBeNull();
    expectCode(() => d.push(header.subarray(WOB_PASSWORD_SIZE + 1, WOB_PASSWORD_SIZE + WOB_LENGTH_SIZE)), ErrorCodes.WOB_PASSWORD);
    const server = createServerCodec({ password: 'hello', withoutBrookProtocol: true, now: at(T) });
    expectCode(() => server.push(header, noEmit), ErrorCodes.WOB_PASSWORD);
  });

  it('WOB_HEADER_OVERSIZED: L = 2049 is refused before any body byte; L = 2048 is waited for', () => {
    const prefix = (l: number) => Buffer.concat([hash, Buffer.from([l >> 8, l & 0xff])]);
    expectCode(() => new WobHeaderDecoder(hash, { now: at(T) }).push(prefix(MAX_WOB_HEADER + 1)), ErrorCodes.WOB_HEADER_OVERSIZED);
    expectCode(() => new WobHeaderDecoder(hash).push(prefix(0xffff)), ErrorCodes.WOB_HEADER_OVERSIZED);
    expect(new WobHeaderDecoder(hash).push(prefix(MAX_WOB_HEADER))).toBeNull();
  });

  it('CONFIG: a password hash that is not 32 bytes', () => {
    expectCode(() => buildWobHeader(Buffer.alloc(31), { network: 'tcp', destination: DEST }), ErrorCodes.CONFIG);
  });

  it('INTERNAL: server codec used out of order', () => {
    const s = createServerCodec({ password: PASSWORD });
    expectCode(() => s.accept(), ErrorCodes.INTERNAL);
    expectCode(() => s.seal(Buffer.from('x')), ErrorCodes.INTERNAL);
  });
});

describe('HTTP upgrade errors', () => {
  const key = 'dGhlIHNhbXBsZSBub25jZQ==';
  const head = (s: string) => Buffer.from(s, 'latin1');

  it('parses a correct 101 and returns the head length', () => {
    const res = buildUpgradeResponse(key);
    const r = parseUpgradeResponse(Buffer.concat([res, Buffer.from('extra')]), key)!;
    expect(r.status).toBe(101);
    expect(r.headLength).toBe(res.length);
    expect(parseUpgradeResponse(res.subarray(0, res.length - 1), key)).toBeNull();
  });

  it('UPGRADE_RESPONSE: 200, 400, malformed status line, malformed header line', () => {
    expectCode(() => parseUpgradeResponse(head('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'), key), ErrorCodes.UPGRADE_RESPONSE);
    expectCode(() => parseUpgradeResponse(head('HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n\r\n'), key), ErrorCodes.UPGRADE_RESPONSE);
    for (const line of ['HTTP/2 101 Switching Protocols', 'HTTP/1.1 1O1 x', 'SSH-2.0-OpenSSH', '', 'HTTP/1.1  101']) {
      expectCode(() => parseUpgradeResponse(head(`${line}\r\nUpgrade: websocket\r\n\r\n`), key), ErrorCodes.UPGRADE_RESPONSE);
    }
    expectCode(
      () => parseUpgradeResponse(head(`HTTP/1.1 101 Switching Protocols\r\nno colon here\r\nSec-WebSocket-Accept: ${computeAccept(key)}\r\n\r\n`), key),
      ErrorCodes.UPGRADE_RESPONSE,
    );
    expectCode(() => parseUpgradeResponse(head('HTTP/1.1 101 Switching Protocols\r\n: empty name\r\n\r\n'), key), ErrorCodes.UPGRADE_RESPONSE);
  });

  it('UPGRADE_ACCEPT: a wrong or missing Sec-WebSocket-Accept', () => {
    const other = buildUpgradeResponse('AAAAAAAAAAAAAAAAAAAAAA==');
    expectCode(() => parseUpgradeResponse(other, key), ErrorCodes.UPGRADE_ACCEPT);
    expectCode(() => parseUpgradeResponse(head('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n'), key), ErrorCodes.UPGRADE_ACCEPT);
  });

  it('UPGRADE_TOO_LARGE: an unterminated head past the bound, or a complete one over it', () => {
    const junk = Buffer.alloc(MAX_UPGRADE_HEAD + 1, 0x61);
    expect(parseUpgradeResponse(junk.subarray(0, MAX_UPGRADE_HEAD), key)).toBeNull();
    expectCode(() => parseUpgradeResponse(junk, key), ErrorCodes.UPGRADE_TOO_LARGE);
    const long = head(`HTTP/1.1 101 Switching Protocols\r\nX-Pad: ${'p'.repeat(200)}\r\n\r\n`);
    expectCode(() => parseUpgradeResponse(long, key, 100), ErrorCodes.UPGRADE_TOO_LARGE);
  });

  it('checkUpgradeRequest: 405 for other methods, 400 for bad upgrades, ok for a good one', () => {
    const good = { host: 'h:1', upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-key': key, 'sec-websocket-version': '13' };
    expect(checkUpgradeRequest('GET', good)).toEqual({ ok: true, key });
    expect(checkUpgradeRequest('GET', { ...good, connection: 'keep-alive, Upgrade', upgrade: 'WebSocket' })).toEqual({ ok: true, key });
    for (const m of ['POST', 'PUT', 'HEAD']) expect(checkUpgradeRequest(m, good)).toMatchObject({ ok: false, status: 405 });
    const bad400 = (h: Record<string, string | undefined>) => expect(checkUpgradeRequest('GET', h)).toMatchObject({ ok: false, status: 400 });
    bad400({ ...good, upgrade: undefined });
    bad400({ ...good, upgrade: 'h2c' });
    bad400({ ...good, connection: undefined });
    bad400({ ...good, connection: 'keep-alive' });
    for (const v of ['8', '12', '', undefined]) {
      expect(checkUpgradeRequest('GET', { ...good, 'sec-websocket-version': v })).toEqual({
        ok: false,
        status: 400,
        reason: expect.any(String),
        headers: { 'Sec-WebSocket-Version': '13' },
      });
    }
    for (const k of [undefined, '', 'not base64!', 'AAAA', Buffer.alloc(15).toString('base64'), Buffer.alloc(17).toString('base64'), key.slice(0, -2)]) {
      bad400({ ...good, 'sec-websocket-key': k });
    }
  });
});

describe('fuzz: only BrookError escapes (2,000 random inputs per target)', () => {
  const ROUNDS = 2000;
  /** xorshift32 */
  function rng(seed: number) {
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
  function randomInputs(seed: number, maxLen: number, prefix?: Buffer): Buffer[] {
    const r = rng(seed);
    const out: Buffer[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      const n = r() % (maxLen + 1);
      const b = Buffer.allocUnsafe(n);
      for (let j = 0; j < n; j++) b[j] = r() & 0xff;
      // a third of the inputs start with a plausible prefix so the deeper states are reached
      if (prefix && i % 3 === 0) prefix.copy(b, 0, 0, Math.min(prefix.length, n));
      out.push(b);
    }
    return out;
  }
  /** Every throw must be a BrookError; counts the codes seen. */
  function onlyBrookErrors(inputs: Buffer[], fn: (b: Buffer) => void): Map<string, number> {
    const codes = new Map<string, number>();
    for (const b of inputs) {
      try {
        fn(b);
        codes.set('ok', (codes.get('ok') ?? 0) + 1);
      } catch (e) {
        if (!(e instanceof BrookError)) throw new Error(`non-BrookError escaped for input ${b.toString('hex')}: ${String(e)}`, { cause: e });
        codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
      }
    }
    return codes;
  }
  const sink = () => {};
  const hash = wobPasswordHash('hello');
  const validHello = createClientCodec({ password: PASSWORD, network: 'tcp', destination: makeAddress('example.com', 443), now: at(T) }).hello();

  it('decodeAddress', () => {
    const codes = onlyBrookErrors(randomInputs(1, 40, Buffer.from([0x03, 0x05])), (b) => decodeAddress(b, b.length > 0 ? b[0]! % 2 : 0));
    expect(codes.has(ErrorCodes.ATYP_UNKNOWN)).toBe(true);
    expect(codes.has(ErrorCodes.ADDRESS_TRUNCATED)).toBe(true);
  });

  it('parseFirstPayload', () => {
    const ts = Buffer.alloc(4);
    ts.writeUInt32BE(T);
    onlyBrookErrors(randomInputs(2, 40, Buffer.concat([ts, Buffer.from([0x01])])), (b) => parseFirstPayload(b, { now: at(T) }));
  });

  it('FragmentDecoder (per fragment and coalesced), random chunkings, then end()', () => {
    const r = rng(3);
    onlyBrookErrors(randomInputs(3, 120), (b) => {
      const d = new FragmentDecoder(cipher(), { maxPayload: MAX_TCP_PAYLOAD, coalesce: (r() & 1) === 1 });
      for (let i = 0; i < b.length; ) {
        const n = 1 + (r() % 40);
        d.push(b.subarray(i, i + n), sink);
        i += n;
      }
      d.end();
    });
  });

  it('server codecs (Brook and withoutBrookProtocol)', () => {
    onlyBrookErrors(randomInputs(4, 120, validHello), (b) => {
      const s = createServerCodec({ password: PASSWORD, now: at(T) });
      s.push(b, sink);
      s.end();
    });
    onlyBrookErrors(randomInputs(5, 120, Buffer.concat([hash, Buffer.from([0x00, 0x07])])), (b) => {
      const s = createServerCodec({ password: 'hello', withoutBrookProtocol: true, now: at(T) });
      s.push(b, sink);
      s.end();
    });
  });

  it('client codecs (tcp and udp, Brook and withoutBrookProtocol)', () => {
    let i = 0;
    onlyBrookErrors(randomInputs(6, 120), (b) => {
      const c = createClientCodec({ password: PASSWORD, network: i % 2 ? 'tcp' : 'udp', withoutBrookProtocol: i++ % 4 >= 2, destination: DEST, now: at(T) });
      c.hello();
      c.push(b, sink);
      c.end();
    });
  });

  it('WobHeaderDecoder and WobDatagramDecoder', () => {
    onlyBrookErrors(randomInputs(7, 80, Buffer.concat([hash, Buffer.from([0x00, 0x0a])])), (b) => {
      new WobHeaderDecoder(hash, { now: at(T) }).push(b);
    });
    onlyBrookErrors(randomInputs(8, 80), (b) => {
      const d = new WobDatagramDecoder(30);
      d.push(b, sink);
      d.end();
    });
  });

  it('parseUpgradeResponse, parseHostPort, makeAddress', () => {
    const key = 'dGhlIHNhbXBsZSBub25jZQ==';
    const inputs = randomInputs(9, 120, Buffer.from('HTTP/1.1 101 Switching Protocols\r\n'));
    inputs.forEach((b, i) => {
      if (i % 2 === 0) b.write('\r\n\r\n', Math.max(0, b.length - 4), 'latin1');
    });
    onlyBrookErrors(inputs, (b) => parseUpgradeResponse(b, key, 100));
    onlyBrookErrors(randomInputs(10, 30), (b) => parseHostPort(b.toString('latin1')));
    const r = rng(11);
    onlyBrookErrors(randomInputs(12, 30), (b) => makeAddress(b.toString('latin1'), (r() % 70000) - 1000));
  });

  it('checkUpgradeRequest never throws', () => {
    const r = rng(13);
    for (const b of randomInputs(14, 30)) {
      const v = b.toString('latin1');
      const res = checkUpgradeRequest(r() % 2 ? 'GET' : v, { connection: v, upgrade: r() % 2 ? 'websocket' : v, 'sec-websocket-version': r() % 2 ? '13' : v, 'sec-websocket-key': v });
      expect(typeof res.ok).toBe('boolean');
    }
  });
});

it('wobPasswordHash is SHA-256 of the password', () => {
  expect(wobPasswordHash('hello')).toEqual(createHash('sha256').update('hello').digest());
});

// Runs last (vitest runs a file's tests in order): every ErrorCodes.X named in src/protocol was produced above.
it('coverage: every error code src/protocol can throw was produced and asserted here', () => {
  const dir = fileURLToPath(new URL('../src/protocol/', import.meta.url));
  const named = new Set<string>();
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.ts'))) {
    for (const m of readFileSync(dir + f, 'utf8').matchAll(/ErrorCodes\.([A-Z_]+)/g)) {
      named.add(ErrorCodes[m[1] as keyof typeof ErrorCodes]);
    }
  }
  expect(named.size).toBeGreaterThan(15);
  expect([...named].filter((c) => !SEEN.has(c)).sort()).toEqual([]);
});
