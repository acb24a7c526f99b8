/**
 * Who the client is, for the `from` of log lines (protocol/websocket-upgrade.md,
 * "Behind a proxy").
 *
 * The chain, right to left: the direct TCP peer, then the PROXY header's
 * source (--proxyProtocol), then the X-Forwarded-For entries from the last
 * one appended back to the first.
 *
 * - No --trustedProxies, no --xForwardedFor: the PROXY source if any, else the peer.
 * - --xForwardedFor alone (upstream's flag): the FIRST X-Forwarded-For entry,
 *   from anyone (forgeable: any client can send the header).
 * - --trustedProxies (with or without --xForwardedFor): walk the chain from
 *   the right while the address is in the list; the first address outside it
 *   is the client. A forged entry to the left of a real proxy's is never
 *   reached, and X-Forwarded-For from an untrusted peer is ignored.
 */
import net from 'node:net';
import { BrookError, ErrorCodes } from '../errors.js';
import { formatHostPort } from '../protocol/address.js';
import type { ProxyEndpoint } from './proxyproto.js';

/** Entries of --trustedProxies we accept at most. */
export const MAX_TRUSTED_PROXIES = 1024;
/** X-Forwarded-For entries walked at most (a longer header is cut at this many from the right). */
export const MAX_XFF_ENTRIES = 32;
/** Longest X-Forwarded-For header value looked at (bytes from its end). */
export const MAX_XFF_LENGTH = 2048;

const MAPPED_V4 = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i;

/** The IPv4 form of an IPv4-mapped IPv6 address, else the address. */
export function unmapped(a: string): string {
  const m = MAPPED_V4.exec(a);
  return m ? m[1]! : a;
}

export class TrustedProxies {
  private readonly list = new net.BlockList();

  /** "127.0.0.1,10.0.0.0/8,::1,fd00::/8": a bare address is a host route. Throws CONFIG naming the bad entry. */
  constructor(spec: string) {
    const entries = spec.split(',').map((s) => s.trim()).filter((s) => s !== '');
    if (entries.length === 0) throw new BrookError(ErrorCodes.CONFIG, '--trustedProxies needs at least one address or CIDR');
    if (entries.length > MAX_TRUSTED_PROXIES) throw new BrookError(ErrorCodes.CONFIG, `--trustedProxies: more than ${MAX_TRUSTED_PROXIES} entries`);
    for (const e of entries) {
      const slash = e.indexOf('/');
      const addr = slash >= 0 ? e.slice(0, slash) : e;
      const family = net.isIPv4(addr) ? 'ipv4' : net.isIPv6(addr) && !addr.includes('%') ? 'ipv6' : null;
      const max = family === 'ipv4' ? 32 : 128;
      const prefix = slash >= 0 ? e.slice(slash + 1) : String(max);
      if (!family || !/^\d{1,3}$/.test(prefix) || Number(prefix) > max) {
        throw new BrookError(ErrorCodes.CONFIG, `--trustedProxies: not an IP address or CIDR: ${e}`);
      }
      this.list.addSubnet(addr, Number(prefix), family);
    }
  }

  has(address: string): boolean {
    const a = unmapped(address);
    if (net.isIPv4(a)) return this.list.check(a, 'ipv4');
    if (net.isIPv6(a)) return this.list.check(a, 'ipv6');
    return false;
  }
}

export interface ClientAddressRules {
  trusted: TrustedProxies | null;
  xForwardedFor: boolean;
}


/** One X-Forwarded-For entry as an address: "1.2.3.4", "1.2.3.4:80", "::1", "[::1]:80"; null when it is not one. */
function xffAddress(entry: string): string | null {
  let s = entry.trim();
  const br = /^\[([^\]]+)\](?::\d+)?$/.exec(s);
  if (br) s = br[1]!;
  else if (/^\d+\.\d+\.\d+\.\d+:\d+$/.test(s)) s = s.slice(0, s.lastIndexOf(':'));
  return net.isIP(s) ? unmapped(s) : null;
}

/** The client's address for log lines; see the module comment for the rules. */
export function clientAddress(
  peer: { address: string; port: number },
  proxied: ProxyEndpoint | null,
  xff: string | string[] | undefined,
  rules: ClientAddressRules,
): string {
  const c = clientEndpoint(peer, proxied, xff, rules);
  return c.port === null ? c.address : formatHostPort(c.address, c.port);
}

/**
 * The client as an address and a port (null: it came from an X-Forwarded-For entry, which has none
 * here); see the module comment for the rules.
 */
export function clientEndpoint(
  peer: { address: string; port: number },
  proxied: ProxyEndpoint | null,
  xff: string | string[] | undefined,
  rules: ClientAddressRules,
): { address: string; port: number | null } {
  const header = Array.isArray(xff) ? xff.join(',') : xff;
  if (!rules.trusted) {
    if (rules.xForwardedFor && header) {
      const first = header.slice(0, MAX_XFF_LENGTH).split(',')[0]?.trim();
      if (first) return { address: first, port: null };
    }
    return proxied ?? peer;
  }
  const start = proxied ?? peer;
  if (!header || !rules.trusted.has(start.address)) return start;
  const entries = header.slice(-MAX_XFF_LENGTH).split(',').slice(-MAX_XFF_ENTRIES);
  let client: { address: string; port: number | null } = start;
  for (let i = entries.length - 1; i >= 0; i--) {
    const a = xffAddress(entries[i]!);
    if (a === null) break;
    client = { address: a, port: null };
    if (!rules.trusted.has(a)) break;
  }
  return client;
}
