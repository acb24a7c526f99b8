/**
 * TLS session resumption for wssclient (src/client/tls-session.ts, issue 11
 * item 2): the second connection to a wssserver resumes the first one's
 * session; a session is only offered to the same server under the same
 * certificate settings; without a cache every handshake is full; the cache is
 * bounded; tunnels through a resuming client (and its pool) carry data intact.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dialTunnel, type ServerEndpoint } from '../src/client/dial.js';
import { TlsSessionCache } from '../src/client/tls-session.js';
import { WsClient } from '../src/client/wsclient.js';
import { BROOK_MODE } from '../src/protocol/mode.js';
import { WsServer } from '../src/server/wsserver.js';
import { selfSigned } from './helpers/cli.js';
import { type Closable, closeAll, exchangeThroughSocks, LOOPBACK, PASSWORD, startExchangeServer, waitFor } from './helpers/net.js';

const NAME = 'brook.test';
const dir = mkdtempSync(join(tmpdir(), 'brook-tls-resume-'));
const started: Closable[] = [];
let server: WsServer;
let port: number;
let ca: string;

beforeAll(async () => {
  const { cert, key } = await selfSigned(dir, NAME, 'srv');
  ca = readFileSync(cert, 'utf8');
  server = new WsServer({ listen: `${LOOPBACK}:0`, password: PASSWORD, tls: { cert: readFileSync(cert), key: readFileSync(key) }, log: () => undefined });
  port = (await server.listen()).port;
});

afterAll(async () => {
  await closeAll(started);
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

function endpoint(o: Partial<ServerEndpoint> = {}): ServerEndpoint {
  return { secure: true, hostPort: `${NAME}:${port}`, hostname: NAME, port, path: '/ws', address: { host: LOOPBACK, port }, ca, ...o };
}

/** Open a tunnel (to a destination nobody dials: the socket is closed at once) and say whether TLS resumed. */
async function resumed(e: ServerEndpoint, tlsSessions?: TlsSessionCache): Promise<boolean> {
  const t = await dialTunnel({ endpoint: e, password: PASSWORD, mode: BROOK_MODE, network: 'tcp', destination: { type: 'ipv4', host: LOOPBACK, port: 9 }, timeoutMs: 5000, tlsSessions });
  const r = (t.socket as TLSSocket).isSessionReused();
  t.socket.destroy();
  return r;
}

describe('TLS session resumption', () => {
  it('the next connection to the same server resumes; without a cache every handshake is full', async () => {
    const cache = new TlsSessionCache();
    expect(await resumed(endpoint(), cache)).toBe(false);
    await waitFor(() => cache.size === 1, 2000, 'a session kept');
    expect(await resumed(endpoint(), cache)).toBe(true);
    expect(await resumed(endpoint(), cache)).toBe(true);
    expect(cache.offered).toBe(2);
    expect(await resumed(endpoint())).toBe(false);
    expect(await resumed(endpoint())).toBe(false);
  });

  it('a session is offered only under the same name, address and certificate settings', async () => {
    const cache = new TlsSessionCache();
    await resumed(endpoint(), cache);
    await waitFor(() => cache.size === 1, 2000, 'a session kept');
    // --insecure is another setting: its own key, a full handshake
    expect(await resumed(endpoint({ insecure: true, ca: undefined }), cache)).toBe(false);
    expect(cache.offered).toBe(0);
    expect(cache.keyOf(endpoint())).not.toBe(cache.keyOf(endpoint({ insecure: true })));
    expect(cache.keyOf(endpoint())).not.toBe(cache.keyOf(endpoint({ ca: ca + '\n' })));
    expect(cache.keyOf(endpoint())).not.toBe(cache.keyOf(endpoint({ hostname: 'other.test' })));
    expect(cache.keyOf(endpoint())).not.toBe(cache.keyOf(endpoint({ address: { host: LOOPBACK, port: port + 1 } })));
  });

  it('a failed certificate check keeps no session', async () => {
    const cache = new TlsSessionCache();
    await expect(resumed(endpoint({ ca: undefined }), cache)).rejects.toThrow();
    expect(cache.size).toBe(0);
  });

  it('bounded: the least recently used server goes first', () => {
    const cache = new TlsSessionCache(2);
    cache.set('a', Buffer.from('1'));
    cache.set('b', Buffer.from('2'));
    cache.get('a');
    cache.set('c', Buffer.from('3'));
    expect(cache.size).toBe(2);
    expect(cache.get('b')).toBeUndefined();
    expect(cache.get('a')?.toString()).toBe('1');
  });

  it('tunnels through a resuming client, with and without a pool, carry data intact', async () => {
    const dst = await startExchangeServer({ downBytes: 50_000 });
    started.push(dst);
    for (const pool of [undefined, { size: 2 }]) {
      const client = new WsClient({ endpoint: endpoint(), password: PASSWORD, socks5: `${LOOPBACK}:0`, log: () => undefined, tlsResume: true, pool });
      await client.listen();
      started.push({ close: () => client.close() });
      for (let i = 0; i < 3; i++) {
        const r = await exchangeThroughSocks(client.socks.address().port, { type: 'ipv4', host: LOOPBACK, port: dst.port }, 30_000);
        expect(r.received.bytes).toBe(50_000);
      }
      expect(client.tlsSessions!.offered).toBeGreaterThanOrEqual(2);
      expect(client.stats.tunnelFailures).toBe(0);
    }
  });
});
