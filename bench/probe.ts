/**
 * The one measurement client of the benchmark: it drives any SOCKS5 proxy
 * against loopback targets that it starts itself, and prints one JSON line.
 * It runs in its own process (nothing else in it), the same for every
 * contender.
 *
 *   probe.ts tcp  --socks H:P --dir up|down --conns N --mib M   throughput, SHA-256 checked
 *                [--sender thread|main]                      where the sending side runs: a
 *                                                            worker_thread (default) or this thread
 *   probe.ts rtt  --socks H:P --count N [--link-delay MS]        connect + first byte latency; with
 *                                                                --link-delay the echo server sits behind
 *                                                                a delay relay (bench/delay.ts, MS each
 *                                                                way): the link of a direct connection
 *   probe.ts udp  --socks H:P --count N --size S                 UDP echo latency and loss
 *   probe.ts hold --socks H:P --count N                          open N tunnels (1-byte round trip
 *                                                                each), print {"ready":..}, keep them
 *                                                                open until stdin closes
 *
 * Targets: 'tcp' one byte selects the mode ('u' the target reads M MiB, hashes, answers the 32-byte
 * digest; 'd' the target writes M MiB and ends; bench/probe-target.ts); 'rtt'/'hold' an echo
 * server; 'udp' an echo socket. The bytes: bench/probe-pattern.ts.
 * Threads of 'tcp': the side that sends runs in a worker_thread (up: the uploading client,
 * bench/probe-sender.ts; down: the target), the side that receives and hashes in the main
 * thread, so they are two threads (one thread doing both was the benchmark's ceiling); both
 * are started before the clock. --sender main: everything in one thread (the probe before).
 */
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { startDelayRelay } from './delay.js';
import { DIGEST_SIZE, expectedDigest, MIB, pattern, writePattern } from './probe-pattern.js';
import { ATYP_IPV4, CMD_CONNECT, CMD_UDP_ASSOCIATE, ipv4Bytes, parseHostPort, readN, socksRequest } from './probe-socks.js';
import { startSenderThread } from './probe-sender.js';
import { startTcpTarget, startTcpTargetThread } from './probe-target.js';

const UDP_TIMEOUT_MS = 1000;

function arg(name: string, dflt?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1]!;
  if (dflt === undefined) throw new Error(`--${name} is required`);
  return dflt;
}

function listen(handler: (c: net.Socket) => void): Promise<net.Server> {
  return new Promise((resolve) => {
    const srv = net.createServer({ noDelay: true, pauseOnConnect: false }, handler);
    srv.listen({ host: '127.0.0.1', port: 0, backlog: 2048 }, () => resolve(srv));
  });
}

function portOf(srv: net.Server): number {
  return (srv.address() as net.AddressInfo).port;
}

async function tcp(): Promise<unknown> {
  const socks = arg('socks');
  const dir = arg('dir', 'up');
  const conns = Number(arg('conns', '1'));
  const mib = Number(arg('mib', '256'));
  const total = mib * MIB;
  const expect = expectedDigest(mib);
  const where = arg('sender', 'thread');
  if (where !== 'thread' && where !== 'main') throw new Error(`--sender must be thread or main, got ${where}`);
  // down: the target sends (a worker when asked); up: the target receives, here
  const target = where === 'thread' && dir !== 'up' ? await startTcpTargetThread(mib) : await startTcpTarget(mib);
  const port = target.port;
  const sender = where === 'thread' && dir === 'up' ? await startSenderThread({ socks, port, mib, conns }) : null;
  const one = async (): Promise<{ ok: boolean }> => {
    const { s } = await socksRequest(socks, CMD_CONNECT, '127.0.0.1', port);
    s.on('error', () => {});
    if (dir === 'up') {
      s.write('u');
      await writePattern(s, mib);
      const d = await readN(s, DIGEST_SIZE);
      s.destroy();
      return { ok: d.equals(expect) };
    }
    s.write('d');
    const h = createHash('sha256');
    let got = 0;
    await new Promise<void>((resolve) => {
      // the clock stops at the last byte, not at the end-of-stream (v2ray delays its half-close)
      s.on('data', (d: Buffer) => {
        h.update(d);
        got += d.length;
        if (got >= total) resolve();
      });
      s.on('end', resolve);
      s.on('close', resolve);
      s.resume();
    });
    s.destroy();
    return { ok: got === total && h.digest().equals(expect) };
  };
  const cpu0 = process.cpuUsage(); // every thread of the probe (the target's too)
  const t0 = process.hrtime.bigint();
  const rs = sender
    ? (await sender.run()).map((hex) => ({ ok: hex === expect.toString('hex') }))
    : await Promise.all(Array.from({ length: conns }, one));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  await target.close();
  const intact = rs.every((r) => r.ok);
  // the probe's own CPU seconds per GiB moved (user + system, all threads, while the clock ran)
  const probeCpuSecPerGiB = (cpu.user + cpu.system) / 1e6 / ((total * conns) / (1024 * MIB));
  return { mode: 'tcp', dir, sender: where, conns, mibEach: mib, bytes: total * conns, seconds: secs, MBps: (total * conns) / secs / 1e6, probeCpuSecPerGiB, intact };
}

