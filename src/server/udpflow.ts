/**
 * UDP over the stream, server side (protocol/brook-stream.md, "UDP over the stream").
 *
 *   client --tunnel--> [fragment = one datagram] --> UdpFlow --dgram--> destination
 *   client <--tunnel-- [fragment = one datagram] <-- UdpFlow <--dgram-- destination
 *
 * The tunnel's first fragment (odd time) named the destination; every later
 * payload is sent as one datagram from one connected UDP socket (so only the
 * destination's replies come back), and every reply goes back as one payload
 * (Brook: one fragment, at most MAX_UDP_PAYLOAD bytes; withoutBrookProtocol:
 * u16 length + datagram, at most MAX_WOB_UDP_PAYLOAD). The size limits of the
 * client direction are enforced by the codec (first fragment 2048 bytes on the
 * wire, later ones 65507): a violation closes the tunnel.
 *
 * Drops, each logged (first few per flow) and counted in `dropped`, never
 * fatal: a reply too large for the protocol, a reply while the tunnel's unsent
 * bytes exceed udpQueueLimit, a datagram beyond udpQueueLimit queued while the
 * destination is being resolved, a send error (e.g. ICMP port unreachable from
 * a destination that does not answer).
 *
 * Life: closes after udpTimeout seconds without a datagram in either direction
 * (a normal end, no error), when the tunnel ends, or on a protocol error. The
 * idle check is one timer per flow that reads the time of the last datagram
 * when it fires (a datagram only stores a timestamp; no timer reset per packet).
 *
 * Not done (upstream does it): upstream reuses the same local UDP port for the
 * same (client source, destination) pair across tunnels (its UDPSrc cache);
 * here each tunnel gets a fresh ephemeral port.
 */
import type { Socket } from 'node:net';
import { defaultDialer, type UdpChannel } from '../dial/index.js';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { type Metrics, noMetrics } from '../ops/metrics.js';
import { formatAddress, formatHostPort } from '../protocol/address.js';
import type { FirstPayload } from '../protocol/header.js';
import type { ServerCodec } from '../protocol/session.js';
import type { ServerTunnelOptions } from './tunnel.js';

/** Log lines per flow for dropped datagrams / send errors (later ones are only counted). */
export const UDP_FLOW_MAX_LOGGED_DROPS = 3;

/**
 * UDP over the stream, server side: each payload is one datagram to the
 * destination; each reply datagram goes back as one payload.
 */
export class UdpFlow {
  /** Datagrams to and from the destination (a connected socket, or through --dialWithSocks5); null while opening. */
  private chan: UdpChannel | null = null;
  private readonly metrics: Metrics;
  private queue: Buffer[];
  private queuedBytes: number;
  private idle: NodeJS.Timeout | null = null;
  /** performance.now() of the last datagram either way. */
  private lastActive = 0;
  private done = false;
  private readonly maxReply: number;
  private readonly from: string;
  private logged = 0;
  /** Datagrams dropped in either direction. */
  dropped = 0;
  /** Datagrams sent to the destination / replies sent back into the tunnel. */
  sent = 0;
  replied = 0;

