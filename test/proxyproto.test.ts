/**
 * PROXY protocol codec (src/server/proxyproto.ts): v1 and v2 vectors as
 * HAProxy writes them, byte-at-a-time feeding, every refusal with its code;
 * --trustedProxies parsing and the client-address rules (src/server/clientaddr.ts).
 */
import { describe, expect, it } from 'vitest';
import { ErrorCodes, isBrookError } from '../src/errors.js';
import { clientAddress, TrustedProxies } from '../src/server/clientaddr.js';
import { decodeProxyHeader, encodeProxyV1, MAX_PROXY_HEADER_SIZE, type ProxyDecode, V1_MAX_SIZE, V2_MAX_PAYLOAD } from '../src/server/proxyproto.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const SIG = '0d0a0d0a000d0a515549540a';
/** send-proxy-v2 of 192.0.2.10:51000 -> 127.0.0.1:443 */
const V2_TCP4 = hex(`${SIG} 21 11 000c c000020a 7f000001 c738 01bb`);
/** send-proxy-v2 of [2001:db8::1]:40000 -> [::1]:8443, with a 4-byte NOOP TLV after the addresses */
const V2_TCP6_TLV = hex(`${SIG} 21 21 0028 20010db8000000000000000000000001 00000000000000000000000000000001 9c40 20fb 04 0001 00`);
/** HAProxy's health check: LOCAL, UNSPEC */
const V2_LOCAL = hex(`${SIG} 20 00 0000`);

function throwsCode(buf: Uint8Array, code: string): void {
  try {
    decodeProxyHeader(buf);
  } catch (e) {
    expect(isBrookError(e)).toBe(true);
    expect((e as { code: string }).code).toBe(code);
    return;
  }
  throw new Error('did not throw');
}

/** Feed one byte at a time: { done: false } until the last byte of the header. */
function byteAtATime(stream: Buffer): { result: ProxyDecode; fedBytes: number } {
  for (let n = 1; n <= stream.length; n++) {
    const r = decodeProxyHeader(stream.subarray(0, n));
    if (r.done) return { result: r, fedBytes: n };
  }
  return { result: { done: false }, fedBytes: stream.length };
}

describe('PROXY v1', () => {
  it('TCP4 and TCP6 lines, with the request bytes after them left alone', () => {
    const line = Buffer.from('PROXY TCP4 192.0.2.10 127.0.0.1 51000 9999\r\n');
    const r = decodeProxyHeader(Buffer.concat([line, Buffer.from('GET / HTTP/1.1\r\n')]));
    expect(r).toEqual({
      done: true,
      length: line.length,
      header: { version: 1, command: 'proxy', source: { address: '192.0.2.10', port: 51000 }, destination: { address: '127.0.0.1', port: 9999 } },
    });
    const six = encodeProxyV1({ address: '2001:db8::1', port: 1 }, { address: '::1', port: 65535 });
    expect(six.toString()).toBe('PROXY TCP6 2001:db8::1 ::1 1 65535\r\n');
    const r6 = decodeProxyHeader(six);
    expect(r6.done && r6.header.source).toEqual({ address: '2001:db8::1', port: 1 });
  });

  it('UNKNOWN carries no address', () => {
    const r = decodeProxyHeader(Buffer.from('PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n'));
    expect(r.done && r.header).toEqual({ version: 1, command: 'proxy', source: null, destination: null });
  });

  it('byte at a time: complete exactly at the LF', () => {
    const line = Buffer.from('PROXY TCP4 10.1.2.3 10.0.0.1 1234 80\r\n');
    const { result, fedBytes } = byteAtATime(Buffer.concat([line, Buffer.from('xyz')]));
    expect(fedBytes).toBe(line.length);
    expect(result.done && result.header.source).toEqual({ address: '10.1.2.3', port: 1234 });
  });

  it('refuses malformed lines with BROOK_ERR_PROXY_HEADER_INVALID', () => {
    const bad = [
      'GET / HTTP/1.1\r\n', // no header at all
      'PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n',
      'PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n',
      'PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\n',
      'PROXY TCP4 ::1 ::1 1 2\r\n',
      'PROXY TCP6 1.2.3.4 ::1 1 2\r\n',
      'PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n',
      'PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n',
      'PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n', // LF without CR
      'PROXY TCP4 1.2.3.4\t1.2.3.4 1 2\r\n',
      'proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n',
    ];
    for (const b of bad) throwsCode(Buffer.from(b), ErrorCodes.PROXY_HEADER_INVALID);
  });

  it('a line without CRLF within 107 bytes is refused at byte 107, not buffered further', () => {
    const long = Buffer.from('PROXY UNKNOWN ' + 'a'.repeat(200));
    expect(decodeProxyHeader(long.subarray(0, V1_MAX_SIZE - 1))).toEqual({ done: false });
    throwsCode(long.subarray(0, V1_MAX_SIZE), ErrorCodes.PROXY_HEADER_INVALID);
  });

  it('the first wrong byte is enough to refuse (no waiting for more)', () => {
    throwsCode(Buffer.from('G'), ErrorCodes.PROXY_HEADER_INVALID);
    throwsCode(Buffer.from('PROXX'), ErrorCodes.PROXY_HEADER_INVALID);
    throwsCode(Buffer.from([0x16, 0x03, 0x01]), ErrorCodes.PROXY_HEADER_INVALID); // a TLS ClientHello
    expect(decodeProxyHeader(Buffer.from('PROX'))).toEqual({ done: false });
  });
});

