/**
 * Open one tunnel: connect to the wsserver (TCP or TLS), send the upgrade
 * exactly as upstream, wait for and check the 101, then send the client
 * preamble (Brook: nonce + first fragment; withoutBrookProtocol: header).
 * Nothing is sent before the 101 has been read.
 */
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { Dialer } from '../dial/index.js';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import type { Address } from '../protocol/address.js';
import type { Network } from '../protocol/header.js';
import { type ClientCodec, createClientCodec, type SessionOptions } from '../protocol/session.js';
import { buildUpgradeRequest, newWebSocketKey, parseUpgradeResponse, type RandomSource } from '../protocol/upgrade.js';

export interface ServerEndpoint {
  secure: boolean;
  /** Host header value (host:port as in the URL). */
  hostPort: string;
  /** Host name from the URL: TLS SNI and certificate name. */
  hostname: string;
  port: number;
  path: string;
  /** Dial this "host:port" instead of resolving the URL's host (upstream --address). */
  address?: { host: string; port: number };
  /** TLS: skip certificate and host-name verification. */
  insecure?: boolean;
  /** TLS: extra trusted CA (PEM). */
  ca?: string;
}

export interface DialOptions extends SessionOptions {
  endpoint: ServerEndpoint;
  network: Network;
  destination: Address;
  /** Give up on connect + 101 after this long (ms). */
  timeoutMs: number;
  random?: RandomSource;
  /** How to reach the server (--dialWith*: DNS, source address, SOCKS5); default net.connect. */
  dialer?: Dialer;
}

export interface OpenTunnel {
  socket: Socket;
  codec: ClientCodec;
  /** Bytes that arrived right after the 101 head (belong to the Brook stream). */
  leftover: Buffer;
}

export const DEFAULT_TUNNEL_TIMEOUT_MS = 10_000;

export function dialTunnel(o: DialOptions): Promise<OpenTunnel> {
  if (o.dialer && !o.dialer.isDefault) return dialThrough(o, o.dialer);
  const e = o.endpoint;
  const host = e.address?.host ?? e.hostname;
  const port = e.address?.port ?? e.port;
  const socket: Socket = e.secure
    ? tlsConnect(tlsOptions(e, { host, port }))
    : netConnect({ host, port, allowHalfOpen: true, noDelay: true });
  if (e.secure) socket.setNoDelay(true);
  return upgrade(o, socket, e.secure ? 'secureConnect' : 'connect', o.timeoutMs);
}

/** TLS client options of the connection to a wssserver (over `to`: a host and port, or a connected socket). */
function tlsOptions(e: ServerEndpoint, to: { host: string; port: number } | { socket: Socket }) {
  return {
    ...to,
    servername: isIpLiteral(e.hostname) ? undefined : e.hostname,
    ALPNProtocols: ['http/1.1'],
    rejectUnauthorized: !e.insecure,
    ca: e.ca ? [e.ca] : undefined,
    // set only when insecure: an explicit undefined replaces tls.checkServerIdentity and trips Node's assert
    ...(e.insecure ? { checkServerIdentity: () => undefined } : {}),
    // honoured by TLSSocket, missing from ConnectionOptions' type
    ...({ allowHalfOpen: true } as object),
  };
}

/** Through the --dialWith* dialer: the TCP connection first (its time counts), then TLS and the upgrade. */
async function dialThrough(o: DialOptions, dialer: Dialer): Promise<OpenTunnel> {
  const e = o.endpoint;
  const started = Date.now();
  const tcp = await dialer.connectTcp({ host: e.address?.host ?? e.hostname, port: e.address?.port ?? e.port }, { timeoutMs: o.timeoutMs });
  const left = Math.max(1, o.timeoutMs - (Date.now() - started));
  if (!e.secure) {
    tcp.resume();
    return upgrade(o, tcp, null, left);
  }
  const socket = tlsConnect(tlsOptions(e, { socket: tcp }));
  socket.setNoDelay(true);
  return upgrade(o, socket, 'secureConnect', left);
}

/** Send the upgrade once `ready` fires (null: now), read and check the 101, send the client preamble. */
function upgrade(o: DialOptions, socket: Socket, ready: 'connect' | 'secureConnect' | null, timeoutMs: number): Promise<OpenTunnel> {
  const e = o.endpoint;
  return new Promise<OpenTunnel>((resolve, reject) => {
    const key = newWebSocketKey(o.random);
    let head: Buffer = Buffer.alloc(0);
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(toBrookError(err));
    };
    const timer = setTimeout(
      () => fail(new BrookError(ErrorCodes.TIMEOUT, `no upgrade from ${e.hostPort} within ${o.timeoutMs} ms`)),
      timeoutMs,
    );
    const sendRequest = () => socket.write(buildUpgradeRequest({ host: e.hostPort, path: e.path, key }));
    if (ready) socket.once(ready, sendRequest);
    else sendRequest();
    socket.on('error', fail);
    socket.on('end', () => fail(new BrookError(ErrorCodes.UPGRADE_RESPONSE, `${e.hostPort} closed before the 101`)));
    const onData = (d: Buffer) => {
      head = head.length === 0 ? d : Buffer.concat([head, d]);
      let parsed;
      try {
        parsed = parseUpgradeResponse(head, key);
      } catch (err) {
        fail(err);
        return;
      }
      if (!parsed) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.removeListener('error', fail);
      socket.removeAllListeners('end');
      socket.pause();
      const codec = createClientCodec({ ...o, network: o.network, destination: o.destination });
      socket.write(codec.hello());
      resolve({ socket, codec, leftover: head.subarray(parsed.headLength) });
    };
    socket.on('data', onData);
  });
}

function isIpLiteral(h: string): boolean {
  return /^[0-9.]+$/.test(h) || h.includes(':');
}
