/**
 * Issue 4: UDP ASSOCIATE carried over the tunnel, end to end on loopback:
 * SOCKS5 UDP client (test/helpers/udp.ts, hand-built headers) -> WsClient ->
 * WsServer -> UDP responders on 127.0.0.1 / ::1, in Brook and
 * withoutBrookProtocol modes; upstream captures replayed into WsServer; the
 * independent socksprobe.py client.
 */
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { WsClient } from '../src/client/wsclient.js';
import { ErrorCodes } from '../src/errors.js';
import type { LogEntry } from '../src/log.js';
import { randomBytes } from 'node:crypto';
import { makeAddress } from '../src/protocol/address.js';
import { BrookCipher } from '../src/protocol/cipher.js';
import { buildFirstPayload } from '../src/protocol/header.js';
import { createClientCodec } from '../src/protocol/session.js';
import { buildUpgradeRequest, newWebSocketKey } from '../src/protocol/upgrade.js';
import { buildWobHeader, wobPasswordHash } from '../src/protocol/wob.js';
import { WsServer } from '../src/server/wsserver.js';
import {
  dnsAnswer,
  dnsQuery,
  type Dst,
  exchange,
  parseDnsAnswer,
  seqPayload,
  Socks5UdpClient,
  startUdpEcho,
  startUdpResponder,
  type UdpResponder,
} from './helpers/udp.js';
import { loadVector, type VectorName } from './helpers/vectors.js';

const PASSWORD = 'udp-e2e-password';

interface Pair {
  server: WsServer;
  client: WsClient;
  socks: Dst;
  logs: { server: LogEntry[]; client: LogEntry[] };
  close(): Promise<void>;
}

async function startPair(o: { wob: boolean; udpTimeout?: number; serverUdpTimeout?: number; udpQueueLimit?: number }): Promise<Pair> {
  const logs = { server: [] as LogEntry[], client: [] as LogEntry[] };
  const server = new WsServer({
    listen: '127.0.0.1:0',
    password: PASSWORD,
    udpTimeout: o.serverUdpTimeout ?? o.udpTimeout ?? 30,
    withoutBrookProtocol: o.wob,
    log: (e) => logs.server.push(e),
  });
  const addr = await server.listen();
  const client = new WsClient({
    endpoint: { secure: false, hostPort: `127.0.0.1:${addr.port}`, hostname: '127.0.0.1', port: addr.port, path: '/ws' },
    password: PASSWORD,
    socks5: '127.0.0.1:0',
    udpTimeout: o.udpTimeout ?? 30,
    udpQueueLimit: o.udpQueueLimit,
    withoutBrookProtocol: o.wob,
    log: (e) => logs.client.push(e),
  });
  try {
    await client.listen();
  } catch (e) {
    await server.close();
    throw e;
  }
  return {
    server,
    client,
    socks: { host: '127.0.0.1', port: client.socks.address().port },
    logs,
    close: async () => {
      await client.close();
      await server.close();
    },
  };
}

/** Poll `cond` every 25 ms for at most `ms`; returns whether it became true. */
async function waitFor(cond: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
  return true;
}

