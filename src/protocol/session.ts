/**
 * Both ends of one tunnel as pure state machines: bytes in, payloads and bytes
 * to send out. The network code (src/server, src/client) only moves bytes.
 * This file: what a codec is and takes; the codecs of each mode are made by the
 * mode (src/protocol/mode.ts: brook-codec.ts, wob-codec.ts). The functions here
 * take the public options' withoutBrookProtocol flag and ask its mode.
 *
 * Brook:   client -> server: nonce(12) + fragments (first = time + address)
 *          server -> client: nonce(12), sent only after the first fragment checked out, + fragments
 * withoutBrookProtocol:
 *          client -> server: sha256(password) + u16 L + (time + address), then raw (TCP)
 *                            or [u16 len][datagram] (UDP); server -> client: the same framing, no preamble.
 * Spec: protocol/brook-stream.md, protocol/without-brook-protocol.md
 */
import type { Address } from './address.js';
import type { PreparedClientKey } from './brook-codec.js';
import type { AeadBackend } from './cipher.js';
import { passwordCredential } from './credential.js';
import type { Clock, FirstPayload, Network } from './header.js';
import { type ProtocolMode, protocolMode } from './mode.js';
import type { RandomSource } from './upgrade.js';

export { PreparedClientKey } from './brook-codec.js';

/** What a codec takes besides its mode and its secret (the password; on the server, the credential). */
export interface CodecOptions {
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

/** A codec's options with the password (the client's secret, and the server's before it is a credential). */
export interface PasswordOptions extends CodecOptions {
  password: string | Uint8Array;
}

/** The options of the public API: the mode still a flag. */
export interface SessionOptions extends PasswordOptions {
  withoutBrookProtocol?: boolean;
}

export type Emit = (payload: Buffer) => void;

/** Client end of one tunnel. */
export interface ClientCodec {
  /** The mode that made it (what it can do: src/protocol/mode.ts). */
  readonly mode: ProtocolMode;
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
  /** The mode that made it (what it can do: src/protocol/mode.ts). */
  readonly mode: ProtocolMode;
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

/** A client codec's options (ProtocolMode.clientCodec). */
export interface ClientCodecOptions extends PasswordOptions {
  network: Network;
  destination: Address;
  /**
   * Brook: the client direction's nonce and cipher made ahead by prepareClientKey() with
   * these same options (a pooled connection's, src/client/pool.ts); taken once. Absent:
   * made now. Ignored without Brook protocol (no key).
   */
  prepared?: PreparedClientKey;
}

/** A client codec's options with the mode as the public flag. */
export interface ClientSessionOptions extends ClientCodecOptions {
  withoutBrookProtocol?: boolean;
}

/** The client end of a tunnel in the flag's mode. */
export function createClientCodec(o: ClientSessionOptions): ClientCodec {
  return protocolMode(o.withoutBrookProtocol).clientCodec(o);
}

/** The server end of a tunnel in the flag's mode, for the options' password (a server makes its credential once). */
export function createServerCodec(o: SessionOptions): ServerCodec {
  return protocolMode(o.withoutBrookProtocol).serverCodec(passwordCredential(o.password), o);
}

/** A client key made ahead for a tunnel with options `o` (PreparedClientKey); null without Brook protocol. */
export function prepareClientKey(o: SessionOptions): PreparedClientKey | null {
  return protocolMode(o.withoutBrookProtocol).prepareClientKey(o);
}

