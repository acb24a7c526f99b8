/**
 * Direct connections to IP addresses, leaving from the configured source
 * address (--dialWithIP4 / --dialWithIP6 by the destination's family, or an
 * address of --dialWithNIC). No name resolution here.
 */
import { createSocket, type Socket as DgramSocket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { type InterfaceLister, nicSourceAddress, systemInterfaces } from './nic.js';
import type { Endpoint, IpTransport, UdpChannel } from './types.js';

export interface SourceOptions {
  /** --dialWithIP4: source of connections to IPv4 destinations. */
  ip4?: string;
  /** --dialWithIP6: source of connections to IPv6 destinations. */
  ip6?: string;
  /** --dialWithNIC: take the source from this interface (wins over ip4/ip6, as upstream). */
  nic?: string;
  /** Injected for tests (default os.networkInterfaces). */
  interfaces?: InterfaceLister;
}

/** The source address for a destination IP, or undefined for the kernel's choice. */
export function sourceFor(o: SourceOptions, ip: string): string | undefined {
  const family = isIP(ip) === 6 ? 6 : 4;
  if (o.nic) return nicSourceAddress(o.nic, family, o.interfaces ?? systemInterfaces);
  return family === 4 ? o.ip4 : o.ip6;
}

/** A TCP connection to ip:port (connected when the promise resolves), from the configured source. */
export function connectIp(o: SourceOptions, ip: string, port: number, timeoutMs: number): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    let localAddress: string | undefined;
    try {
      localAddress = sourceFor(o, ip);
    } catch (e) {
      reject(toBrookError(e));
      return;
    }
    const sock = netConnect({ host: ip, port, allowHalfOpen: true, noDelay: true, ...(localAddress ? { localAddress } : {}) });
    watchConnect(sock, `${fmt(ip, port)}`, timeoutMs, 'connect').then(resolve, reject);
  });
}

/**
 * Settle when `sock` emits `event` (connect / secureConnect), fails, or after
 * timeoutMs (then it is destroyed). Errors are BrookErrors naming `what`.
 */
export function watchConnect(sock: Socket, what: string, timeoutMs: number, event: string): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const timer =
      timeoutMs > 0
        ? setTimeout(() => {
            cleanup();
            sock.destroy();
            reject(new BrookError(ErrorCodes.TIMEOUT, `connect to ${what} timed out after ${timeoutMs} ms`));
          }, timeoutMs)
        : null;
    const onError = (e: Error) => {
      cleanup();
      sock.destroy();
      const err = toBrookError(e);
      reject(new BrookError(err.code, `connect to ${what}: ${err.message}`, { cause: e }));
    };
    const onOk = () => {
      cleanup();
      resolve(sock);
    };
    const cleanup = () => {
      if (timer) clearTimeout(timer);
      sock.removeListener('error', onError);
      sock.removeListener(event, onOk);
    };
    sock.once('error', onError);
    sock.once(event, onOk);
  });
}

/** A connected UDP socket to ip:port from the configured source. */
export function openUdpIp(o: SourceOptions, ip: string, port: number, remote: Endpoint = { host: ip, port }): Promise<UdpChannel> {
  return new Promise<UdpChannel>((resolve, reject) => {
    let localAddress: string | undefined;
    try {
      localAddress = sourceFor(o, ip);
    } catch (e) {
      reject(toBrookError(e));
      return;
    }
    const sock = createSocket(isIP(ip) === 6 ? 'udp6' : 'udp4');
    let connected = false;
    const fail = (e: unknown) => {
      try {
        sock.close();
      } catch {
        // already closed
      }
      const err = toBrookError(e);
      reject(new BrookError(err.code, `udp to ${fmt(ip, port)}: ${err.message}`, { cause: e }));
    };
    sock.once('error', (e) => {
      if (!connected) fail(e);
    });
    const doConnect = () => {
      try {
        sock.connect(port, ip, () => {
          connected = true;
          resolve(new DirectUdpChannel(sock, remote));
        });
      } catch (e) {
        fail(e);
      }
    };
    if (localAddress) {
      try {
        sock.bind({ address: localAddress, port: 0 }, doConnect);
      } catch (e) {
        fail(e);
      }
    } else doConnect();
  });
}

class DirectUdpChannel extends EventEmitter implements UdpChannel {
  closed = false;

  constructor(
    private readonly sock: DgramSocket,
    readonly remote: Endpoint,
  ) {
    super();
    sock.on('message', (m) => {
      if (!this.closed) this.emit('message', m);
    });
    sock.on('error', (e) => {
      if (!this.closed && this.listenerCount('error') > 0) this.emit('error', toBrookError(e));
    });
    sock.on('close', () => this.close());
  }

  send(data: Uint8Array, cb?: (err: BrookError | null) => void): void {
    if (this.closed) {
      cb?.(new BrookError(ErrorCodes.CLOSED, 'udp channel closed'));
      return;
    }
    this.sock.send(data, (e) => cb?.(e ? toBrookError(e) : null));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.sock.close();
    } catch {
      // already closed
    }
    this.emit('close');
  }
}

export function fmt(host: string, port: number): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** IpTransport over direct sockets with these source rules. */
export function directTransport(o: SourceOptions): IpTransport {
  return {
    connectTcp: (ip, port, timeoutMs) => connectIp(o, ip, port, timeoutMs),
    openUdp: (ip, port) => openUdpIp(o, ip, port),
  };
}