/** A UDP port on host with nothing bound to it (bound then released). */
async function unusedUdpPort(host: string): Promise<number> {
  const s = dgram.createSocket(net.isIPv6(host) ? 'udp6' : 'udp4');
  await new Promise<void>((r) => s.bind(0, host, () => r()));
  const { port } = s.address();
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** 1,000 mixed sizes 4..1,400 bytes (deterministic spread). */
function mixedPayloads(count: number, base: number): Buffer[] {
  return Array.from({ length: count }, (_, i) => seqPayload(base + i, 4 + ((i * 7919) % 1397)));
}

const BIG_SIZES = [9_000, 24_000, 41_000, 52_000, 60_000];

describe.each([
  { mode: 'Brook', wob: false },
  { mode: 'withoutBrookProtocol', wob: true },
])('UDP through WsClient + WsServer ($mode)', ({ wob }) => {
  let pair: Pair;
  const responders: UdpResponder[] = [];
  const assocs: Socks5UdpClient[] = [];
  let echo4: UdpResponder;
  let echo6: UdpResponder;

  const associate = async () => {
    const c = await Socks5UdpClient.associate(pair.socks);
    assocs.push(c);
    return c;
  };
  const responder = async (host: string, reply: (d: Buffer) => Buffer | null) => {
    const r = await startUdpResponder(host, reply);
    responders.push(r);
    return r;
  };

  beforeAll(async () => {
    pair = await startPair({ wob });
    echo4 = await responder('127.0.0.1', (d) => d);
    echo6 = await responder('::1', (d) => d);
  });
  afterEach(async () => {
    for (const c of assocs.splice(0)) await c.close();
    // closing an association closes its flows
    expect(await waitFor(() => pair.client.udpFlows === 0, 2000)).toBe(true);
  });
  afterAll(async () => {
    await pair?.close();
    for (const r of responders) await r.close();
  });

  it.each([
    { family: 'IPv4', host: '127.0.0.1' },
    { family: 'IPv6', host: '::1' },
  ])('1,000 mixed-size datagrams and a few up to 60,000 bytes to an $family echo come back intact, over one tunnel', async ({ host }) => {
    const c = await associate();
    const dst = { host, port: host === '::1' ? echo6.port : echo4.port };
    const tunnelsBefore = pair.client.stats.tunnels;
    const small = await exchange(c, dst, mixedPayloads(1000, 0), { window: 24, timeoutMs: 15_000 });
    expect(small).toMatchObject({ sent: 1000, intact: 1000, corrupted: 0 });
    const big = await exchange(
      c,
      dst,
      BIG_SIZES.map((n, i) => seqPayload(5000 + i, n)),
      { window: 1, timeoutMs: 5_000 },
    );
    expect(big).toMatchObject({ sent: BIG_SIZES.length, intact: BIG_SIZES.length, corrupted: 0 });
    // one flow, one tunnel, reused for all 1,005 datagrams
    expect(pair.client.stats.tunnels - tunnelsBefore).toBe(1);
    expect(pair.client.udpFlows).toBe(1);
    expect(pair.client.stats.udpDropped).toBe(0);
  });

  it('several flows at once to different destinations keep their datagrams apart', async () => {
    const c = await associate();
    const tags = ['A', 'B', 'C'].map((t) => Buffer.from(`flow-${t}:`));
    const hosts = ['127.0.0.1', '::1', '127.0.0.1'];
    const rs = await Promise.all(tags.map((tag, i) => responder(hosts[i], (d) => Buffer.concat([tag, d]))));
    const runs = rs.map((r, i) =>
      exchange(c, { host: r.host, port: r.port }, mixedPayloads(200, i * 10_000), {
        window: 8,
        timeoutMs: 10_000,
        expect: (p) => Buffer.concat([tags[i], p]),
        seqAt: tags[i].length,
      }),
    );
    const results = await Promise.all(runs);
    for (const res of results) expect(res).toMatchObject({ sent: 200, intact: 200, corrupted: 0 });
    expect(rs.map((r) => r.received)).toEqual([200, 200, 200]);
    expect(pair.client.udpFlows).toBe(3);
  });

  it('a DNS-style query to a domain-addressed destination ("localhost") is answered through the tunnel', async () => {
    // the server resolves "localhost" with the same resolver: bind the responder where it points
    const { address } = await lookup('localhost');
    const dns = await responder(address, (q) => dnsAnswer(q, '127.0.0.42'));
    const c = await associate();
    const dst = { host: 'localhost', port: dns.port };
    c.send(dst, dnsQuery(0x4b1d, 'brook.example'));
    const r = await c.next();
    expect(r.atyp).toBe(0x03); // the reply names the destination it came from, as a domain
    expect(r.src).toEqual(dst);
    expect(parseDnsAnswer(r.data)).toEqual({ id: 0x4b1d, rcode: 0, a: ['127.0.0.42'] });
  });

  it('datagrams sent while the tunnel opens are delivered in order', async () => {
    const c = await associate();
    const dst = { host: '127.0.0.1', port: echo4.port };
    const got = c.collect(3000, 50);
    for (let i = 0; i < 50; i++) c.send(dst, seqPayload(i, 500));
    const replies = await got;
    expect(replies.map((r) => r.data.readUInt32BE(0))).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(replies.every((r, i) => r.data.equals(seqPayload(i, 500)))).toBe(true);
  });

  it('bad input is dropped with a log line and other flows keep working', async () => {
    const c = await associate();
    const dst = { host: '127.0.0.1', port: echo4.port };
    const fragSink = await responder('127.0.0.1', (d) => d);
    const silentPort = await unusedUdpPort('127.0.0.1');
    const droppedBefore = pair.client.socks.stats.udpDropped;

    expect((await exchange(c, dst, [seqPayload(1, 100)], { window: 1, timeoutMs: 3000 })).intact).toBe(1);

    c.sendRaw(Buffer.from([0, 0, 0, 1, 127, 0])); // truncated SOCKS5 UDP header
    c.sendRaw(Buffer.from([0, 0, 0, 9, 127, 0, 0, 1, 0, 53, 1, 2, 3])); // unknown ATYP
    c.send({ host: '127.0.0.1', port: fragSink.port }, Buffer.from('fragment'), 1); // FRAG != 0
    const stranger = dgram.createSocket('udp4');
    await new Promise<void>((r) => stranger.bind(0, '127.0.0.1', () => r()));
    stranger.send(Buffer.concat([Buffer.from([0, 0, 0, 1, 127, 0, 0, 1]), Buffer.from([echo4.port >> 8, echo4.port & 0xff]), Buffer.from('x')]), c.relay.port, c.relay.host);
    c.send({ host: '127.0.0.1', port: silentPort }, Buffer.from('anyone there?')); // a destination that does not answer
    c.send({ host: '127.0.0.1', port: silentPort }, Buffer.from('anyone there? 2'));
    if (!wob) c.send(dst, Buffer.alloc(65_490, 7)); // over MAX_UDP_PAYLOAD (65,473); wob's 65,505 cannot be exceeded over IPv4

    // the good flow is not stalled
    const after = await exchange(c, dst, mixedPayloads(100, 100), { window: 8, timeoutMs: 5000 });
    expect(after).toMatchObject({ sent: 100, intact: 100, corrupted: 0 });
    await new Promise<void>((r) => stranger.close(() => r()));

    expect(fragSink.received).toBe(0);
    expect(pair.client.socks.stats.udpDropped - droppedBefore).toBeGreaterThanOrEqual(4);
    const codes = pair.logs.client.map((e) => e.code);
    expect(codes).toContain(ErrorCodes.ADDRESS_TRUNCATED);
    expect(codes).toContain(ErrorCodes.ATYP_UNKNOWN);
    expect(codes).toContain(ErrorCodes.SOCKS_UDP_FRAG);
    expect(pair.logs.client.some((e) => String(e.error).includes('stranger'))).toBe(true);
    if (!wob) {
      expect(pair.logs.client.some((e) => e.code === ErrorCodes.PAYLOAD_OVERSIZED && String(e.error).includes('65490'))).toBe(true);
      expect(pair.client.stats.udpDropped).toBeGreaterThanOrEqual(1);
    }
    // the silent destination: the server logs the refused send and keeps the flow (closed when idle)
    const silent = `127.0.0.1:${silentPort}`;
    expect(await waitFor(() => pair.logs.server.some((e) => e.dst === silent && e.code === ErrorCodes.CONNECTION_REFUSED), 3000)).toBe(true);
    expect(pair.client.udpFlows).toBe(2);
  });

  it('the association lives as long as its TCP control connection', async () => {
    const c = await associate();
    const dst = { host: '127.0.0.1', port: echo4.port };
    expect((await exchange(c, dst, [seqPayload(7, 64)], { window: 1, timeoutMs: 3000 })).intact).toBe(1);
    expect(pair.client.udpFlows).toBe(1);
    const serverTunnels = pair.server.openTunnels;
    expect(serverTunnels).toBeGreaterThanOrEqual(1);
    c.control.destroy();
    expect(await waitFor(() => pair.client.udpFlows === 0, 2000)).toBe(true);
    expect(await waitFor(() => pair.server.openTunnels === serverTunnels - 1, 2000)).toBe(true);
    // the UDP socket of the ended association is now a stranger: dropped
    const dropped = pair.client.socks.stats.udpDropped;
    c.send(dst, seqPayload(8, 64));
    expect(await waitFor(() => pair.client.socks.stats.udpDropped === dropped + 1, 2000)).toBe(true);
    expect(pair.client.udpFlows).toBe(0);
  });
});

describe('UDP flow bounds and timeouts', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it.each([{ wob: false }, { wob: true }])('datagrams queued while opening are bounded; beyond it dropped and counted (wob=$wob)', async ({ wob }) => {
    const pair = await startPair({ wob, udpQueueLimit: 3000 });
    cleanup.push(() => pair.close());
    const echo = await startUdpEcho('127.0.0.1');
    cleanup.push(() => echo.close());
    const c = await Socks5UdpClient.associate(pair.socks);
    cleanup.push(() => c.close());
    const dst = { host: '127.0.0.1', port: echo.port };
    const got = c.collect(1500);
    for (let i = 0; i < 10; i++) c.send(dst, seqPayload(i, 1000));
    const seqs = (await got).map((r) => r.data.readUInt32BE(0));
    // what was delivered is a prefix, in order; the rest was dropped and counted
    expect(seqs).toEqual(Array.from({ length: seqs.length }, (_, i) => i));
    expect(seqs.length).toBeGreaterThanOrEqual(3);
    expect(pair.client.stats.udpDropped).toBe(10 - seqs.length);
    expect(pair.client.stats.udpDropped).toBeGreaterThanOrEqual(1);
    expect(pair.logs.client.some((e) => String(e.error).includes('queue of 3000 bytes full'))).toBe(true);
    // once open, the flow carries datagrams normally
    const more = await exchange(c, dst, mixedPayloads(20, 100), { window: 4, timeoutMs: 3000 });
    expect(more.intact).toBe(20);
  });

  it.each([{ wob: false }, { wob: true }])('an idle flow is closed after udpTimeout on both ends (wob=$wob)', async ({ wob }) => {
    const pair = await startPair({ wob, udpTimeout: 1 });
    cleanup.push(() => pair.close());
    const echo = await startUdpEcho('127.0.0.1');
    cleanup.push(() => echo.close());
    const c = await Socks5UdpClient.associate(pair.socks);
    cleanup.push(() => c.close());
    const dst = { host: '127.0.0.1', port: echo.port };
    expect((await exchange(c, dst, [seqPayload(1, 100)], { window: 1, timeoutMs: 3000 })).intact).toBe(1);
    const t0 = Date.now();
    expect(pair.client.udpFlows).toBe(1);
    expect(pair.server.openTunnels).toBe(1);
    expect(await waitFor(() => pair.client.udpFlows === 0 && pair.server.openTunnels === 0, 3000)).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(800);
    // the association survives; the next datagram opens a new tunnel
    const tunnels = pair.client.stats.tunnels;
    expect((await exchange(c, dst, [seqPayload(2, 100)], { window: 1, timeoutMs: 3000 })).intact).toBe(1);
    expect(pair.client.stats.tunnels).toBe(tunnels + 1);
  });

  it.each([{ wob: false }, { wob: true }])('the server closes an idle flow on its own after its udpTimeout (wob=$wob)', async ({ wob }) => {
    const pair = await startPair({ wob, udpTimeout: 30, serverUdpTimeout: 1 });
    cleanup.push(() => pair.close());
    const echo = await startUdpEcho('127.0.0.1');
    cleanup.push(() => echo.close());
    const c = await Socks5UdpClient.associate(pair.socks);
    cleanup.push(() => c.close());
    const dst = { host: '127.0.0.1', port: echo.port };
    expect((await exchange(c, dst, [seqPayload(1, 100)], { window: 1, timeoutMs: 3000 })).intact).toBe(1);
    const t0 = Date.now();
    expect(pair.server.openTunnels).toBe(1);
    // the server's timer ends the tunnel; the client's flow follows it
    expect(await waitFor(() => pair.server.openTunnels === 0 && pair.client.udpFlows === 0, 3000)).toBe(true);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(800);
    expect(pair.logs.server).toEqual([]); // an idle end is not an error
  });

  it('refuses to start when UDP needs an IP and none is known; --socks5ServerIP is announced', async () => {
    const base = {
      endpoint: { secure: false, hostPort: '127.0.0.1:9', hostname: '127.0.0.1', port: 9, path: '/ws' },
      password: PASSWORD,
      log: () => {},
    };
    // 0.0.0.0 without socks5ServerIP: rejected before anything is bound
    const any = new WsClient({ ...base, socks5: '0.0.0.0:0' });
    await expect(any.listen()).rejects.toMatchObject({ code: ErrorCodes.CONFIG, message: expect.stringContaining('--socks5ServerIP') });
    await any.close();
    const anyPort = new WsClient({ ...base, socks5: ':0' });
    await expect(anyPort.listen()).rejects.toMatchObject({ code: ErrorCodes.CONFIG });
    await anyPort.close();
    // override: the reply announces the given IP
    const c = new WsClient({ ...base, socks5: '127.0.0.1:0', socks5ServerIP: '::1' });
    cleanup.push(() => c.close());
    await c.listen();
    const a = await Socks5UdpClient.associate({ host: '127.0.0.1', port: c.socks.address().port });
    cleanup.push(() => a.close());
    expect(a.relay).toEqual({ host: '::1', port: c.socks.address().port });
    // default: the listen IP, same port number as TCP
    const d = new WsClient({ ...base, socks5: '127.0.0.1:0' });
    cleanup.push(() => d.close());
    await d.listen();
    const b = await Socks5UdpClient.associate({ host: '127.0.0.1', port: d.socks.address().port });
    cleanup.push(() => b.close());
    expect(b.relay).toEqual({ host: '127.0.0.1', port: d.socks.address().port });
  });
});

