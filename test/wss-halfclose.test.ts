/**
 * wssserver and half-close: the https server's TLS sockets do not allow half-open
 * connections by default, so a client FIN used to end our side at once. Over TLS:
 * - the close rule of a failed handshake (protocol/probing.md) holds with and without FIN;
 * - in a tunnel, a client that half-closes still gets the whole answer.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WsClient } from '../src/client/wsclient.js';
import { WsServer } from '../src/server/wsserver.js';
import { selfSigned } from './helpers/cli.js';
import { type Closable, closeAll, collectLog, exchangeThroughSocks, LOOPBACK, PASSWORD, startExchangeServer, upgradeRequest, withTimeout } from './helpers/net.js';
import type { LogEntry } from '../src/log.js';

const PROBE_TIMEOUT_MS = 1000;
const LATE_MS = 1500;
const MiB = 1024 * 1024;
const NAME = 'brook.test';

const dir = mkdtempSync(join(tmpdir(), 'brook-wss-half-'));
const started: Closable[] = [];
let server: WsServer;
let port: number;
let ca: string;

beforeAll(async () => {
  const { cert, key } = await selfSigned(dir, NAME, 'srv');
  ca = readFileSync(cert, 'utf8');
  const log: LogEntry[] = [];
  server = new WsServer({
    listen: `${LOOPBACK}:0`,
    password: PASSWORD,
    probeTimeoutMs: PROBE_TIMEOUT_MS,
    tls: { cert: readFileSync(cert), key: readFileSync(key) },
    log: collectLog(log),
  });
  port = (await server.listen()).port;
});

afterAll(async () => {
  await closeAll(started);
  await server?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Upgrade over TLS, send some bytes, FIN if asked; ms from the 101 to the server's close. */
async function probe(fin: boolean): Promise<number> {
  const s = tls.connect({ host: LOOPBACK, port, servername: NAME, ca, allowHalfOpen: true } as tls.ConnectionOptions);
  s.on('error', () => undefined);
  await new Promise((r) => s.once('secureConnect', r));
  s.write(upgradeRequest(port));
  await new Promise((r) => s.once('data', r));
  const t101 = Date.now();
  s.write(Buffer.alloc(20, 7));
  if (fin) s.end();
  const closedAt = await withTimeout(
    new Promise<number>((r) => {
      s.on('end', () => r(Date.now()));
      s.on('close', () => r(Date.now()));
      s.resume();
    }),
    PROBE_TIMEOUT_MS + LATE_MS + 3000,
    'server close',
  );
  s.destroy();
  return closedAt - t101;
}

describe('wssserver half-close', () => {
  it('a failed handshake is closed at the deadline whether or not the client half-closed', async () => {
    const [withFin, withoutFin] = await Promise.all([probe(true), probe(false)]);
    for (const ms of [withFin, withoutFin]) {
      expect(ms).toBeGreaterThanOrEqual(PROBE_TIMEOUT_MS - 50);
      expect(ms).toBeLessThan(PROBE_TIMEOUT_MS + LATE_MS);
    }
  });

  it('a tunnel whose client FINs first still gets the whole reply', async () => {
    const dst = await startExchangeServer({ downBytes: 2 * MiB + 123, order: 'after-end' });
    started.push(dst);
    const client = new WsClient({
      endpoint: { secure: true, hostPort: `${NAME}:${port}`, hostname: NAME, port, path: '/ws', address: { host: LOOPBACK, port }, ca },
      password: PASSWORD,
      socks5: `${LOOPBACK}:0`,
      log: () => undefined,
    });
    await client.listen();
    started.push({ close: () => client.close() });
    const r = await exchangeThroughSocks(client.socks.address().port, { type: 'ipv4', host: LOOPBACK, port: dst.port }, MiB + 7, 'concurrent');
    const [rec] = await dst.waitRecords(1, 5000);
    expect(rec!.gotEnd).toBe(true);
    expect(rec!.receivedHash).toBe(r.sent.hash);
    expect(r.received.bytes).toBe(2 * MiB + 123);
    expect(r.received.hash).toBe(rec!.sentHash);
  });
});
