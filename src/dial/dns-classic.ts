/**
 * One DNS exchange with a server at IP:port, over UDP (RFC 1035 section 4.2.1)
 * or TCP (section 4.2.2: each message prefixed by its u16 big-endian length).
 *
 * UDP: datagrams that are not a reply to our id and question count are
 * dropped (a spoof or a late answer to an earlier try) and we keep waiting
 * until the timeout. TCP: the length prefix is checked before its message is
 * buffered. Both time out; both free their socket on every path.
 */
import type { Socket } from 'node:net';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { DNS_HEADER_SIZE, looksLikeReplyTo, MAX_DNS_MESSAGE } from './dns-message.js';
import { fmt } from './direct.js';
import type { IpTransport } from './types.js';

/** TCP length prefix (RFC 1035 section 4.2.2). */
const TCP_LENGTH_SIZE = 2;

/** Send `query` (whose id is `id`) to ip:port over UDP; resolve with the first datagram that looks like the reply. */
export async function exchangeUdp(t: IpTransport, ip: string, port: number, query: Buffer, id: number, timeoutMs: number): Promise<Buffer> {
  const ch = await t.openUdp(ip, port, timeoutMs);
  return new Promise<Buffer>((resolve, reject) => {
    let done = false;
    const finish = (err: BrookError | null, reply?: Buffer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      ch.close();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(
      () => finish(new BrookError(ErrorCodes.TIMEOUT, `no DNS answer from ${fmt(ip, port)} within ${timeoutMs} ms`)),
      timeoutMs,
    );
    ch.on('message', (m) => {
      if (looksLikeReplyTo(m, id)) finish(null, m);
    });
    // ICMP port unreachable and the like: the server is not there
    ch.on('error', (e) => finish(new BrookError(e.code, `DNS over UDP to ${fmt(ip, port)}: ${e.message}`, { cause: e })));
    ch.on('close', () => finish(new BrookError(ErrorCodes.CLOSED, `DNS over UDP to ${fmt(ip, port)}: channel closed`)));
    ch.send(query, (e) => {
      if (e) finish(new BrookError(e.code, `DNS over UDP to ${fmt(ip, port)}: ${e.message}`, { cause: e }));
    });
  });
}

/** Send `query` to ip:port over TCP; resolve with the one length-prefixed reply. */
export async function exchangeTcp(t: IpTransport, ip: string, port: number, query: Buffer, timeoutMs: number): Promise<Buffer> {
  const started = Date.now();
  const sock: Socket = await t.connectTcp(ip, port, timeoutMs);
  const left = Math.max(1, timeoutMs - (Date.now() - started));
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let have = 0;
    let want = -1;
    let done = false;
    const finish = (err: BrookError | null, reply?: Buffer) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(
      () => finish(new BrookError(ErrorCodes.TIMEOUT, `no DNS answer over TCP from ${fmt(ip, port)} within ${timeoutMs} ms`)),
      left,
    );
    sock.on('data', (d: Buffer) => {
      chunks.push(d);
      have += d.length;
      if (want < 0 && have >= TCP_LENGTH_SIZE) {
        const all = Buffer.concat(chunks);
        chunks.length = 0;
        chunks.push(all);
        want = all.readUInt16BE(0);
        if (want < DNS_HEADER_SIZE || want > MAX_DNS_MESSAGE) {
          finish(new BrookError(ErrorCodes.DNS_FAILED, `DNS over TCP from ${fmt(ip, port)}: bad length ${want}`));
          return;
        }
      }
      if (want >= 0 && have >= TCP_LENGTH_SIZE + want) {
        const all = Buffer.concat(chunks);
        finish(null, all.subarray(TCP_LENGTH_SIZE, TCP_LENGTH_SIZE + want));
      }
    });
    sock.on('error', (e) => {
      const err = toBrookError(e);
      finish(new BrookError(err.code, `DNS over TCP to ${fmt(ip, port)}: ${err.message}`, { cause: e }));
    });
    sock.on('close', () => finish(new BrookError(ErrorCodes.DNS_FAILED, `DNS over TCP: ${fmt(ip, port)} closed before the answer`)));
    const framed = Buffer.allocUnsafe(TCP_LENGTH_SIZE + query.length);
    framed.writeUInt16BE(query.length, 0);
    query.copy(framed, TCP_LENGTH_SIZE);
    sock.write(framed);
  });
}
