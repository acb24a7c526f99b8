/**
 * Server side of one upgraded connection: read the client's preamble through
 * the ServerCodec, check it, answer (Brook: the server nonce) and relay to the
 * destination over TCP or UDP.
 *
 * Anti-probing: until the header has been checked the server sends nothing. A
 * failed decrypt, a wrong password hash or a stale time gets no answer: the
 * connection is read and discarded (as upstream does) but only within a time
 * and byte budget, then closed. Both budgets run from the upgrade, whatever the
 * client sent: a silent client, a wrong password and garbage are all closed
 * probeTimeoutMs after the 101 (or once probeByteBudget bytes have arrived), so
 * the close tells a prober nothing about its bytes.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import type { Logger } from '../log.js';
import { formatAddress } from '../protocol/address.js';
import type { FirstPayload } from '../protocol/header.js';
import { createServerCodec, type SessionOptions } from '../protocol/session.js';
import { Relay } from '../net/relay.js';
import { UdpFlow } from './udpflow.js';

export interface ServerTunnelOptions extends SessionOptions {
  /** TCP idle timeout in seconds (0 = none), upstream --tcpTimeout. */
  tcpTimeout: number;
  /** UDP flow idle timeout in seconds, upstream --udpTimeout. */
  udpTimeout: number;
  /** Bound on the handshake and on the silent drain after a bad handshake (ms). */
  probeTimeoutMs: number;
  /** Bound on the bytes read and discarded after a bad handshake. */
  probeByteBudget: number;
  /** Destination dial timeout (ms). */
  dialTimeoutMs: number;
  /** Bytes a UDP flow may queue toward a slow tunnel before datagrams are dropped. */
  udpQueueLimit: number;
  log: Logger;
}

export const DEFAULT_PROBE_TIMEOUT_MS = 30_000;
export const DEFAULT_PROBE_BYTE_BUDGET = 256 * 1024;
export const DEFAULT_DIAL_TIMEOUT_MS = 10_000;
export const DEFAULT_UDP_QUEUE_LIMIT = 1024 * 1024;

export interface TunnelHandle {
  /** Stop now (shutdown past its grace period). */
  destroy(): void;
  readonly closed: Promise<void>;
}

/** Take over an upgraded socket. `head` holds bytes that arrived with the request. */
export function serveTunnel(socket: Socket, head: Buffer, from: string, o: ServerTunnelOptions): TunnelHandle {
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  const codec = createServerCodec(o);
  const early: Buffer[] = [];
  let relay: Relay | null = null;
  let udp: UdpFlow | null = null;
  let finished = false;
  let header: FirstPayload | null = null;

  const log = (error: BrookError | null, extra: Record<string, unknown> = {}) => {
    o.log({
      from,
      dst: header ? formatAddress(header.destination) : '',
      network: header?.network ?? '',
      ...(error ? { error: error.message, code: error.code } : {}),
      ...extra,
    });
  };

  const finish = (err: BrookError | null) => {
    if (finished) return;
    finished = true;
    clearTimeout(handshakeTimer);
    socket.destroy();
    if (err && err.code !== ErrorCodes.CLOSED) log(err);
    resolveClosed();
  };

  /** Bytes received since the upgrade, before a valid header (the probe byte budget). */
  let received = 0;
  /** Why the handshake failed, once it has (the connection is then being drained). */
  let drainError: BrookError | null = null;

  /** Bad handshake: answer nothing, read and discard within the budgets, then close. */
  const drain = (err: BrookError) => {
    socket.removeListener('data', onHandshakeData);
    const stop = () => finish(err);
    if (received > o.probeByteBudget) {
      stop();
      return;
    }
    // the deadline set at the upgrade (handshakeTimer) keeps running
    socket.on('data', (d: Buffer) => {
      received += d.length;
      if (received > o.probeByteBudget) stop();
    });
    socket.on('end', stop);
    socket.resume();
  };

  // One deadline from the upgrade for silent, bad and drained connections alike.
  const handshakeTimer = setTimeout(() => {
    if (header) return;
    finish(drainError ?? new BrookError(ErrorCodes.TIMEOUT, `no valid header within ${o.probeTimeoutMs} ms`));
  }, o.probeTimeoutMs);

  const onHandshakeData = (chunk: Buffer) => {
    received += chunk.length;
    let h: FirstPayload | null;
    try {
      h = codec.push(chunk, (p) => early.push(p));
    } catch (e) {
      drainError = toBrookError(e);
      drain(drainError);
      return;
    }
    if (!h && received > o.probeByteBudget) {
      drainError = new BrookError(ErrorCodes.TIMEOUT, `no valid header within ${o.probeByteBudget} bytes`);
      drain(drainError);
      return;
    }
    if (!h) return;
    header = h;
    clearTimeout(handshakeTimer);
    socket.removeListener('data', onHandshakeData);
    socket.pause();
    const hello = codec.accept();
    if (hello.length > 0) socket.write(hello);
    if (h.network === 'tcp') dialTcp(h);
    else startUdp(h);
  };

  const dialTcp = (h: FirstPayload) => {
    const dst = h.destination;
    const remote = netConnect({ host: dst.host, port: dst.port, allowHalfOpen: true, noDelay: true });
    const dialTimer = setTimeout(() => {
      remote.destroy();
      finish(new BrookError(ErrorCodes.TIMEOUT, `dial ${formatAddress(dst)} timed out after ${o.dialTimeoutMs} ms`));
    }, o.dialTimeoutMs);
    const onDialError = (e: Error) => {
      clearTimeout(dialTimer);
      const err = toBrookError(e);
      finish(new BrookError(err.code, `dial ${formatAddress(dst)}: ${err.message}`, { cause: e }));
    };
    remote.once('error', onDialError);
    remote.once('connect', () => {
      clearTimeout(dialTimer);
      remote.removeListener('error', onDialError);
      if (finished) {
        remote.destroy();
        return;
      }
      relay = new Relay(remote, socket, tunnelTransform(codec), {
        idleTimeoutMs: o.tcpTimeout * 1000,
        initialPlain: early.splice(0),
        onClose: (err) => finish(err),
      });
    });
  };

  const startUdp = (h: FirstPayload) => {
    udp = new UdpFlow(socket, codec, h, o, early.splice(0), (err) => finish(err));
  };

  socket.on('error', (e) => finish(toBrookError(e)));
  socket.on('close', () => {
    if (!relay && !udp) finish(null);
  });
  socket.setNoDelay(true);
  socket.on('data', onHandshakeData);
  if (head.length > 0) onHandshakeData(head);

  return {
    destroy: () => {
      if (relay) relay.close();
      else if (udp) udp.close();
      else finish(null);
    },
    closed,
  };
}

export function tunnelTransform(codec: {
  push(c: Buffer, emit: (p: Buffer) => void): unknown;
  seal(d: Uint8Array): Buffer;
  sealInto?(d: Uint8Array, out: Uint8Array): number;
  end(): void;
}) {
  return {
    open: (chunk: Buffer, emit: (p: Buffer) => void) => {
      codec.push(chunk, emit);
    },
    seal: (data: Buffer) => codec.seal(data),
    // the Relay seals into reused buffers when the codec can (Brook TCP)
    sealInto: codec.sealInto ? (data: Buffer, out: Buffer) => codec.sealInto!(data, out) : undefined,
    end: () => codec.end(),
  };
}