describe('PROXY v2', () => {
  it('TCP4 as send-proxy-v2 writes it', () => {
    const r = decodeProxyHeader(Buffer.concat([V2_TCP4, Buffer.from('GET')]));
    expect(r).toEqual({
      done: true,
      length: V2_TCP4.length,
      header: { version: 2, command: 'proxy', source: { address: '192.0.2.10', port: 51000 }, destination: { address: '127.0.0.1', port: 443 } },
    });
  });

  it('TCP6 with a TLV after the addresses (skipped)', () => {
    const r = decodeProxyHeader(V2_TCP6_TLV);
    expect(r.done && r.length).toBe(V2_TCP6_TLV.length);
    expect(r.done && r.header.source).toEqual({ address: '2001:db8::1', port: 40000 });
    expect(r.done && r.header.destination).toEqual({ address: '::1', port: 8443 });
  });

  it('LOCAL (health check) and UNSPEC carry no address', () => {
    const r = decodeProxyHeader(V2_LOCAL);
    expect(r.done && r.header).toEqual({ version: 2, command: 'local', source: null, destination: null });
  });

  it('byte at a time', () => {
    for (const v of [V2_TCP4, V2_TCP6_TLV, V2_LOCAL]) {
      const { result, fedBytes } = byteAtATime(Buffer.concat([v, Buffer.from([0x16, 0x03])]));
      expect(result.done).toBe(true);
      expect(fedBytes).toBe(v.length);
    }
  });

  it('refuses bad version, command, family, short blocks and oversized lengths', () => {
    throwsCode(hex(`${SIG} 11 11 000c`), ErrorCodes.PROXY_HEADER_INVALID); // version 1 in a v2 header
    throwsCode(hex(`${SIG} 22`), ErrorCodes.PROXY_HEADER_INVALID); // command 2
    throwsCode(hex(`${SIG} 21 41`), ErrorCodes.PROXY_HEADER_INVALID); // family 4
    throwsCode(hex(`${SIG} 21 13`), ErrorCodes.PROXY_HEADER_INVALID); // transport 3
    throwsCode(hex(`${SIG} 21 11 0008 0102030405060708`), ErrorCodes.PROXY_HEADER_INVALID); // IPv4 needs 12
    throwsCode(hex(`${SIG} 21 12 000c c000020a 7f000001 c738 01bb`), ErrorCodes.PROXY_HEADER_INVALID); // UDP
    const len = (V2_MAX_PAYLOAD + 1).toString(16).padStart(4, '0');
    throwsCode(hex(`${SIG} 21 11 ${len}`), ErrorCodes.PROXY_HEADER_INVALID); // refused before the payload is buffered
    throwsCode(hex('0d0a0d0a000d0a5155495400'), ErrorCodes.PROXY_HEADER_INVALID); // signature's last byte wrong
  });

  it('never needs more than MAX_PROXY_HEADER_SIZE bytes', () => {
    const len = V2_MAX_PAYLOAD.toString(16).padStart(4, '0');
    const big = Buffer.concat([hex(`${SIG} 21 11 ${len}`), Buffer.alloc(V2_MAX_PAYLOAD)]);
    expect(big.length).toBe(MAX_PROXY_HEADER_SIZE);
    const r = decodeProxyHeader(big);
    expect(r.done && r.length).toBe(MAX_PROXY_HEADER_SIZE);
  });
});

