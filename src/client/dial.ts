/**
 * Open one tunnel: connect to the wsserver (TCP or TLS), send the upgrade
 * exactly as upstream, wait for and check the 101, then send the client
 * preamble (Brook: nonce + first fragment; withoutBrookProtocol: header).
 * Nothing is sent before the 101 has been read.
 *
 * Two halves, so a pool (src/client/pool.ts) can run the first ahead of time:
 * connectUpgraded() (TCP/TLS connect, upgrade, 101) and startTunnel() (a fresh
 * codec: header time read now, preamble written; its nonce and key new, or made
 * ahead for this connection by the pool). dialTunnel() is both at once. The
 * preamble is never built before startTunnel().
 *
 * wss: with a TlsSessionCache (src/client/tls-session.ts) a new connection
 * offers the last session ticket the same server gave us (TLS resumption). The
 * TLS context (trusted CAs) is made once per endpoint, not per connection.
 * The endpoint's tlsFingerprint and fragment shape the ClientHello
 * (protocol/tls-client.md); without them it is Node's own, in one write.
 */
import { connect as netConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect, createSecureContext, type SecureContext } from 'node:tls';
import type { Dialer } from '../dial/index.js';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { fragmentingTransport } from '../net/tls-fragment.js';
import type { Address } from '../protocol/address.js';
import type { Network } from '../protocol/header.js';
import type { ProtocolMode } from '../protocol/mode.js';
import type { ClientCodec, PasswordOptions, PreparedClientKey } from '../protocol/session.js';
import { buildUpgradeRequest, newWebSocketKey, parseUpgradeResponse, type RandomSource } from '../protocol/upgrade.js';
import { connectOptionsFor, contextOptionsFor, type TlsFingerprint } from '../tls/fingerprint.js';
import type { TlsFragmentSpec } from '../tls/fragment-spec.js';
import type { TlsSessionCache } from './tls-session.js';

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
  /** TLS: a ClientHello like this browser's (src/tls/fingerprint.ts); absent: Node's default hello. */
  tlsFingerprint?: TlsFingerprint;
  /** TLS: send the ClientHello in pieces (src/net/tls-fragment.ts); absent: as one write. */
  fragment?: TlsFragmentSpec;
}

/** What connectUpgraded() needs: where the server is and how to reach it. */
export interface ConnectOptions {
  endpoint: ServerEndpoint;
  /** Give up on connect + 101 after this long (ms). */
  timeoutMs: number;
  random?: RandomSource;
  /** How to reach the server (--dialWith*: DNS, source address, SOCKS5); default net.connect. */
  dialer?: Dialer;
  /** wss: offer and keep TLS sessions (resumption); absent = a full handshake every time. */
  tlsSessions?: TlsSessionCache;
  /** Abort the connect (the socket is destroyed, the promise rejects with CLOSED). */
  signal?: AbortSignal;
}

/** What startTunnel() needs: the tunnel's own settings. */
export interface TunnelStartOptions extends PasswordOptions {
  /** Brook or withoutBrookProtocol (the caller's flag made a mode once: src/protocol/mode.ts). */
  mode: ProtocolMode;
  network: Network;
  destination: Address;
}

export interface DialOptions extends ConnectOptions, TunnelStartOptions {}

/** A connection that has been upgraded (101 read) and has sent nothing since: no preamble yet. */
export interface UpgradedConnection {
  /** Paused, no listeners of ours left. */
  socket: Socket;
  /** Bytes that arrived right after the 101 head. */
  leftover: Buffer;
  /** The client nonce + key made ahead for the tunnel on this connection (pool), used by startTunnel(). */
  prepared?: PreparedClientKey;
}

export interface OpenTunnel {
  socket: Socket;
  codec: ClientCodec;
  /** Bytes that arrived right after the 101 head (belong to the Brook stream). */
  leftover: Buffer;
}

export const DEFAULT_TUNNEL_TIMEOUT_MS = 10_000;

/** Connect, upgrade and send the preamble: one tunnel. */
export function dialTunnel(o: DialOptions): Promise<OpenTunnel> {
  return connectUpgraded(o).then((u) => startTunnel(u, o));
}

/**
 * The preamble on an upgraded connection: a new codec (the connection's prepared
 * nonce + key, or new ones; header time read now) and its hello written.
 * Synchronous: nothing happens between the two.
 */
export function startTunnel(u: UpgradedConnection, o: TunnelStartOptions): OpenTunnel {
  const codec = o.mode.clientCodec({ ...o, network: o.network, destination: o.destination, prepared: u.prepared });
  u.socket.write(codec.hello());
  return { socket: u.socket, codec, leftover: u.leftover };
}

/** TCP (or TLS) connect, upgrade request, 101 checked; nothing more is sent. */
export function connectUpgraded(o: ConnectOptions): Promise<UpgradedConnection> {
  if (o.dialer && !o.dialer.isDefault) return dialThrough(o, o.dialer);
  const e = o.endpoint;
  const host = e.address?.host ?? e.hostname;
  const port = e.address?.port ?? e.port;
  const socket: Socket = e.secure
    ? secureConnect(o, { host, port })
    : netConnect({ host, port, allowHalfOpen: true, noDelay: true });
  if (e.secure) socket.setNoDelay(true);
  return upgrade(o, socket, e.secure ? 'secureConnect' : 'connect', o.timeoutMs);
}

