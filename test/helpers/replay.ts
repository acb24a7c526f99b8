/**
 * Shared by the replay tests: an echo destination that counts connections, a
 * tunnel of our own WsClient recorded at the socket level (through a recording
 * TCP proxy), and sending a recording again as a raw client.
 */
import net from 'node:net';
import { expect } from 'vitest';
import { WsClient } from '../../src/client/wsclient.js';
import { type Closable, connectRaw, LOOPBACK, PASSWORD, readExactly, readHttpHead, socksConnect, withTimeout } from './net.js';

/** The probe timeout the replay tests give their servers. */
export const PROBE_TIMEOUT_MS = 1000;
export const REPLAYS = 20;
export const REPLAY_SPREAD_MS = 2000;

/** A TCP server that echoes and counts its connections. */
export async function startEcho(): Promise<Closable & { port: number; connections: () => number; open: () => number }> {
  let n = 0;
  const socks = new Set<net.Socket>();
  const srv = net.createServer((c) => {
    n++;
    socks.add(c);
    c.on('close', () => socks.delete(c));
    c.on('error', () => undefined);
    c.on('data', (d) => c.write(d));
    c.on('end', () => c.end());
  });
  await new Promise<void>((r) => srv.listen(0, LOOPBACK, () => r()));
  return {
    port: (srv.address() as net.AddressInfo).port,
    connections: () => n,
    open: () => socks.size,
    close: async () => {
      for (const s of socks) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}

export interface Recording {
  /** The upgrade request, as our client sent it. */
  head: Buffer;
  /** Everything our client sent after it: nonce, first fragment, data. */
  stream: Buffer;
}

/**
 * One tunnel of our own WsClient to `serverPort` through a recording TCP proxy:
 * echo "replay me" through SOCKS and return the client's bytes. `whileOpen`
 * runs while the tunnel is up, with the proxy's local port toward the server.
 */
export async function recordTunnel(serverPort: number, echoPort: number, whileOpen?: (proxyLocalPort: number) => void | Promise<void>): Promise<Recording> {
  const chunks: Buffer[] = [];
  let upstreamPort = 0;
  const links = new Set<net.Socket>();
  const proxy = net.createServer((c) => {
    const up = net.connect({ host: LOOPBACK, port: serverPort }, () => (upstreamPort = up.localPort!));
    for (const s of [c, up]) {
      links.add(s);
      s.on('error', () => undefined);
      s.on('close', () => (c.destroy(), up.destroy()));
    }
    c.on('data', (d: Buffer) => {
      chunks.push(d);
      up.write(d);
    });
    up.pipe(c);
  });
  await new Promise<void>((r) => proxy.listen(0, LOOPBACK, () => r()));
  const proxyPort = (proxy.address() as net.AddressInfo).port;
  const client = new WsClient({
    endpoint: { secure: false, hostPort: `${LOOPBACK}:${proxyPort}`, hostname: LOOPBACK, port: proxyPort, path: '/ws' },
    password: PASSWORD,
    socks5: `${LOOPBACK}:0`,
    log: () => {},
  });
  await client.listen();
  try {
    const s = await socksConnect(client.socks.address().port, { type: 'ipv4', host: LOOPBACK, port: echoPort });
    const msg = Buffer.from('replay me');
    s.write(msg);
    expect((await readExactly(s, msg.length)).equals(msg)).toBe(true);
    await whileOpen?.(upstreamPort);
    s.destroy();
  } finally {
    await client.close();
    for (const s of links) s.destroy();
    await new Promise<void>((r) => proxy.close(() => r()));
  }
  const all = Buffer.concat(chunks);
  const end = all.indexOf('\r\n\r\n') + 4;
  expect(end).toBeGreaterThan(4);
  return { head: all.subarray(0, end), stream: all.subarray(end) };
}

export interface ReplayResult {
  bytes: number;
  how: 'end' | 'reset' | 'other';
  ms: number;
}

/** Send a recording to `port` verbatim; FIN after it or not; `whileOpen` runs before the server closes. */
export async function replay(port: number, r: Recording, fin: boolean, whileOpen?: (localPort: number) => void | Promise<void>): Promise<ReplayResult> {
  const s = await connectRaw(port);
  const t0 = Date.now();
  s.write(r.head);
  const { head, rest } = await readHttpHead(s);
  expect(head).toMatch(/^HTTP\/1\.1 101 /);
  let bytes = rest.length;
  let how: ReplayResult['how'] | null = null;
  const closed = new Promise<void>((resolve) => {
    s.on('data', (d: Buffer) => (bytes += d.length));
    s.on('end', () => ((how ??= 'end'), s.destroy()));
    s.on('error', (e: NodeJS.ErrnoException) => (how ??= e.code === 'ECONNRESET' ? 'reset' : 'other'));
    s.on('close', () => resolve());
  });
  s.resume();
  s.write(r.stream);
  if (fin) s.end();
  await whileOpen?.(s.localPort!);
  await withTimeout(closed, PROBE_TIMEOUT_MS + 5000, 'replay to be closed');
  return { bytes, how: how ?? 'other', ms: Date.now() - t0 };
}

/** The close rule (protocol/probing.md): silence, then a reset at the deadline, whether or not the client half-closed. */
export function expectSilentRefusal(results: { fin: boolean; r: ReplayResult }[]): void {
  for (const { r } of results) {
    expect(r.bytes, JSON.stringify(r)).toBe(0);
    expect(r.how, JSON.stringify(r)).toBe('reset');
    expect(r.ms, JSON.stringify(r)).toBeGreaterThanOrEqual(PROBE_TIMEOUT_MS - 5);
  }
}

