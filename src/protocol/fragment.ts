/**
 * Brook stream fragments (one direction, after the 12-byte nonce).
 *
 *   +---------------------------+------------------------------+
 *   | seal(u16 BE length)       | seal(payload)                |
 *   | 2 + 16 (tag) = 18 bytes   | length + 16 (tag) bytes      |
 *   +---------------------------+------------------------------+
 *
 * Each seal advances the nonce (so twice per fragment). TCP: a whole fragment is
 * at most 2048 bytes (payload <= 2014). UDP over the stream: one datagram per
 * fragment, a whole fragment at most 65507 bytes, the first one at most 2048.
 * Spec: protocol/brook-stream.md#fragments
 *
 * No I/O here: bytes in, payloads or typed errors out.
 */
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import type { BrookCipher } from './cipher.js';
import { FRAGMENT_OVERHEAD, LENGTH_SIZE, SEALED_LENGTH_SIZE, TAG_SIZE } from './sizes.js';

/** Wire bytes needed to carry `dataLength` bytes in fragments of at most `maxPayload`. */
export function encodedSize(dataLength: number, maxPayload: number): number {
  const fragments = Math.max(1, Math.ceil(dataLength / maxPayload));
  return dataLength + fragments * FRAGMENT_OVERHEAD;
}

/**
 * Seals payloads into fragments. In stream mode `encode` splits data into
 * fragments of at most `maxPayload` (full fragments first) and returns them in
 * one buffer; in datagram mode each call is exactly one fragment.
 */
export class FragmentEncoder {
  private readonly lengthPlain = Buffer.allocUnsafe(LENGTH_SIZE);

  constructor(
    private readonly cipher: BrookCipher,
    public maxPayload: number,
  ) {}

  /** One fragment carrying `payload` whole (UDP datagram, first fragment). */
  encodeOne(payload: Uint8Array): Buffer {
    if (payload.length > this.maxPayload) {
      throw new BrookError(
        ErrorCodes.PAYLOAD_OVERSIZED,
        `payload of ${payload.length} bytes exceeds the fragment limit of ${this.maxPayload}`,
      );
    }
    const out = Buffer.allocUnsafe(payload.length + FRAGMENT_OVERHEAD);
    // one native call for both seals when the engine has the batch helper (a payload <= maxPayload is one fragment)
    const batch = this.cipher.engine.sealFragments;
    if (batch) batch.call(this.cipher.engine, this.cipher.nonce, payload, this.maxPayload, out, 0);
    else this.writeFragment(payload, out, 0);
    return out;
  }

  /** Stream data as consecutive fragments, in one buffer. Empty data gives no fragment. */
  encode(data: Uint8Array): Buffer {
    if (data.length === 0) return Buffer.alloc(0);
    const out = Buffer.allocUnsafe(encodedSize(data.length, this.maxPayload));
    const n = this.encodeInto(data, out);
    return n === out.length ? out : out.subarray(0, n);
  }

  /**
   * encode() into a caller's buffer (which must hold encodedSize(data.length, maxPayload)
   * bytes, else RangeError): lets the network side reuse its output buffers.
   * Returns the bytes written.
   */
  encodeInto(data: Uint8Array, out: Uint8Array): number {
    if (data.length === 0) return 0;
    if (out.length < encodedSize(data.length, this.maxPayload)) throw new RangeError('encodeInto: output buffer too small');
    const batch = this.cipher.engine.sealFragments;
    if (batch) return batch.call(this.cipher.engine, this.cipher.nonce, data, this.maxPayload, out, 0);
    const o8 = Buffer.isBuffer(out) ? out : Buffer.from(out.buffer, out.byteOffset, out.length);
    let o = 0;
    for (let i = 0; i < data.length; i += this.maxPayload) {
      o += this.writeFragment(data.subarray(i, Math.min(data.length, i + this.maxPayload)), o8, o);
    }
    return o;
  }

