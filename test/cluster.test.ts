/**
 * --workers (src/cluster.ts): wsserver and wsclient each run as a primary with two
 * workers sharing the listener; TCP and UDP work through them (each UDP association
 * relayed by the worker that holds it, on that worker's own announced port), and
 * SIGTERM stops the primary and every worker within the grace period.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childPids, type CliProcess, freePort, startCli, stopAllClis, stopCli } from './helpers/cli.js';
import { socksConnect, readExactly, sleep } from './helpers/net.js';
import { Socks5UdpClient, startUdpEcho, type UdpResponder } from './helpers/udp.js';
import { parseWorkers } from '../src/cluster.js';

const WORKERS = 2;
const PASSWORD = 'cluster-pass';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

describe('parseWorkers', () => {
  it('takes positive whole numbers and auto, refuses the rest', () => {
    expect(parseWorkers('3')).toBe(3);
    expect(parseWorkers('auto')).toBeGreaterThanOrEqual(1);
    for (const bad of ['0', '-1', '1.5', 'x', '']) expect(() => parseWorkers(bad)).toThrow(/--workers/);
  });
});

describe('--workers 2 (wsserver and wsclient)', () => {
  let server: CliProcess;
  let client: CliProcess;
  let echo: net.Server;
  let udpEcho: UdpResponder;
  let socksPort: number;

  beforeAll(async () => {
    const sp = await freePort();
    socksPort = await freePort();
    server = await startCli(['wsserver', '--listen', `127.0.0.1:${sp}`, '--password', PASSWORD, '--workers', String(WORKERS), '--shutdownGrace', '1']);
    client = await startCli([
      'wsclient', '--wsserver', `ws://127.0.0.1:${sp}`, '--password', PASSWORD, '--socks5', `127.0.0.1:${socksPort}`,
      '--workers', String(WORKERS), '--shutdownGrace', '1',
    ]);
    echo = net.createServer((c) => {
      c.on('data', (d) => c.write(d));
      c.on('error', () => c.destroy());
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    udpEcho = await startUdpEcho('127.0.0.1');
    // every worker listens (the first listening line may come before the second worker's)
    await waitFor(() => client.lines.some((l) => l['msg'] === 'workers listening') && server.lines.some((l) => l['msg'] === 'workers listening'), 10_000, 'workers');
  }, 30_000);

  afterAll(async () => {
    await stopAllClis();
    echo?.close();
    await udpEcho?.close();
  });

  it('forks the workers', () => {
    expect(childPids(server.pid)).toHaveLength(WORKERS);
    expect(childPids(client.pid)).toHaveLength(WORKERS);
  });

  it('carries TCP connections through the workers', async () => {
    const port = (echo.address() as net.AddressInfo).port;
    for (let i = 0; i < 8; i++) {
      const s = await socksConnect(socksPort, { type: 'ipv4', host: '127.0.0.1', port });
      const msg = Buffer.from(`hello ${i} `.repeat(500));
      s.write(msg);
      expect((await readExactly(s, msg.length)).equals(msg)).toBe(true);
      s.destroy();
    }
  }, 20_000);

  it('relays UDP for every association, whichever worker holds it', async () => {
    const relayPorts = new Set<number>();
    for (let i = 0; i < 8; i++) {
      const u = await Socks5UdpClient.associate({ host: '127.0.0.1', port: socksPort });
      try {
        relayPorts.add(u.relay.port);
        // with workers each association's relay port is its worker's own, not the TCP port
        expect(u.relay.port).not.toBe(socksPort);
        for (let k = 0; k < 3; k++) {
          const data = Buffer.from(`dgram ${i}.${k}`);
          const got = u.next((r) => r.data.equals(data), 3000);
          u.send({ host: '127.0.0.1', port: udpEcho.port }, data);
          expect((await got).data.equals(data)).toBe(true);
        }
      } finally {
        await u.close();
      }
    }
    expect(relayPorts.size).toBeGreaterThanOrEqual(1);
    expect(relayPorts.size).toBeLessThanOrEqual(WORKERS);
  }, 30_000);

  it('SIGTERM stops the primary and its workers', async () => {
    for (const p of [client, server]) {
      const kids = childPids(p.pid);
      const r = await stopCli(p, 5000);
      expect(r.code).toBe(0);
      await waitFor(() => kids.every((k) => !alive(k)), 5000, 'workers to exit');
    }
  }, 20_000);
});
