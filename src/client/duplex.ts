/**
 * A tunnel as a plain Duplex: writes are sealed into the tunnel, reads are the
 * opened payloads. For consumers that want a stream (the HTTP proxy); the
 * SOCKS5 path uses Relay directly and skips this layer.
 */
import { Duplex } from 'node:stream';
import { toBrookError } from '../errors.js';
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
    this.t.socket.destroy();
    cb(err);
  }
}
