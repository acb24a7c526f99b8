/**
 * --dialWithSocks5: outgoing TCP through the proxy's CONNECT, outgoing UDP
 * through its UDP ASSOCIATE (RFC 1928), with RFC 1929 username/password when
 * both are set (as upstream's client: it offers that one method, else "no
 * authentication", and requires the proxy to choose what it offered).
 *
 * The destination goes to the proxy as given (a domain stays a domain: the
 * proxy resolves it, as upstream). A UDP association keeps its control
 * connection: when either ends, both are closed.
 */
import { createSocket, type Socket as DgramSocket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { isIP, type Socket } from 'node:net';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { type Address, formatAddress, makeAddress } from '../protocol/address.js';
import { buildUdpHeader, parseUdpHeader, SOCKS5_VERSION, Socks5Command } from '../socks5/codec.js';
import { fmt, sourceFor, type SourceOptions } from './direct.js';
import {
  buildGreeting,
  buildRequest,
  buildUserPass,
  parseChoice,
  parseReply,
  parseUserPassStatus,
  replyError,
  Socks5Method,
} from './socks5-client-codec.js';
import type { Endpoint, UdpChannel } from './types.js';

/** Bytes the proxy may send before its reply is complete (a reply is at most 262). */
const MAX_HANDSHAKE_BYTES = 512;

export interface Socks5Auth {
  username?: string;
  password?: string;
}

/**
 * Run the SOCKS5 negotiation on a connected socket: greeting, auth, then
 * `command` for `dst`. Resolves with the bound address of the reply; any bytes
 * after the reply are pushed back into the socket (they are the stream's).
 * On failure or timeout the socket is destroyed.
 */
export function socks5Negotiate(sock: Socket, command: number, dst: Address, auth: Socks5Auth, timeoutMs: number, what: string): Promise<Address> {
  const useAuth = !!auth.username && !!auth.password;
  const method = useAuth ? Socks5Method.USERNAME_PASSWORD : Socks5Method.NO_AUTH;
  return new Promise<Address>((resolve, reject) => {
    let buf: Buffer = Buffer.alloc(0);
    let state: 'choice' | 'auth' | 'reply' = 'choice';
    let done = false;
    const finish = (err: BrookError | null, bound?: Address, rest?: Buffer) => {
      if (done) return;
      done = true;
      if (timer) clearTimeout(timer);
      sock.removeListener('data', onData);
      sock.removeListener('error', onError);
      sock.removeListener('close', onClose);
      if (err) {
        sock.destroy();
        reject(err);
        return;
      }
      sock.pause();
      if (rest && rest.length > 0) sock.unshift(rest);
      resolve(bound!);
    };
    const timer =
      timeoutMs > 0
        ? setTimeout(() => finish(new BrookError(ErrorCodes.TIMEOUT, `${what}: no SOCKS5 reply within ${timeoutMs} ms`)), timeoutMs)
        : null;
    const step = (): void => {
      if (state === 'choice') {
        const c = parseChoice(buf);
        if (!c) return;
        buf = buf.subarray(c.bytesRead);
        if (c.value !== method) {
          finish(
            c.value === Socks5Method.NO_ACCEPTABLE || c.value === Socks5Method.USERNAME_PASSWORD
              ? new BrookError(ErrorCodes.SOCKS_AUTH, `${what}: proxy wants ${useAuth ? 'another method' : 'a username and password'}`)
              : new BrookError(ErrorCodes.SOCKS_NO_METHOD, `${what}: proxy chose method ${c.value}, we offered ${method}`),
          );
          return;
        }
        if (useAuth) {
          state = 'auth';
          sock.write(buildUserPass(auth.username!, auth.password!));
        } else {
          state = 'reply';
          sock.write(buildRequest(command, dst));
        }
        return step();
      }
      if (state === 'auth') {
        const s = parseUserPassStatus(buf);
        if (!s) return;
        buf = buf.subarray(s.bytesRead);
        if (!s.value) {
          finish(new BrookError(ErrorCodes.SOCKS_AUTH, `${what}: proxy refused the username/password`));
          return;
        }
        state = 'reply';
        sock.write(buildRequest(command, dst));
        return step();
      }
      // a failure needs no bound address (some proxies send only VER REP, then close)
      if (buf.length >= 2 && buf[0] === SOCKS5_VERSION && buf[1] !== 0) {
        finish(replyError(buf[1]!, what));
        return;
      }
      const r = parseReply(buf);
      if (!r) return;
      if (r.value.rep !== 0) {
        finish(replyError(r.value.rep, what));
        return;
      }
      finish(null, r.value.bound, buf.subarray(r.bytesRead));
    };
    const onData = (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      try {
        step();
      } catch (e) {
        finish(toBrookError(e));
        return;
      }
      if (!done && buf.length > MAX_HANDSHAKE_BYTES) {
        finish(new BrookError(ErrorCodes.SOCKS_MALFORMED, `${what}: proxy sent more than ${MAX_HANDSHAKE_BYTES} bytes before its reply`));
      }
    };
    const onError = (e: Error) => {
      const err = toBrookError(e);
      finish(new BrookError(err.code, `${what}: ${err.message}`, { cause: e }));
    };
    const onClose = () => finish(new BrookError(ErrorCodes.CLOSED, `${what}: proxy closed during the SOCKS5 negotiation`));
    sock.on('data', onData);
    sock.on('error', onError);
    sock.on('close', onClose);
    try {
      sock.write(buildGreeting(method));
    } catch (e) {
      finish(toBrookError(e));
    }
  });
}

/** CONNECT to dst on a connected socket to the proxy; the socket is the stream to dst afterwards. */
export async function socks5Connect(sock: Socket, dst: Endpoint, auth: Socks5Auth, timeoutMs: number): Promise<Socket> {
  const what = `dialWithSocks5 CONNECT ${fmt(dst.host, dst.port)}`;
  await socks5Negotiate(sock, Socks5Command.CONNECT, makeAddress(dst.host, dst.port), auth, timeoutMs, what);
  return sock;
}

export interface Socks5UdpOptions {
  auth: Socks5Auth;
  /** Negotiation deadline (ms, 0 = none). */
  timeoutMs: number;
  /** Close the association after this long without a datagram either way (ms, 0 = never). */
  idleMs: number;
  source: SourceOptions;
}

/**
 * UDP ASSOCIATE on a connected control socket; datagrams to `dst` leave from
 * a local UDP socket to the relay address of the reply (its IP replaced by the
 * proxy's when the reply says 0.0.0.0 or ::, as most clients do).
 */
export async function socks5UdpAssociate(control: Socket, dst: Endpoint, o: Socks5UdpOptions): Promise<UdpChannel> {
  const what = `dialWithSocks5 UDP ASSOCIATE for ${fmt(dst.host, dst.port)}`;
  // as upstream: DST.ADDR 0.0.0.0:0, the address we will send from is not known
  const bound = await socks5Negotiate(control, Socks5Command.UDP_ASSOCIATE, makeAddress('0.0.0.0', 0), o.auth, o.timeoutMs, what);
  const unspecified = bound.host === '0.0.0.0' || bound.host === '::';
  const relayHost = unspecified || bound.type === 'domain' ? (control.remoteAddress ?? '') : bound.host;
  if (!isIP(relayHost) || bound.port === 0) {
    control.destroy();
    throw new BrookError(ErrorCodes.SOCKS_MALFORMED, `${what}: unusable relay address ${formatAddress(bound)}`);
  }
  let udp: DgramSocket;
  try {
    udp = await openRelaySocket(o.source, relayHost, bound.port);
  } catch (e) {
    control.destroy();
    const err = toBrookError(e);
    throw new BrookError(err.code, `${what}: ${err.message}`, { cause: e });
  }
  return new Socks5UdpChannel(control, udp, dst, o.idleMs);
}

function openRelaySocket(source: SourceOptions, ip: string, port: number): Promise<DgramSocket> {
  return new Promise<DgramSocket>((resolve, reject) => {
    const local = sourceFor(source, ip);
    const s = createSocket(isIP(ip) === 6 ? 'udp6' : 'udp4');
    s.once('error', (e) => {
      try {
        s.close();
      } catch {
        // closed
      }
      reject(e);
    });
    const go = () => s.connect(port, ip, () => resolve(s));
    if (local) s.bind({ address: local, port: 0 }, go);
    else go();
  });
}

class Socks5UdpChannel extends EventEmitter implements UdpChannel {
  closed = false;
  /** Datagrams from the relay dropped as malformed or fragmented. */
  dropped = 0;
  private readonly dstAddress: Address;
  private idle: NodeJS.Timeout | null = null;

  constructor(
    private readonly control: Socket,
    private readonly udp: DgramSocket,
    readonly remote: Endpoint,
    private readonly idleMs: number,
  ) {
    super();
    this.dstAddress = makeAddress(remote.host, remote.port);
    // the control connection carries nothing after the reply: read and discard, close with it
    control.on('data', () => undefined);
    control.on('error', () => this.close());
    control.on('close', () => this.close());
    control.on('end', () => this.close());
    control.resume();
    udp.on('message', (m) => this.onMessage(m));
    udp.on('error', (e) => {
      if (!this.closed && this.listenerCount('error') > 0) this.emit('error', toBrookError(e));
    });
    udp.on('close', () => this.close());
    this.touch();
  }

  private onMessage(m: Buffer): void {
    if (this.closed) return;
    let data: Buffer;
    try {
      data = parseUdpHeader(m).data;
    } catch {
      this.dropped++;
      return;
    }
    this.touch();
    this.emit('message', data);
  }

  send(data: Uint8Array, cb?: (err: BrookError | null) => void): void {
    if (this.closed) {
      cb?.(new BrookError(ErrorCodes.CLOSED, 'udp channel closed'));
      return;
    }
    this.touch();
    this.udp.send(buildUdpHeader(this.dstAddress, data), (e) => cb?.(e ? toBrookError(e) : null));
  }

  private touch(): void {
    if (this.idleMs <= 0 || this.closed) return;
    if (this.idle) this.idle.refresh();
    else this.idle = setTimeout(() => this.close(), this.idleMs);
  }

  /** The one teardown: the UDP socket and the control connection together. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.idle) clearTimeout(this.idle);
    this.control.destroy();
    try {
      this.udp.close();
    } catch {
      // already closed
    }
    this.emit('close');
  }
}
