/**
 * The Brook protocol's codecs (src/protocol/mode.ts, BROOK_MODE): both ends of one tunnel as
 * pure state machines, and a client key made ahead.
 *
 *   client -> server: nonce(12) + fragments (first = time + address)
 *   server -> client: nonce(12), sent only after the first fragment checked out, + fragments
 *
 * Spec: protocol/brook-stream.md, protocol/prewarm.md#keys-made-ahead
 */
import { randomBytes } from 'node:crypto';
import { BrookError, ErrorCodes } from '../errors.js';
import { type AeadBackend, BrookCipher, DEFAULT_HKDF_INFO, getDefaultBackend } from './cipher.js';
import { passwordBytes, type ServerCredential } from './credential.js';
import { encodedSize, FragmentDecoder, FragmentEncoder } from './fragment.js';
import { buildFirstPayload, type FirstPayload, type Network, parseFirstPayload } from './header.js';
import type { ProtocolMode } from './mode.js';
import type { ClientCodec, ClientCodecOptions, CodecOptions, Emit, PasswordOptions, ServerCodec } from './session.js';
import { MAX_FIRST_PAYLOAD, MAX_TCP_PAYLOAD, MAX_UDP_PAYLOAD, NONCE_SIZE } from './sizes.js';

/** The payload of a keepalive: an empty fragment. */
const EMPTY_PAYLOAD = new Uint8Array(0);

/**
 * The client->server nonce, key (HKDF) and AES context of one future tunnel, made ahead of
 * it (while a pooled connection idles) so that opening the tunnel only builds and seals its
 * first fragment. The nonce is random and used once whenever it was drawn; the header time
 * is never made here (the client codec reads the clock). Handed to exactly one codec:
 * a second use throws INTERNAL (a reused nonce would break AES-GCM).
 * Spec: protocol/prewarm.md#keys-made-ahead
 */
export class PreparedClientKey {
  private used = false;

  /** Use prepareClientKey(). */
  constructor(
    private readonly nonce: Buffer,
    private readonly cipher: BrookCipher,
    private readonly password: Buffer,
    private readonly info: Uint8Array,
    private readonly backend: AeadBackend,
  ) {}

  /** The nonce and cipher for a codec made with `o`; throws INTERNAL when used before or made for other options. */
  take(o: CodecOptions, password: Buffer): { nonce: Buffer; cipher: BrookCipher } {
    if (this.used) throw new BrookError(ErrorCodes.INTERNAL, 'prepared client key used twice (nonce reuse)');
    if (
      !password.equals(this.password) ||
      Buffer.compare(o.clientHKDFInfo ?? DEFAULT_HKDF_INFO, this.info) !== 0 ||
      (o.backend ?? getDefaultBackend()) !== this.backend
    ) {
      throw new BrookError(ErrorCodes.INTERNAL, 'prepared client key made for other session options');
    }
    this.used = true;
    return { nonce: this.nonce, cipher: this.cipher };
  }
}

/** A client key made ahead for a tunnel with options `o` (see PreparedClientKey). */
export function prepareBrookClientKey(o: PasswordOptions): PreparedClientKey {
  const password = passwordBytes(o.password);
  const nonce = (o.random ?? randomBytes)(NONCE_SIZE);
  const backend = o.backend ?? getDefaultBackend();
  const cipher = directionCipher({ ...o, backend }, password, nonce, o.clientHKDFInfo);
  return new PreparedClientKey(nonce, cipher, password, Buffer.from(o.clientHKDFInfo ?? DEFAULT_HKDF_INFO), backend);
}

/** The cipher of one direction: key = HKDF-SHA256(password, nonce, info), info "brook" unless overridden. */
function directionCipher(o: CodecOptions, password: Buffer, nonce: Uint8Array, info: Uint8Array | undefined): BrookCipher {
  return BrookCipher.fromPassword(password, nonce, info ?? DEFAULT_HKDF_INFO, { backend: o.backend });
}

/** Add the head of `chunk` to a partial nonce: the nonce so far (whole at NONCE_SIZE) and the bytes after it. */
function gatherNonce(have: Buffer, chunk: Buffer): { nonce: Buffer; rest: Buffer } {
  const take = Math.min(NONCE_SIZE - have.length, chunk.length);
  return { nonce: Buffer.concat([have, chunk.subarray(0, take)]), rest: chunk.subarray(take) };
}

export class BrookClientCodec implements ClientCodec {
  readonly network: Network;
  private readonly password: Buffer;
  private readonly encoder: FragmentEncoder;
  private readonly clientNonce: Buffer;
  private readonly firstPayload: Buffer;
  private serverNonce: Buffer = Buffer.alloc(0);
  private decoder: FragmentDecoder | null = null;
  private helloSent = false;

  constructor(
    readonly mode: ProtocolMode,
    private readonly o: ClientCodecOptions,
  ) {
    this.network = o.network;
    this.password = passwordBytes(o.password);
    const ahead = o.prepared?.take(o, this.password);
    this.clientNonce = ahead ? ahead.nonce : (o.random ?? randomBytes)(NONCE_SIZE);
    const cipher = ahead ? ahead.cipher : directionCipher(o, this.password, this.clientNonce, o.clientHKDFInfo);
    this.encoder = new FragmentEncoder(cipher, MAX_FIRST_PAYLOAD);
    // the header time: read now, at the tunnel's start, never ahead
    this.firstPayload = buildFirstPayload({ network: o.network, destination: o.destination, now: o.now });
  }

