/**
 * Aborts as opposed to clean ends, at the socket level (protocol/resets.md).
 *
 * - resetSocket(s): close with a TCP RST (SO_LINGER 0, socket.resetAndDestroy())
 *   instead of a FIN, so the peer reads ECONNRESET rather than a clean end. A
 *   Duplex that carries its own resetAndDestroy() (TunnelDuplex) is asked to. A
 *   TLS socket is only destroyed: resetting the TCP socket under a live TLS
 *   socket crashes Node 20 (SIGSEGV, measured: right after the handshake and
 *   after the peer's FIN), a crash any client could cause, so over wss an abort
 *   is a plain close. Anything else is destroyed.
 * - endWasReset(s): Node reports a peer's RST as a plain 'end' when the RST
 *   arrives while unread bytes still wait in the kernel's receive queue (libuv,
 *   seeing POLLHUP after a partial read, reports EOF without reading the error).
 *   That is exactly the case of a process killed with unread input, or of a
 *   relay that was reading slowly because its other side was. At 'end', while
 *   our own write half is still open, a FIN leaves the connection in CLOSE_WAIT
 *   (the peer still has a name) and an RST leaves it CLOSED (getpeername fails
 *   with ENOTCONN): we ask the TCP handle. Where that cannot be asked (no TCP
 *   handle, our FIN already sent: a clean close ends CLOSED too) the 'end' is
 *   taken as a FIN, as before.
 */
import net from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { BrookError, ErrorCodes } from '../errors.js';

/** The parts of Node's socket internals used here (both stable since Node 0.x). */
interface TcpHandle {
  getpeername?(out: object): number;
}
interface SocketInternals {
  _handle?: TcpHandle | null;
  /** TLSSocket: the net.Socket it wraps (set when it was given one, and on the server side). */
  _parent?: unknown;
}

/** The net.Socket carrying the TCP connection under `s` (itself, or the socket a TLSSocket wraps). */
function tcpSocketOf(s: Duplex): net.Socket | null {
  if (s instanceof TLSSocket) {
    const parent = (s as unknown as SocketInternals)._parent;
    return parent instanceof net.Socket && !(parent instanceof TLSSocket) ? parent : null;
  }
  return s instanceof net.Socket ? s : null;
}

/** A Duplex that knows how to reset the connection under it (e.g. a tunnel seen as a stream). */
export interface Resettable {
  resetAndDestroy(): unknown;
}

function isResettable(s: unknown): s is Resettable {
  return typeof (s as Partial<Resettable>).resetAndDestroy === 'function';
}

/** Close `s` with an RST (see the top of this file); falls back to destroy(). */
export function resetSocket(s: Duplex): void {
  if (s.destroyed) return;
  if (s instanceof TLSSocket) {
    s.destroy();
    return;
  }
  if (s instanceof net.Socket) {
    if (!s.connecting) {
      try {
        s.resetAndDestroy();
      } catch {
        // not a TCP handle after all (e.g. a pipe): a plain close below
      }
    }
    s.destroy();
    return;
  }
  if (isResettable(s)) {
    s.resetAndDestroy();
    return;
  }
  s.destroy();
}

/** At 'end' on `s`: was it an RST reported as an end? (see the top of this file) */
export function endWasReset(s: Duplex): boolean {
  if (s.writableEnded) return false;
  const tcp = tcpSocketOf(s);
  if (!tcp || tcp.destroyed) return false;
  const handle = (tcp as unknown as SocketInternals)._handle;
  if (!handle || typeof handle.getpeername !== 'function') return false;
  return handle.getpeername({}) !== 0;
}

/** The error a relay reports for a side whose peer reset it. */
export function resetByPeer(side: string): BrookError {
  return new BrookError(ErrorCodes.CLOSED, `${side} reset by peer`);
}
