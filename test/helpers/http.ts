/**
 * Test helpers, raw HTTP: a response head read off a socket, one request and its answer on
 * a fresh connection, upstream's upgrade request, and curl via execFile (never
 * execFileSync: it would block the event loop that hosts the servers under test).
 * (test/helpers/net.ts re-exports this file.)
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { connectRaw, LOOPBACK, readAll, readExactly, withTimeout } from './io.js';

/** Read until `\r\n\r\n`; returns the head text and the bytes after it. */
export function readHttpHead(s: net.Socket, ms = 5000): Promise<{ head: string; rest: Buffer }> {
  return withTimeout(
    new Promise((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const onData = (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        const i = buf.indexOf('\r\n\r\n');
        if (i >= 0) {
          cleanup();
          s.pause();
          resolve({ head: buf.subarray(0, i + 4).toString('latin1'), rest: buf.subarray(i + 4) });
        }
      };
      const onEnd = () => {
        cleanup();
        reject(new Error(`connection ended before an HTTP head (${buf.length} bytes: ${JSON.stringify(buf.toString('latin1').slice(0, 80))})`));
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
    'HTTP head',
  );
}

export interface HttpAnswer {
  status: number;
  headers: Map<string, string>;
  body: Buffer;
}

/**
 * Send a raw HTTP request on a fresh connection and read one response: the
 * head, then Content-Length bytes (or until close when there is none).
 */
export async function rawHttp(port: number, request: string, host = LOOPBACK): Promise<HttpAnswer> {
  const s = await connectRaw(port, host);
  try {
    s.write(request);
    const { head, rest } = await readHttpHead(s);
    const lines = head.slice(0, -4).split('\r\n');
    const m = /^HTTP\/1\.1 (\d{3})/.exec(lines[0] ?? '');
    if (!m) throw new Error(`bad status line ${lines[0]}`);
    const headers = new Map<string, string>();
    for (const l of lines.slice(1)) {
      const c = l.indexOf(':');
      headers.set(l.slice(0, c).trim().toLowerCase(), l.slice(c + 1).trim());
    }
    const cl = headers.get('content-length');
    let body: Buffer;
    if (cl !== undefined) {
      const n = Number(cl);
      body = rest.length >= n ? rest.subarray(0, n) : Buffer.concat([rest, await readExactly(s, n - rest.length)]);
    } else {
      s.unshift(rest);
      body = await withTimeout(readAll(s), 5000, 'HTTP body until close');
    }
    return { status: Number(m[1]), headers, body };
  } finally {
    s.destroy();
  }
}

/** The upgrade request exactly as upstream's client writes it. */
export function upgradeRequest(port: number, path = '/ws', key = randomBytes(16).toString('base64')): string {
  return (
    `GET ${path} HTTP/1.1\r\nHost: ${LOOPBACK}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`
  );
}

export function curl(args: string[], ms = 15_000): Promise<{ stdout: string; stderr: string; code: number }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', String(Math.ceil(ms / 1000)), ...args], { timeout: ms + 2000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : -1) : 0;
      resolve({ stdout: String(stdout), stderr: String(stderr), code });
    });
  });
}
