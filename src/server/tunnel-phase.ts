/**
 * The phases of a server tunnel (src/server/tunnel.ts): what exists in each, and what the
 * teardown and the handle read from them. Each phase holds only what is alive in it: the
 * handshake (and its probe counts) until the header is accepted, the header from then on,
 * the relay or the UDP flow once they run.
 */
import type { FirstPayload } from '../protocol/header.js';
import type { RelayLike } from '../net/splice.js';
import type { TunnelHandshake } from './probe-rule.js';
import type { UdpFlow } from './udpflow.js';

/** Where one tunnel is (the diagram at the top of src/server/tunnel.ts). */
export type Phase =
  /** Reading the preamble through the codec. */
  | { readonly name: 'handshake'; readonly hs: TunnelHandshake }
  /** The handshake failed (hs.failure): bytes are counted and discarded until the deadline or the budget. */
  | { readonly name: 'draining'; readonly hs: TunnelHandshake }
  /** A complete, fresh header; the socket paused until the replay guard answers. */
  | { readonly name: 'checking'; readonly step: 'replay'; readonly hs: TunnelHandshake; readonly header: FirstPayload }
  /** The header accepted (the probe rule is over); the block lists asked, when there are any. */
  | { readonly name: 'checking'; readonly step: 'policy'; readonly header: FirstPayload }
  /** Counted as opened: TCP connecting to the destination (UDP: its flow being made). */
  | { readonly name: 'dialling'; readonly header: FirstPayload }
  | { readonly name: 'relaying'; readonly header: FirstPayload; readonly relay: RelayLike }
  | { readonly name: 'udp'; readonly header: FirstPayload; readonly flow: UdpFlow }
  | { readonly name: 'closed' };

export const CLOSED: Phase = { name: 'closed' };

/** The handshake of a phase before the accepted header, else null. */
export function handshakeOf(p: Phase): TunnelHandshake | null {
  return p.name === 'handshake' || p.name === 'draining' || (p.name === 'checking' && p.step === 'replay') ? p.hs : null;
}

/** The accepted header of a phase, else null. */
export function headerOf(p: Phase): FirstPayload | null {
  switch (p.name) {
    case 'checking':
      return p.step === 'policy' ? p.header : null;
    case 'dialling':
    case 'relaying':
    case 'udp':
      return p.header;
    default:
      return null;
  }
}

/**
 * Payload bytes relayed so far, up = client to destination (UDP: not counted here).
 * The relay's plain side is the destination, so its "up" (read from plain) is our down.
 */
export function statsOf(p: Phase): { up: number; down: number } {
  return p.name === 'relaying' ? { up: p.relay.stats.down, down: p.relay.stats.up } : { up: 0, down: 0 };
}
