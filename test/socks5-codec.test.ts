import { describe, expect, it } from 'vitest';
import { BrookError, ErrorCodes, type ErrorCode } from '../src/errors.js';
import {
  buildMethodReply,
  buildReply,
  buildUdpHeader,
  buildUserPassReply,
  chooseMethod,
  parseGreeting,
  parseRequest,
  parseUdpHeader,
  parseUserPassAuth,
  Socks5Command,
  Socks5Method,
  type Parsed,
} from '../src/socks5/codec.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** Feed `bytes` one byte at a time: null for every strict prefix, a value at the full length. */
function byteAtATime<T>(parse: (b: Buffer) => Parsed<T> | null, bytes: Buffer): Parsed<T> {
  for (let i = 0; i < bytes.length; i++) {
    expect(parse(bytes.subarray(0, i)), `prefix of ${i} bytes`).toBeNull();
  }
  const full = parse(bytes);
  expect(full).not.toBeNull();
  expect(full!.bytesRead).toBe(bytes.length);
  // trailing bytes (pipelined data) are not consumed
  const withTail = parse(Buffer.concat([bytes, hex('deadbeef')]));
  expect(withTail!.bytesRead).toBe(bytes.length);
  return full!;
}

function codeOf(f: () => unknown): ErrorCode | undefined {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(BrookError);
    return (e as BrookError).code;
  }
  return undefined;
}

describe('greeting', () => {
  it('parses byte at a time', () => {
    const g = byteAtATime(parseGreeting, hex('05 02 00 02'));
    expect(g.value.methods).toEqual([0x00, 0x02]);
  });
  it('accepts an empty method list (which selects nothing)', () => {
    const g = byteAtATime(parseGreeting, hex('05 00'));
    expect(g.value.methods).toEqual([]);
    expect(chooseMethod(g.value.methods, false)).toBe(Socks5Method.NO_ACCEPTABLE);
  });
  it('rejects a wrong version as soon as the first byte arrives', () => {
    expect(codeOf(() => parseGreeting(hex('04')))).toBe(ErrorCodes.SOCKS_VERSION);
    expect(codeOf(() => parseGreeting(hex('04 01 00')))).toBe(ErrorCodes.SOCKS_VERSION);
  });
  it('chooses the method', () => {
    expect(chooseMethod([0x00], false)).toBe(0x00);
    expect(chooseMethod([0x02, 0x00], true)).toBe(0x02);
    expect(chooseMethod([0x00], true)).toBe(0xff);
    expect(chooseMethod([0x02], false)).toBe(0xff);
    expect(chooseMethod([0x01], false)).toBe(0xff);
    expect(buildMethodReply(0x02)).toEqual(hex('05 02'));
    expect(buildMethodReply(0xff)).toEqual(hex('05 ff'));
  });
});

describe('RFC 1929 username/password', () => {
  it('parses byte at a time', () => {
    const a = byteAtATime(parseUserPassAuth, hex('01 04 75736572 06 736563726574'));
    expect(a.value.username.toString()).toBe('user');
    expect(a.value.password.toString()).toBe('secret');
  });
  it('parses empty fields', () => {
    const a = byteAtATime(parseUserPassAuth, hex('01 00 00'));
    expect(a.value.username.length).toBe(0);
    expect(a.value.password.length).toBe(0);
  });
  it('rejects a wrong sub-negotiation version', () => {
    expect(codeOf(() => parseUserPassAuth(hex('05')))).toBe(ErrorCodes.SOCKS_VERSION);
  });
  it('builds the reply', () => {
    expect(buildUserPassReply(true)).toEqual(hex('01 00'));
    expect(buildUserPassReply(false)).toEqual(hex('01 01'));
  });
});

