/**
 * Upstream Brook's own traffic (test/fixtures): recover everything from the raw
 * bytes and the password alone, then re-encode with the captured nonces and
 * time and reproduce upstream's bytes exactly.
 */
import { describe, expect, it } from 'vitest';
import { decodeAddress, encodeAddress, parseHostPort } from '../src/protocol/address.js';
import { deriveKey } from '../src/protocol/cipher.js';
import { createClientCodec, createServerCodec } from '../src/protocol/session.js';
import { parseFirstPayload } from '../src/protocol/header.js';
import { NONCE_SIZE, WOB_LENGTH_SIZE, WOB_PASSWORD_SIZE } from '../src/protocol/sizes.js';
import { wobPasswordHash } from '../src/protocol/wob.js';
import { buildUpgradeRequest, buildUpgradeResponse, parseUpgradeResponse } from '../src/protocol/upgrade.js';
import { loadVector, VECTOR_NAMES } from './helpers/vectors.js';

const hex = (s: string) => Buffer.from(s, 'hex');

/** A random source that hands out the given buffers in order. */
function replay(...bufs: Buffer[]) {
  let i = 0;
  return (size: number) => {
    const b = bufs[i++];
    if (!b || b.length !== size) throw new Error(`unexpected random(${size})`);
    return Buffer.from(b);
  };
}

/** Split `buf` into chunks according to `sizes` (cycled), for chunking tests. */
export function chunked(buf: Buffer, next: () => number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < buf.length; ) {
    const n = Math.max(1, Math.min(buf.length - i, next()));
    out.push(buf.subarray(i, i + n));
    i += n;
  }
  return out;
}

function seeded(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s;
  };
}