describe('captured upstream UDP streams replayed into WsServer', () => {
  const UPSTREAM_ECHO_PORT = 19111;
  let echo: UdpResponder;
  beforeAll(async () => {
    echo = await startUdpEcho('127.0.0.1', UPSTREAM_ECHO_PORT);
  });
  afterAll(async () => {
    await echo?.close();
  });

  /** Raw TCP: upgrade, then the captured bytes; returns what the server sent after the 101 once `want` bytes came. */
  async function replay(name: VectorName, want: number): Promise<{ after: Buffer; server: WsServer; echoed: number }> {
    const v = loadVector(name);
    const server = new WsServer({
      listen: '127.0.0.1:0',
      password: v.password,
      withoutBrookProtocol: v.withoutBrookProtocol,
      udpTimeout: 5,
      now: () => v.decoded.time * 1000,
      log: () => {},
    });
    const { port } = await server.listen();
    const before = echo.received;
    const sock = net.connect(port, '127.0.0.1');
    try {
      const after = await new Promise<Buffer>((resolve, reject) => {
        let buf = Buffer.alloc(0);
        let upgraded = -1;
        const timer = setTimeout(() => reject(new Error(`replay ${name}: got ${buf.toString('hex')}`)), 3000);
        sock.on('error', reject);
        sock.on('connect', () => sock.write(v.ws_upgrade_request_text));
        sock.on('data', (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          if (upgraded < 0) {
            const end = buf.indexOf('\r\n\r\n');
            if (end < 0) return;
            expect(buf.subarray(0, end).toString()).toMatch(/^HTTP\/1\.1 101 /);
            upgraded = end + 4;
            sock.write(Buffer.from(v.after_upgrade_client_to_server_hex, 'hex'));
          }
          if (buf.length - upgraded >= want) {
            clearTimeout(timer);
            resolve(buf.subarray(upgraded));
          }
        });
      });
      // nothing more than one fragment / one framed datagram
      await new Promise((r) => setTimeout(r, 100));
      return { after, server, echoed: echo.received - before };
    } finally {
      sock.destroy();
      await server.close();
    }
  }

  it('Brook: the stream reaches the echo with "ping"; the answer is a server nonce then one fragment "ping"', async () => {
    const v = loadVector('udp');
    const captured = Buffer.from(v.after_upgrade_server_to_client_hex, 'hex');
    const { after, echoed } = await replay('udp', captured.length);
    expect(echoed).toBe(1);
    expect(after.length).toBe(captured.length); // 12 nonce + 18 sealed length + 4 + 16
    const payloads: string[] = [];
    const dec = createClientCodec({ password: v.password, network: 'udp', destination: makeAddress('127.0.0.1', UPSTREAM_ECHO_PORT) });
    dec.push(after, (p) => payloads.push(p.toString()));
    expect(payloads).toEqual(v.decoded.s2c_frames);
    expect(payloads).toEqual(['ping']);
  });

  it('withoutBrookProtocol: the answer is u16 length + "ping", byte for byte as captured', async () => {
    const v = loadVector('udp-wob');
    const captured = Buffer.from(v.after_upgrade_server_to_client_hex, 'hex');
    const { after, echoed } = await replay('udp-wob', captured.length);
    expect(echoed).toBe(1);
    expect(after.toString('hex')).toBe(captured.toString('hex'));
  });
});

