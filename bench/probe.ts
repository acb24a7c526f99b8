/**
 * The one measurement client of the benchmark: it drives any SOCKS5 proxy
 * against loopback targets that it starts itself, and prints one JSON line.
 * It runs in its own process (nothing else in it), the same for every
 * contender.
 *
 *   probe.ts tcp  --socks H:P --dir up|down --conns N --mib M   throughput, SHA-256 checked
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
 * digest; 'd' the target writes M MiB and ends); 'rtt'/'hold' an echo server; 'udp' an echo socket.
 */
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { startDelayRelay } from './delay.js';

const MIB = 1024 * 1024;
/** Size of the repeated data pattern (and of each write). */
const PATTERN_SIZE = MIB;
const DIGEST_SIZE = 32;
const UDP_TIMEOUT_MS = 1000;
const CONNECT_TIMEOUT_MS = 15_000;
const SOCKS_VERSION = 5;
const CMD_CONNECT = 1;
const CMD_UDP_ASSOCIATE = 3;
const ATYP_IPV4 = 1;

function arg(name: string, dflt?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1]!;
  if (dflt === undefined) throw new Error(`--${name} is required`);
  return dflt;
}

const pattern = Buffer.alloc(PATTERN_SIZE);
{
  // deterministic, incompressible-looking bytes
  let x = 0x9e3779b9;
  for (let i = 0; i < PATTERN_SIZE; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    pattern.writeUInt32LE(x >>> 0, i);
  }
}

function expectedDigest(mib: number): Buffer {
  const h = createHash('sha256');
  for (let i = 0; i < mib; i++) h.update(pattern);
  return h.digest();
}

/** Reads exactly n bytes from a socket that is in paused mode (via 'readable'). */
function readN(s: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let have = 0;
    const onReadable = () => {
      for (;;) {
        const want = n - have;
        if (want === 0) break;
        let c: Buffer | null = s.read(Math.min(want, s.readableLength || want));
        if (c === null) c = s.read();
        if (c === null) return;
        if (c.length > want) {
          s.unshift(c.subarray(want));
          c = c.subarray(0, want);
        }
        parts.push(c);
        have += c.length;
      }
      cleanup();
      resolve(Buffer.concat(parts, n));
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`eof after ${have} of ${n} bytes`));
    };
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    const cleanup = () => {
      s.removeListener('readable', onReadable);
      s.removeListener('end', onEnd);
      s.removeListener('error', onError);
    };
    s.on('readable', onReadable);
    s.on('end', onEnd);
    s.on('error', onError);
    onReadable();
  });
}

function parseHostPort(hp: string): { host: string; port: number } {
  const i = hp.lastIndexOf(':');
  return { host: hp.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hp.slice(i + 1)) };
}

function ipv4Bytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map(Number));
}

function tcpConnect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, noDelay: true });
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect ${host}:${port} timed out`));
    }, CONNECT_TIMEOUT_MS);
    s.once('connect', () => {
      clearTimeout(t);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

/** SOCKS5 no-auth handshake; returns the socket (paused) after the reply and the reply's bound address. */
async function socksRequest(socks: string, cmd: number, host: string, port: number): Promise<{ s: net.Socket; bound: { host: string; port: number } }> {
  const p = parseHostPort(socks);
  const s = await tcpConnect(p.host, p.port);
  const portBuf = Buffer.alloc(2);
  portBuf.writeUInt16BE(port, 0);
  // greeting and request together: every contender accepts the pipelined request
  s.write(Buffer.concat([Buffer.from([SOCKS_VERSION, 1, 0]), Buffer.from([SOCKS_VERSION, cmd, 0, ATYP_IPV4]), ipv4Bytes(host), portBuf]));
  const m = await readN(s, 2);
  if (m[0] !== SOCKS_VERSION || m[1] !== 0) throw new Error(`method reply ${m.toString('hex')}`);
  const r = await readN(s, 4);
  if (r[1] !== 0) throw new Error(`request reply code ${r[1]}`);
  let bhost: string;
  if (r[3] === ATYP_IPV4) bhost = [...(await readN(s, 4))].join('.');
  else if (r[3] === 4) {
    const b = await readN(s, 16);
    bhost = b.toString('hex').match(/.{4}/g)!.join(':');
  } else {
    const l = (await readN(s, 1))[0]!;
    bhost = (await readN(s, l)).toString();
  }
  const bport = (await readN(s, 2)).readUInt16BE(0);
  return { s, bound: { host: bhost, port: bport } };
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

/** Write `mib` MiB of the pattern with backpressure. */
async function writePattern(s: net.Socket, mib: number): Promise<void> {
  for (let i = 0; i < mib; i++) {
    if (!s.write(pattern)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          s.removeListener('close', onClose);
          resolve();
        };
        const onClose = () => {
          s.removeListener('drain', onDrain);
          reject(new Error('closed while writing'));
        };
        s.once('drain', onDrain);
        s.once('close', onClose);
      });
    }
  }
}

async function tcp(): Promise<unknown> {
  const socks = arg('socks');
  const dir = arg('dir', 'up');
  const conns = Number(arg('conns', '1'));
  const mib = Number(arg('mib', '256'));
  const total = mib * MIB;
  const expect = expectedDigest(mib);
  const srv = await listen((c) => {
    c.once('readable', function first() {
      const m = c.read(1) as Buffer | null;
      if (!m) {
        c.once('readable', first);
        return;
      }
      if (m[0] === 0x75 /* u */) {
        const h = createHash('sha256');
        let got = 0;
        c.on('data', (d: Buffer) => {
          h.update(d);
          got += d.length;
          if (got >= total) c.end(h.digest());
        });
      } else {
        c.on('data', () => {});
        writePattern(c, mib).then(
          () => c.end(),
          () => c.destroy(),
        );
      }
    });
    c.on('error', () => c.destroy());
  });
  const port = portOf(srv);
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
  const t0 = process.hrtime.bigint();
  const rs = await Promise.all(Array.from({ length: conns }, one));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  srv.close();
  const intact = rs.every((r) => r.ok);
  return { mode: 'tcp', dir, conns, mibEach: mib, bytes: total * conns, seconds: secs, MBps: (total * conns) / secs / 1e6, intact };
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
