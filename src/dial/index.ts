/**
 * How the process dials: upstream's global --dialWith* options.
 * See dialer.ts for the rules, options.ts for the flags.
 */
export { createDialer, defaultDialer, Dialer, type DialerOptions, type DialTimeout, type Socks5Upstream } from './dialer.js';
export {
  DIAL_FLAGS,
  type DialConfig,
  dialConfigFromFlags,
  type DialFlags,
  parseDialWithDNS,
  parseDialWithDNSPrefer,
  parseDialWithIP4,
  parseDialWithIP6,
  parseDialWithNIC,
} from './options.js';
export { Resolver, type DnsServerSpec, type ResolverOptions } from './resolver.js';
export type { Endpoint, IpTransport, ResolvedAddress, UdpChannel } from './types.js';
