/**
 * Parsing of upstream's global --dialWith* options: each flag value checked
 * at start, a bad one a BrookError CONFIG with a one-line message. DIAL_FLAGS
 * lists names, help and defaults for the CLI; dialConfigFromFlags turns the
 * raw values into a DialConfig for createDialer (dialer.ts).
 */
import { BrookError, ErrorCodes } from '../errors.js';
import { isIPv4, isIPv6 } from '../protocol/address.js';
import { type InterfaceLister, systemInterfaces } from './nic.js';
import { MAX_USERPASS_FIELD } from './socks5-client-codec.js';
import type { Socks5Upstream } from './dialer.js';
import type { DnsPrefer, DnsServerSpec } from './resolver.js';

/** The flags as the CLI hands them over (strings as typed; undefined when absent). */
export interface DialFlags {
  dialWithDNS?: string;
  dialWithDNSPrefer?: string;
  dialWithIP4?: string;
  dialWithIP6?: string;
  dialWithNIC?: string;
  dialWithSocks5?: string;
  dialWithSocks5Username?: string;
  dialWithSocks5Password?: string;
  dialWithSocks5TCPTimeout?: string | number;
  dialWithSocks5UDPTimeout?: string | number;
}

export interface DialConfig {
  dns: DnsServerSpec | null;
  dnsPrefer: DnsPrefer;
  ip4?: string;
  ip6?: string;
  nic?: string;
  socks5: Socks5Upstream | null;
}

export const DEFAULT_DNS_PREFER: DnsPrefer = 'A';
export const DEFAULT_SOCKS5_TCP_TIMEOUT_S = 0;
export const DEFAULT_SOCKS5_UDP_TIMEOUT_S = 60;

/** Names, value placeholders, help and defaults (upstream's), for commander. */
export const DIAL_FLAGS = [
  {
    flag: '--dialWithDNS <dns>',
    help: 'resolve domain names with this DNS server instead of the system resolver: IP:port (UDP, TCP when truncated), or DoH such as https://dns.google/dns-query?address=8.8.8.8%3A443 (address, IP:port, is required: where to connect). Clients still pass domain destinations to the server unresolved',
  },
  { flag: '--dialWithDNSPrefer <type>', help: 'with --dialWithDNS: try A or AAAA records first', default: DEFAULT_DNS_PREFER },
  { flag: '--dialWithIP4 <ip>', help: 'source IPv4 address of outgoing TCP and UDP to IPv4 destinations' },
  { flag: '--dialWithIP6 <ip>', help: 'source IPv6 address of outgoing TCP and UDP to IPv6 destinations' },
  {
    flag: '--dialWithNIC <name>',
    help: "take the source address of outgoing TCP and UDP from this network interface's addresses (as upstream; the route still decides the interface)",
  },
  { flag: '--dialWithSocks5 <host:port>', help: 'send outgoing TCP through this SOCKS5 proxy (CONNECT) and UDP through its UDP ASSOCIATE, such as 127.0.0.1:1081' },
  { flag: '--dialWithSocks5Username <username>', help: 'with --dialWithSocks5, if the proxy needs one' },
  { flag: '--dialWithSocks5Password <password>', help: 'with --dialWithSocks5, if the proxy needs one' },
  { flag: '--dialWithSocks5TCPTimeout <seconds>', help: 'with --dialWithSocks5: time allowed for the proxy to answer a CONNECT (0: only the dial timeout)', default: DEFAULT_SOCKS5_TCP_TIMEOUT_S },
  { flag: '--dialWithSocks5UDPTimeout <seconds>', help: 'with --dialWithSocks5: close a UDP association idle this long (0: never)', default: DEFAULT_SOCKS5_UDP_TIMEOUT_S },
] as const;

function config(message: string): BrookError {
  return new BrookError(ErrorCodes.CONFIG, message);
}

/** "IP:port" / "[IPv6]:port" with an IP literal (no name: it would need a resolver to resolve it). */
export function parseIpPort(v: string, flag: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(v) ?? /^([^:[\]]+):(\d{1,5})$/.exec(v);
  const host = m?.[1] ?? '';
  const port = Number(m?.[2]);
  if (!m || !(isIPv4(host) || isIPv6(host)) || !(port >= 1 && port <= 65535)) {
    throw config(`${flag}: expected IP:port (IPv6 as [IP]:port), got ${JSON.stringify(v)}`);
  }
  return { host, port };
}

