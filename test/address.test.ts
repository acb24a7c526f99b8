/**
 * SOCKS5-style address codec (protocol/brook-stream.md#destination-address):
 * hex vectors, byte-at-a-time truncation, IPv6 text forms checked against
 * node:net as an oracle.
 */
import { BlockList, isIPv4 as nodeIsIPv4, isIPv6 as nodeIsIPv6 } from 'node:net';
import { describe, expect, it } from 'vitest';
import { BrookError, ErrorCodes } from '../src/errors.js';
import {
  type Address,
  decodeAddress,
  encodeAddress,
  encodedAddressSize,
  formatAddress,
  formatIPv6,
  isIPv4,
  isIPv6,
  makeAddress,
  parseHostPort,
  parseIPv6,
  writeAddress,
} from '../src/protocol/address.js';

const VECTORS: { name: string; address: Address; hex: string }[] = [
  { name: 'IPv4', address: { type: 'ipv4', host: '1.2.3.4', port: 80 }, hex: '01' + '01020304' + '0050' },
  { name: 'IPv4 port 0', address: { type: 'ipv4', host: '0.0.0.0', port: 0 }, hex: '01' + '00000000' + '0000' },
  { name: 'IPv4 port 65535', address: { type: 'ipv4', host: '255.255.255.255', port: 65535 }, hex: '01' + 'ffffffff' + 'ffff' },
  { name: 'IPv6 loopback', address: { type: 'ipv6', host: '::1', port: 443 }, hex: '04' + '00000000000000000000000000000001' + '01bb' },
  { name: 'IPv6 documentation', address: { type: 'ipv6', host: '2001:db8::8a2e:370:7334', port: 8080 }, hex: '04' + '20010db80000000000008a2e03707334' + '1f90' },
  { name: 'IPv6 unspecified', address: { type: 'ipv6', host: '::', port: 1 }, hex: '04' + '00'.repeat(16) + '0001' },
  { name: 'domain', address: { type: 'domain', host: 'example.com', port: 443 }, hex: '03' + '0b' + Buffer.from('example.com').toString('hex') + '01bb' },
  { name: 'one-letter domain', address: { type: 'domain', host: 'a', port: 53 }, hex: '03' + '01' + '61' + '0035' },
  { name: 'UTF-8 domain (length in bytes)', address: { type: 'domain', host: 'é.fr', port: 80 }, hex: '03' + '05' + 'c3a92e6672' + '0050' },
];

describe('hex vectors', () => {
  it.each(VECTORS)('$name encodes and decodes', ({ address, hex }) => {
    const bytes = encodeAddress(address);
    expect(bytes.toString('hex')).toBe(hex);
    expect(encodedAddressSize(address)).toBe(bytes.length);
    expect(decodeAddress(Buffer.from(hex, 'hex'))).toEqual({ address, bytesRead: bytes.length });
  });

  it.each(VECTORS)('$name decodes at an offset, with trailing bytes, and writes at an offset', ({ address, hex }) => {
    const inner = Buffer.from(hex, 'hex');
    const buf = Buffer.concat([Buffer.from([0xaa, 0xbb, 0xcc]), inner, Buffer.from([0xdd, 0xee])]);
    expect(decodeAddress(buf, 3)).toEqual({ address, bytesRead: inner.length });
    // a subarray view whose byteOffset is not 0 (the domain path reads the underlying ArrayBuffer)
    expect(decodeAddress(buf.subarray(3)).address).toEqual(address);
    const out = Buffer.alloc(inner.length + 4, 0x77);
    expect(writeAddress(address, out, 2)).toBe(inner.length);
    expect(out.subarray(2, 2 + inner.length)).toEqual(inner);
    expect(out.subarray(0, 2)).toEqual(Buffer.from([0x77, 0x77]));
    expect(out.subarray(2 + inner.length)).toEqual(Buffer.from([0x77, 0x77]));
  });

  it('makeAddress chooses the type, strips brackets and normalises IPv6', () => {
    expect(makeAddress('1.2.3.4', 80)).toEqual({ type: 'ipv4', host: '1.2.3.4', port: 80 });
    expect(makeAddress('[2001:DB8:0:0::1]', 80)).toEqual({ type: 'ipv6', host: '2001:db8::1', port: 80 });
    expect(makeAddress('example.com', 80)).toEqual({ type: 'domain', host: 'example.com', port: 80 });
    expect(makeAddress('01.2.3.4', 80).type).toBe('domain'); // not a canonical IPv4 literal
  });

  it('parseHostPort / formatAddress round trip', () => {
    for (const s of ['1.2.3.4:80', '[::1]:443', '[2001:db8::1]:8080', 'example.com:0', 'localhost:65535']) {
      expect(formatAddress(parseHostPort(s))).toBe(s);
    }
    expect(parseHostPort('[::FFFF:1.2.3.4]:1')).toEqual({ type: 'ipv6', host: '::ffff:102:304', port: 1 });
  });
});

