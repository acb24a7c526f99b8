/**
 * The socket-level steps of handing a net.Socket's descriptor to the splice worker and back
 * (the order and the rules: the top of src/net/splice.ts): which sockets may be spliced, how
 * libuv's reads are stopped and what Node had already read is taken out, and how a socket is
 * held while native code owns its descriptor (no destroy, no read).
 */
import net from 'node:net';
import { TLSSocket } from 'node:tls';
import type { RelaySide } from './relay.js';

/** The parts of Node's socket internals used for the hand-off (stable since Node 0.x). */
interface TcpHandleInternals {
  fd?: number;
  reading?: boolean;
  readStop?(): number;
}
export interface SocketInternals {
  _handle?: TcpHandleInternals | null;
  _readableState?: { ended?: boolean };
  _destroy: (err: Error | null, cb: (err: Error | null) => void) => void;
  _read: (n: number) => void;
  timeout?: number;
}

/** The descriptor of a socket that may be spliced, else -1. */
export function spliceableFd(s: RelaySide): number {
  if (!(s instanceof net.Socket) || s instanceof TLSSocket) return -1;
  if (s.destroyed || s.connecting || !s.readable || !s.writable || s.readableEnded || s.writableEnded) return -1;
  const si = s as unknown as SocketInternals;
  if (si._readableState?.ended) return -1; // EOF already read: the JS Relay handles the rest
  if (si.timeout !== undefined && si.timeout > 0) return -1; // a socket timeout would not see spliced bytes
  const h = si._handle;
  if (!h || typeof h.readStop !== 'function' || typeof h.fd !== 'number' || h.fd < 0) return -1;
  return h.fd;
}

/**
 * Stop libuv's reads on `s` and take what Node already read (in order); ok false when that
 * cannot be done (the socket then relays in JS).
 */
export function stopReading(s: net.Socket): { ok: boolean; chunks: Buffer[] } {
  const h = (s as unknown as SocketInternals)._handle;
  const chunks: Buffer[] = [];
  if (!h?.readStop) return { ok: false, chunks };
  s.pause();
  h.reading = false;
  if (h.readStop() !== 0) return { ok: false, chunks };
  for (let c = s.read() as Buffer | null; c !== null; c = s.read() as Buffer | null) chunks.push(c);
  // read() may have asked libuv to read again (the buffer fell below its mark): stop once more;
  // no bytes can have come in between (libuv reads only when this turn of the loop is over)
  h.reading = false;
  return { ok: h.readStop() === 0, chunks };
}

/**
 * Hold `s` while the worker owns its descriptor: a destroy() by anyone is handed to `onDestroy`
 * (to run once the worker has let go), and nothing may make libuv read it again (a read() or
 * resume() by someone: _read is a no-op). Returns what gives the socket its own methods back.
 */
export function holdSocket(s: net.Socket, onDestroy: (run: () => void) => void): () => void {
  const si = s as unknown as SocketInternals;
  const ownDestroy = Object.prototype.hasOwnProperty.call(si, '_destroy');
  const ownRead = Object.prototype.hasOwnProperty.call(si, '_read');
  const destroy = si._destroy;
  const read = si._read;
  si._destroy = (err, cb) => onDestroy(() => destroy.call(s, err, cb));
  si._read = () => {};
  return () => {
    if (ownDestroy) si._destroy = destroy;
    else delete (si as Partial<SocketInternals>)._destroy;
    if (ownRead) si._read = read;
    else delete (si as Partial<SocketInternals>)._read;
  };
}

/**
 * Start libuv's reads again after a hand-off that did not happen: the stream still counts the
 * read() of the hand-off as pending (state.reading), so it would not ask by itself.
 */
export function resumeReading(s: net.Socket): void {
  if (!s.destroyed) (s as unknown as SocketInternals)._read(0);
}