  private writeFragment(payload: Uint8Array, out: Buffer, offset: number): number {
    this.lengthPlain.writeUInt16BE(payload.length, 0);
    let o = offset + this.cipher.sealInto(this.lengthPlain, out, offset);
    o += this.cipher.sealInto(payload, out, o);
    return o - offset;
  }
}

/**
 * Reusable buffers for batch-opened TCP payloads (one per batch, at most one socket
 * read). The relay gives a payload back with releaseOpened() once its write is done
 * (src/net/relay.ts); a payload nobody gives back is simply left to the GC. This keeps
 * V8's external-memory pressure (and so its full GCs) down on bulk transfers.
 */
export const OPEN_BUFFER_SIZE = 64 * 1024;
/** Free buffers kept: 4 MiB. */
export const OPEN_POOL_MAX = 64;
const openPool: Buffer[] = [];
const openPoolMembers = new WeakSet<ArrayBufferLike>();

function takeOpenBuffer(n: number): Buffer {
  if (n > OPEN_BUFFER_SIZE) return Buffer.allocUnsafe(n);
  const b = openPool.pop();
  if (b) return b;
  const fresh = Buffer.allocUnsafeSlow(OPEN_BUFFER_SIZE);
  openPoolMembers.add(fresh.buffer);
  return fresh;
}

/** Give back a payload emitted by a batch open, once nothing reads it any more (no-op for others). */
export function releaseOpened(p: Uint8Array): void {
  if (openPool.length < OPEN_POOL_MAX && openPoolMembers.has(p.buffer)) openPool.push(Buffer.from(p.buffer, 0, OPEN_BUFFER_SIZE));
}

const enum DecoderState {
  ReadLength,
  ReadPayload,
}

export interface FragmentDecoderOptions {
  /** Largest payload accepted; checked on the decrypted length BEFORE any payload is buffered. */
  maxPayload: number;
  /**
   * Stream mode (TCP): payloads of several whole fragments in one chunk may be
   * emitted as one buffer, using the engine's batch open when it has one, and an
   * empty fragment (a keepalive) emits nothing, as upstream's readers write its
   * 0 bytes on (protocol/brook-stream.md#empty-fragments-keepalive).
   * Leave false for datagrams (one emit per fragment, an empty one included).
   */
  coalesce?: boolean;
}

/**
 * Incremental decoder: feed arbitrary chunks; each complete fragment's payload
 * is handed to `emit`. Copies only what spans chunk boundaries.
 */
export class FragmentDecoder {
  maxPayload: number;
  private state = DecoderState.ReadLength;
  private readonly lengthSealed = Buffer.allocUnsafe(SEALED_LENGTH_SIZE);
  private readonly lengthPlain = Buffer.allocUnsafe(LENGTH_SIZE);
  private partial: Buffer | null = null; // sealed payload spanning chunks
  private have = 0; // bytes of the current unit gathered so far
  private need = SEALED_LENGTH_SIZE;
  private failed: BrookError | null = null;
  /** See FragmentDecoderOptions.coalesce; may be switched on later (the server does after the header). */
  coalesce: boolean;

  constructor(
    private readonly cipher: BrookCipher,
    opts: FragmentDecoderOptions,
  ) {
    this.maxPayload = opts.maxPayload;
    this.coalesce = opts.coalesce === true;
  }

  /** Bytes of a fragment held back waiting for more input. */
  get pendingBytes(): number {
    return this.have;
  }

  /** True when the decoder sits exactly between fragments. */
  get atBoundary(): boolean {
    return this.state === DecoderState.ReadLength && this.have === 0;
  }

  /**
   * Feed a chunk; complete payloads go to `emit` in order. Throws AUTH_FAILED
   * or LENGTH_OVERSIZED; after a throw the decoder refuses further input.
   */
  push(chunk: Uint8Array, emit: (payload: Buffer) => void): void {
    if (this.failed) throw this.failed;
    try {
      this.pushInner(chunk, emit);
    } catch (e) {
      this.failed = toBrookError(e);
      throw this.failed;
    }
  }