/** "host:port" with a domain name or an IP literal. */
export function parseHostPortFlag(v: string, flag: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(v) ?? /^([^:[\]]+):(\d{1,5})$/.exec(v);
  const host = m?.[1] ?? '';
  const port = Number(m?.[2]);
  const okHost = m?.[0]?.startsWith('[') ? isIPv6(host) : isIPv4(host) || /^(?=.{1,253}$)[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$/.test(host);
  if (!m || !okHost || !(port >= 1 && port <= 65535)) {
    throw config(`${flag}: expected host:port (IPv6 as [IP]:port), got ${JSON.stringify(v)}`);
  }
  return { host, port };
}

/** --dialWithDNS: IP:port (UDP/TCP) or an https URL with an `address` parameter (DoH). */
export function parseDialWithDNS(v: string): DnsServerSpec {
  if (!/^https:\/\//i.test(v)) {
    if (/^[a-z]+:\/\//i.test(v)) throw config(`--dialWithDNS: only IP:port or an https:// DoH URL, got ${JSON.stringify(v)}`);
    return { kind: 'udp', ...parseIpPort(v, '--dialWithDNS') };
  }
  let url: URL;
  try {
    url = new URL(v);
  } catch {
    throw config(`--dialWithDNS: not a URL: ${JSON.stringify(v)}`);
  }
  const address = url.searchParams.get('address');
  if (!address) throw config(`--dialWithDNS: a DoH URL needs address=IP:port (where to connect), such as https://dns.google/dns-query?address=8.8.8.8%3A443`);
  const to = parseIpPort(address, '--dialWithDNS address');
  url.searchParams.delete('address');
  if (url.username || url.password) throw config('--dialWithDNS: a DoH URL must not carry a user or password');
  url.hash = '';
  return { kind: 'doh', url, connectHost: to.host, connectPort: to.port };
}

/** --dialWithDNSPrefer: A or AAAA (upstream requires it with --dialWithDNS; ours defaults to A). */
export function parseDialWithDNSPrefer(v: string | undefined): DnsPrefer {
  if (v === undefined || v === '') return DEFAULT_DNS_PREFER;
  const u = v.toUpperCase();
  if (u === 'A' || u === 'AAAA') return u;
  throw config(`--dialWithDNSPrefer: expected A or AAAA, got ${JSON.stringify(v)}`);
}

export function parseDialWithIP4(v: string): string {
  if (!isIPv4(v)) throw config(`--dialWithIP4: not an IPv4 address: ${JSON.stringify(v)}`);
  return v;
}

export function parseDialWithIP6(v: string): string {
  const bare = v.startsWith('[') && v.endsWith(']') ? v.slice(1, -1) : v;
  if (!isIPv6(bare) || /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(bare)) throw config(`--dialWithIP6: not an IPv6 address: ${JSON.stringify(v)}`);
  return bare;
}

/**
 * --dialWithNIC: an interface that exists now (its addresses are read again
 * at each dial, as upstream, so an address that changes is followed).
 */
export function parseDialWithNIC(v: string, interfaces: InterfaceLister = systemInterfaces): string {
  if (!/^[A-Za-z0-9_.:@-]{1,64}$/.test(v) || !interfaces()[v]) {
    throw config(`--dialWithNIC: no network interface named ${JSON.stringify(v)} (to pick a source address, --dialWithIP4/--dialWithIP6)`);
  }
  return v;
}

export function parseSeconds(v: string | number | undefined, flag: string, dflt: number): number {
  if (v === undefined || v === '') return dflt;
  const n = typeof v === 'number' ? v : /^\d+$/.test(v.trim()) ? Number(v.trim()) : NaN;
  if (!Number.isSafeInteger(n) || n < 0) throw config(`${flag}: expected whole seconds >= 0, got ${JSON.stringify(v)}`);
  return n;
}

/** All the --dialWith* flags together: each value checked, combinations that make no sense refused. */
export function dialConfigFromFlags(f: DialFlags): DialConfig {
  const dns = f.dialWithDNS !== undefined && f.dialWithDNS !== '' ? parseDialWithDNS(f.dialWithDNS) : null;
  const dnsPrefer = parseDialWithDNSPrefer(f.dialWithDNSPrefer);
  let socks5: Socks5Upstream | null = null;
  if (f.dialWithSocks5 !== undefined && f.dialWithSocks5 !== '') {
    const hp = parseHostPortFlag(f.dialWithSocks5, '--dialWithSocks5');
    const username = f.dialWithSocks5Username ?? '';
    const password = f.dialWithSocks5Password ?? '';
    for (const [name, val] of [
      ['--dialWithSocks5Username', username],
      ['--dialWithSocks5Password', password],
    ] as const) {
      if (Buffer.byteLength(val) > MAX_USERPASS_FIELD) throw config(`${name}: at most ${MAX_USERPASS_FIELD} bytes`);
    }
    if ((username === '') !== (password === '')) {
      throw config('--dialWithSocks5Username and --dialWithSocks5Password go together (one is missing)');
    }
    socks5 = {
      ...hp,
      ...(username ? { username, password } : {}),
      tcpTimeoutSeconds: parseSeconds(f.dialWithSocks5TCPTimeout, '--dialWithSocks5TCPTimeout', DEFAULT_SOCKS5_TCP_TIMEOUT_S),
      udpTimeoutSeconds: parseSeconds(f.dialWithSocks5UDPTimeout, '--dialWithSocks5UDPTimeout', DEFAULT_SOCKS5_UDP_TIMEOUT_S),
    };
  } else if (f.dialWithSocks5Username || f.dialWithSocks5Password) {
    throw config('--dialWithSocks5Username/--dialWithSocks5Password need --dialWithSocks5');
  }
  return {
    dns,
    dnsPrefer,
    ...(f.dialWithIP4 ? { ip4: parseDialWithIP4(f.dialWithIP4) } : {}),
    ...(f.dialWithIP6 ? { ip6: parseDialWithIP6(f.dialWithIP6) } : {}),
    ...(f.dialWithNIC ? { nic: parseDialWithNIC(f.dialWithNIC) } : {}),
    socks5,
  };
}
