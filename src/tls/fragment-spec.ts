/**
 * `fragment=minLength:maxLength:minDelay:maxDelay`: how a wssclient splits its
 * TLS ClientHello (pure: no I/O). Spec: protocol/tls-client.md. The socket side
 * is src/net/tls-fragment.ts.
 *
 * The same link meaning as upstream (brooklink.go NewBrookLink, websocket.go
 * TLSFragmentConn): four base-10 whole numbers separated by ':'; the first TLS
 * record leaves as writes of a random length in [minLength, maxLength), with a
 * random pause in [minDelay, maxDelay) MICROSECONDS between two writes (a
 * range whose max is not above its min always gives the min, as upstream's
 * x.CryptoRandom). Upstream's help says milliseconds, its code sleeps
 * microseconds: what a link means on the wire is what upstream's client does,
 * so microseconds. Where upstream silently splits nothing (not four parts, a
 * part that is not a number, a zero), brook-ts refuses with a one-line error:
 * a user who asked for a split must not go without it unknowingly. Negative
 * values (which break upstream's client) are refused too.
 */
import { BrookError, type ErrorCode, ErrorCodes } from '../errors.js';

export interface TlsFragmentSpec {
  /** Bytes of a write, at least (> 0). */
  minLength: number;
  /** Bytes of a write, below this (a write's length is drawn from [minLength, maxLength)). */
  maxLength: number;
  /** Pause between two writes, microseconds, at least (> 0). */
  minDelay: number;
  /** Pause, microseconds, below this. */
  maxDelay: number;
}

/** Parts of a fragment value. */
export const FRAGMENT_PARTS = 4;
/** Largest length accepted: far above any TLS record (5 + 65 535 bytes); crypto.randomInt needs ranges under 2^48. */
export const MAX_FRAGMENT_LENGTH = 2 ** 30;
/** Longest pause accepted between two writes (µs): 10 s, the default connect timeout, which a longer one could never meet. */
export const MAX_FRAGMENT_DELAY_US = 10_000_000;

const FIELDS = ['minLength', 'maxLength', 'minDelay', 'maxDelay'] as const;
/** What Go's strconv.ParseInt(s, 10, 64) reads, less the '-' sign. */
const WHOLE_NUMBER = /^\+?[0-9]+$/;

/** Check a spec given as an object (library options); returns a copy. */
export function checkFragmentSpec(s: TlsFragmentSpec, code: ErrorCode = ErrorCodes.CONFIG): TlsFragmentSpec {
  if (s === null || typeof s !== 'object') throw new BrookError(code, 'fragment must be { minLength, maxLength, minDelay, maxDelay }');
  for (const f of FIELDS) {
    const v = s[f];
    const max = f.endsWith('Length') ? MAX_FRAGMENT_LENGTH : MAX_FRAGMENT_DELAY_US;
    if (!Number.isInteger(v) || v < 1 || v > max) {
      throw new BrookError(code, `fragment ${f} must be a whole number from 1 to ${max}${f.endsWith('Delay') ? ' (microseconds)' : ''}, got ${String(v)}`);
    }
  }
  return { minLength: s.minLength, maxLength: s.maxLength, minDelay: s.minDelay, maxDelay: s.maxDelay };
}

/** Parse "min_len:max_len:min_delay:max_delay" (delays in microseconds). */
export function parseFragmentSpec(text: string, code: ErrorCode = ErrorCodes.CONFIG): TlsFragmentSpec {
  const bad = (why: string) =>
    new BrookError(code, `fragment ${JSON.stringify(text)}: ${why}; expected min_length:max_length:min_delay:max_delay, four non-zero whole numbers (delays in microseconds), e.g. 50:100:10:50`);
  const parts = String(text).split(':');
  if (parts.length !== FRAGMENT_PARTS) throw bad(`${parts.length} part${parts.length === 1 ? '' : 's'}`);
  const n = parts.map((p) => {
    if (!WHOLE_NUMBER.test(p)) throw bad(`${JSON.stringify(p)} is not a whole number`);
    return Number(p);
  });
  try {
    return checkFragmentSpec({ minLength: n[0]!, maxLength: n[1]!, minDelay: n[2]!, maxDelay: n[3]! }, code);
  } catch (e) {
    throw bad((e as Error).message.replace(/^fragment /, ''));
  }
}

/** The link text of a spec (parseFragmentSpec's inverse). */
export function formatFragmentSpec(s: TlsFragmentSpec): string {
  return `${s.minLength}:${s.maxLength}:${s.minDelay}:${s.maxDelay}`;
}

/** A draw in [min, max) as upstream's x.CryptoRandom: max not above min gives min. */
export type RangeRandom = (min: number, max: number) => number;

/** Lengths of the writes that carry a record of `recordLength` bytes (each drawn, the last one cut to what is left). */
export function planPieces(recordLength: number, s: TlsFragmentSpec, draw: RangeRandom): number[] {
  const out: number[] = [];
  for (let sent = 0; sent < recordLength; ) {
    const l = Math.min(draw(s.minLength, s.maxLength), recordLength - sent);
    out.push(l);
    sent += l;
  }
  return out;
}
