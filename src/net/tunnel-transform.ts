/**
 * A tunnel codec (src/protocol/session.ts, client or server side) as the Relay's transform
 * (src/net/relay.ts), and the rule of the --keepalive option that rides on it. Used by both
 * ends: the client (src/client/wsclient.ts) and the server (src/server/tunnel.ts).
 */
import { BrookError, ErrorCodes } from '../errors.js';
import { protocolMode } from '../protocol/mode.js';
import type { TunnelTransform } from './relay.js';

/** The relay's view of a codec: open what arrives, seal what leaves (into reused buffers when it can). */
export function tunnelTransform(codec: {
  push(c: Buffer, emit: (p: Buffer) => void): unknown;
  seal(d: Uint8Array): Buffer;
  sealInto?(d: Uint8Array, out: Uint8Array): number;
  keepalive?(): Buffer | null;
  end(): void;
}): TunnelTransform {
  return {
    open: (chunk: Buffer, emit: (p: Buffer) => void) => {
      codec.push(chunk, emit);
    },
    seal: (data: Buffer) => codec.seal(data),
    // the Relay seals into reused buffers when the codec can (Brook TCP)
    sealInto: codec.sealInto ? (data: Buffer, out: Buffer) => codec.sealInto!(data, out) : undefined,
    end: () => codec.end(),
    // Brook: an empty fragment for --keepalive (the codec answers null on UDP; withoutBrookProtocol has none)
    keepalive: codec.keepalive ? () => codec.keepalive!() : undefined,
  };
}

/**
 * --keepalive (client and server): seconds (the CLI takes whole ones; the API any positive
 * number), and only with the Brook protocol: withoutBrookProtocol relays raw bytes, with no
 * framing to carry an empty message, so the option is refused there rather than ignored.
 */
export function checkKeepalive(seconds: number | undefined, withoutBrookProtocol: boolean | undefined): void {
  if (seconds === undefined || seconds === 0) return;
  if (!Number.isFinite(seconds) || seconds < 0) throw new BrookError(ErrorCodes.CONFIG, `--keepalive must be a number of seconds, got ${seconds}`);
  if (!protocolMode(withoutBrookProtocol).keepalive) {
    throw new BrookError(ErrorCodes.CONFIG, '--keepalive needs the Brook protocol: withoutBrookProtocol has no framing to carry an empty message');
  }
}
