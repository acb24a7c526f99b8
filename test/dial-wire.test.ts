/**
 * Hostile bytes from the network: DNS replies (ids, questions, sizes,
 * garbage, CNAME loops) and a scripted SOCKS5 proxy (split replies, bytes of
 * the stream right after the reply, wrong versions and methods).
 */
import net from 'node:net';
import dnsPacket from 'dns-packet';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { TtlCache } from '../src/dial/cache.js';
import { createDialer } from '../src/dial/dialer.js';
import { encodeQuery, isTruncated, loadDnsCodec, looksLikeReplyTo, normalizeName, parseReply } from '../src/dial/dns-message.js';
import { dialConfigFromFlags } from '../src/dial/options.js';
import { ErrorCodes, isBrookError } from '../src/errors.js';

function reply(id: number, name: string, extra: Partial<dnsPacket.Packet> = {}, qtype: 'A' | 'AAAA' = 'A'): Buffer {
  return dnsPacket.encode({ type: 'response', id, flags: 0, questions: [{ type: qtype, name, class: 'IN' }], ...extra });
}

function dnsCode(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return isBrookError(e) ? e.code : 'other';
  }
  return 'ok';
}


beforeAll(() => loadDnsCodec());

describe('DNS reply checks', () => {
  const name = 'host.brook-ts.invalid';

  it('a good reply: addresses and the lowest TTL', () => {
    const r = reply(7, name, {
      answers: [
        { type: 'A', name, ttl: 50, data: '10.0.0.1' },
        { type: 'A', name, ttl: 20, data: '10.0.0.2' },
        { type: 'A', name: 'other.invalid', ttl: 1, data: '10.6.6.6' }, // not ours: ignored
      ],
    });
    expect(parseReply(r, 7, name, 'A')).toEqual({ addresses: ['10.0.0.1', '10.0.0.2'], ttl: 20, nxdomain: false });
  });

  it('not ours: wrong id, a query, another question, another type', () => {
    expect(looksLikeReplyTo(reply(8, name), 7)).toBe(false);
    expect(dnsCode(() => parseReply(reply(8, name), 7, name, 'A'))).toBe(ErrorCodes.DNS_FAILED);
    expect(dnsCode(() => parseReply(encodeQuery(7, name, 'A', false), 7, name, 'A'))).toBe(ErrorCodes.DNS_FAILED);
    expect(dnsCode(() => parseReply(reply(7, 'other.invalid'), 7, name, 'A'))).toBe(ErrorCodes.DNS_FAILED);
    expect(dnsCode(() => parseReply(reply(7, name, {}, 'AAAA'), 7, name, 'A'))).toBe(ErrorCodes.DNS_FAILED);
  });

  it('garbage, truncated records and oversize are DNS_FAILED, never a crash', () => {
    const good = reply(7, name, { answers: [{ type: 'A', name, ttl: 5, data: '10.0.0.1' }] });
    for (let cut = 12; cut < good.length; cut++) {
      expect(dnsCode(() => parseReply(good.subarray(0, cut), 7, name, 'A'))).toBe(ErrorCodes.DNS_FAILED);
    }
    const junk = Buffer.alloc(300, 0xc0);
    junk.writeUInt16BE(7, 0);
    junk.writeUInt16BE(0x8000, 2);
    junk.writeUInt16BE(1, 4);
    expect(dnsCode(() => parseReply(junk, 7, name, 'A'))).toBe(ErrorCodes.DNS_FAILED);
    expect(dnsCode(() => parseReply(good, 7, name, 'A', 20))).toBe(ErrorCodes.DNS_FAILED);
    expect(dnsCode(() => parseReply(Buffer.alloc(3), 7, name, 'A'))).toBe(ErrorCodes.DNS_FAILED);
  });

  it('SERVFAIL is an error; NXDOMAIN an empty answer with the SOA negative TTL', () => {
    expect(dnsCode(() => parseReply(reply(7, name, { flags: 2 }), 7, name, 'A'))).toBe(ErrorCodes.DNS_FAILED);
    const nx = reply(7, name, {
      flags: 3,
      authorities: [{ type: 'SOA', name: 'invalid', ttl: 900, data: { mname: 'a', rname: 'b', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 12 } }],
    });
    expect(parseReply(nx, 7, name, 'A')).toEqual({ addresses: [], ttl: 12, nxdomain: true });
  });

  it('a CNAME loop ends', () => {
    const r = reply(7, name, {
      answers: [
        { type: 'CNAME', name, ttl: 5, data: 'b.invalid' },
        { type: 'CNAME', name: 'b.invalid', ttl: 5, data: name },
      ],
    });
    expect(parseReply(r, 7, name, 'A').addresses).toEqual([]);
  });

  it('TC bit and name checks', () => {
    expect(isTruncated(reply(7, name, { flags: dnsPacket.TRUNCATED_RESPONSE }))).toBe(true);
    expect(isTruncated(reply(7, name))).toBe(false);
    expect(normalizeName('Host.Example.')).toBe('host.example');
    expect(dnsCode(() => normalizeName(''))).toBe(ErrorCodes.DNS_FAILED);
    expect(dnsCode(() => normalizeName('a'.repeat(250) + '.com'))).toBe(ErrorCodes.DNS_FAILED);
  });

  it('the cache stays bounded and forgets at expiry', () => {
    let now = 0;
    const c = new TtlCache<number>(3, () => now);
    for (let i = 0; i < 10; i++) c.set(`k${i}`, i, 1000);
    expect(c.size).toBe(3);
    expect(c.get('k9')).toBe(9);
    expect(c.get('k0')).toBeUndefined();
    now = 1000;
    expect(c.get('k9')).toBeUndefined();
    c.set('zero', 0, 0);
    expect(c.get('zero')).toBeUndefined();
  });
});

