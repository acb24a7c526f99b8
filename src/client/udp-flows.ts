/**
 * The client's UDP flows (owned by WsClient, src/client/wsclient.ts).
 *
 * UDP: one tunnel per (association, destination) flow, opened on the first
 * datagram (which travels in it), reused for later ones, closed after
 * udpTimeout seconds idle. Datagrams that arrive while the flow's tunnel is
 * opening are queued in order up to udpQueueLimit bytes; beyond it they are
 * dropped and counted. A tunnel whose unsent bytes exceed
 * UDP_TUNNEL_BACKLOG_LIMIT drops further datagrams rather than buffer them.
 *
 * Logging: one line per failed flow, {from, dst, network, error, code}, and at
 * most UDP_FLOW_MAX_LOGGED_DROPS lines per flow for dropped datagrams (the rest
 * only counted in stats.udpDropped), all written by WsClient's one failure line
 * (logError) through its rate-limited logger (see the top of wsclient.ts).
 */
import type { Socket } from 'node:net';
import { type BrookError, ErrorCodes, toBrookError } from '../errors.js';
import type { Metrics } from '../ops/metrics.js';
import { type Address, formatAddress, formatHostPort } from '../protocol/address.js';
import type { ProtocolMode } from '../protocol/mode.js';
import type { ClientCodec } from '../protocol/session.js';
import type { UdpAssociation } from '../socks5/server.js';
import type { OpenTunnel } from './dial.js';

/** What a failure line says: a BrookError, or a drop's own message and code. */
export type FailureLine = Pick<BrookError, 'message' | 'code'>;

export const DEFAULT_UDP_FLOW_QUEUE_LIMIT = 256 * 1024;
/** A tunnel whose unsent bytes exceed this drops further datagrams rather than buffer them. */
export const UDP_TUNNEL_BACKLOG_LIMIT = 1024 * 1024;
/** Log lines per UDP flow for dropped datagrams (later drops are only counted in stats.udpDropped). */
export const UDP_FLOW_MAX_LOGGED_DROPS = 3;

export interface ClientUdpFlowsOptions {
  /** A tunnel for (network 'udp', destination): pooled or dialled, counted by the caller; rejects with a BrookError. */
  open: (destination: Address) => Promise<OpenTunnel>;
  /** WsClient's failure line ({from, dst, network 'udp', error, code}, rate-limited). */
  logError: (from: string, dst: Address, err: FailureLine) => void;
  /** WsClient's stats: dropped datagrams are counted here. */
  stats: { udpDropped: number };
  metrics: Metrics;
  /** The tunnels' mode: its bound on a datagram (maxUdpPayload). */
  mode: ProtocolMode;
  /** Seconds idle before a flow closes (default 60; 0 or less = never). */
  udpTimeout?: number;
  /** Bytes queued per flow while its tunnel opens (default DEFAULT_UDP_FLOW_QUEUE_LIMIT). */
  udpQueueLimit?: number;
}

interface UdpFlow {
  key: string;
  assoc: UdpAssociation;
  dst: Address;
  queue: Buffer[];
  queuedBytes: number;
  tunnel: { socket: Socket; codec: ClientCodec } | null;
  /** One coarse idle timer per flow: it checks lastActive when it fires (never reset per datagram). */
  idle: NodeJS.Timeout | null;
  /** performance.now() of the last datagram either way. */
  lastActive: number;
  closed: boolean;
  /** "ip:port" of the SOCKS5 client, for log lines. */
  from: string;
  /** Drops logged so far for this flow (at most UDP_FLOW_MAX_LOGGED_DROPS lines). */
  logged: number;
}

/** "ip:port" of an association's SOCKS5 client, for log lines (built only when needed). */
function clientOf(assoc: UdpAssociation): string {
  return formatHostPort(assoc.clientAddress ?? '?', assoc.clientPort);
}

export class ClientUdpFlows {
  private readonly flows = new Map<string, UdpFlow>();
  /** The flow of the last datagram: hit when the SOCKS5 relay hands out the same destination object (src/socks5/udp.ts). */
  private lastFlow: UdpFlow | null = null;

  constructor(private readonly o: ClientUdpFlowsOptions) {}

  /** Open flows (for tests and stats). */
  get size(): number {
    return this.flows.size;
  }