  /** Call at end of input: throws if the stream stopped inside a fragment. */
  end(): void {
    if (this.failed) throw this.failed;
    if (this.state === DecoderState.ReadLength && this.have > 0) {
      throw new BrookError(ErrorCodes.LENGTH_TRUNCATED, `stream ended inside a sealed length (${this.have} of ${SEALED_LENGTH_SIZE} bytes)`);
    }
    if (this.state === DecoderState.ReadPayload) {
      throw new BrookError(ErrorCodes.STREAM_TRUNCATED, `stream ended inside a fragment payload (${this.have} of ${this.need} bytes)`);
    }
  }

  private pushInner(chunk: Uint8Array, emit: (payload: Buffer) => void): void {
    let off = 0;
    const len = chunk.length;
    const batch = this.coalesce ? this.cipher.engine.openFragments : undefined;
    while (off < len) {
      if (batch && this.state === DecoderState.ReadLength && this.have === 0 && len - off >= SEALED_LENGTH_SIZE * 2) {
        const out = takeOpenBuffer(len - off);
        const r = batch.call(this.cipher.engine, this.cipher.nonce, chunk.subarray(off), this.maxPayload, out, 0);
        if (r.written > 0) emit(out.subarray(0, r.written));
        else releaseOpened(out); // nothing but empty fragments (keepalives) or an incomplete one: give the buffer back
        off += r.consumed;
        if (off >= len) break;
        // the rest is an incomplete fragment (or an empty one the batch skipped): take the slow path
      }
      if (this.state === DecoderState.ReadLength) {
        if (this.have === 0 && len - off >= SEALED_LENGTH_SIZE) {
          off += this.openLength(chunk.subarray(off, off + SEALED_LENGTH_SIZE));
        } else {
          const take = Math.min(SEALED_LENGTH_SIZE - this.have, len - off);
          this.lengthSealed.set(chunk.subarray(off, off + take), this.have);
          this.have += take;
          off += take;
          if (this.have === SEALED_LENGTH_SIZE) {
            this.have = 0;
            this.openLength(this.lengthSealed);
          }
        }
      } else {
        const need = this.need;
        if (this.have === 0 && len - off >= need) {
          const p = this.openPayload(chunk.subarray(off, off + need));
          if (p.length > 0 || !this.coalesce) emit(p);
          off += need;
        } else {
          if (!this.partial) this.partial = Buffer.allocUnsafe(need);
          const take = Math.min(need - this.have, len - off);
          this.partial.set(chunk.subarray(off, off + take), this.have);
          this.have += take;
          off += take;
          if (this.have === need) {
            const sealed = this.partial;
            this.partial = null;
            this.have = 0;
            const p = this.openPayload(sealed);
            if (p.length > 0 || !this.coalesce) emit(p);
          }
        }
      }
    }
  }

  /** Open a sealed length, check it against the limit, move to ReadPayload. Returns bytes consumed. */
  private openLength(sealed: Uint8Array): number {
    this.cipher.openInto(sealed, this.lengthPlain, 0);
    const n = this.lengthPlain.readUInt16BE(0);
    if (n > this.maxPayload) {
      throw new BrookError(ErrorCodes.LENGTH_OVERSIZED, `fragment length ${n} exceeds the limit of ${this.maxPayload}`);
    }
    this.need = n + TAG_SIZE;
    this.state = DecoderState.ReadPayload;
    return SEALED_LENGTH_SIZE;
  }

  private openPayload(sealed: Uint8Array): Buffer {
    const out = Buffer.allocUnsafe(sealed.length - TAG_SIZE);
    this.cipher.openInto(sealed, out, 0);
    this.state = DecoderState.ReadLength;
    this.need = SEALED_LENGTH_SIZE;
    return out;
  }
}
