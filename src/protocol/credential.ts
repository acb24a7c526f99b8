/**
 * What a server codec checks a client's preamble against: the credential, an input of its own
 * beside the protocol mode (src/protocol/mode.ts). Today one password, made into its forms once
 * per server (not per connection):
 *
 *   Brook:                the password's bytes, the HKDF secret of the client direction's key
 *   withoutBrookProtocol: SHA-256(password), the 32 bytes the header starts with
 *
 * Spec: protocol/brook-stream.md#keys-and-nonces, protocol/without-brook-protocol.md
 */
import { wobPasswordHash } from './wob.js';

/** The credential of a server codec (one password; see the top of this file). */
export interface ServerCredential {
  /** The password's bytes (Brook: the HKDF secret). Shared: never written to. */
  readonly password: Buffer;
  /** SHA-256 of the password (withoutBrookProtocol: what the header carries). */
  readonly passwordHash: Buffer;
}

/** A password as bytes (a string as UTF-8), in a Buffer of its own. */
export function passwordBytes(p: string | Uint8Array): Buffer {
  return typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p);
}

/** The credential of one password, its forms made now. */
export function passwordCredential(p: string | Uint8Array): ServerCredential {
  const password = passwordBytes(p);
  return { password, passwordHash: wobPasswordHash(password) };
}
