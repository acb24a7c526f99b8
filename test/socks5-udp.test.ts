// The SOCKS5 UDP relay's per-datagram caches (src/socks5/udp.ts): the remembered endpoint,
// the parsed-header cache and the reply-header cache must never change what is delivered.
import { afterEach, describe, expect, it } from 'vitest';
import net from 'node:net';
import dgram from 'node:dgram';
import { ErrorCodes } from '../src/errors.js';
import type { Address } from '../src/protocol/address.js';
import { buildUdpHeader, parseUdpHeader } from '../src/socks5/codec.js';
import { createSocks5Server, type UdpAssociation } from '../src/socks5/server.js';
import { nextDatagram as nextDatagramWithin } from './helpers/udp.js';

const STEP_TIMEOUT_MS = 3_000;
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

interface Seen {
  assoc: UdpAssociation;
  dst: Address;
  data: string;
}

async function startServer() {
  const seen: Seen[] = [];
  const logs: Record<string, unknown>[] = [];
  let waiter: (() => void) | null = null;
  const server = createSocks5Server({
    host: '127.0.0.1',
    port: 0,
    log: (e) => logs.push(e),
    onConnect: (req) => req.reject(0x02),
    onUdpDatagram: (assoc, dst, data) => {
      seen.push({ assoc, dst, data: data.toString() });
      waiter?.();
    },
  });
  await server.listen();
  cleanups.push(() => server.close());
  /** Resolves once `n` datagrams in all have been delivered. */
  const delivered = (n: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`only ${seen.length} of ${n} datagrams delivered`)), STEP_TIMEOUT_MS);
      const check = (): void => {
        if (seen.length >= n) {
          clearTimeout(t);
          waiter = null;
          resolve();
        }
      };
      waiter = check;
      check();
    });
  return { server, seen, logs, delivered, port: server.address().port };
}

/** Greeting + UDP ASSOCIATE (DST 0.0.0.0:0) on a control connection; resolves after the reply. */
async function associate(port: number): Promise<net.Socket> {
  const c = net.connect({ port, host: '127.0.0.1' });
  cleanups.push(() => {
    c.destroy();
  });
  let got = Buffer.alloc(0);
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('no UDP ASSOCIATE reply')), STEP_TIMEOUT_MS);
    c.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= 2 + 10) {
        clearTimeout(t);
        resolve();
      }
    });
    c.write(Buffer.concat([hex('05 01 00'), hex('05 03 00 01 00000000 0000')]));
  });
  expect(got.subarray(0, 4)).toEqual(hex('05 00 05 00'));
  return c;
}

async function udpClient(): Promise<dgram.Socket> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  cleanups.push(() => new Promise<void>((r) => s.close(() => r())));
  return s;
}

/** The next datagram on `s`, or null after STEP_TIMEOUT_MS (or `ms`). */
const nextDatagram = (s: dgram.Socket, ms = STEP_TIMEOUT_MS) => nextDatagramWithin(s, ms);

const A: Address = { type: 'ipv4', host: '192.0.2.1', port: 53 };
const B: Address = { type: 'domain', host: 'example.test', port: 53 };
const C: Address = { type: 'ipv4', host: '192.0.2.1', port: 54 };

