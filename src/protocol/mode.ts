/**
 * The protocol mode of a tunnel: Brook, or withoutBrookProtocol. One object per mode is both
 * the codec factory and what the rest of the code asks about the mode (can the relay splice,
 * is there a nonce to check for replays, ...), so no code outside this file branches on the
 * withoutBrookProtocol flag: the flag of the public options (WsServerOptions, WsClientOptions,
 * SessionOptions) becomes a mode once, where the options come in (protocolMode()). Every codec
 * carries the mode that made it (codec.mode).
 *
 *                        Brook                       withoutBrookProtocol
 *   splicable            no (fragments)              yes (raw TCP bytes after the header)
 *   replayNonce          yes (the client nonce)      no (no nonce: protocol/probing.md#replays)
 *   keepalive            yes (an empty fragment)     no (no framing to carry one)
 *   preparable           yes (nonce + key ahead)     no (no key)
 *   maxUdpPayload        MAX_UDP_PAYLOAD (65507)     MAX_WOB_UDP_PAYLOAD (65505)
 *
 * The server's codec takes the credential (src/protocol/credential.ts) as an input of its own.
 * Spec: protocol/brook-stream.md, protocol/without-brook-protocol.md
 */
import { BrookClientCodec, BrookServerCodec, type PreparedClientKey, prepareBrookClientKey } from './brook-codec.js';
import type { ServerCredential } from './credential.js';
import type { ClientCodec, ClientCodecOptions, CodecOptions, PasswordOptions, ServerCodec } from './session.js';
import { MAX_UDP_PAYLOAD, MAX_WOB_UDP_PAYLOAD } from './sizes.js';
import { WobClientCodec, WobServerCodec } from './wob-codec.js';

export interface ProtocolMode {
  /** The mode's name (upstream's flag name for the second). */
  readonly name: 'brook' | 'withoutBrookProtocol';
  /** TCP after the header is the bytes themselves both ways: the relay may splice them (src/net/splice.ts). */
  readonly splicable: boolean;
  /** The client's first bytes carry a nonce for the replay guard to remember (src/server/replay.ts). */
  readonly replayNonce: boolean;
  /** The stream can carry an empty fragment, the keepalive (--keepalive; codec.keepalive()). */
  readonly keepalive: boolean;
  /** A client key can be made before its tunnel (a pooled connection's; prepareClientKey). */
  readonly preparable: boolean;
  /** The largest UDP datagram one tunnel payload carries. */
  readonly maxUdpPayload: number;
  /** The client end of a new tunnel (the header time read now). */
  clientCodec(o: ClientCodecOptions): ClientCodec;
  /** The server end of a new tunnel, checking the client against `credential`. */
  serverCodec(credential: ServerCredential, o: CodecOptions): ServerCodec;
  /** A client key made ahead for a tunnel with these options; null when the mode is not preparable. */
  prepareClientKey(o: PasswordOptions): PreparedClientKey | null;
}

export const BROOK_MODE: ProtocolMode = {
  name: 'brook',
  splicable: false,
  replayNonce: true,
  keepalive: true,
  preparable: true,
  maxUdpPayload: MAX_UDP_PAYLOAD,
  clientCodec: (o) => new BrookClientCodec(BROOK_MODE, o),
  serverCodec: (credential, o) => new BrookServerCodec(BROOK_MODE, credential, o),
  prepareClientKey: (o) => prepareBrookClientKey(o),
};

export const WOB_MODE: ProtocolMode = {
  name: 'withoutBrookProtocol',
  splicable: true,
  replayNonce: false,
  keepalive: false,
  preparable: false,
  maxUdpPayload: MAX_WOB_UDP_PAYLOAD,
  clientCodec: (o) => new WobClientCodec(WOB_MODE, o),
  serverCodec: (credential, o) => new WobServerCodec(WOB_MODE, credential, o),
  prepareClientKey: () => null,
};

/** The mode of the public options' withoutBrookProtocol flag. */
export function protocolMode(withoutBrookProtocol: boolean | undefined): ProtocolMode {
  return withoutBrookProtocol ? WOB_MODE : BROOK_MODE;
}
