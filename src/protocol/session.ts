/**
 * Both ends of one tunnel as pure state machines: bytes in, payloads and bytes
 * to send out. The network code (src/server, src/client) only moves bytes.
 *
 * Brook:   client -> server: nonce(12) + fragments (first = time + address)
 *          server -> client: nonce(12), sent only after the first fragment checked out, + fragments
 * withoutBrookProtocol:
 *          client -> server: sha256(password) + u16 L + (time + address), then raw (TCP)
 *                            or [u16 len][datagram] (UDP); server -> client: the same framing, no preamble.
 * Spec: protocol/brook-stream.md, protocol/without-brook-protocol.md
 */
import { randomBytes } from 'node:crypto';
import { BrookError, ErrorCodes } from '../errors.js';
import type { Address } from './address.js';
import { type AeadBackend, BrookCipher, DEFAULT_HKDF_INFO, getDefaultBackend } from './cipher.js';
import { encodedSize, FragmentDecoder, FragmentEncoder } from './fragment.js';
import { buildFirstPayload, type Clock, type FirstPayload, type Network, parseFirstPayload } from './header.js';
import { MAX_FIRST_PAYLOAD, MAX_TCP_PAYLOAD, MAX_UDP_PAYLOAD, MAX_WOB_UDP_PAYLOAD, NONCE_SIZE } from './sizes.js';
import type { RandomSource } from './upgrade.js';
import { buildWobHeader, encodeWobDatagram, WobDatagramDecoder, WobHeaderDecoder, wobPasswordHash } from './wob.js';

export interface SessionOptions {
  password: string | Uint8Array;
  withoutBrookProtocol?: boolean;
  /** HKDF info for the client->server direction (upstream ClientHKDFInfo, default "brook"). */
  clientHKDFInfo?: Uint8Array;
  /** HKDF info for the server->client direction (upstream ServerHKDFInfo, default "brook"). */
  serverHKDFInfo?: Uint8Array;
  now?: Clock;
  random?: RandomSource;
  /** Seconds a header may be old (default 60). */
  maxAgeSeconds?: number;
  /** Seconds a header may be ahead of the clock (default: no bound, as upstream; servers set 60). */
  maxAheadSeconds?: number;
  backend?: AeadBackend;
}

export type Emit = (payload: Buffer) => void;

/** The payload of a keepalive: an empty fragment. */
const EMPTY_PAYLOAD = new Uint8Array(0);

function passwordBytes(p: string | Uint8Array): Buffer {
  return typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p);
}

/** Client end of one tunnel. */
export interface ClientCodec {
  readonly network: Network;
  /** Bytes that open the tunnel (nonce + first fragment, or the wob header). */
  hello(): Buffer;
  /** Data (TCP) or one datagram (UDP) to wire bytes. */
  seal(data: Uint8Array): Buffer;
  /**
   * TCP with the Brook protocol: seal into `out` (reused by the caller), returning the
   * bytes written; -1 when not applicable (UDP, withoutBrookProtocol, `out` too small):
   * use seal() then.
   */
  sealInto?(data: Uint8Array, out: Uint8Array): number;
  /**
   * Brook TCP only: one empty fragment (34 bytes) to send when this direction has been
   * idle; the peer's reader takes it as a no-op (protocol/brook-stream.md#empty-fragments-keepalive).
   * null on a UDP tunnel (it would be an empty datagram); absent without Brook protocol
   * (no framing to carry one). Throws INTERNAL before hello(): never the first fragment.
   */
  keepalive?(): Buffer | null;
  /** Wire bytes from the server to data (TCP) or datagrams (UDP). */
  push(chunk: Buffer, emit: Emit): void;
  /** End of the server's stream: throws when it stopped mid-fragment. */
  end(): void;
}

/** Server end of one tunnel. */
export interface ServerCodec {
  /** Feed client bytes. Returns the header the first time it is complete and valid, else null. */
  push(chunk: Buffer, emit: Emit): FirstPayload | null;
  readonly header: FirstPayload | null;
  /**
   * Brook: the client's 12-byte nonce once it has arrived (what the replay cache
   * remembers); null before that and without Brook protocol (no nonce).
   */
  readonly clientNonce: Buffer | null;
  /** Bytes to send once the header is accepted (the server nonce; empty without Brook protocol). */
  accept(): Buffer;
  seal(data: Uint8Array): Buffer;
  /** As ClientCodec.sealInto. */
  sealInto?(data: Uint8Array, out: Uint8Array): number;
  /** As ClientCodec.keepalive; throws INTERNAL before accept(). */
  keepalive?(): Buffer | null;
  end(): void;
}

export interface ClientSessionOptions extends SessionOptions {
  network: Network;
  destination: Address;
  /**
   * Brook: the client direction's nonce and cipher made ahead by prepareClientKey() with
   * these same options (a pooled connection's, src/client/pool.ts); taken once. Absent:
   * made now. Ignored without Brook protocol (no key).
   */
  prepared?: PreparedClientKey;
}

export function createClientCodec(o: ClientSessionOptions): ClientCodec {
  return o.withoutBrookProtocol ? new WobClientCodec(o) : new BrookClientCodec(o);
}

