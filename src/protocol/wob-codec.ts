/**
 * The withoutBrookProtocol codecs (src/protocol/mode.ts, WOB_MODE): no encryption of the stream
 * (TLS or a CDN protects it).
 *
 *   client -> server: sha256(password) + u16 L + (time + address), then raw (TCP)
 *                     or [u16 len][datagram] (UDP); server -> client: the same framing, no preamble.
 *
 * Spec: protocol/without-brook-protocol.md
 */
import { passwordBytes, type ServerCredential } from './credential.js';
import type { FirstPayload, Network } from './header.js';
import type { ProtocolMode } from './mode.js';
import type { ClientCodec, ClientCodecOptions, CodecOptions, Emit, ServerCodec } from './session.js';
import { MAX_WOB_UDP_PAYLOAD } from './sizes.js';
import { buildWobHeader, encodeWobDatagram, WobDatagramDecoder, WobHeaderDecoder, wobPasswordHash } from './wob.js';

export class WobClientCodec implements ClientCodec {
  readonly network: Network;
  private readonly datagrams: WobDatagramDecoder | null;

  constructor(
    readonly mode: ProtocolMode,
    private readonly o: ClientCodecOptions,
  ) {
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

export class WobServerCodec implements ServerCodec {
  header: FirstPayload | null = null;
  readonly clientNonce = null;
  private readonly headerDecoder: WobHeaderDecoder;
  private datagrams: WobDatagramDecoder | null = null;

  constructor(
    readonly mode: ProtocolMode,
    credential: ServerCredential,
    o: CodecOptions,
  ) {
    this.headerDecoder = new WobHeaderDecoder(credential.passwordHash, {
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
