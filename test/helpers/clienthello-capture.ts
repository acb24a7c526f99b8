/**
 * A capturing front for a TLS server on loopback: each connection's bytes are
 * read, with the monotonic time of every read, until a whole ClientHello has
 * arrived; then (with `forwardTo`) everything read so far and what follows is
 * passed to the TLS server and back, so the handshake completes; without it
 * the connection is closed. Half-closes pass through (each side's FIN is
 * forwarded on its own). Used by the fingerprint and fragment tests and by
 * bench/clienthello.ts.
 *
 * A read can hold more than one of the client's segments when this process
 * was slow to read (the kernel queues them; measured under load: two 80-byte
 * pieces sent 4 ms apart read as one): the reads show where the bytes may be
 * cut, not how many writes they came in.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ServerEndpoint } from '../../src/client/dial.js';
import { WsServer } from '../../src/server/wsserver.js';
import { type ClientHello, extractClientHello, parseClientHello } from '../../src/tls/clienthello.js';
import { selfSigned } from './cli.js';
import { LOOPBACK, PASSWORD } from './io.js';

export interface CapturedRead {
  bytes: Buffer;
  /** process.hrtime.bigint() when it was read. */
  atNs: bigint;
}

export interface CapturedHello {
  /** The client's port (its socket's localPort). */
  peerPort: number;
  /** The reads up to and including the one that completed the ClientHello. */
  reads: CapturedRead[];
  /** The bytes of those reads. */
  bytes: Buffer;
  hello: ClientHello;
}

export interface HelloCapture {
  port: number;
  captured: CapturedHello[];
  /** The next ClientHello (already captured or still to come). */
  next(timeoutMs?: number): Promise<CapturedHello>;
  close(): Promise<void>;
}

const DEFAULT_NEXT_TIMEOUT_MS = 10_000;

export async function startHelloCapture(o: { forwardTo?: { host: string; port: number }; host?: string } = {}): Promise<HelloCapture> {
  const captured: CapturedHello[] = [];
  const waiters: Array<(c: CapturedHello) => void> = [];
  let taken = 0;
  const sockets = new Set<net.Socket>();
  const deliver = (c: CapturedHello) => {
    captured.push(c);
    const w = waiters.shift();
    if (w) {
      taken++;
      w(c);
    }
  };
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => undefined);
    const reads: CapturedRead[] = [];
    const onData = (d: Buffer) => {
      reads.push({ bytes: d, atNs: process.hrtime.bigint() });
      const bytes = Buffer.concat(reads.map((r) => r.bytes));
      let found;
      try {
        found = extractClientHello(bytes);
      } catch {
        s.destroy();
        return;
      }
      if (!found) return;
      s.removeListener('data', onData);
      deliver({ peerPort: s.remotePort ?? 0, reads, bytes, hello: parseClientHello(bytes) });
      if (!o.forwardTo) {
        s.destroy();
        return;
      }
      s.pause();
      const up = net.connect({ ...o.forwardTo, allowHalfOpen: true }, () => {
        up.write(bytes);
        s.pipe(up);
        up.pipe(s);
        s.resume();
      });
      sockets.add(up);
      up.on('close', () => {
        sockets.delete(up);
        s.destroy();
      });
      up.on('error', () => s.destroy());
      s.on('close', () => up.destroy());
    };
    s.on('data', onData);
  });
  await new Promise<void>((r) => server.listen(0, o.host ?? '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    captured,
    next(timeoutMs = DEFAULT_NEXT_TIMEOUT_MS) {
      if (taken < captured.length) return Promise.resolve(captured[taken++]!);
      return new Promise((resolve, reject) => {
        const w = (c: CapturedHello) => {
          clearTimeout(t);
          resolve(c);
        };
        const t = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`no ClientHello within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.push(w);
      });
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}

/** Our wssserver (self-signed for `name`) behind a capturing front; endpoint() dials the front. */
export interface CapturedWss {
  cap: HelloCapture;
  /** The server certificate (PEM), to trust. */
  ca: string;
  endpoint(o?: Partial<ServerEndpoint>): ServerEndpoint;
  close(): Promise<void>;
}

export async function startCapturedWss(name: string): Promise<CapturedWss> {
  const dir = mkdtempSync(join(tmpdir(), 'brook-captured-wss-'));
  const { cert, key } = await selfSigned(dir, name, 'srv');
  const ca = readFileSync(cert, 'utf8');
  const server = new WsServer({ listen: `${LOOPBACK}:0`, password: PASSWORD, tls: { cert: readFileSync(cert), key: readFileSync(key) }, log: () => undefined });
  const port = (await server.listen()).port;
  const cap = await startHelloCapture({ forwardTo: { host: LOOPBACK, port } });
  return {
    cap,
    ca,
    endpoint: (o = {}) => ({ secure: true, hostPort: `${name}:${cap.port}`, hostname: name, port: cap.port, path: '/ws', address: { host: LOOPBACK, port: cap.port }, ca, ...o }),
    async close() {
      await cap.close();
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