describe.each(VECTOR_NAMES)('upstream capture %s', (name) => {
  const v = loadVector(name);
  const c2s = hex(v.after_upgrade_client_to_server_hex);
  const s2c = hex(v.after_upgrade_server_to_client_hex);
  const wob = v.withoutBrookProtocol;
  const dst = parseHostPort(v.dst);

  it('handshake bytes are exactly what we build', () => {
    const key = /Sec-WebSocket-Key: (\S+)\r\n/.exec(v.ws_upgrade_request_text)![1]!;
    const host = /Host: (\S+)\r\n/.exec(v.ws_upgrade_request_text)![1]!;
    const req = buildUpgradeRequest({ host, path: '/ws', key });
    expect(req.toString('latin1')).toBe(v.ws_upgrade_request_text);
    expect(hex(v.client_to_server_hex).subarray(0, req.length)).toEqual(req);
    const res = buildUpgradeResponse(key);
    expect(res.toString('latin1')).toBe(v.ws_upgrade_response_text);
    const all = hex(v.server_to_client_hex);
    const parsed = parseUpgradeResponse(all, key)!;
    expect(parsed.status).toBe(101);
    expect(all.subarray(parsed.headLength)).toEqual(s2c);
    expect(encodeAddress(dst)).toEqual(hex(v.dst_socks5_bytes_hex));
    expect(decodeAddress(hex(v.dst_socks5_bytes_hex)).address).toEqual(dst);
  });

  function decodeServerSide(chunks: Buffer[]) {
    const server = createServerCodec({ password: v.password, withoutBrookProtocol: wob, now: () => v.decoded.time * 1000 });
    const payloads: Buffer[] = [];
    let header = null;
    for (const c of chunks) header = server.push(c, (p) => payloads.push(p)) ?? header;
    server.end();
    return { server, header, payloads };
  }

  function decodeClientSide(chunks: Buffer[]) {
    const client = createClientCodec({
      password: v.password,
      withoutBrookProtocol: wob,
      network: v.decoded.network,
      destination: dst,
      now: () => v.decoded.time * 1000,
      random: replay(Buffer.alloc(NONCE_SIZE)),
    });
    const payloads: Buffer[] = [];
    for (const c of chunks) client.push(c, (p) => payloads.push(p));
    client.end();
    return payloads;
  }

  it('decodes the client stream: header (time, network, destination) and payloads', () => {
    const { header, payloads } = decodeServerSide([c2s]);
    expect(header).toEqual({ time: v.decoded.time, network: v.decoded.network, destination: dst });
    expect(Buffer.concat(payloads).toString('latin1')).toBe(v.decoded.c2s_frames.join(''));
    if (v.decoded.network === 'udp') expect(payloads.map((p) => p.toString('latin1'))).toEqual(v.decoded.c2s_frames);
  });

  it('decodes the server stream', () => {
    const payloads = decodeClientSide([s2c]);
    expect(Buffer.concat(payloads).toString('latin1')).toBe(v.decoded.s2c_frames.join(''));
    if (v.decoded.network === 'udp') expect(payloads.map((p) => p.toString('latin1'))).toEqual(v.decoded.s2c_frames);
  });

  it('recovers the preamble: nonces and keys, or the password hash and header length', () => {
    if (wob) {
      expect(c2s.subarray(0, WOB_PASSWORD_SIZE)).toEqual(wobPasswordHash(v.password));
      const l = c2s.readUInt16BE(WOB_PASSWORD_SIZE);
      const body = c2s.subarray(WOB_PASSWORD_SIZE + WOB_LENGTH_SIZE, WOB_PASSWORD_SIZE + WOB_LENGTH_SIZE + l);
      expect(parseFirstPayload(body, { now: () => v.decoded.time * 1000 })).toEqual({ time: v.decoded.time, network: v.decoded.network, destination: dst });
      return;
    }
    const clientNonce = c2s.subarray(0, NONCE_SIZE);
    const serverNonce = s2c.subarray(0, NONCE_SIZE);
    expect(clientNonce.toString('hex')).toBe(v.decoded['client_nonce_hex']);
    expect(serverNonce.toString('hex')).toBe(v.decoded['server_nonce_hex']);
    expect(deriveKey(Buffer.from(v.password), clientNonce).toString('hex')).toBe(v.decoded['client_key_hex']);
    expect(deriveKey(Buffer.from(v.password), serverNonce).toString('hex')).toBe(v.decoded['server_key_hex']);
  });

  it('re-encodes both directions byte for byte with the captured nonces and time', () => {
    const clientNonce = wob ? Buffer.alloc(0) : c2s.subarray(0, NONCE_SIZE);
    const serverNonce = wob ? Buffer.alloc(0) : s2c.subarray(0, NONCE_SIZE);
    const client = createClientCodec({
      password: v.password,
      withoutBrookProtocol: wob,
      network: v.decoded.network,
      destination: dst,
      now: () => v.decoded.time * 1000,
      random: replay(clientNonce),
    });
    const out = [client.hello(), ...v.decoded.c2s_frames.map((f) => client.seal(Buffer.from(f, 'latin1')))];
    expect(Buffer.concat(out).toString('hex')).toBe(c2s.toString('hex'));

    const server2 = createServerCodec({
      password: v.password,
      withoutBrookProtocol: wob,
      now: () => v.decoded.time * 1000,
      random: replay(serverNonce),
    });
    server2.push(c2s, () => {});
    const s = [server2.accept(), ...v.decoded.s2c_frames.map((f) => server2.seal(Buffer.from(f, 'latin1')))];
    expect(Buffer.concat(s).toString('hex')).toBe(s2c.toString('hex'));
  });

  it('decodes identically fed one byte at a time and in random chunkings', () => {
    const whole = decodeServerSide([c2s]);
    const wholeS2c = decodeClientSide([s2c]);
    const oneByte = () => 1;
    const runs = [oneByte, ...[1, 2, 3, 4, 5, 6, 7, 8].map((seed) => {
      const r = seeded(seed);
      return () => 1 + (r() % 40);
    })];
    for (const next of runs) {
      const d = decodeServerSide(chunked(c2s, next));
      expect(d.header).toEqual(whole.header);
      expect(Buffer.concat(d.payloads)).toEqual(Buffer.concat(whole.payloads));
      if (v.decoded.network === 'udp') expect(d.payloads).toEqual(whole.payloads);
      const e = decodeClientSide(chunked(s2c, next));
      expect(Buffer.concat(e)).toEqual(Buffer.concat(wholeS2c));
    }
  });
});
