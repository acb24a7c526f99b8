/**
 * A tunnel as a plain Duplex: writes are sealed into the tunnel, reads are the
 * opened payloads. For consumers that want a stream (the HTTP proxy); the
 * SOCKS5 path uses Relay directly and skips this layer.
 *
 * Aborts travel through it (protocol/resets.md): an RST on the tunnel (an
 * error, or an 'end' that endWasReset() shows was an RST) and a stream that
 * cannot be opened destroy the Duplex with an error; resetAndDestroy() resets
 * the tunnel socket, so a Relay that aborts resets the tunnel too.
 */
import { Duplex } from 'node:stream';
import { toBrookError } from '../errors.js';
import { endWasReset, resetByPeer, resetSocket } from '../net/reset.js';
import type { OpenTunnel } from './dial.js';

export class TunnelDuplex extends Duplex {
  constructor(private readonly t: OpenTunnel) {
    super({ allowHalfOpen: true });
    const { socket, codec } = t;
    const onData = (d: Buffer) => {
      try {
        codec.push(d, (p) => {
          if (!this.push(p)) socket.pause();
        });
      } catch (e) {
        this.destroy(toBrookError(e));
      }
    };
    socket.on('data', onData);
    socket.on('end', () => {
      if (endWasReset(socket)) {
        this.destroy(resetByPeer('tunnel'));
        return;
      }
      try {
        codec.end();
        this.push(null);
      } catch (e) {
        this.destroy(toBrookError(e));
      }
    });
    socket.on('error', (e) => this.destroy(toBrookError(e)));
    socket.on('close', () => {
      if (!this.destroyed && !this.readableEnded) this.destroy();
    });
    if (t.leftover.length > 0) onData(t.leftover);
  }

  /** Abort: the tunnel is closed with an RST, and this stream destroyed. */
  resetAndDestroy(): this {
    resetSocket(this.t.socket);
    return this.destroy();
  }

  override _read(): void {
    this.t.socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    let out: Buffer;
    try {
      out = this.t.codec.seal(chunk);
    } catch (e) {
      cb(toBrookError(e));
      return;
    }
    if (this.t.socket.write(out)) cb();
    else this.t.socket.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.t.socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    // destroyed with an error (the stream could not be opened, the tunnel broke): an abort
    if (err) resetSocket(this.t.socket);
    else this.t.socket.destroy();
    cb(err);
  }
}
