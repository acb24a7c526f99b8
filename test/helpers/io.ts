/**
 * Test helpers, the plain-socket layer: timeouts, waits, hashing, ports, and reading
 * and writing raw bytes on a net.Socket with every wait bounded. Everything binds
 * 127.0.0.1 or ::1. (test/helpers/net.ts re-exports this file.)
 */
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';

export const LOOPBACK = '127.0.0.1';
export const LOOPBACK6 = '::1';
export const PASSWORD = 'hello';

/** Reject after `ms` with a message naming what was awaited. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll `cond` every 20 ms until true, at most `ms`. */
export async function waitFor(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

export function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

export interface Closable {
  close(): Promise<void>;
}

/** Close a net.Server and destroy its open connections. */
export function closer(servers: net.Server[], sockets: Set<net.Socket>): () => Promise<void> {
  return async () => {
    for (const s of sockets) s.destroy();
    await Promise.all(servers.map((srv) => new Promise<void>((r) => srv.close(() => r()))));
  };
}

export function listenOn(server: net.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.removeListener('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

/** A port on 127.0.0.1 that was free a moment ago (nothing listens on it). */
export async function freePort(host = LOOPBACK): Promise<number> {
  const s = net.createServer();
  const port = await listenOn(s, host, 0);
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Write `total` random bytes in 64 KiB chunks respecting backpressure; optional FIN after. */
export async function sendRandom(s: net.Socket, total: number, o: { end?: boolean; chunk?: number } = {}): Promise<{ hash: string; bytes: number }> {
  const chunk = o.chunk ?? 64 * 1024;
  const h = createHash('sha256');
  let sentBytes = 0;
  while (sentBytes < total) {
    if (s.destroyed) throw new Error(`socket destroyed after ${sentBytes} of ${total} bytes`);
    const b = randomBytes(Math.min(chunk, total - sentBytes));
    h.update(b);
    sentBytes += b.length;
    if (!s.write(b)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          s.off('close', onClose);
          resolve();
        };
        const onClose = () => {
          s.off('drain', onDrain);
          reject(new Error(`socket closed while writing (${sentBytes} of ${total})`));
        };
        s.once('drain', onDrain);
        s.once('close', onClose);
      });
    }
  }
  if (o.end) s.end();
  return { hash: h.digest('hex'), bytes: sentBytes };
}

/** Hash everything read from `s` until its FIN (or close). */
export function readAllHashed(s: net.Socket): Promise<{ hash: string; bytes: number; gotEnd: boolean }> {
  return new Promise((resolve) => {
    const h = createHash('sha256');
    let bytes = 0;
    let gotEnd = false;
    let done = false;
    const fin = () => {
      if (done) return;
      done = true;
      resolve({ hash: h.digest('hex'), bytes, gotEnd });
    };
    s.on('data', (d: Buffer) => {
      bytes += d.length;
      h.update(d);
    });
    s.on('end', () => {
      gotEnd = true;
      fin();
    });
    s.on('close', fin);
    s.resume();
  });
}

/** Everything read from `s` until FIN/close, as one buffer. */
export function readAll(s: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    let done = false;
    const fin = () => {
      if (done) return;
      done = true;
      resolve(Buffer.concat(parts));
    };
    s.on('data', (d: Buffer) => parts.push(d));
    s.on('end', fin);
    s.on('close', fin);
    s.resume();
  });
}

/** Read exactly `n` bytes (or fewer if the socket ends first); leftovers are unshifted back. */
export function readExactly(s: net.Socket, n: number, ms = 5000): Promise<Buffer> {
  return withTimeout(
    new Promise<Buffer>((resolve) => {
      let buf = Buffer.alloc(0);
      const onData = (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= n) {
          cleanup();
          s.pause();
          if (buf.length > n) s.unshift(buf.subarray(n));
          resolve(buf.subarray(0, n));
        }
      };
      const onEnd = () => {
        cleanup();
        resolve(buf);
      };
      const cleanup = () => {
        s.off('data', onData);
        s.off('end', onEnd);
        s.off('close', onEnd);
      };
      s.on('data', onData);
      s.on('end', onEnd);
      s.on('close', onEnd);
      s.resume();
    }),
    ms,
    `${n} bytes`,
  );
}

export function connectRaw(port: number, host = LOOPBACK): Promise<net.Socket> {
  return withTimeout(
    new Promise((resolve, reject) => {
      const s = net.connect({ host, port, allowHalfOpen: true }, () => {
        s.off('error', reject);
        s.on('error', () => undefined); // a reset shows up as 'close'; tests assert on that
        resolve(s);
      });
      s.once('error', reject);
    }),
    5000,
    `connect ${host}:${port}`,
  );
}

/** Resolves with the ms elapsed when `s` closes (bounded by `ms`, then rejects). */
export function closedWithin(s: net.Socket, ms: number): Promise<number> {
  const t0 = Date.now();
  if (s.destroyed) return Promise.resolve(0);
  return withTimeout(new Promise((r) => s.once('close', () => r(Date.now() - t0))), ms, 'socket close');
}

/** Resolves with the ms elapsed when `s` sees the peer's FIN or closes (bounded by `ms`). */
export function endedWithin(s: net.Socket, ms: number): Promise<number> {
  const t0 = Date.now();
  if (s.readableEnded || s.destroyed) return Promise.resolve(0);
  s.resume();
  return withTimeout(
    new Promise((r) => {
      const done = () => r(Date.now() - t0);
      s.once('end', done);
      s.once('close', done);
    }),
    ms,
    'socket end',
  );
}

/** Run `f`, which must throw a BrookError with `code` and a one-line message; returns the message. */
export function oneLineError(f: () => unknown, code: string): string {
  try {
    f();
  } catch (e) {
    const err = e as { code?: unknown; message?: unknown };
    if (err.code !== code) throw new Error(`expected ${code}, got ${String(err.code)}: ${String(err.message)}`);
    const m = String(err.message);
    if (m.includes('\n')) throw new Error(`a message of more than one line: ${m}`);
    return m;
  }
  throw new Error(`expected ${code}, nothing was thrown`);
}
