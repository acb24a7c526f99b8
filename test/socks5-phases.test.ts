/**
 * The SOCKS5 connection's phases (src/socks5/handshake.ts): what each one's teardown does, over
 * real sockets. reading (greeting/auth/request, split byte by byte), connecting (the handler holds
 * the request), handed (accept() gave the socket away), closing (a final reply, then linger) and
 * udp (the association lives as long as the control connection).
 */
import net from 'node:net';
import { once } from 'node:events';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { createSocks5Server, type ConnectRequest, type Socks5ServerOptions } from '../src/socks5/server.js';

const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const WAIT_MS = 3_000;
const GREETING = hex('05 01 00');
const CONNECT_LOCAL_80 = hex('05 01 00 01 7f000001 0050');

const stops: Array<() => unknown> = [];
afterEach(async () => {
  while (stops.length) await stops.pop()!();
});

async function server(extra: Partial<Socks5ServerOptions> = {}) {
  const logs: Record<string, unknown>[] = [];
  const requests: ConnectRequest[] = [];
  const s = createSocks5Server({ host: '127.0.0.1', port: 0, log: (e) => logs.push(e), onConnect: (r) => void requests.push(r), ...extra });
  await s.listen();
  stops.push(() => s.close());
  return { s, logs, requests, port: s.address().port };
}

/** A client socket whose received bytes and end are collected. */
async function client(port: number, allowHalfOpen = false) {
  const sock = net.connect({ port, host: '127.0.0.1', allowHalfOpen });
  stops.push(() => sock.destroy());
  sock.on('error', () => {});
  const got: Buffer[] = [];
  sock.on('data', (d: Buffer) => got.push(d));
  const ended = once(sock, 'close');
  await once(sock, 'connect');
  return { sock, ended, bytes: () => Buffer.concat(got) };
}

async function until(cond: () => boolean): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > WAIT_MS) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('SOCKS5 phases', () => {
  it('reading: greeting, RFC 1929 auth and request one byte a write; pipelined bytes reach the handler after accept()', async () => {
    const { requests, port, s } = await server({ auth: { username: 'u', password: 'pw' } });
    const c = await client(port);
    const all = Buffer.concat([hex('05 01 02'), hex('01 01 75 02 7077'), CONNECT_LOCAL_80]);
    for (const b of all) {
      c.sock.write(Buffer.from([b]));
      await new Promise((r) => setTimeout(r, 1));
    }
    c.sock.write('early');
    await until(() => requests.length === 1);
    expect(requests[0]!.destination).toEqual({ type: 'ipv4', host: '127.0.0.1', port: 80 });
    await new Promise((r) => setTimeout(r, 20)); // 'early' arrives while connecting
    const handed = requests[0]!.accept();
    const first = once(handed, 'data');
    handed.resume();
    expect(String((await first)[0])).toBe('early');
    await until(() => c.bytes().length >= 14);
    expect(c.bytes()).toEqual(hex('05 02  01 00  05 00 00 01 00000000 0000'));
    expect(s.stats).toMatchObject({ tcpActive: 1, connectRequests: 1, handshakeFailures: 0 });
  });

  it('connecting: the client goes away before accept(): the signal aborts, accept() gives a destroyed socket, reject() sends nothing', async () => {
    const { requests, port, s, logs } = await server();
    const c = await client(port);
    c.sock.write(Buffer.concat([GREETING, CONNECT_LOCAL_80]));
    await until(() => requests.length === 1);
    const req = requests[0]!;
    expect(req.signal.aborted).toBe(false);
    c.sock.resetAndDestroy();
    await until(() => req.signal.aborted);
    expect((req.signal.reason as NodeJS.ErrnoException).code).toBe('ECONNRESET'); // the socket's own error
    expect(req.accept().destroyed).toBe(true);
    req.reject(0x05);
    expect(s.stats.tcpActive).toBe(0);
    // the reset is logged with the request's destination; no second line for the late accept/reject
    expect(logs.map((l) => [l['dst'], l['code']])).toEqual([['127.0.0.1:80', ErrorCodes.CLOSED]]);
  });

  it('connecting: server.close() aborts the signal with CLOSED and leaves no connection', async () => {
    const { requests, port, s, logs } = await server();
    const c = await client(port);
    c.sock.write(Buffer.concat([GREETING, CONNECT_LOCAL_80]));
    await until(() => requests.length === 1);
    await s.close();
    expect(requests[0]!.signal.reason).toMatchObject({ code: ErrorCodes.CLOSED, message: 'client connection closed' });
    await c.ended;
    expect(s.stats.tcpActive).toBe(0);
    expect(logs).toEqual([]);
  });

  it('handed: after accept() the socket is the handler\'s; its close is not logged, the signal aborts then', async () => {
    const { requests, port, s, logs } = await server();
    const c = await client(port);
    c.sock.write(Buffer.concat([GREETING, CONNECT_LOCAL_80]));
    await until(() => requests.length === 1);
    const handed = requests[0]!.accept();
    handed.on('error', () => {});
    expect(requests[0]!.signal.aborted).toBe(false);
    c.sock.resetAndDestroy();
    await until(() => requests[0]!.signal.aborted);
    expect(s.stats.tcpActive).toBe(0);
    expect(logs).toEqual([]);
  });

  it('closing: reject(code) sends the reply and a FIN; a client that stays is destroyed after lingerMs; one line', async () => {
    const lingerMs = 150;
    const { requests, port, s, logs } = await server({ lingerMs });
    const c = await client(port, true); // stays open after the server's FIN
    c.sock.write(Buffer.concat([GREETING, CONNECT_LOCAL_80]));
    await until(() => requests.length === 1);
    const t0 = Date.now();
    requests[0]!.reject(0x05);
    await once(c.sock, 'end');
    expect(c.bytes()).toEqual(hex('05 00  05 05 00 01 00000000 0000'));
    c.sock.write('ignored'); // read and dropped while lingering
    expect(s.stats.tcpActive).toBe(1);
    await until(() => s.stats.tcpActive === 0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(lingerMs - 20);
    expect(logs.map((l) => [l['dst'], l['code'], l['error']])).toEqual([['127.0.0.1:80', ErrorCodes.TUNNEL_FAILED, 'rejected with reply 0x05']]);
    expect(requests[0]!.signal.aborted).toBe(true);
  });

  it('udp: server.close() ends the association once and leaves nothing', async () => {
    let closed = 0;
    const { port, s } = await server({ onUdpAssociationClosed: () => closed++ });
    const c = await client(port);
    c.sock.write(Buffer.concat([GREETING, hex('05 03 00 01 00000000 0000')]));
    await until(() => c.bytes().length >= 12);
    expect(c.bytes()[3]).toBe(0x00);
    expect(s.stats.udpActiveAssociations).toBe(1);
    await s.close();
    await c.ended;
    expect([closed, s.stats.udpActiveAssociations, s.stats.tcpActive]).toEqual([1, 0, 0]);
  });
});
