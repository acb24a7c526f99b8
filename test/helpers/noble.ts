/**
 * An independent Brook encoder/decoder for differential tests, written only
 * from the wire description (protocol/brook-stream.md) with @noble/ciphers and
 * @noble/hashes. It deliberately imports nothing from src/ and shares no code
 * with it: the nonce counter uses BigInt, lengths use DataView, and addresses
 * are encoded by hand, so a bug in one side cannot hide in the other.
 */
import { gcm } from '@noble/ciphers/aes.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { sha256 } from '@noble/hashes/sha2.js';

const NOBLE_NONCE_SIZE = 12;
const NOBLE_KEY_SIZE = 32;
const NOBLE_TAG_SIZE = 16;
const NOBLE_LENGTH_SIZE = 2;
const NOBLE_SEALED_LENGTH_SIZE = NOBLE_LENGTH_SIZE + NOBLE_TAG_SIZE;
const U64_MASK = (1n << 64n) - 1n;

const utf8 = (s: string): Uint8Array => new TextEncoder().encode(s);

export const NOBLE_DEFAULT_INFO: Uint8Array = utf8('brook');

/** HKDF-SHA256(secret = password, salt = nonce, info) -> 32-byte AES-256 key. */
export function nobleKey(password: string | Uint8Array, nonce: Uint8Array, info: Uint8Array = NOBLE_DEFAULT_INFO): Uint8Array {
  const secret = typeof password === 'string' ? utf8(password) : password;
  return hkdf(sha256, secret, nonce, info, NOBLE_KEY_SIZE);
}

/** Little-endian u64 in the first 8 bytes of the nonce, plus one, wrapping. */
export function nobleIncrement(nonce: Uint8Array): void {
  const dv = new DataView(nonce.buffer, nonce.byteOffset, 8);
  dv.setBigUint64(0, (dv.getBigUint64(0, true) + 1n) & U64_MASK, true);
}

/** One direction of a Brook stream: key + a nonce advanced after every seal/open. */
export class NobleDirection {
  readonly key: Uint8Array;
  readonly nonce: Uint8Array;

  constructor(password: string | Uint8Array, nonce: Uint8Array, info: Uint8Array = NOBLE_DEFAULT_INFO) {
    if (nonce.length !== NOBLE_NONCE_SIZE) throw new Error(`noble: nonce must be ${NOBLE_NONCE_SIZE} bytes`);
    this.nonce = Uint8Array.from(nonce);
    this.key = nobleKey(password, this.nonce, info);
  }

  seal(plain: Uint8Array): Uint8Array {
    const out = gcm(this.key, Uint8Array.from(this.nonce)).encrypt(plain);
    nobleIncrement(this.nonce);
    return out;
  }

  /** Throws a plain Error (noble's) when the tag does not verify. */
  open(sealed: Uint8Array): Uint8Array {
    const out = gcm(this.key, Uint8Array.from(this.nonce)).decrypt(sealed);
    nobleIncrement(this.nonce);
    return out;
  }

  /** One fragment: seal(u16 BE length) then seal(payload). */
  fragment(payload: Uint8Array): Uint8Array {
    const len = new Uint8Array(NOBLE_LENGTH_SIZE);
    new DataView(len.buffer).setUint16(0, payload.length, false);
    return concat([this.seal(len), this.seal(payload)]);
  }

  /** Stream data (TCP): consecutive fragments of at most `maxPayload` bytes each. */
  stream(data: Uint8Array, maxPayload: number): Uint8Array {
    const parts: Uint8Array[] = [];
    for (let i = 0; i < data.length; i += maxPayload) parts.push(this.fragment(data.subarray(i, i + maxPayload)));
    return concat(parts);
  }

