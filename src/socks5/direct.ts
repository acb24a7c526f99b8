/**
 * Plain SOCKS5 pass-through: CONNECT dials the destination directly, UDP
 * datagrams are sent directly from one UDP socket per (association,
 * destination). No encryption; the baseline for benchmarks and the way to
 * test the SOCKS5 layer on its own. CONNECT tunnels are spliced in the kernel when they can be
 * (src/net/splice.ts); `splice: false` (or BROOK_TS_SPLICE=0) keeps them in the JS Relay, the
 * benchmark's JS pass-through row.
 */
import net from 'node:net';
import { PLAIN_TRANSFORM } from '../net/relay.js';
import { startRelay } from '../net/splice.js';
import dgram from 'node:dgram';
import { lookup } from 'node:dns/promises';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { formatAddress, makeAddress, type Address } from '../protocol/address.js';
import {
  createSocks5Server,
  type ConnectRequest,
  type Socks5Server,
  type Socks5ServerOptions,
  type UdpAssociation,
} from './server.js';

export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
export const DEFAULT_UDP_IDLE_TIMEOUT_MS = 60_000;
export const DEFAULT_MAX_UDP_FLOWS_PER_ASSOCIATION = 256;
/** Datagrams queued while a domain destination is being resolved. */
const MAX_PENDING_DATAGRAMS = 16;

export interface DirectSocks5Options
  extends Omit<Socks5ServerOptions, 'onConnect' | 'onUdpDatagram' | 'onUdpAssociationClosed'> {
  connectTimeoutMs?: number;
  /** A per-destination UDP socket is closed after this long without traffic. */
  udpIdleTimeoutMs?: number;
  maxUdpFlowsPerAssociation?: number;
  /** Splice CONNECT tunnels when possible (default true; false: relay them in JS). */
  splice?: boolean;
}

interface Flow {
  /** null while a domain destination is being resolved. */
  socket: dgram.Socket | null;
  ip: string;
  pending: Buffer[];
  idle: NodeJS.Timeout | null;
  closed: boolean;
}

export function createDirectSocks5(opts: DirectSocks5Options): Socks5Server {
  const connectTimeoutMs = opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
  const udpIdleMs = opts.udpIdleTimeoutMs ?? DEFAULT_UDP_IDLE_TIMEOUT_MS;
  const maxFlows = opts.maxUdpFlowsPerAssociation ?? DEFAULT_MAX_UDP_FLOWS_PER_ASSOCIATION;
  const now = opts.now ?? Date.now;
  const flowsByAssoc = new Map<number, Map<string, Flow>>();

  function log(from: string, dst: string, network: 'tcp' | 'udp', err: unknown): void {
    if (!opts.log) return;
    const e = toBrookError(err);
    try {
      opts.log({ time: new Date(now()).toISOString(), from, dst, network, error: e.message, code: e.code });
    } catch {
      // ignore logger failures
    }
  }

  function onConnect(req: ConnectRequest): void {
    const dst = req.destination;
    const upstream = net.connect({ host: dst.host, port: dst.port, allowHalfOpen: true });
    let settled = false;
    const timer = setTimeout(() => {
      fail(new BrookError(ErrorCodes.TIMEOUT, `connect to ${formatAddress(dst)} timed out`));
    }, connectTimeoutMs);
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      upstream.destroy();
    };
    req.signal.addEventListener('abort', onAbort, { once: true });
    function fail(e: unknown): void {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.signal.removeEventListener('abort', onAbort);
      upstream.destroy();
      req.reject(toBrookError(e));
    }
    upstream.once('error', fail);
    upstream.once('connect', () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      req.signal.removeEventListener('abort', onAbort);
      upstream.removeListener('error', fail);
      let bound: Address | undefined;
      try {
        bound = makeAddress(upstream.localAddress ?? '0.0.0.0', upstream.localPort ?? 0);
      } catch {
        bound = undefined;
      }
      const client = req.accept(bound);
      if (client.destroyed) {
        upstream.destroy();
        return;
      }
      startRelay(client, upstream, PLAIN_TRANSFORM, { splice: opts.splice !== false });
    });
  }

  function closeFlow(flows: Map<string, Flow>, key: string, flow: Flow): void {
    if (flow.closed) return;
    flow.closed = true;
    if (flow.idle) clearTimeout(flow.idle);
    flow.idle = null;
    flow.pending = [];
    if (flows.get(key) === flow) flows.delete(key);
    flow.socket?.close();
  }

  function touch(flows: Map<string, Flow>, key: string, flow: Flow): void {
    if (flow.idle) clearTimeout(flow.idle);
    flow.idle = setTimeout(() => closeFlow(flows, key, flow), udpIdleMs);
  }

  function onUdpDatagram(assoc: UdpAssociation, dst: Address, data: Buffer): void {
    let flows = flowsByAssoc.get(assoc.id);
    if (!flows) {
      flows = new Map();
      flowsByAssoc.set(assoc.id, flows);
    }
    const key = formatAddress(dst);
    let flow = flows.get(key);
    if (!flow) {
      if (flows.size >= maxFlows) {
        log(`${assoc.clientAddress}:${assoc.clientPort}`, key, 'udp', new BrookError(ErrorCodes.CONFIG, 'too many UDP destinations'));
        return;
      }
      flow = openFlow(assoc, flows, key, dst);
    }
    touch(flows, key, flow);
    if (flow.socket) {
      flow.socket.send(data, dst.port, flow.ip);
    } else if (flow.pending.length < MAX_PENDING_DATAGRAMS) {
      flow.pending.push(Buffer.from(data));
    }
  }

  function openFlow(assoc: UdpAssociation, flows: Map<string, Flow>, key: string, dst: Address): Flow {
    const flow: Flow = { socket: null, ip: '', pending: [], idle: null, closed: false };
    flows.set(key, flow);
    const from = `${assoc.clientAddress}:${assoc.clientPort}`;
    const start = (ip: string, family: 4 | 6): void => {
      if (flow.closed) return;
      const socket = dgram.createSocket(family === 6 ? 'udp6' : 'udp4');
      socket.on('error', (e) => {
        log(from, key, 'udp', e);
        closeFlow(flows, key, flow);
      });
      // Replies carry the destination as the client addressed it.
      socket.on('message', (msg: Buffer) => {
        touch(flows, key, flow);
        assoc.send(dst, msg);
      });
      flow.socket = socket;
      flow.ip = ip;
      for (const d of flow.pending) socket.send(d, dst.port, ip);
      flow.pending = [];
    };
    if (dst.type === 'domain') {
      lookup(dst.host).then(
        (r) => start(r.address, r.family === 6 ? 6 : 4),
        (e: unknown) => {
          log(from, key, 'udp', e);
          closeFlow(flows, key, flow);
        },
      );
    } else {
      start(dst.host, dst.type === 'ipv6' ? 6 : 4);
    }
    return flow;
  }

  function onUdpAssociationClosed(assoc: UdpAssociation): void {
    const flows = flowsByAssoc.get(assoc.id);
    if (!flows) return;
    flowsByAssoc.delete(assoc.id);
    for (const [key, flow] of [...flows]) closeFlow(flows, key, flow);
  }

  const { connectTimeoutMs: _c, udpIdleTimeoutMs: _u, maxUdpFlowsPerAssociation: _m, splice: _s, ...serverOpts } = opts;
  return createSocks5Server({ ...serverOpts, onConnect, onUdpDatagram, onUdpAssociationClosed });
}