describe('SOCKS5 client against a scripted proxy', () => {
  const servers: net.Server[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await new Promise<void>((r) => s.close(() => r()));
  });

  /** A proxy that answers each client write with the next scripted chunk(s), written one byte at a time. */
  async function scripted(answers: Buffer[][]): Promise<number> {
    const srv = net.createServer((s) => {
      s.on('error', () => undefined);
      let step = 0;
      s.on('data', async () => {
        const out = answers[step++];
        if (!out) return;
        for (const chunk of out) {
          for (const b of chunk) {
            s.write(Buffer.from([b]));
            await new Promise((r) => setImmediate(r));
          }
        }
      });
      s.on('close', () => undefined);
    });
    servers.push(srv);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    return (srv.address() as net.AddressInfo).port;
  }

  const OK_REPLY = Buffer.from([5, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90]);

  it('a reply split byte by byte, with stream bytes right behind it: nothing lost', async () => {
    const port = await scripted([[Buffer.from([5, 0])], [Buffer.concat([OK_REPLY, Buffer.from('hello')])]]);
    const d = createDialer(dialConfigFromFlags({ dialWithSocks5: `127.0.0.1:${port}` }));
    const s = await d.connectTcp({ host: 'example.invalid', port: 80 }, { timeoutMs: 5000 });
    const got = await new Promise<string>((resolve) => {
      let t = '';
      s.on('data', (b: Buffer) => {
        t += b.toString();
        if (t.length >= 5) resolve(t);
      });
      s.resume();
    });
    expect(got).toBe('hello');
    s.destroy();
  });

  async function code(answers: Buffer[][]): Promise<string> {
    const port = await scripted(answers);
    const d = createDialer(dialConfigFromFlags({ dialWithSocks5: `127.0.0.1:${port}` }));
    try {
      (await d.connectTcp({ host: '127.0.0.1', port: 80 }, { timeoutMs: 3000 })).destroy();
      return 'ok';
    } catch (e) {
      return isBrookError(e) ? e.code : 'other';
    }
  }

  it('wrong version, unwanted method, failure replies: typed', async () => {
    expect(await code([[Buffer.from([4, 0])]])).toBe(ErrorCodes.SOCKS_VERSION);
    expect(await code([[Buffer.from([5, 2])]])).toBe(ErrorCodes.SOCKS_AUTH);
    expect(await code([[Buffer.from([5, 0xff])]])).toBe(ErrorCodes.SOCKS_AUTH);
    expect(await code([[Buffer.from([5, 1])]])).toBe(ErrorCodes.SOCKS_NO_METHOD);
    expect(await code([[Buffer.from([5, 0])], [Buffer.from([5, 4])]])).toBe(ErrorCodes.HOST_UNREACHABLE);
    expect(await code([[Buffer.from([5, 0])], [Buffer.from([5, 2])]])).toBe(ErrorCodes.TUNNEL_FAILED);
    expect(await code([[Buffer.from([5, 0])], [Buffer.from([5, 0, 0, 9, 0, 0])]])).toBe(ErrorCodes.SOCKS_MALFORMED);
    expect(await code([[Buffer.from([5, 0])], []])).toBe(ErrorCodes.TIMEOUT);
  });
});