/** The independent probe, copied from ../shared/tools into test/tools (no run-time dependency on ../shared). */
const PROBE = fileURLToPath(new URL('./tools/socksprobe.py', import.meta.url));

describe('independent client: socksprobe.py udp', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  it.each([{ wob: false }, { wob: true }])('reports every datagram echoed (wob=$wob)', async ({ wob }) => {
    const pair = await startPair({ wob });
    cleanup.push(() => pair.close());
    const args = [PROBE!, 'udp', '--socks', `127.0.0.1:${pair.socks.port}`, '--count', '200', '--size', '1200'];
    const child = spawn('python3', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const code = await new Promise<number | null>((resolve) => {
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.on('close', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    cleanup.push(async () => {
      if (child.exitCode === null) child.kill('SIGKILL');
    });
    const figures = JSON.parse(out.trim().split('\n').pop() ?? '{}') as Record<string, unknown>;
    console.log(`socksprobe udp (wob=${wob}): ${out.trim()}${err ? ` stderr: ${err.trim()}` : ''}`);
    expect(code).toBe(0);
    expect(figures).toMatchObject({ mode: 'udp', sent: 200, echoed_intact: 200, size: 1200 });
  });
});

/** Raw TCP to a WsServer: upgrade, then whatever bytes the test writes; collects what comes after the 101. */
async function rawTunnel(port: number): Promise<{ sock: net.Socket; after: () => Buffer; closed: Promise<void> }> {
  const sock = net.connect(port, '127.0.0.1');
  sock.on('error', () => {});
  const closed = new Promise<void>((r) => sock.on('close', () => r()));
  let buf = Buffer.alloc(0);
  let head = -1;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no 101 within 3 s')), 3000);
    sock.on('connect', () => sock.write(buildUpgradeRequest({ host: `127.0.0.1:${port}`, path: '/ws', key: newWebSocketKey() })));
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (head < 0 && buf.indexOf('\r\n\r\n') >= 0) {
        head = buf.indexOf('\r\n\r\n') + 4;
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return { sock, after: () => buf.subarray(head), closed };
}

describe('server limits on UDP fragments (raw client)', () => {
  const cleanup: Array<() => Promise<void>> = [];
  afterEach(async () => {
    for (const f of cleanup.splice(0).reverse()) await f();
  });

  async function setup(wob: boolean) {
    const logs: LogEntry[] = [];
    const server = new WsServer({ listen: '127.0.0.1:0', password: PASSWORD, withoutBrookProtocol: wob, udpTimeout: 5, log: (e) => logs.push(e) });
    const { port } = await server.listen();
    cleanup.push(() => server.close());
    const echo = await startUdpEcho('127.0.0.1');
    cleanup.push(() => echo.close());
    const destination = makeAddress('127.0.0.1', echo.port);
    return { server, port, echo, destination, logs };
  }

  it('Brook: a 65,473-byte datagram (whole fragment 65,507) passes both ways; a fragment one byte larger closes the tunnel', async () => {
    const { server, port, echo, destination, logs } = await setup(false);
    const t = await rawTunnel(port);
    const nonce = randomBytes(12);
    const c = BrookCipher.fromPassword(Buffer.from(PASSWORD), nonce);
    const fragment = (payload: Buffer, claimed = payload.length) => {
      const len = Buffer.alloc(2);
      len.writeUInt16BE(claimed);
      return Buffer.concat([c.seal(len), c.seal(payload)]);
    };
    const big = seqPayload(1, 65_473);
    t.sock.write(Buffer.concat([nonce, fragment(buildFirstPayload({ network: 'udp', destination })), fragment(big)]));
    const want = 12 + 65_473 + 34;
    expect(await waitFor(() => t.after().length >= want, 3000)).toBe(true);
    const got: Buffer[] = [];
    createClientCodec({ password: PASSWORD, network: 'udp', destination }).push(t.after(), (p) => got.push(Buffer.from(p)));
    expect(got.length).toBe(1);
    expect(got[0].equals(big)).toBe(true);
    // 65,474 bytes claimed: refused from the length field alone, the tunnel is closed and logged
    const received = echo.received;
    t.sock.write(c.seal(Buffer.from([0xff, 0xc2])));
    await t.closed;
    expect(echo.received).toBe(received);
    expect(await waitFor(() => server.openTunnels === 0, 2000)).toBe(true);
    expect(logs.some((e) => e.network === 'udp' && typeof e.code === 'string' && /OVERSIZED/.test(e.code))).toBe(true);
  });

  it('withoutBrookProtocol: u16 length + datagram framing; a length over 65,505 closes the tunnel', async () => {
    const { server, port, echo, destination, logs } = await setup(true);
    const t = await rawTunnel(port);
    const frame = (d: Buffer) => Buffer.concat([Buffer.from([d.length >> 8, d.length & 0xff]), d]);
    const dgramA = Buffer.from('first datagram');
    const dgramB = seqPayload(2, 65_505);
    t.sock.write(Buffer.concat([buildWobHeader(wobPasswordHash(PASSWORD), { network: 'udp', destination }), frame(dgramA), frame(dgramB)]));
    const want = Buffer.concat([frame(dgramA), frame(dgramB)]);
    expect(await waitFor(() => t.after().length >= want.length, 3000)).toBe(true);
    expect(t.after().equals(want)).toBe(true);
    const received = echo.received;
    t.sock.write(Buffer.from([0xff, 0xe2])); // 65,506
    await t.closed;
    expect(echo.received).toBe(received);
    expect(await waitFor(() => server.openTunnels === 0, 2000)).toBe(true);
    expect(logs.some((e) => e.network === 'udp' && typeof e.code === 'string' && /OVERSIZED/.test(e.code))).toBe(true);
  });
});
