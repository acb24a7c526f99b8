/**
 * UDP over the stream, server side (protocol/udp-over-stream.md).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { isIP, type Socket } from 'node:net';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { formatAddress } from '../protocol/address.js';
import type { FirstPayload } from '../protocol/header.js';
import type { ServerCodec } from '../protocol/session.js';
import type { ServerTunnelOptions } from './tunnel.js';

/**
 * UDP over the stream, server side: each payload is one datagram to the
 * destination; each reply datagram goes back as one payload.
 */
export class UdpFlow {
  private sock: UdpSocket | null = null;
  private queue: Buffer[] = [];
  private idle: NodeJS.Timeout | null = null;
  private done = false;
  dropped = 0;

  constructor(
    private readonly tunnel: Socket,
    private readonly codec: ServerCodec,
    private readonly header: FirstPayload,
    private readonly o: ServerTunnelOptions,
    early: Buffer[],
    private readonly onDone: (err: BrookError | null) => void,
  ) {
    this.queue = early;
    this.touch();
    tunnel.on('data', (d: Buffer) => {
      this.touch();
      try {
        this.codec.push(d, (p) => this.send(p));
      } catch (e) {
        this.close(toBrookError(e));
      }
    });
    tunnel.on('end', () => this.close(null));
    tunnel.on('close', () => this.close(null));
    tunnel.resume();
    void this.open();
  }

  private async open(): Promise<void> {
    const dst = this.header.destination;
    try {
      const ip = isIP(dst.host) ? dst.host : (await lookup(dst.host)).address;
      if (this.done) return;
      const sock = createSocket(isIP(ip) === 6 ? 'udp6' : 'udp4');
      sock.on('error', (e) => this.close(toBrookError(e)));
      sock.on('message', (msg) => {
        this.touch();
        if (this.tunnel.writableLength > this.o.udpQueueLimit) {
          this.dropped++;
          return;
        }
        try {
          this.tunnel.write(this.codec.seal(msg));
        } catch (e) {
          this.close(toBrookError(e));
        }
      });
      sock.connect(dst.port, ip, () => {
        if (this.done) return;
        this.sock = sock;
        for (const p of this.queue.splice(0)) sock.send(p);
      });
      this.sock = null;
      this.pendingSock = sock;
    } catch (e) {
      const err = toBrookError(e);
      this.close(new BrookError(err.code, `resolve ${formatAddress(dst)}: ${err.message}`, { cause: e }));
    }
  }

  private pendingSock: UdpSocket | null = null;

  private send(p: Buffer): void {
    if (this.sock) this.sock.send(p);
    else if (this.queue.reduce((n, b) => n + b.length, 0) + p.length <= this.o.udpQueueLimit) this.queue.push(p);
    else this.dropped++;
  }

  private touch(): void {
    if (this.o.udpTimeout <= 0) return;
    if (this.idle) this.idle.refresh();
    else this.idle = setTimeout(() => this.close(new BrookError(ErrorCodes.TIMEOUT, `udp flow idle for ${this.o.udpTimeout} s`)), this.o.udpTimeout * 1000);
  }

  close(err: BrookError | null = null): void {
    if (this.done) return;
    this.done = true;
    if (this.idle) clearTimeout(this.idle);
    try {
      (this.sock ?? this.pendingSock)?.close();
    } catch {
      // already closed
    }
    this.tunnel.destroy();
    this.onDone(err);
  }
}