  hello(): Buffer {
    const first = this.encoder.encodeOne(this.firstPayload);
    this.encoder.maxPayload = this.network === 'tcp' ? MAX_TCP_PAYLOAD : MAX_UDP_PAYLOAD;
    this.helloSent = true;
    return Buffer.concat([this.clientNonce, first]);
  }

  keepalive(): Buffer | null {
    if (!this.helloSent) throw new BrookError(ErrorCodes.INTERNAL, 'keepalive() before hello(): an empty first fragment');
    return this.network === 'tcp' ? this.encoder.encodeOne(EMPTY_PAYLOAD) : null;
  }

  seal(data: Uint8Array): Buffer {
    return this.network === 'tcp' ? this.encoder.encode(data) : this.encoder.encodeOne(data);
  }

  sealInto(data: Uint8Array, out: Uint8Array): number {
    if (this.network !== 'tcp' || out.length < encodedSize(data.length, this.encoder.maxPayload)) return -1;
    return this.encoder.encodeInto(data, out);
  }

  push(chunk: Buffer, emit: Emit): void {
    let c = chunk;
    if (!this.decoder) {
      const g = gatherNonce(this.serverNonce, c);
      this.serverNonce = g.nonce;
      c = g.rest;
      if (g.nonce.length < NONCE_SIZE) return;
      const tcp = this.network === 'tcp';
      this.decoder = new FragmentDecoder(directionCipher(this.o, this.password, g.nonce, this.o.serverHKDFInfo), {
        maxPayload: tcp ? MAX_TCP_PAYLOAD : MAX_UDP_PAYLOAD,
        coalesce: tcp,
      });
    }
    if (c.length > 0) this.decoder.push(c, emit);
  }

  end(): void {
    if (!this.decoder) {
      if (this.serverNonce.length > 0) {
        throw new BrookError(ErrorCodes.STREAM_TRUNCATED, 'stream ended inside the server nonce');
      }
      return;
    }
    this.decoder.end();
  }
}

export class BrookServerCodec implements ServerCodec {
  header: FirstPayload | null = null;
  clientNonce: Buffer | null = null;
  /** The credential's password bytes (shared, read only). */
  private readonly password: Buffer;
  private nonceBuf: Buffer = Buffer.alloc(0);
  private decoder: FragmentDecoder | null = null;
  private encoder: FragmentEncoder | null = null;

  constructor(
    readonly mode: ProtocolMode,
    credential: ServerCredential,
    private readonly o: CodecOptions,
  ) {
    this.password = credential.password;
  }

  push(chunk: Buffer, emit: Emit): FirstPayload | null {
    let c = chunk;
    if (!this.decoder) {
      const g = gatherNonce(this.nonceBuf, c);
      this.nonceBuf = g.nonce;
      c = g.rest;
      if (g.nonce.length < NONCE_SIZE) return null;
      this.clientNonce = g.nonce;
      this.decoder = new FragmentDecoder(directionCipher(this.o, this.password, g.nonce, this.o.clientHKDFInfo), { maxPayload: MAX_FIRST_PAYLOAD });
    }
    if (c.length === 0) return null;
    const hadHeader = this.header !== null;
    const decoder = this.decoder;
    decoder.push(c, (payload) => {
      if (this.header) {
        emit(payload);
        return;
      }
      // Throws TIME_STALE etc.: the caller drains (anti-probing).
      const h = parseFirstPayload(payload, { now: this.o.now, maxAgeSeconds: this.o.maxAgeSeconds, maxAheadSeconds: this.o.maxAheadSeconds });
      this.header = h;
      decoder.maxPayload = h.network === 'tcp' ? MAX_TCP_PAYLOAD : MAX_UDP_PAYLOAD;
      // TCP: later chunks open whole runs of fragments in one batch call and one emit
      decoder.coalesce = h.network === 'tcp';
    });
    return !hadHeader && this.header ? this.header : null;
  }

  accept(): Buffer {
    if (!this.header) throw new BrookError(ErrorCodes.INTERNAL, 'accept() before the header');
    const nonce = (this.o.random ?? randomBytes)(NONCE_SIZE);
    this.encoder = new FragmentEncoder(
      directionCipher(this.o, this.password, nonce, this.o.serverHKDFInfo),
      this.header.network === 'tcp' ? MAX_TCP_PAYLOAD : MAX_UDP_PAYLOAD,
    );
    return Buffer.from(nonce);
  }

  seal(data: Uint8Array): Buffer {
    if (!this.encoder || !this.header) throw new BrookError(ErrorCodes.INTERNAL, 'seal() before accept()');
    return this.header.network === 'tcp' ? this.encoder.encode(data) : this.encoder.encodeOne(data);
  }

  sealInto(data: Uint8Array, out: Uint8Array): number {
    if (!this.encoder || !this.header || this.header.network !== 'tcp') return -1;
    if (out.length < encodedSize(data.length, this.encoder.maxPayload)) return -1;
    return this.encoder.encodeInto(data, out);
  }

  keepalive(): Buffer | null {
    if (!this.encoder || !this.header) throw new BrookError(ErrorCodes.INTERNAL, 'keepalive() before accept()');
    return this.header.network === 'tcp' ? this.encoder.encodeOne(EMPTY_PAYLOAD) : null;
  }

  end(): void {
    this.decoder?.end();
  }
}