/** tls.connect to the server, offering a kept session when there is one, keeping the ones it gives. */
function secureConnect(o: ConnectOptions, to: { host: string; port: number } | { socket: Socket }): Socket {
  const e = o.endpoint;
  const cache = o.tlsSessions;
  const key = cache ? cache.keyOf(e) : '';
  const session = cache?.get(key);
  const via = e.fragment ? fragmentingTransport(to, { spec: e.fragment }) : to;
  const socket = tlsConnect({ ...tlsOptions(e, via), ...(session ? { session } : {}) });
  if (!cache) return socket;
  // kept only from a connection whose certificate passed (or that was asked not to check)
  let pending: Buffer | null = null;
  let secured = false;
  const keep = (s: Buffer) => {
    if (socket.authorized || e.insecure) cache.set(key, s);
  };
  socket.on('session', (s: Buffer) => (secured ? keep(s) : (pending = s)));
  socket.once('secureConnect', () => {
    secured = true;
    if (pending) keep(pending);
    pending = null;
  });
  return socket;
}

/** TLS client options of the connection to a wssserver (over `to`: a host and port, or a connected socket). */
function tlsOptions(e: ServerEndpoint, to: { host: string; port: number } | { socket: Duplex }) {
  return {
    ...to,
    ...(e.tlsFingerprint ? connectOptionsFor(e.tlsFingerprint) : {}),
    servername: isIpLiteral(e.hostname) ? undefined : e.hostname,
    ALPNProtocols: ['http/1.1'],
    rejectUnauthorized: !e.insecure,
    secureContext: secureContextOf(e),
    // set only when insecure: an explicit undefined replaces tls.checkServerIdentity and trips Node's assert
    ...(e.insecure ? { checkServerIdentity: () => undefined } : {}),
    // honoured by TLSSocket, missing from ConnectionOptions' type
    ...({ allowHalfOpen: true } as object),
  };
}

/**
 * The TLS context of an endpoint, made on its first connection and kept with it: tls.connect
 * would otherwise build one per connection (and parse --ca's PEM each time). Holds only what
 * the context needs (the trusted CAs, a fingerprint's ciphers, groups and signature algorithms); names, checks and sessions stay per connection.
 */
const secureContexts = new WeakMap<ServerEndpoint, SecureContext>();
function secureContextOf(e: ServerEndpoint): SecureContext {
  let c = secureContexts.get(e);
  if (!c) {
    c = createSecureContext({ ...(e.tlsFingerprint ? contextOptionsFor(e.tlsFingerprint) : {}), ...(e.ca ? { ca: [e.ca] } : {}) });
    secureContexts.set(e, c);
  }
  return c;
}

/** Through the --dialWith* dialer: the TCP connection first (its time counts), then TLS and the upgrade. */
async function dialThrough(o: ConnectOptions, dialer: Dialer): Promise<UpgradedConnection> {
  const e = o.endpoint;
  const started = Date.now();
  const tcp = await dialer.connectTcp({ host: e.address?.host ?? e.hostname, port: e.address?.port ?? e.port }, { timeoutMs: o.timeoutMs });
  if (o.signal?.aborted) {
    tcp.destroy();
    throw aborted(e);
  }
  const left = Math.max(1, o.timeoutMs - (Date.now() - started));
  if (!e.secure) {
    tcp.resume();
    return upgrade(o, tcp, null, left);
  }
  const socket = secureConnect(o, { socket: tcp });
  socket.setNoDelay(true);
  return upgrade(o, socket, 'secureConnect', left);
}

/** Send the upgrade once `ready` fires (null: now), read and check the 101; the socket is left paused. */
function upgrade(o: ConnectOptions, socket: Socket, ready: 'connect' | 'secureConnect' | null, timeoutMs: number): Promise<UpgradedConnection> {
  const e = o.endpoint;
  return new Promise<UpgradedConnection>((resolve, reject) => {
    const key = newWebSocketKey(o.random);
    let head: Buffer = Buffer.alloc(0);
    let settled = false;
    const fail = (err: unknown) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      reject(toBrookError(err));
    };
    const onAbort = () => fail(aborted(e));
    if (o.signal?.aborted) {
      queueMicrotask(onAbort);
    } else {
      o.signal?.addEventListener('abort', onAbort, { once: true });
    }
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
      o.signal?.removeEventListener('abort', onAbort);
      socket.removeListener('data', onData);
      socket.removeListener('error', fail);
      socket.removeAllListeners('end');
      socket.pause();
      resolve({ socket, leftover: head.subarray(parsed.headLength) });
    };
    socket.on('data', onData);
  });
}

function aborted(e: ServerEndpoint): BrookError {
  return new BrookError(ErrorCodes.CLOSED, `connect to ${e.hostPort} aborted`);
}

function isIpLiteral(h: string): boolean {
  return /^[0-9.]+$/.test(h) || h.includes(':');
}
