/**
 * Client-side HTTP proxy: accepts HTTP/1.x proxy requests and carries them
 * over an injected `dial(dst) => Promise<Duplex>` (in production a Brook
 * tunnel; in tests a direct TCP dial).
 *
 *   CONNECT host:port       -> dial, "HTTP/1.1 200 Connection established", relay both ways
 *   GET http://h:p/x ...    -> dial, send the rewritten head (origin form) + body bytes
 *                              already read, relay both ways until either side is done
 *
 * One destination per client connection: the forwarded request carries
 * `Connection: close`, so the origin ends the connection after its response
 * and the client opens a new connection (and so a new dial) for its next
 * request. Failures before the relay: 400 malformed head, 431 oversized head,
 * 408 head timeout, 502 dial refused / DNS / unreachable, 504 dial timeout;
 * each then closes. Codec: ./codec.ts.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { ErrorCodes, toBrookError, type BrookError } from '../errors.js';
import type { AcceptBackoff } from '../net/accept-backoff.js';
import { PLAIN_TRANSFORM, Relay } from '../net/relay.js';
import { type Address, formatAddress } from '../protocol/address.js';
import {
  CONNECT_ESTABLISHED,
  MAX_HEAD_SIZE,
  errorResponse,
  type ProxyRequest,
  ProxyRequestReader,
} from './codec.js';

export const DEFAULT_HEAD_TIMEOUT_MS = 30_000;
/** How long a rejected client may keep sending before it is cut off. */
export const REJECT_LINGER_MS = 2_000;

export interface HttpProxyLogEvent {
  event: 'request' | 'reject' | 'dial-failed' | 'relay-error' | 'server-error';
  client?: string;
  destination?: string;
  status?: number;
  code?: string;
  message?: string;
}

export interface HttpProxyServerOptions {
  host: string;
  port: number;
  dial: (dst: Address) => Promise<Duplex>;
  log?: (e: HttpProxyLogEvent) => void;
  /** Time allowed for the complete request head to arrive (default 30 s). */
  headTimeoutMs?: number;
  /** Largest request head accepted (default MAX_HEAD_SIZE, 16 KiB). */
  maxHeadSize?: number;
  /** While it is paused (dials out of descriptors), a new connection is closed at accept (src/net/accept-backoff.ts). */
  acceptBackoff?: AcceptBackoff;
}

export interface HttpProxyServer {
  listen(): Promise<void>;
  /** Stop accepting and destroy every live connection. */
  close(): Promise<void>;
  address(): { host: string; port: number };
}

/** Status line for a dial failure. */
export function statusForDialError(e: BrookError): [number, string] {
  if (e.code === ErrorCodes.TIMEOUT) return [504, 'Gateway Timeout'];
  return [502, 'Bad Gateway'];
}

