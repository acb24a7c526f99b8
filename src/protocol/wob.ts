/**
 * withoutBrookProtocol: no encryption of the stream (TLS or a CDN protects it).
 *
 * Client -> server, once:
 *   +-------------------------+---------------+----------------------------------+
 *   | SHA-256(password) (32)  | u16 BE len L  | L bytes: u32 time + ATYP ADDR PORT|
 *   +-------------------------+---------------+----------------------------------+
 * then TCP: raw bytes both ways; UDP: each datagram as [u16 BE length][datagram].
 * The server answers nothing before relaying. L > 2048: the server closes.
 * Spec: protocol/without-brook-protocol.md
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { type BuildHeaderOptions, buildFirstPayload, type FirstPayload, type ParseHeaderOptions, parseFirstPayload } from './header.js';
import { MAX_WOB_HEADER, MAX_WOB_UDP_PAYLOAD, WOB_LENGTH_SIZE, WOB_PASSWORD_SIZE } from './sizes.js';

export function wobPasswordHash(password: Uint8Array | string): Buffer {
  return createHash('sha256').update(password).digest();
}

export function buildWobHeader(passwordHash: Uint8Array, opts: BuildHeaderOptions): Buffer {
  if (passwordHash.length !== WOB_PASSWORD_SIZE) {
    throw new BrookError(ErrorCodes.CONFIG, `password hash must be ${WOB_PASSWORD_SIZE} bytes`);
  }
  const body = buildFirstPayload(opts);
  const out = Buffer.allocUnsafe(WOB_PASSWORD_SIZE + WOB_LENGTH_SIZE + body.length);
  out.set(passwordHash, 0);
  out.writeUInt16BE(body.length, WOB_PASSWORD_SIZE);
  out.set(body, WOB_PASSWORD_SIZE + WOB_LENGTH_SIZE);
  return out;
}

export interface WobHeaderResult {
  header: FirstPayload;
  /** Bytes after the header in the input (the start of the relayed data). */
  rest: Buffer;
}

/**
 * Incremental server-side header reader. `push` returns null until the whole
 * header is in; it buffers at most 32 + 2 + 2048 bytes.
 */
export class WobHeaderDecoder {
  private readonly prefix = Buffer.allocUnsafe(WOB_PASSWORD_SIZE + WOB_LENGTH_SIZE);
  private prefixHave = 0;
  private body: Buffer | null = null;
  private bodyHave = 0;

  constructor(
    private readonly passwordHash: Uint8Array,
    private readonly parse: ParseHeaderOptions = {},
  ) {
    if (passwordHash.length !== WOB_PASSWORD_SIZE) {
      throw new BrookError(ErrorCodes.CONFIG, `password hash must be ${WOB_PASSWORD_SIZE} bytes`);
    }
  }

  push(chunk: Uint8Array): WobHeaderResult | null {
    let off = 0;
    if (!this.body) {
      const take = Math.min(this.prefix.length - this.prefixHave, chunk.length);
      this.prefix.set(chunk.subarray(0, take), this.prefixHave);
      this.prefixHave += take;
      off = take;
      if (this.prefixHave < this.prefix.length) return null;
      if (!timingSafeEqual(this.prefix.subarray(0, WOB_PASSWORD_SIZE), this.passwordHash)) {
        throw new BrookError(ErrorCodes.WOB_PASSWORD, 'password hash does not match');
      }
      const l = this.prefix.readUInt16BE(WOB_PASSWORD_SIZE);
      if (l > MAX_WOB_HEADER) {
        throw new BrookError(ErrorCodes.WOB_HEADER_OVERSIZED, `header length ${l} exceeds ${MAX_WOB_HEADER}`);
      }
      this.body = Buffer.allocUnsafe(l);
    }
    const take = Math.min(this.body.length - this.bodyHave, chunk.length - off);
    this.body.set(chunk.subarray(off, off + take), this.bodyHave);
    this.bodyHave += take;
    off += take;
    if (this.bodyHave < this.body.length) return null;
    const header = parseFirstPayload(this.body, this.parse);
    return { header, rest: Buffer.from(chunk.buffer, chunk.byteOffset + off, chunk.length - off) };
  }
}

/** withoutBrookProtocol UDP datagram framing: u16 BE length + datagram. */
export function encodeWobDatagram(data: Uint8Array): Buffer {
  if (data.length > MAX_WOB_UDP_PAYLOAD) {
    throw new BrookError(ErrorCodes.PAYLOAD_OVERSIZED, `datagram of ${data.length} bytes exceeds ${MAX_WOB_UDP_PAYLOAD}`);
  }
  const out = Buffer.allocUnsafe(WOB_LENGTH_SIZE + data.length);
  out.writeUInt16BE(data.length, 0);
  out.set(data, WOB_LENGTH_SIZE);
  return out;
}

/** Incremental decoder of u16-length-framed datagrams; checks the length before buffering. */
export class WobDatagramDecoder {
  private readonly lenBuf = Buffer.allocUnsafe(WOB_LENGTH_SIZE);
  private lenHave = 0;
  private body: Buffer | null = null;
  private bodyHave = 0;
  private failed: BrookError | null = null;

  constructor(private readonly maxPayload: number = MAX_WOB_UDP_PAYLOAD) {}

  /** Feed a chunk; whole datagrams go to `emit`. After a throw the decoder refuses further input. */
  push(chunk: Uint8Array, emit: (datagram: Buffer) => void): void {
    if (this.failed) throw this.failed;
    try {
      this.pushInner(chunk, emit);
    } catch (e) {
      this.failed = toBrookError(e);
      throw this.failed;
    }
  }

  private pushInner(chunk: Uint8Array, emit: (datagram: Buffer) => void): void {
    let off = 0;
    while (off < chunk.length) {
      if (!this.body) {
        const take = Math.min(WOB_LENGTH_SIZE - this.lenHave, chunk.length - off);
        this.lenBuf.set(chunk.subarray(off, off + take), this.lenHave);
        this.lenHave += take;
        off += take;
        if (this.lenHave < WOB_LENGTH_SIZE) return;
        this.lenHave = 0;
        const n = this.lenBuf.readUInt16BE(0);
        if (n > this.maxPayload) {
          throw new BrookError(ErrorCodes.LENGTH_OVERSIZED, `datagram length ${n} exceeds ${this.maxPayload}`);
        }
        if (n === 0) {
          emit(Buffer.alloc(0));
          continue;
        }
        this.body = Buffer.allocUnsafe(n);
        this.bodyHave = 0;
      }
      const take = Math.min(this.body.length - this.bodyHave, chunk.length - off);
      this.body.set(chunk.subarray(off, off + take), this.bodyHave);
      this.bodyHave += take;
      off += take;
      if (this.bodyHave === this.body.length) {
        const d = this.body;
        this.body = null;
        emit(d);
      }
    }
  }

  end(): void {
    if (this.failed) throw this.failed;
    if (this.lenHave > 0) throw new BrookError(ErrorCodes.LENGTH_TRUNCATED, 'stream ended inside a datagram length');
    if (this.body) throw new BrookError(ErrorCodes.STREAM_TRUNCATED, 'stream ended inside a datagram');
  }
}
