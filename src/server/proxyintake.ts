/**
 * --proxyProtocol wiring: every accepted connection must start with a PROXY
 * v1/v2 header (src/server/proxyproto.ts) before Node's HTTP parser or TLS
 * layer sees a byte of it.
 *
 * The http(s) server's own 'connection' listeners are taken off the server;
 * ours admits the socket (the gate's head deadline covers the header too),
 * reads the header from the flowing socket, pauses it, unshifts what follows
 * the header, and only then hands the socket to those listeners (HTTP: the
 * socket is resumed so the parser gets the unshifted bytes first; TLS: the
 * TLS socket reads the buffered bytes itself when it starts).
 *
 * Refused (closed at once, no answer): a peer outside --trustedProxies when
 * that list is set (before reading anything), a connection whose first bytes
 * are not a PROXY header (also one without any), a malformed or oversized
 * header. The caller logs them, rate-limited.
 */
import net from 'node:net';
import tls from 'node:tls';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import type { TrustedProxies } from './clientaddr.js';
import { decodeProxyHeader, type ProxyHeader } from './proxyproto.js';

type ConnectionListener = (socket: net.Socket) => void;

export interface ProxyIntakeOptions {
  /** When set, only these direct peers may connect at all. */
  trusted: TrustedProxies | null;
  /** Every accepted socket, first (the gate). */
  admit(socket: net.Socket): void;
  /** A header was accepted; the socket goes on to HTTP/TLS right after. */
  onHeader(socket: net.Socket, header: ProxyHeader): void;
  /** The connection was refused and is being destroyed. */
  onRefused(socket: net.Socket, err: BrookError): void;
}

export function interceptProxyProtocol(server: net.Server, o: ProxyIntakeOptions): void {
  const inner = server.listeners('connection') as ConnectionListener[];
  server.removeAllListeners('connection');
  const isTls = server instanceof tls.Server;
  server.on('connection', (socket: net.Socket) => {
    o.admit(socket);
    if (socket.destroyed) return;
    const peer = socket.remoteAddress ?? '';
    if (o.trusted && !o.trusted.has(peer)) {
      o.onRefused(socket, new BrookError(ErrorCodes.PROXY_UNTRUSTED, `PROXY header from ${peer}, outside --trustedProxies`));
      socket.destroy();
      return;
    }
    let buf: Buffer | null = null;
    const onError = (): void => {
      socket.destroy();
    };
    const stop = (): void => {
      socket.removeListener('data', onData);
      socket.removeListener('error', onError);
    };
    const onData = (chunk: Buffer): void => {
      buf = buf ? Buffer.concat([buf, chunk]) : chunk;
      let r: ReturnType<typeof decodeProxyHeader>;
      try {
        r = decodeProxyHeader(buf);
      } catch (e) {
        stop();
        o.onRefused(socket, toBrookError(e));
        socket.destroy();
        return;
      }
      if (!r.done) return;
      stop();
      socket.pause();
      const rest = buf.subarray(r.length);
      buf = null;
      if (rest.length > 0) socket.unshift(rest);
      o.onHeader(socket, r.header);
      for (const l of inner) l.call(server, socket);
      if (!isTls) socket.resume();
    };
    socket.on('error', onError);
    socket.on('data', onData);
  });
}