export function createHttpProxyServer(opts: HttpProxyServerOptions): HttpProxyServer {
  const headTimeoutMs = opts.headTimeoutMs ?? DEFAULT_HEAD_TIMEOUT_MS;
  const maxHeadSize = opts.maxHeadSize ?? MAX_HEAD_SIZE;
  const log = opts.log ?? (() => {});
  const live = new Set<Duplex>();
  const backoff = opts.acceptBackoff;
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) => {
    if (!backoff || backoff.admit(socket)) handle(socket);
  });
  server.on('error', (e) => log({ event: 'server-error', message: e.message }));

  function track(s: Duplex): void {
    live.add(s);
    s.once('close', () => live.delete(s));
  }

  function handle(client: net.Socket): void {
    track(client);
    const clientName = `${client.remoteAddress}:${client.remotePort}`;
    let reader: ProxyRequestReader | null = new ProxyRequestReader(maxHeadSize);
    let state: 'head' | 'dialing' | 'relay' | 'closed' = 'head';
    let upstream: Duplex | undefined;

    // The one teardown path for a connection that has not reached the relay.
    const reject = (status: number, reason: string, code: string, message: string): void => {
      if (state === 'closed') return;
      state = 'closed';
      clearTimeout(timer);
      client.off('data', onData);
      reader = null;
      log({ event: status === 502 || status === 504 ? 'dial-failed' : 'reject', client: clientName, status, code, message });
      if (!client.destroyed && client.writable) {
        // Send the answer, then keep reading (and discarding) what the client still
        // sends for a short while: closing with unread data would reset the
        // connection and could lose the answer. Destroy on its FIN or after the linger.
        client.end(errorResponse(status, reason));
        client.on('data', () => {});
        client.resume();
        const linger = setTimeout(() => client.destroy(), REJECT_LINGER_MS);
        linger.unref?.();
        client.once('end', () => client.destroy());
        client.once('close', () => clearTimeout(linger));
      } else {
        client.destroy();
      }
    };

    const timer = setTimeout(() => {
      if (state === 'head') reject(408, 'Request Timeout', ErrorCodes.TIMEOUT, 'request head not received in time');
    }, headTimeoutMs);
    timer.unref?.();

    const onData = (chunk: Buffer): void => {
      if (!reader) return;
      let parsed: ReturnType<ProxyRequestReader['push']>;
      try {
        parsed = reader.push(chunk);
      } catch (e) {
        reader = null;
        const err = toBrookError(e);
        if (err.code === ErrorCodes.HTTP_HEAD_TOO_LARGE) {
          reject(431, 'Request Header Fields Too Large', err.code, err.message);
        } else {
          reject(400, 'Bad Request', err.code, err.message);
        }
        return;
      }
      if (!parsed) return;
      clearTimeout(timer);
      client.off('data', onData);
      client.pause();
      reader = null;
      void start(parsed.request, parsed.rest);
    };

    // The client went away before the relay began.
    const onEarlyClose = (): void => {
      if (state === 'head' || state === 'dialing') {
        state = 'closed';
        clearTimeout(timer);
        client.destroy();
        upstream?.destroy();
      }
    };
    // FIN before a complete head aborts; FIN after it (CONNECT data then FIN, or a
    // request body then FIN) is a half-close that relay() passes on.
    const onEarlyEnd = (): void => {
      if (state === 'head') onEarlyClose();
    };

    async function start(req: ProxyRequest, rest: Buffer): Promise<void> {
      state = 'dialing';
      const dst = formatAddress(req.destination);
      log({ event: 'request', client: clientName, destination: dst, message: `${req.head.method} ${req.head.target}` });
      let conn: Duplex;
      try {
        conn = await opts.dial(req.destination);
      } catch (e) {
        const err = toBrookError(e);
        const [status, reason] = statusForDialError(err);
        reject(status, reason, err.code, err.message);
        return;
      }
      if (state !== 'dialing') {
        conn.destroy();
        return;
      }
      upstream = conn;
      track(conn);
      state = 'relay';
      client.off('end', onEarlyEnd);
      client.off('close', onEarlyClose);
      if (req.kind === 'connect') {
        client.write(CONNECT_ESTABLISHED);
        if (rest.length > 0) conn.write(rest);
      } else {
        conn.write(rest.length > 0 ? Buffer.concat([req.rewrittenHead, rest]) : req.rewrittenHead);
      }
      new Relay(client, conn, PLAIN_TRANSFORM, {
        onClose: (err) => {
          if (err && err.code !== ErrorCodes.CLOSED) {
            log({ event: 'relay-error', client: clientName, destination: dst, code: err.code, message: err.message });
          }
          state = 'closed';
        },
      });
    }

    client.on('data', onData);
    client.on('end', onEarlyEnd);
    client.on('close', onEarlyClose);
    client.on('error', (e) => {
      if (state !== 'relay') {
        log({ event: 'reject', client: clientName, code: toBrookError(e).code, message: e.message });
        onEarlyClose();
        client.destroy();
      }
    });
  }

  return {
    listen: () =>
      new Promise<void>((resolve, reject) => {
        const onError = (e: Error): void => reject(e);
        server.once('error', onError);
        server.listen(opts.port, opts.host, () => {
          server.off('error', onError);
          resolve();
        });
      }),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of live) s.destroy();
        live.clear();
        if (!server.listening) {
          resolve();
          return;
        }
        server.close(() => resolve());
      }),
    address: () => {
      const a = server.address();
      if (a === null || typeof a === 'string') throw new Error('HTTP proxy server is not listening');
      return { host: a.address, port: a.port };
    },
  };
}
