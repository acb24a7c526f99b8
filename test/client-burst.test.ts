/**
 * Issue 22, item 6: a wsclient at its descriptor limit degrades the way the server does. A burst of
 * SOCKS5 (or HTTP CONNECT) connections at once used to leave a handful of working tunnels: every
 * connection was accepted, then every dial to the server failed with EMFILE. Now both listeners stop
 * accepting while dials run out of descriptors, the waiting dials are tried again as descriptors come
 * back, and the burst ends with about as many working tunnels as connections made one by one.
 */
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WsServer } from '../src/server/wsserver.js';
import { type CliProcess, startCli, stopCli } from './helpers/cli.js';
import { LOOPBACK, PASSWORD, readExactly, socksConnect, withTimeout } from './helpers/net.js';

const NOFILE = 128;
const BURST = 300;
const TIMEOUT_MS = 10_000;

let server: WsServer;
let echo: net.Server;
let echoPort: number;
let client: CliProcess;

beforeAll(async () => {
  server = new WsServer({ listen: `${LOOPBACK}:0`, password: PASSWORD, log: () => undefined });
  const port = (await server.listen()).port;
  echo = net.createServer((c) => c.on('error', () => undefined).pipe(c));
  await new Promise<void>((r) => echo.listen(0, LOOPBACK, () => r()));
  echoPort = (echo.address() as net.AddressInfo).port;
  client = await startCli(
    ['wsclient', '--wsserver', `ws://${LOOPBACK}:${port}/ws`, '--password', PASSWORD, '--socks5', `${LOOPBACK}:0`, '--http', `${LOOPBACK}:0`],
    { nofile: NOFILE },
  );
});

afterAll(async () => {
  await stopCli(client);
  echo.close();
  await server.close();
});

/** A tunnel held open once a byte went through it and back; null when it did not start or did not work. */
async function held(way: 'socks5' | 'http'): Promise<net.Socket | null> {
  let s: net.Socket | undefined;
  try {
    if (way === 'socks5') s = await socksConnect(client.port('socks5'), { type: 'ipv4', host: LOOPBACK, port: echoPort });
    else {
      s = await withTimeout(
        new Promise<net.Socket>((resolve, reject) => {
          const c = net.connect({ host: LOOPBACK, port: client.port('http') }, () => resolve(c));
          c.once('error', reject);
        }),
        TIMEOUT_MS,
        'connect',
      );
      s.on('error', () => undefined);
      s.write(`CONNECT ${LOOPBACK}:${echoPort} HTTP/1.1\r\nHost: ${LOOPBACK}:${echoPort}\r\n\r\n`);
      const head = (await readExactly(s, 'HTTP/1.1 200 Connection established\r\n\r\n'.length, TIMEOUT_MS)).toString('latin1');
      if (!head.startsWith('HTTP/1.1 200')) throw new Error(head);
    }
    s.write('x');
    if ((await readExactly(s, 1, TIMEOUT_MS)).toString() === 'x') return s;
  } catch {
    /* not working */
  }
  s?.destroy();
  return null;
}

/** Every held tunnel still carries a byte both ways. */
async function stillWorking(ss: net.Socket[]): Promise<number> {
  const ok = await Promise.all(
    ss.map(async (s) => {
      s.write('y');
      return (await readExactly(s, 1, TIMEOUT_MS).catch(() => Buffer.alloc(0))).toString() === 'y';
    }),
  );
  return ok.filter(Boolean).length;
}

async function closeAll(ss: net.Socket[]): Promise<void> {
  for (const s of ss) s.destroy();
  await new Promise((r) => setTimeout(r, 1500));
}

describe(`wsclient at ulimit -n ${NOFILE}: a burst of ${BURST} connections`, () => {
  let oneByOne = 0;

  it('one by one: as many tunnels as the descriptors allow (the reference)', async () => {
    const ss: net.Socket[] = [];
    for (let i = 0; i < BURST; i++) {
      const s = await held('socks5');
      if (!s) break;
      ss.push(s);
    }
    oneByOne = ss.length;
    expect(oneByOne).toBeGreaterThan(20);
    expect(oneByOne).toBeLessThan(BURST);
    await closeAll(ss);
  }, 120_000);

  for (const way of ['socks5', 'http'] as const) {
    it(`${way}, all at once: about as many working tunnels, each still working at the end; accepting stops and resumes, logged`, async () => {
      const from = client.lines.length;
      const ss = (await Promise.all(Array.from({ length: BURST }, () => held(way)))).filter((s): s is net.Socket => s !== null);
      // measured: 49..52 of 52 now; 4..25 before (every connection accepted, then their dials failed)
      expect(ss.length).toBeGreaterThanOrEqual(Math.floor(oneByOne * 0.85));
      expect(await stillWorking(ss)).toBe(ss.length);
      await closeAll(ss);
      const msgs = client.lines.slice(from).map((l) => l['msg']);
      expect(msgs).toContain('out of descriptors: not accepting new connections');
      expect(msgs).toContain('descriptors available again: accepting');
      // and afterwards a tunnel works
      const after = await held(way);
      expect(after).not.toBeNull();
      after?.destroy();
    }, 120_000);
  }
});
