/**
 * Test helpers, a SOCKS5 client on raw bytes: requests for every address type, the reply
 * read whole, CONNECT, and a byte exchange through the proxy with SHA-256 on both ends.
 * (test/helpers/net.ts re-exports this file.)
 */
import net from 'node:net';
import { connectRaw, readAllHashed, readExactly, sendRandom } from './io.js';
import type { ExchangeOrder } from './net.js';

// ---- SOCKS5 client on raw bytes ---------------------------------------------

export type SocksTarget = { type: 'ipv4' | 'ipv6' | 'domain'; host: string; port: number };

export function socksRequestBytes(t: SocksTarget, cmd = 0x01): Buffer {
  let addr: Buffer;
  if (t.type === 'ipv4') addr = Buffer.from([0x01, ...t.host.split('.').map(Number)]);
  else if (t.type === 'ipv6') {
    const b = Buffer.alloc(17);
    b[0] = 0x04;
    // ::1 and other short forms: expand via URL parsing of a bracketed literal
    const groups = expandIpv6(t.host);
    groups.forEach((g, i) => b.writeUInt16BE(g, 1 + i * 2));
    addr = b;
  } else addr = Buffer.concat([Buffer.from([0x03, Buffer.byteLength(t.host)]), Buffer.from(t.host)]);
  const port = Buffer.alloc(2);
  port.writeUInt16BE(t.port);
  return Buffer.concat([Buffer.from([0x05, cmd, 0x00]), addr, port]);
}

function expandIpv6(h: string): number[] {
  const [head, tail] = h.includes('::') ? h.split('::') : [h, undefined];
  const a = head ? head.split(':').filter(Boolean) : [];
  const b = tail !== undefined && tail ? tail.split(':').filter(Boolean) : [];
  const fill = tail !== undefined ? 8 - a.length - b.length : 0;
  return [...a, ...Array<string>(fill).fill('0'), ...b].map((x) => parseInt(x, 16));
}

/** Read one SOCKS5 reply (whole, by its ATYP). Returns the reply code. */
export async function readSocksReply(s: net.Socket, ms = 5000): Promise<number> {
  const head = await readExactly(s, 5, ms);
  if (head.length < 5) throw new Error(`SOCKS reply truncated: ${head.toString('hex')}`);
  const atyp = head[3];
  const rest = atyp === 0x01 ? 4 + 2 - 1 : atyp === 0x04 ? 16 + 2 - 1 : head[4]! + 2;
  await readExactly(s, rest, ms);
  return head[1]!;
}

/** SOCKS5 CONNECT (no auth) through `socksPort`; resolves with the socket once the reply says success. */
export async function socksConnect(socksPort: number, t: SocksTarget): Promise<net.Socket> {
  const s = await connectRaw(socksPort);
  s.write(Buffer.from([0x05, 0x01, 0x00]));
  const m = await readExactly(s, 2);
  if (m[0] !== 0x05 || m[1] !== 0x00) {
    s.destroy();
    throw new Error(`SOCKS method reply ${m.toString('hex')}`);
  }
  s.write(socksRequestBytes(t));
  const rep = await readSocksReply(s);
  if (rep !== 0x00) {
    s.destroy();
    throw new Error(`SOCKS reply code ${rep}`);
  }
  return s;
}

/**
 * One full exchange through SOCKS: send `upBytes`, receive until FIN, with an
 * order mirroring the exchange server's ('after-end' server: we FIN first;
 * 'first' server: we send only after its FIN).
 */
export async function exchangeThroughSocks(
  socksPort: number,
  t: SocksTarget,
  upBytes: number,
  order: ExchangeOrder = 'concurrent',
): Promise<{ sent: { hash: string; bytes: number }; received: { hash: string; bytes: number; gotEnd: boolean } }> {
  const s = await socksConnect(socksPort, t);
  try {
    const received = readAllHashed(s);
    let sent;
    if (order === 'first') {
      await received; // the destination ended first; our write side is still open
      sent = await sendRandom(s, upBytes, { end: true });
      await new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r())));
    } else {
      sent = await sendRandom(s, upBytes, { end: true });
    }
    return { sent, received: await received };
  } finally {
    s.destroy();
  }
}