function quantile(sorted: number[], q: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function echoServer(): Promise<net.Server> {
  return listen((c) => {
    c.on('data', (d: Buffer) => c.write(d));
    c.on('error', () => c.destroy());
    c.on('end', () => c.end());
  });
}

async function rtt(): Promise<unknown> {
  const socks = arg('socks');
  const count = Number(arg('count', '300'));
  const linkDelay = Number(arg('link-delay', '0'));
  const srv = await echoServer();
  const link = linkDelay > 0 ? await startDelayRelay({ target: { host: '127.0.0.1', port: portOf(srv) }, oneWayMs: linkDelay }) : null;
  const port = link ? link.port : portOf(srv);
  const lat: number[] = [];
  let fails = 0;
  for (let i = 0; i < count; i++) {
    const t0 = process.hrtime.bigint();
    try {
      const { s } = await socksRequest(socks, CMD_CONNECT, '127.0.0.1', port);
      s.write('p');
      const b = await readN(s, 1);
      if (b[0] === 0x70) lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
      else fails++;
      s.destroy();
    } catch {
      fails++;
    }
  }
  await link?.close();
  srv.close();
  lat.sort((a, b) => a - b);
  return { mode: 'rtt', count, fails, p50ms: quantile(lat, 0.5), p99ms: quantile(lat, 0.99) };
}

async function udp(): Promise<unknown> {
  const socks = arg('socks');
  const count = Number(arg('count', '200'));
  const size = Number(arg('size', '1200'));
  const echo = dgram.createSocket('udp4');
  echo.on('message', (m, r) => echo.send(m, r.port, r.address));
  await new Promise<void>((r) => echo.bind(0, '127.0.0.1', r));
  const echoPort = echo.address().port;
  const cl = dgram.createSocket('udp4');
  await new Promise<void>((r) => cl.bind(0, '127.0.0.1', r));
  const { s, bound } = await socksRequest(socks, CMD_UDP_ASSOCIATE, '127.0.0.1', cl.address().port);
  s.on('error', () => {});
  const relayHost = bound.host === '0.0.0.0' || bound.host === '' ? parseHostPort(socks).host : bound.host;
  const hdr = Buffer.alloc(10);
  hdr[3] = ATYP_IPV4;
  ipv4Bytes('127.0.0.1').copy(hdr, 4);
  hdr.writeUInt16BE(echoPort, 8);
  const lat: number[] = [];
  let waiting: ((m: Buffer) => void) | null = null;
  cl.on('message', (m) => waiting?.(m));
  for (let i = 0; i < count; i++) {
    const payload = Buffer.alloc(size);
    payload.writeUInt32BE(i, 0);
    pattern.copy(payload, 4, i * 7, i * 7 + size - 4);
    const t0 = process.hrtime.bigint();
    const ok = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => {
        waiting = null;
        resolve(false);
      }, UDP_TIMEOUT_MS);
      waiting = (m) => {
        // the reply carries a SOCKS5 UDP header (10 bytes for IPv4) then the datagram
        if (m.length >= 10 && m.subarray(10).equals(payload)) {
          clearTimeout(t);
          waiting = null;
          resolve(true);
        }
      };
      cl.send(Buffer.concat([hdr, payload]), bound.port, relayHost);
    });
    if (ok) lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  s.destroy();
  cl.close();
  echo.close();
  lat.sort((a, b) => a - b);
  return { mode: 'udp', count, size, echoed: lat.length, loss: (count - lat.length) / count, p50ms: quantile(lat, 0.5), p99ms: quantile(lat, 0.99) };
}

async function hold(): Promise<void> {
  const socks = arg('socks');
  const count = Number(arg('count', '1000'));
  const srv = await echoServer();
  const port = portOf(srv);
  const held: net.Socket[] = [];
  let fails = 0;
  const BATCH = 50;
  for (let i = 0; i < count; i += BATCH) {
    await Promise.all(
      Array.from({ length: Math.min(BATCH, count - i) }, async () => {
        try {
          const { s } = await socksRequest(socks, CMD_CONNECT, '127.0.0.1', port);
          s.on('error', () => {});
          s.write('h');
          await readN(s, 1);
          held.push(s);
        } catch {
          fails++;
        }
      }),
    );
  }
  process.stdout.write(JSON.stringify({ mode: 'hold', ready: held.length, fails }) + '\n');
  process.stdin.resume();
  await new Promise<void>((r) => process.stdin.on('end', r).on('close', r));
  for (const s of held) s.destroy();
  srv.close();
}

async function main(): Promise<void> {
  const mode = process.argv[2];
  if (mode === 'hold') return hold();
  const r = mode === 'tcp' ? await tcp() : mode === 'rtt' ? await rtt() : mode === 'udp' ? await udp() : null;
  if (r === null) throw new Error(`unknown mode ${mode}`);
  process.stdout.write(JSON.stringify(r) + '\n');
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stdout.write(JSON.stringify({ error: (e as Error).message }) + '\n');
    process.exit(1);
  },
);