describe('--trustedProxies and the client address', () => {
  it('parses addresses and CIDRs of both families; a bad entry is a CONFIG error naming it', () => {
    const t = new TrustedProxies('127.0.0.1, 10.0.0.0/8,::1,fd00::/8');
    expect(t.has('127.0.0.1')).toBe(true);
    expect(t.has('::ffff:127.0.0.1')).toBe(true); // IPv4-mapped peer of a dual-stack socket
    expect(t.has('10.200.3.4')).toBe(true);
    expect(t.has('11.0.0.1')).toBe(false);
    expect(t.has('fd12::5')).toBe(true);
    expect(t.has('fe80::1')).toBe(false);
    expect(t.has('not-an-ip')).toBe(false);
    for (const bad of ['', '1.2.3.4/33', 'example.com', '::1/129', '1.2.3.4/x', 'fe80::1%eth0']) {
      expect(() => new TrustedProxies(bad)).toThrow(/--trustedProxies/);
    }
  });

  const peer = { address: '127.0.0.1', port: 50000 };
  const trusted = new TrustedProxies('127.0.0.1,10.0.0.0/8');

  it('no flags: the peer (or the PROXY source); X-Forwarded-For ignored', () => {
    expect(clientAddress(peer, null, '6.6.6.6', { trusted: null, xForwardedFor: false })).toBe('127.0.0.1:50000');
    expect(clientAddress({ address: '::1', port: 5 }, null, undefined, { trusted: null, xForwardedFor: false })).toBe('[::1]:5');
    expect(clientAddress(peer, { address: '192.0.2.1', port: 7 }, undefined, { trusted: null, xForwardedFor: false })).toBe('192.0.2.1:7');
  });

  it("--xForwardedFor alone: upstream's first entry, from anyone", () => {
    expect(clientAddress({ address: '8.8.8.8', port: 1 }, null, '6.6.6.6, 192.0.2.1', { trusted: null, xForwardedFor: true })).toBe('6.6.6.6');
  });

  it('--trustedProxies: X-Forwarded-For walked from the right past trusted proxies; untrusted peers not believed', () => {
    const rules = { trusted, xForwardedFor: false };
    // nginx appended the real client; a forged entry on the left is never reached
    expect(clientAddress(peer, null, '6.6.6.6, 192.0.2.1', rules)).toBe('192.0.2.1');
    // two trusted hops
    expect(clientAddress(peer, null, '192.0.2.1, 10.1.1.1', rules)).toBe('192.0.2.1');
    // an untrusted peer's header is ignored
    expect(clientAddress({ address: '8.8.8.8', port: 9 }, null, '192.0.2.1', rules)).toBe('8.8.8.8:9');
    // with --xForwardedFor too: the same rule
    expect(clientAddress({ address: '8.8.8.8', port: 9 }, null, '192.0.2.1', { trusted, xForwardedFor: true })).toBe('8.8.8.8:9');
    // PROXY source trusted (a CDN address in the list): its X-Forwarded-For goes on
    expect(clientAddress(peer, { address: '10.9.9.9', port: 3 }, '192.0.2.7', rules)).toBe('192.0.2.7');
    // PROXY source not trusted: it is the client, its X-Forwarded-For is not believed
    expect(clientAddress(peer, { address: '192.0.2.8', port: 3 }, '6.6.6.6', rules)).toBe('192.0.2.8:3');
    // garbage in the chain stops the walk at the last trusted hop
    expect(clientAddress(peer, null, '192.0.2.1, junk, 10.1.1.1', rules)).toBe('10.1.1.1');
    // ports and brackets in entries
    expect(clientAddress(peer, null, '192.0.2.1:4444', rules)).toBe('192.0.2.1');
    expect(clientAddress(peer, null, '[2001:db8::5]:4444', rules)).toBe('2001:db8::5');
  });
});
