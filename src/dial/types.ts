/**
 * Shapes shared by the dial module: where to connect, and a UDP "connection"
 * (datagrams to and from one destination) that hides whether it is a local
 * socket or a SOCKS5 UDP association.
 */
import type { Socket } from 'node:net';
import type { BrookError } from '../errors.js';

/** A destination as the caller has it: host is a domain name or an IP literal (IPv6 without brackets). */
export interface Endpoint {
  host: string;
  port: number;
}

/** A resolved address. */
export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/**
 * Datagrams to and from one destination, like a connected UDP socket.
 *
 * - `send`: one datagram; the callback gets the error of that send, if any.
 * - 'message': one datagram from the destination (through SOCKS5: its payload,
 *   the SOCKS5 UDP header removed).
 * - 'error': a per-datagram failure (e.g. an ICMP port unreachable): not fatal.
 * - 'close': the channel is gone (close(), the SOCKS5 control connection
 *   ended, or the SOCKS5 UDP timeout); emitted once. Nothing is delivered after it.
 */
export interface UdpChannel {
  readonly remote: Endpoint;
  send(data: Uint8Array, cb?: (err: BrookError | null) => void): void;
  on(event: 'message', listener: (data: Buffer) => void): this;
  on(event: 'error', listener: (err: BrookError) => void): this;
  on(event: 'close', listener: () => void): this;
  /** Idempotent: frees the socket(s) at once. */
  close(): void;
  readonly closed: boolean;
}

/**
 * Connections to IP addresses (no name resolution), with the process's
 * source address rules applied. The resolver sends its own queries through
 * this, so DNS traffic leaves from the same source as everything else.
 */
export interface IpTransport {
  connectTcp(ip: string, port: number, timeoutMs: number): Promise<Socket>;
  openUdp(ip: string, port: number, timeoutMs: number): Promise<UdpChannel>;
}