  /** Decode consecutive whole fragments; throws when the input ends mid-fragment. */
  unfragment(wire: Uint8Array): Uint8Array[] {
    const out: Uint8Array[] = [];
    let o = 0;
    while (o < wire.length) {
      if (wire.length - o < NOBLE_SEALED_LENGTH_SIZE) throw new Error('noble: truncated length');
      const len = this.open(wire.subarray(o, o + NOBLE_SEALED_LENGTH_SIZE));
      o += NOBLE_SEALED_LENGTH_SIZE;
      const n = new DataView(len.buffer, len.byteOffset, len.length).getUint16(0, false);
      if (wire.length - o < n + NOBLE_TAG_SIZE) throw new Error('noble: truncated payload');
      out.push(this.open(wire.subarray(o, o + n + NOBLE_TAG_SIZE)));
      o += n + NOBLE_TAG_SIZE;
    }
    return out;
  }
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export type NobleDestination = { ipv4: [number, number, number, number]; port: number } | { domain: string; port: number };

/** ATYP + ADDR + PORT, written by hand (RFC 1928). */
export function nobleAddress(d: NobleDestination): Uint8Array {
  const port = [(d.port >> 8) & 0xff, d.port & 0xff];
  if ('ipv4' in d) return Uint8Array.from([0x01, ...d.ipv4, ...port]);
  const name = utf8(d.domain);
  return Uint8Array.from([0x03, name.length, ...name, ...port]);
}

/** The first fragment's plaintext: u32 BE time (even TCP, odd UDP) + address. */
export function nobleFirstPayload(timeSec: number, network: 'tcp' | 'udp', d: NobleDestination): Uint8Array {
  let t = timeSec;
  if ((network === 'tcp') !== (t % 2 === 0)) t += 1;
  const head = new Uint8Array(4);
  new DataView(head.buffer).setUint32(0, t, false);
  return concat([head, nobleAddress(d)]);
}

/** Parse a first-fragment plaintext into time and the raw address bytes. */
export function nobleParseFirst(p: Uint8Array): { time: number; network: 'tcp' | 'udp'; address: Uint8Array } {
  const time = new DataView(p.buffer, p.byteOffset, p.length).getUint32(0, false);
  return { time, network: time % 2 === 0 ? 'tcp' : 'udp', address: p.subarray(4) };
}

/** Client side of a Brook stream: nonce + first fragment, then one fragment per payload. */
export class NobleClient {
  readonly up: NobleDirection;
  down: NobleDirection | null = null;
  private pending: Uint8Array = new Uint8Array(0);

  constructor(
    private readonly password: string | Uint8Array,
    readonly clientNonce: Uint8Array,
    private readonly info: { client?: Uint8Array; server?: Uint8Array } = {},
  ) {
    this.up = new NobleDirection(password, clientNonce, info.client ?? NOBLE_DEFAULT_INFO);
  }

  hello(first: Uint8Array): Uint8Array {
    return concat([this.clientNonce, this.up.fragment(first)]);
  }

  /** Whole server stream so far (nonce first); returns the payloads of whole fragments. */
  receive(wire: Uint8Array): Uint8Array[] {
    let w = concat([this.pending, wire]);
    if (!this.down) {
      if (w.length < NOBLE_NONCE_SIZE) {
        this.pending = w;
        return [];
      }
      this.down = new NobleDirection(this.password, w.subarray(0, NOBLE_NONCE_SIZE), this.info.server ?? NOBLE_DEFAULT_INFO);
      w = w.subarray(NOBLE_NONCE_SIZE);
    }
    this.pending = new Uint8Array(0);
    return this.down.unfragment(w);
  }
}

/** Server side: reads the client nonce and fragments, answers with its own nonce + fragments. */
export class NobleServer {
  up: NobleDirection | null = null;
  readonly down: NobleDirection;

  constructor(
    private readonly password: string | Uint8Array,
    readonly serverNonce: Uint8Array,
    private readonly info: { client?: Uint8Array; server?: Uint8Array } = {},
  ) {
    this.down = new NobleDirection(password, serverNonce, info.server ?? NOBLE_DEFAULT_INFO);
  }

  /** The whole client stream (nonce + whole fragments): [first payload, ...data payloads]. */
  receive(wire: Uint8Array): Uint8Array[] {
    if (!this.up) {
      this.up = new NobleDirection(this.password, wire.subarray(0, NOBLE_NONCE_SIZE), this.info.client ?? NOBLE_DEFAULT_INFO);
      return this.up.unfragment(wire.subarray(NOBLE_NONCE_SIZE));
    }
    return this.up.unfragment(wire);
  }

  /** Server nonce, sent once after the first fragment checked out. */
  accept(): Uint8Array {
    return Uint8Array.from(this.serverNonce);
  }
}