describe('byte-at-a-time truncation', () => {
  it.each(VECTORS)('$name: every proper prefix is ADDRESS_TRUNCATED, the whole decodes', ({ address, hex }) => {
    const whole = Buffer.from(hex, 'hex');
    const acc: number[] = [];
    let decoded = null;
    for (const byte of whole) {
      expect(decoded).toBeNull();
      acc.push(byte);
      try {
        decoded = decodeAddress(Buffer.from(acc));
      } catch (e) {
        expect(e).toBeInstanceOf(BrookError);
        expect((e as BrookError).code).toBe(ErrorCodes.ADDRESS_TRUNCATED);
      }
    }
    expect(decoded).toEqual({ address, bytesRead: whole.length });
    expect(acc.length).toBe(whole.length);
  });

  it('an offset at or past the end is ADDRESS_TRUNCATED', () => {
    const b = Buffer.from('0101020304', 'hex');
    for (const off of [5, 6]) {
      try {
        decodeAddress(b, off);
        expect.fail('must throw');
      } catch (e) {
        expect((e as BrookError).code).toBe(ErrorCodes.ADDRESS_TRUNCATED);
      }
    }
  });
});

describe('IPv6 text forms against node:net', () => {
  const VALID = [
    '::',
    '::1',
    '1::',
    '::ffff:1.2.3.4',
    '::1.2.3.4',
    '1:2:3:4:5:6:1.2.3.4',
    '1:2:3:4:5::1.2.3.4',
    '2001:db8::8a2e:370:7334',
    '2001:DB8::1',
    '2001:0db8:0000:0000:0000:0000:0000:0001',
    '1:2:3:4:5:6:7:8',
    '1:2:3:4:5:6:7::',
    '::2:3:4:5:6:7:8',
    '1::3:4:5:6:7:8',
    '1:2:3:4:5:6::8',
    '0:0:0:0:0:0:0:0',
    '::0:0',
    '0001::1',
    'fe80::1%eth0',
    'fe80::1%25',
    'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff',
  ];
  const INVALID = [
    '',
    '1.2.3.4',
    '[::1]',
    ' ::1',
    '::1 ',
    ':::',
    '1:::2',
    '1::2::3',
    ':1::2',
    '1::2:',
    '12345::',
    '00000::1',
    'g::1',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8:9',
    '::1:2:3:4:5:6:7:8',
    '1:2:3:4:5:6:7:1.2.3.4',
    '1:2:3:4:5:6::1.2.3.4',
    '::ffff:01.2.3.4',
    '::ffff:1.2.3',
    '::ffff:256.1.1.1',
    '::ffff:1.2.3.4:5',
    'fe80::1%',
  ];

  it.each(VALID)('%s is valid for both', (s) => {
    expect(nodeIsIPv6(s)).toBe(true);
    expect(isIPv6(s)).toBe(true);
  });

  it.each(INVALID)('%j is invalid for both', (s) => {
    expect(nodeIsIPv6(s)).toBe(false);
    expect(isIPv6(s)).toBe(false);
  });

  it.each(VALID)('%s: parsed bytes name the same address as node (BlockList), formatted text is canonical', (s) => {
    const text = formatIPv6(parseIPv6(s));
    expect(nodeIsIPv6(text)).toBe(true);
    const bl = new BlockList();
    bl.addAddress(text, 'ipv6');
    expect(bl.check(s.replace(/%.*$/, ''), 'ipv6')).toBe(true);
    expect(formatIPv6(parseIPv6(text))).toBe(text); // idempotent
    expect(text).toBe(text.toLowerCase());
  });

  it('RFC 5952 formatting: longest zero run, first on a tie, never a single group', () => {
    const cases: [string, string][] = [
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
      ['2001:0db8:0:0:0:0:2:1', '2001:db8::2:1'],
      ['1:0:1:0:1:0:1:0', '1:0:1:0:1:0:1:0'],
      ['1:2:3:0:5:6:7:8', '1:2:3:0:5:6:7:8'],
      ['1:0:0:4:0:0:0:8', '1:0:0:4::8'],
      ['0:0:0:0:0:0:0:0', '::'],
      ['1:0:0:0:0:0:0:0', '1::'],
      ['0:0:0:0:0:0:0:1', '::1'],
      ['ABCD:EF01::', 'abcd:ef01::'],
    ];
    for (const [input, want] of cases) expect(formatIPv6(parseIPv6(input))).toBe(want);
  });

  it('IPv4 literals agree with node:net (canonical dotted decimal only)', () => {
    const cases = ['1.2.3.4', '0.0.0.0', '255.255.255.255', '256.1.1.1', '01.2.3.4', '1.2.3', '1.2.3.4.5', '1.2.3.', ' 1.2.3.4', '1.2.3.4 ', '0x1.2.3.4', '1..3.4'];
    for (const s of cases) expect([s, isIPv4(s)]).toEqual([s, nodeIsIPv4(s)]);
  });

  it('a hand-built ipv4 Address with a non-literal host is refused on encode', () => {
    const codes = ['1.2.3.', '0x1.2.3.4', ' 1.2.3.4', '1.2.3.4.5', '1e0.2.3.4'].map((host) => {
      try {
        return [host, encodeAddress({ type: 'ipv4', host, port: 1 }).toString('hex')];
      } catch (e) {
        return [host, (e as BrookError).code];
      }
    });
    for (const [host, code] of codes) expect([host, code]).toEqual([host, ErrorCodes.ADDRESS_INVALID]);
  });
});