describe('request', () => {
  it('parses an IPv4 CONNECT byte at a time', () => {
    const r = byteAtATime(parseRequest, hex('05 01 00 01 7f000001 1f90'));
    expect(r.value).toEqual({ command: Socks5Command.CONNECT, destination: { type: 'ipv4', host: '127.0.0.1', port: 8080 } });
  });
  it('parses an IPv6 UDP ASSOCIATE byte at a time', () => {
    const r = byteAtATime(parseRequest, hex('05 03 00 04 00000000000000000000000000000001 0035'));
    expect(r.value).toEqual({ command: Socks5Command.UDP_ASSOCIATE, destination: { type: 'ipv6', host: '::1', port: 53 } });
  });
  it('parses a domain BIND byte at a time', () => {
    const r = byteAtATime(parseRequest, hex('05 02 00 03 0b 6578616d706c652e636f6d 01bb'));
    expect(r.value).toEqual({ command: Socks5Command.BIND, destination: { type: 'domain', host: 'example.com', port: 443 } });
  });
  it('throws stable codes for bad input', () => {
    expect(codeOf(() => parseRequest(hex('04')))).toBe(ErrorCodes.SOCKS_VERSION);
    expect(codeOf(() => parseRequest(hex('05 09')))).toBe(ErrorCodes.SOCKS_COMMAND);
    expect(codeOf(() => parseRequest(hex('05 00 00 01 7f000001 0050')))).toBe(ErrorCodes.SOCKS_COMMAND);
    expect(codeOf(() => parseRequest(hex('05 01 00 05')))).toBe(ErrorCodes.ATYP_UNKNOWN);
    expect(codeOf(() => parseRequest(hex('05 01 00 03 00 0050')))).toBe(ErrorCodes.SOCKS_MALFORMED);
  });
  it('builds replies', () => {
    expect(buildReply(0x00)).toEqual(hex('05 00 00 01 00000000 0000'));
    expect(buildReply(0x05)).toEqual(hex('05 05 00 01 00000000 0000'));
    expect(buildReply(0x00, { type: 'ipv4', host: '127.0.0.1', port: 1080 })).toEqual(hex('05 00 00 01 7f000001 0438'));
    expect(buildReply(0x00, { type: 'ipv6', host: '::1', port: 1080 })).toEqual(
      hex('05 00 00 04 00000000000000000000000000000001 0438'),
    );
    expect(buildReply(0x00, { type: 'domain', host: 'a.b', port: 1 })).toEqual(hex('05 00 00 03 03 612e62 0001'));
  });
});

describe('UDP header', () => {
  it('round-trips IPv4, IPv6 and domain', () => {
    const data = Buffer.from('payload');
    for (const address of [
      { type: 'ipv4', host: '10.1.2.3', port: 53 },
      { type: 'ipv6', host: '2001:db8::1', port: 5353 },
      { type: 'domain', host: 'example.com', port: 443 },
    ] as const) {
      const wire = buildUdpHeader(address, data);
      const h = parseUdpHeader(wire);
      expect(h).toEqual({ frag: 0, address, data });
    }
    expect(buildUdpHeader({ type: 'ipv4', host: '127.0.0.1', port: 80 }, Buffer.from('hi'))).toEqual(
      hex('0000 00 01 7f000001 0050 6869'),
    );
  });
  it('parses an empty payload and returns a view', () => {
    const wire = hex('0000 00 01 7f000001 0050');
    const h = parseUdpHeader(wire);
    expect(h.data.length).toBe(0);
    const wire2 = hex('0000 00 01 7f000001 0050 41');
    expect(parseUdpHeader(wire2).data.buffer).toBe(wire2.buffer);
  });
  it('throws stable codes for bad datagrams', () => {
    const full = hex('0000 00 01 7f000001 0050');
    for (let i = 0; i < full.length; i++) {
      expect(codeOf(() => parseUdpHeader(full.subarray(0, i))), `truncated at ${i}`).toBe(ErrorCodes.ADDRESS_TRUNCATED);
    }
    expect(codeOf(() => parseUdpHeader(hex('0000 01 01 7f000001 0050')))).toBe(ErrorCodes.SOCKS_UDP_FRAG);
    expect(codeOf(() => parseUdpHeader(hex('0000 00 07 7f000001 0050')))).toBe(ErrorCodes.ATYP_UNKNOWN);
    expect(codeOf(() => parseUdpHeader(hex('0000 00 03 00 0050')))).toBe(ErrorCodes.SOCKS_MALFORMED);
  });
});
