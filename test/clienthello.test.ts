/**
 * The ClientHello reader and its JA3/JA4 (src/tls/clienthello.ts), on hex
 * vectors captured on loopback (bench/clienthello.ts): Node 20's default hello
 * as brook-ts sends it, and Debian's Chromium 156. Checked against figures from
 * elsewhere: JA4 of Node's default and of upstream's uTLS Chrome hello as
 * measured for the issue (t13d5911h1_a33745022dd6_1f22a2ca17c4,
 * t13d1516h1_8daaf6152771_02713d6af862), JA3 as Wireshark 4.0.17's tshark
 * (tls.handshake.ja3) computed them from a capture of the same connections.
 * Bad input: every prefix, byte-at-a-time, records split, wrong types, sizes.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { oneLineError } from './helpers/io.js';
import {
  type ClientHello,
  Ext,
  extractClientHello,
  firstRecordLength,
  isGrease,
  ja3,
  ja3String,
  ja4,
  ja4Parts,
  MAX_CLIENT_HELLO_SIZE,
  parseClientHello,
  TLS_RECORD_HEADER_SIZE,
} from '../src/tls/clienthello.js';

const hex = (name: string) => Buffer.from(readFileSync(new URL(`./fixtures/${name}`, import.meta.url), 'utf8').trim(), 'hex');
const NODE20 = hex('clienthello-node20.hex');
const CHROMIUM = hex('clienthello-chromium156.hex');

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const vec1 = (b: Buffer) => Buffer.concat([Buffer.from([b.length]), b]);
const vec2 = (b: Buffer) => Buffer.concat([u16(b.length), b]);
const u16list = (l: number[]) => Buffer.concat(l.map(u16));

/** A ClientHello record from parsed fields (tests only: to reshape a captured hello). */
function encode(h: ClientHello): Buffer {
  const exts = Buffer.concat(h.extensions.map((e) => Buffer.concat([u16(e.type), vec2(e.data)])));
  const body = Buffer.concat([u16(h.legacyVersion), h.random, vec1(h.sessionId), vec2(u16list(h.cipherSuites)), vec1(Buffer.from(h.compressionMethods)), vec2(exts)]);
  const msg = Buffer.concat([Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  return Buffer.concat([Buffer.from([22]), u16(h.recordVersion), u16(msg.length), msg]);
}

const alpnData = (protos: string[]) => vec2(Buffer.concat(protos.map((p) => vec1(Buffer.from(p, 'latin1')))));

const expectInvalid = (f: () => unknown) => oneLineError(f, ErrorCodes.CLIENT_HELLO_INVALID);

describe('ClientHello: JA3 and JA4', () => {
  it("Node 20's default hello: JA4 as measured for the issue, JA3 as tshark's", () => {
    const h = parseClientHello(NODE20);
    expect(ja4(h)).toBe('t13d5911h1_a33745022dd6_1f22a2ca17c4');
    expect(ja3(h)).toBe('1a28e69016765d92e3b381168d68922c');
    expect(h.serverName).toBe('brook.test');
    expect(h.alpn).toEqual(['http/1.1']);
    expect(h.supportedVersions).toEqual([0x0304, 0x0303]);
    expect(h.recordVersion).toBe(0x0301);
    expect(h.legacyVersion).toBe(0x0303);
    expect(h.recordBytes).toBe(NODE20.length);
    expect(h.keyShareGroups).toEqual([0x001d]);
  });

  it("Chromium 156: GREASE left out everywhere (ciphers, extensions, groups, signature algorithms), JA3 in the order sent (tshark's), JA4 sorted", () => {
    const h = parseClientHello(CHROMIUM);
    expect(h.cipherSuites.filter(isGrease)).toHaveLength(1);
    expect(h.signatureAlgorithms.filter(isGrease)).toHaveLength(1);
    expect(h.extensions.map((e) => e.type).filter(isGrease)).toHaveLength(2);
    expect(ja3(h)).toBe('170eb8a7e844bd8f53d334d5fd5b779a');
    expect(ja3String(h).split(',')[1]).toBe('4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53');
    expect(ja4(h)).toBe('t13d1517h2_8daaf6152771_cb7bf5808d99');
    expect(h.alpn).toEqual(['h2', 'http/1.1']);
    expect(h.groups.filter((g) => !isGrease(g))).toEqual([0x11ec, 0x001d, 0x0017, 0x0018]);
  });

  it("Chromium's hello reshaped as upstream's uTLS Chrome (ALPS 17513, no 0xca34, no ML-DSA, ALPN http/1.1): upstream's JA4", () => {
    const h = parseClientHello(CHROMIUM);
    const sigalgs = h.signatureAlgorithms.filter((s) => s >> 8 !== 0x09);
    const extensions = h.extensions
      .filter((e) => e.type !== 0xca34)
      .map((e) => {
        if (e.type === 17613) return { type: 17513, data: e.data };
        if (e.type === Ext.ALPN) return { type: e.type, data: alpnData(['http/1.1']) };
        if (e.type === Ext.SIGNATURE_ALGORITHMS) return { type: e.type, data: vec2(u16list(sigalgs)) };
        return e;
      });
    const reshaped = parseClientHello(encode({ ...h, extensions }));
    expect(ja4(reshaped)).toBe('t13d1516h1_8daaf6152771_02713d6af862');
    // and as Chrome 143 (ALPS 44cd, ALPN h2), whose JA4 and JA4_r a public TLS echo service published
    const chrome143 = extensions.map((e) => (e.type === 17513 ? { type: 17613, data: e.data } : e.type === Ext.ALPN ? { type: e.type, data: alpnData(['h2', 'http/1.1']) } : e));
    const c143 = parseClientHello(encode({ ...h, extensions: chrome143 }));
    expect(ja4Parts(c143).extensions).toBe('0005,000a,000b,000d,0012,0017,001b,0023,002b,002d,0033,44cd,fe0d,ff01_0403,0804,0401,0503,0805,0501,0806,0601');
    expect(ja4(c143)).toBe('t13d1516h2_8daaf6152771_d8a2da3f94cd');
  });

  it('JA4 details: no SNI is "i", no ALPN "00", a non-alphanumeric ALPN its hex ends, counts capped at 99, no sigalgs no "_"', () => {
    const h = parseClientHello(NODE20);
    const without = (t: number) => h.extensions.filter((e) => e.type !== t);
    expect(ja4(parseClientHello(encode({ ...h, extensions: without(Ext.SERVER_NAME) })))).toMatch(/^t13i5910h1_/);
    expect(ja4(parseClientHello(encode({ ...h, extensions: without(Ext.ALPN) })))).toMatch(/^t13d591000_/);
    const alpn = (p: string) => h.extensions.map((e) => (e.type === Ext.ALPN ? { type: e.type, data: alpnData([p]) } : e));
    // the JA4 specification's own examples (technical_details/JA4.md, "ALPN Extension Value")
    const spec: Array<[number[], string]> = [[[0xab], 'ab'], [[0x20], '20'], [[0xab, 0xcd], 'ad'], [[0x20, 0x61], '21'], [[0x30, 0xab], '3b'], [[0x61, 0x20], '60'], [[0x30, 0x31, 0xab, 0xcd], '3d'], [[0x30, 0xab, 0xcd, 0x31], '01'], [[0x68], 'hh']];
    for (const [bytes, ends] of spec) {
      expect(ja4Parts(parseClientHello(encode({ ...h, extensions: alpn(Buffer.from(bytes).toString('latin1')) }))).a).toBe(`t13d5911${ends}`);
    }
    const many = Array.from({ length: 120 }, (_, i) => 0x0100 + i);
    expect(ja4Parts(parseClientHello(encode({ ...h, cipherSuites: many }))).a).toBe('t13d9911h1');
    const p = ja4Parts(parseClientHello(encode({ ...h, extensions: without(Ext.SIGNATURE_ALGORITHMS) })));
    expect(p.extensions).not.toContain('_');
  });

  it('GREASE is 0x?a?a with both bytes equal', () => {
    for (let i = 0; i < 16; i++) expect(isGrease(((i << 4) | 0x0a) * 0x101)).toBe(true);
    for (const v of [0x0a1a, 0x0a0b, 0x1301, 0x0000, 0xfafb]) expect(isGrease(v)).toBe(false);
  });
});

describe('ClientHello: reading from a stream of bytes', () => {
  it('every strict prefix is "need more" (null), never an error', () => {
    for (let n = 0; n < NODE20.length; n++) expect(extractClientHello(NODE20.subarray(0, n))).toBeNull();
    expect(extractClientHello(NODE20)?.recordBytes).toBe(NODE20.length);
    expect(firstRecordLength(NODE20.subarray(0, TLS_RECORD_HEADER_SIZE - 1))).toBeNull();
    expect(firstRecordLength(NODE20)).toBe(NODE20.length);
  });

  it('bytes after the hello (the rest of a flight) are left alone', () => {
    const h = parseClientHello(Buffer.concat([CHROMIUM, Buffer.from('170303000100', 'hex')]));
    expect(h.recordBytes).toBe(CHROMIUM.length);
    expect(ja4(h)).toBe('t13d1517h2_8daaf6152771_cb7bf5808d99');
  });

  it('a hello split over several records reads the same', () => {
    const msg = NODE20.subarray(TLS_RECORD_HEADER_SIZE);
    const cut = [0, 3, 100, msg.length];
    const records = cut.slice(1).map((end, i) => {
      const part = msg.subarray(cut[i], end);
      return Buffer.concat([NODE20.subarray(0, 3), u16(part.length), part]);
    });
    const joined = Buffer.concat(records);
    expect(ja4(parseClientHello(joined))).toBe('t13d5911h1_a33745022dd6_1f22a2ca17c4');
    expect(parseClientHello(joined).recordBytes).toBe(joined.length);
  });

  it('not a hello: another record type, another handshake type, an oversized length, garbage inside', () => {
    expectInvalid(() => extractClientHello(Buffer.concat([Buffer.from([23]), NODE20.subarray(1)])));
    const other = Buffer.from(NODE20);
    other[TLS_RECORD_HEADER_SIZE] = 2;
    expectInvalid(() => extractClientHello(other));
    const big = Buffer.from(NODE20);
    big.writeUIntBE(MAX_CLIENT_HELLO_SIZE, TLS_RECORD_HEADER_SIZE + 1, 3);
    expectInvalid(() => extractClientHello(big));
    expectInvalid(() => parseClientHello(NODE20.subarray(0, 100)));
    // a session id length past the end of the message
    const badSid = Buffer.from(NODE20);
    badSid[TLS_RECORD_HEADER_SIZE + 4 + 2 + 32] = 0xff;
    expectInvalid(() => parseClientHello(badSid));
    // an extension length past the end of the extensions
    const h = parseClientHello(NODE20);
    const enc = encode(h);
    const lastExt = enc.length - h.extensions.at(-1)!.data.length - 2;
    enc.writeUInt16BE(0xffff, lastExt);
    expectInvalid(() => parseClientHello(enc));
  });

  it('every single-byte change parses or fails with CLIENT_HELLO_INVALID, nothing else', () => {
    for (let i = 0; i < NODE20.length; i++) {
      const b = Buffer.from(NODE20);
      b[i] ^= 0xff;
      try {
        const found = extractClientHello(b);
        if (found) ja4(parseClientHello(b));
      } catch (e) {
        expect((e as { code?: string }).code, `byte ${i}`).toBe(ErrorCodes.CLIENT_HELLO_INVALID);
      }
    }
  });
});