  /** A datagram from the SOCKS5 relay, for `dst`. */
  onDatagram(assoc: UdpAssociation, dst: Address, data: Buffer): void {
    const max = this.o.mode.maxUdpPayload;
    if (data.length > max) {
      this.o.stats.udpDropped++;
      this.o.logError(clientOf(assoc), dst, { message: `datagram of ${data.length} bytes exceeds ${max}`, code: ErrorCodes.PAYLOAD_OVERSIZED });
      return;
    }
    let f = this.lastFlow;
    if (f === null || f.dst !== dst || f.assoc !== assoc || f.closed) {
      const key = `${assoc.id}|${formatAddress(dst)}`;
      f = this.flows.get(key) ?? null;
      if (f === null) {
        const from = clientOf(assoc);
        f = { key, assoc, dst, queue: [], queuedBytes: 0, tunnel: null, idle: null, lastActive: 0, closed: false, from, logged: 0 };
        this.flows.set(key, f);
        this.openFlow(f, from);
      }
      this.lastFlow = f;
    }
    this.touch(f);
    if (!f.tunnel) {
      const limit = this.o.udpQueueLimit ?? DEFAULT_UDP_FLOW_QUEUE_LIMIT;
      if (f.queuedBytes + data.length > limit) {
        this.dropDatagram(f, `queue of ${limit} bytes full while the tunnel opens`);
        return;
      }
      f.queue.push(data);
      f.queuedBytes += data.length;
      return;
    }
    this.sendDatagram(f, data);
  }

  /** The association ended: close its flows. */
  closeAssociation(assoc: UdpAssociation): void {
    for (const f of this.flows.values()) if (f.assoc === assoc) this.closeFlow(f);
  }

  /** Close every flow (client shutdown). */
  closeAll(): void {
    for (const f of this.flows.values()) this.closeFlow(f);
  }

  private sendDatagram(f: UdpFlow, data: Buffer): void {
    const t = f.tunnel!;
    if (t.socket.writableLength > UDP_TUNNEL_BACKLOG_LIMIT) {
      this.dropDatagram(f, `tunnel backlog over ${UDP_TUNNEL_BACKLOG_LIMIT} bytes`);
      return;
    }
    this.o.metrics.udpDatagram('up');
    t.socket.write(t.codec.seal(data));
  }

  /** Count a dropped datagram; log the first few per flow. */
  private dropDatagram(f: UdpFlow, why: string): void {
    this.o.stats.udpDropped++;
    this.o.metrics.udpDropped();
    if (f.logged >= UDP_FLOW_MAX_LOGGED_DROPS) return;
    f.logged++;
    this.o.logError(f.from, f.dst, { message: `datagram dropped: ${why}`, code: ErrorCodes.PAYLOAD_OVERSIZED });
  }

  private openFlow(f: UdpFlow, from: string): void {
    this.o.open(f.dst).then(
      (t) => {
        if (f.closed) {
          t.socket.destroy();
          return;
        }
        f.tunnel = { socket: t.socket, codec: t.codec };
        const onData = (d: Buffer) => {
          this.touch(f);
          try {
            t.codec.push(d, (p) => {
              this.o.metrics.udpDatagram('down');
              f.assoc.send(f.dst, p);
            });
          } catch (e) {
            const err = toBrookError(e);
            this.o.logError(from, f.dst, err);
            this.closeFlow(f);
          }
        };
        t.socket.on('data', onData);
        t.socket.on('error', (e) => {
          if (!f.closed) {
            const err = toBrookError(e);
            this.o.logError(from, f.dst, err);
          }
          this.closeFlow(f);
        });
        t.socket.on('close', () => this.closeFlow(f));
        t.socket.on('end', () => this.closeFlow(f));
        t.socket.resume();
        if (t.leftover.length > 0) onData(t.leftover);
        for (const d of f.queue.splice(0)) this.sendDatagram(f, d);
        f.queuedBytes = 0;
      },
      (err: BrookError) => {
        this.o.logError(from, f.dst, err);
        this.o.stats.udpDropped += f.queue.length;
        this.closeFlow(f);
      },
    );
  }

  /** Note activity; the flow's one idle timer is armed here once and re-armed only when it fires early. */
  private touch(f: UdpFlow): void {
    const secs = this.o.udpTimeout ?? 60;
    if (secs <= 0) return;
    f.lastActive = performance.now();
    if (!f.idle) f.idle = setTimeout(() => this.checkIdle(f, secs * 1000), secs * 1000);
  }

  private checkIdle(f: UdpFlow, ms: number): void {
    const idleFor = performance.now() - f.lastActive;
    if (idleFor >= ms) this.closeFlow(f);
    else if (!f.closed) f.idle = setTimeout(() => this.checkIdle(f, ms), ms - idleFor);
  }

  private closeFlow(f: UdpFlow): void {
    if (f.closed) return;
    f.closed = true;
    if (f.idle) clearTimeout(f.idle);
    f.idle = null;
    f.queue = [];
    if (f.tunnel) {
      f.tunnel.socket.destroy();
      this.o.metrics.tunnelClosed('udp', { up: 0, down: 0 });
    }
    this.flows.delete(f.key);
    if (this.lastFlow === f) this.lastFlow = null;
  }
}