/**
 * The client->server nonce, key (HKDF) and AES context of one future tunnel, made ahead of
 * it (while a pooled connection idles) so that opening the tunnel only builds and seals its
 * first fragment. The nonce is random and used once whenever it was drawn; the header time
 * is never made here (createClientCodec reads the clock). Handed to exactly one codec:
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
  take(o: SessionOptions, password: Buffer): { nonce: Buffer; cipher: BrookCipher } {
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

/** A client key made ahead for a tunnel with options `o` (see PreparedClientKey); null without Brook protocol. */
export function prepareClientKey(o: SessionOptions): PreparedClientKey | null {
  if (o.withoutBrookProtocol) return null;
  const password = passwordBytes(o.password);
  const nonce = (o.random ?? randomBytes)(NONCE_SIZE);
  const backend = o.backend ?? getDefaultBackend();
  const cipher = directionCipher({ ...o, backend }, password, nonce, o.clientHKDFInfo);
  return new PreparedClientKey(nonce, cipher, password, Buffer.from(o.clientHKDFInfo ?? DEFAULT_HKDF_INFO), backend);
}

export function createServerCodec(o: SessionOptions): ServerCodec {
  return o.withoutBrookProtocol ? new WobServerCodec(o) : new BrookServerCodec(o);
}

/** The cipher of one direction: key = HKDF-SHA256(password, nonce, info), info "brook" unless overridden. */
function directionCipher(o: SessionOptions, password: Buffer, nonce: Uint8Array, info: Uint8Array | undefined): BrookCipher {
  return BrookCipher.fromPassword(password, nonce, info ?? DEFAULT_HKDF_INFO, { backend: o.backend });
}

/** Add the head of `chunk` to a partial nonce: the nonce so far (whole at NONCE_SIZE) and the bytes after it. */
function gatherNonce(have: Buffer, chunk: Buffer): { nonce: Buffer; rest: Buffer } {
  const take = Math.min(NONCE_SIZE - have.length, chunk.length);
  return { nonce: Buffer.concat([have, chunk.subarray(0, take)]), rest: chunk.subarray(take) };
}

class BrookClientCodec implements ClientCodec {
  readonly network: Network;
  private readonly password: Buffer;
  private readonly encoder: FragmentEncoder;
  private readonly clientNonce: Buffer;
  private readonly firstPayload: Buffer;
  private serverNonce: Buffer = Buffer.alloc(0);
  private decoder: FragmentDecoder | null = null;
  private helloSent = false;

  constructor(private readonly o: ClientSessionOptions) {
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

class BrookServerCodec implements ServerCodec {
  header: FirstPayload | null = null;
  clientNonce: Buffer | null = null;
  private readonly password: Buffer;
  private nonceBuf: Buffer = Buffer.alloc(0);
  private decoder: FragmentDecoder | null = null;
  private encoder: FragmentEncoder | null = null;

  constructor(private readonly o: SessionOptions) {
    this.password = passwordBytes(o.password);
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

class WobClientCodec implements ClientCodec {
  readonly network: Network;
  private readonly datagrams: WobDatagramDecoder | null;

  constructor(private readonly o: ClientSessionOptions) {
    this.network = o.network;
    this.datagrams = o.network === 'udp' ? new WobDatagramDecoder(MAX_WOB_UDP_PAYLOAD) : null;
  }

  hello(): Buffer {
    return buildWobHeader(wobPasswordHash(passwordBytes(this.o.password)), {
      network: this.o.network,
      destination: this.o.destination,
      now: this.o.now,
    });
  }

  seal(data: Uint8Array): Buffer {
    return this.datagrams ? encodeWobDatagram(data) : Buffer.from(data.buffer, data.byteOffset, data.length);
  }

  push(chunk: Buffer, emit: Emit): void {
    if (this.datagrams) this.datagrams.push(chunk, emit);
    else if (chunk.length > 0) emit(chunk);
  }

  end(): void {
    this.datagrams?.end();
  }
}

class WobServerCodec implements ServerCodec {
  header: FirstPayload | null = null;
  readonly clientNonce = null;
  private readonly headerDecoder: WobHeaderDecoder;
  private datagrams: WobDatagramDecoder | null = null;

  constructor(o: SessionOptions) {
    this.headerDecoder = new WobHeaderDecoder(wobPasswordHash(passwordBytes(o.password)), {
      now: o.now,
      maxAgeSeconds: o.maxAgeSeconds,
      maxAheadSeconds: o.maxAheadSeconds,
    });
  }

  push(chunk: Buffer, emit: Emit): FirstPayload | null {
    if (this.header) {
      this.deliver(chunk, emit);
      return null;
    }
    const r = this.headerDecoder.push(chunk);
    if (!r) return null;
    this.header = r.header;
    if (r.header.network === 'udp') this.datagrams = new WobDatagramDecoder(MAX_WOB_UDP_PAYLOAD);
    if (r.rest.length > 0) this.deliver(r.rest, emit);
    return r.header;
  }

  private deliver(chunk: Buffer, emit: Emit): void {
    if (this.datagrams) this.datagrams.push(chunk, emit);
    else if (chunk.length > 0) emit(chunk);
  }

  accept(): Buffer {
    return Buffer.alloc(0);
  }

  seal(data: Uint8Array): Buffer {
    return this.datagrams ? encodeWobDatagram(data) : Buffer.from(data.buffer, data.byteOffset, data.length);
  }

  end(): void {
    this.datagrams?.end();
  }
}