  constructor(
    private readonly tunnel: Socket,
    private readonly codec: ServerCodec,
    private readonly header: FirstPayload,
    private readonly o: ServerTunnelOptions,
    early: Buffer[],
    private readonly onDone: (err: BrookError | null) => void,
    /** Where to send (the destination's host, or the address the block check resolved). */
    private readonly dialHost: string = header.destination.host,
  ) {
    this.maxReply = codec.mode.maxUdpPayload;
    this.metrics = o.metrics ?? noMetrics;
    this.from = formatHostPort(tunnel.remoteAddress ?? '', tunnel.remotePort);
    this.queue = [];
    this.queuedBytes = 0;
    for (const p of early) this.toDestination(p);
    this.touch();
    tunnel.on('data', (d: Buffer) => {
      this.touch();
      try {
        this.codec.push(d, (p) => this.toDestination(p));
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
    let chan: UdpChannel;
    try {
      chan = await (this.o.dialer ?? defaultDialer()).dialUdp({ host: this.dialHost, port: dst.port }, { timeoutMs: this.o.dialTimeoutMs });
    } catch (e) {
      const err = toBrookError(e);
      this.metrics.dialFailed(err.code);
      this.close(err);
      return;
    }
    if (this.done) {
      chan.close();
      return;
    }
    this.chan = chan;
    // errors after the open are per datagram (ECONNREFUSED from an ICMP unreachable): log and keep going
    chan.on('error', (e) => this.drop(`send to ${formatAddress(dst)} failed: ${e.message}`, e.code));
    chan.on('message', (msg) => this.toTunnel(msg));
    // the channel itself went away (e.g. the --dialWithSocks5 association ended)
    chan.on('close', () => this.close(null));
    const q = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    for (const p of q) this.send(p);
  }

  /** One payload from the tunnel = one datagram to the destination. */
  private toDestination(p: Buffer): void {
    if (this.done) return;
    if (this.chan) {
      this.send(p);
      return;
    }
    if (this.queuedBytes + p.length > this.o.udpQueueLimit) {
      this.drop(`queue of ${this.o.udpQueueLimit} bytes full while opening`, ErrorCodes.PAYLOAD_OVERSIZED);
      return;
    }
    this.queue.push(p);
    this.queuedBytes += p.length;
  }

  private send(p: Buffer): void {
    this.sent++;
    this.metrics.udpDatagram('up');
    // With a callback: an error reported by send() (e.g. a pending ECONNREFUSED) is
    // otherwise lost silently by node:dgram; later ones arrive as 'error' events.
    this.chan!.send(p, this.onSent);
  }

  private readonly onSent = (e: BrookError | null): void => {
    if (e && !this.done) this.drop(`send to ${formatAddress(this.header.destination)} failed: ${e.message}`, e.code);
  };

  /** One reply datagram = one payload into the tunnel. */
  private toTunnel(msg: Buffer): void {
    if (this.done) return;
    this.touch();
    if (msg.length > this.maxReply) {
      this.drop(`reply of ${msg.length} bytes exceeds ${this.maxReply}`, ErrorCodes.PAYLOAD_OVERSIZED);
      return;
    }
    if (this.tunnel.writableLength > this.o.udpQueueLimit) {
      this.drop(`tunnel backlog over ${this.o.udpQueueLimit} bytes`, ErrorCodes.PAYLOAD_OVERSIZED);
      return;
    }
    let out: Buffer;
    try {
      out = this.codec.seal(msg);
    } catch (e) {
      this.close(toBrookError(e));
      return;
    }
    this.replied++;
    this.metrics.udpDatagram('down');
    this.tunnel.write(out);
  }

  private drop(message: string, code: string): void {
    this.dropped++;
    this.metrics.udpDropped();
    if (this.logged >= UDP_FLOW_MAX_LOGGED_DROPS) return;
    this.logged++;
    this.o.log({ from: this.from, dst: formatAddress(this.header.destination), network: 'udp', error: `datagram dropped: ${message}`, code });
  }

  private touch(): void {
    if (this.o.udpTimeout <= 0 || this.done) return;
    this.lastActive = performance.now();
    if (!this.idle) this.idle = setTimeout(this.checkIdle, this.o.udpTimeout * 1000);
  }

  private readonly checkIdle = (): void => {
    const ms = this.o.udpTimeout * 1000;
    const idleFor = performance.now() - this.lastActive;
    if (idleFor >= ms) this.close(null);
    else if (!this.done) this.idle = setTimeout(this.checkIdle, ms - idleFor);
  };

  /** The one teardown path: idle, tunnel end, protocol error, server shutdown. */
  close(err: BrookError | null = null): void {
    if (this.done) return;
    this.done = true;
    if (this.idle) clearTimeout(this.idle);
    this.queue = [];
    this.chan?.close();
    this.tunnel.destroy();
    this.onDone(err);
  }
}
