/**
 * The client's first fragment payload (Brook) and the withoutBrookProtocol
 * header body: a timestamp whose parity names the network, then the destination.
 *
 *   +----------------------+----------------------------+
 *   | u32 BE Unix time     | ATYP + ADDR + PORT         |
 *   | even: TCP, odd: UDP  | (SOCKS5 address encoding)  |
 *   +----------------------+----------------------------+
 *
 * The client takes the current time and adds 1 when its parity is wrong. The
 * server refuses a time more than 60 s in the past and, when maxAheadSeconds is
 * set (brook-ts servers: 60 s, --maxTimeAhead), one too far in the future
 * (upstream accepts any future time). Spec: protocol/brook-stream.md#first-fragment
 */
import { BrookError, ErrorCodes } from '../errors.js';
import { type Address, decodeAddress, encodedAddressSize, writeAddress } from './address.js';
import { MAX_FIRST_PAYLOAD, MAX_HEADER_AGE_SECONDS, TIMESTAMP_SIZE } from './sizes.js';

export type Network = 'tcp' | 'udp';

/** Milliseconds since the epoch, like Date.now; injected so tests can replay captures. */
export type Clock = () => number;

export interface BuildHeaderOptions {
  network: Network;
  destination: Address;
  now?: Clock;
}

export interface FirstPayload {
  /** The u32 time as sent (parity included). */
  time: number;
  network: Network;
  destination: Address;
}

export interface ParseHeaderOptions {
  now?: Clock;
  /** Seconds a header may be old; default 60 (upstream). */
  maxAgeSeconds?: number;
  /** Seconds a header may be ahead of the clock; default: no bound (upstream). */
  maxAheadSeconds?: number;
  /** When set, a time of the other parity is refused with TIME_PARITY. */
  expectNetwork?: Network;
}

/** The timestamp the client sends: now, plus one when the parity is wrong for the network. */
export function stampFor(network: Network, nowMs: number): number {
  let t = Math.floor(nowMs / 1000) >>> 0;
  const odd = t % 2 === 1;
  if ((network === 'tcp' && odd) || (network === 'udp' && !odd)) t = (t + 1) >>> 0;
  return t;
}

export function networkOf(time: number): Network {
  return time % 2 === 0 ? 'tcp' : 'udp';
}

export function buildFirstPayload(opts: BuildHeaderOptions): Buffer {
  const now = opts.now ?? Date.now;
  const size = TIMESTAMP_SIZE + encodedAddressSize(opts.destination);
  if (size > MAX_FIRST_PAYLOAD) {
    throw new BrookError(ErrorCodes.PAYLOAD_OVERSIZED, `first fragment of ${size} bytes exceeds ${MAX_FIRST_PAYLOAD}`);
  }
  const out = Buffer.allocUnsafe(size);
  out.writeUInt32BE(stampFor(opts.network, now()), 0);
  writeAddress(opts.destination, out, TIMESTAMP_SIZE);
  return out;
}

/** Parse and check a first fragment payload (or withoutBrookProtocol header body). */
export function parseFirstPayload(buf: Uint8Array, opts: ParseHeaderOptions = {}): FirstPayload {
  if (buf.length < TIMESTAMP_SIZE) {
    throw new BrookError(ErrorCodes.HEADER_TRUNCATED, `header of ${buf.length} bytes is shorter than its timestamp`);
  }
  const time = ((buf[0]! << 24) >>> 0) + (buf[1]! << 16) + (buf[2]! << 8) + buf[3]!;
  const nowSec = Math.floor((opts.now ?? Date.now)() / 1000);
  const maxAge = opts.maxAgeSeconds ?? MAX_HEADER_AGE_SECONDS;
  if (nowSec - time > maxAge) {
    throw new BrookError(ErrorCodes.TIME_STALE, `header time ${time} is ${nowSec - time} s old (limit ${maxAge} s)`);
  }
  if (opts.maxAheadSeconds !== undefined && time - nowSec > opts.maxAheadSeconds) {
    throw new BrookError(ErrorCodes.TIME_AHEAD, `header time ${time} is ${time - nowSec} s ahead (limit ${opts.maxAheadSeconds} s)`);
  }
  const network = networkOf(time);
  if (opts.expectNetwork && opts.expectNetwork !== network) {
    throw new BrookError(ErrorCodes.TIME_PARITY, `header time ${time} names ${network}, expected ${opts.expectNetwork}`);
  }
  let decoded;
  try {
    decoded = decodeAddress(buf, TIMESTAMP_SIZE);
  } catch (e) {
    if (e instanceof BrookError && e.code === ErrorCodes.ADDRESS_TRUNCATED) {
      throw new BrookError(ErrorCodes.HEADER_TRUNCATED, 'header ends inside the destination address', { cause: e });
    }
    throw e;
  }
  if (TIMESTAMP_SIZE + decoded.bytesRead !== buf.length) {
    throw new BrookError(ErrorCodes.ADDRESS_INVALID, `${buf.length - TIMESTAMP_SIZE - decoded.bytesRead} stray bytes after the destination`);
  }
  return { time, network, destination: decoded.address };
}