describe('SOCKS5 UDP relay: per-datagram caches', () => {
  it('alternating destinations each arrive with their own address; repeats share one Address object', async () => {
    const { server, seen, delivered, port } = await startServer();
    await associate(port);
    const cl = await udpClient();
    const sends: Array<[Address, string]> = [
      [A, 'a1'],
      [A, 'a2'],
      [B, 'b1'],
      [A, 'a3'],
      [C, 'c1'],
      [C, ''],
      [B, 'b2'],
    ];
    for (const [i, [dst, data]] of sends.entries()) {
      cl.send(buildUdpHeader(dst, Buffer.from(data)), server.udpAddress()!.port, '127.0.0.1');
      await delivered(i + 1); // one at a time: the order is what the caches see
    }
    expect(seen.map((s) => [s.dst, s.data])).toEqual(sends);
    expect(seen[1]!.dst).toBe(seen[0]!.dst); // same header bytes again: the same object
    expect(seen[3]!.dst).not.toBe(seen[0]!.dst); // parsed again after B
    expect(seen[5]!.dst).toBe(seen[4]!.dst); // a header-only datagram: same header
  });

  it('FRAG != 0 and a truncated header are still dropped when the address bytes match the cached ones', async () => {
    const { server, seen, logs, delivered, port } = await startServer();
    await associate(port);
    const cl = await udpClient();
    const udpPort = server.udpAddress()!.port;
    const good = buildUdpHeader(A, Buffer.from('ok'));
    cl.send(good, udpPort, '127.0.0.1');
    await delivered(1);
    const frag = Buffer.from(good);
    frag[2] = 1;
    cl.send(frag, udpPort, '127.0.0.1');
    cl.send(good.subarray(0, 7), udpPort, '127.0.0.1'); // a prefix of the cached header
    cl.send(buildUdpHeader(A, Buffer.from('after')), udpPort, '127.0.0.1');
    await delivered(2);
    expect(seen.map((s) => s.data)).toEqual(['ok', 'after']);
    expect(server.stats.udpDropped).toBe(2);
    expect(logs.some((l) => l.code === ErrorCodes.SOCKS_UDP_FRAG)).toBe(true);
    expect(logs.some((l) => l.code === ErrorCodes.ADDRESS_TRUNCATED)).toBe(true);
  });

  it('two associations from one IP keep their datagrams apart (the remembered endpoint does not misroute)', async () => {
    const { server, seen, delivered, port } = await startServer();
    await associate(port);
    await associate(port);
    const one = await udpClient();
    const two = await udpClient();
    const udpPort = server.udpAddress()!.port;
    const order: Array<[dgram.Socket, string]> = [
      [one, '1a'],
      [two, '2a'],
      [one, '1b'],
      [two, '2b'],
    ];
    for (const [i, [s, data]] of order.entries()) {
      s.send(buildUdpHeader(A, Buffer.from(data)), udpPort, '127.0.0.1');
      await delivered(i + 1);
    }
    const byData = new Map(seen.map((s) => [s.data, s.assoc]));
    expect(byData.get('1a')).toBe(byData.get('1b'));
    expect(byData.get('2a')).toBe(byData.get('2b'));
    expect(byData.get('1a')).not.toBe(byData.get('2a'));
    expect(byData.get('1a')!.clientPort).toBe(one.address().port);
    expect(byData.get('2a')!.clientPort).toBe(two.address().port);
  });

  it('replies carry the source they were sent with, across source changes and a refused one', async () => {
    const { server, seen, logs, delivered, port } = await startServer();
    await associate(port);
    const cl = await udpClient();
    cl.send(buildUdpHeader(A, Buffer.from('hi')), server.udpAddress()!.port, '127.0.0.1');
    await delivered(1);
    const assoc = seen[0]!.assoc;
    const replies: Array<[Address, string]> = [
      [A, 'r1'],
      [A, 'r2'],
      [B, 'r3'],
      [C, 'r4'],
      [A, 'r5'],
    ];
    for (const [src, data] of replies) {
      const got = nextDatagram(cl);
      assoc.send(src, Buffer.from(data));
      const h = parseUdpHeader((await got)!);
      expect([h.address, h.data.toString()]).toEqual([src, data]);
    }
    const dropped = server.stats.udpDropped;
    assoc.send({ type: 'ipv4', host: '192.0.2.1', port: 70000 }, Buffer.from('bad port'));
    expect(server.stats.udpDropped).toBe(dropped + 1);
    expect(logs.some((l) => l.code === ErrorCodes.ADDRESS_INVALID)).toBe(true);
    const got = nextDatagram(cl);
    assoc.send(B, Buffer.from('r6'));
    const h = parseUdpHeader((await got)!);
    expect([h.address, h.data.toString()]).toEqual([B, 'r6']);
  });
});
