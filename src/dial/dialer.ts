/**
 * How the process dials (upstream's global --dialWith* options): every
 * outgoing TCP connection and UDP flow, the server's to its destinations and
 * the client's to its wsserver, goes through one Dialer.
 *
 *   no options        net.connect(host) as before (system resolver, kernel source)
 *   --dialWithDNS     domains resolved by our Resolver, never the system's
 *   --dialWithIP4/6   source address by the destination's family
 *   --dialWithNIC     source address taken from that interface (wins over IP4/6)
 *   --dialWithSocks5  TCP through CONNECT, UDP through UDP ASSOCIATE; the
 *                     destination goes to the proxy as given (domains unresolved);
 *                     the connection to the proxy itself follows the rules above
 *
 * A name that resolves to an unspecified address (0.0.0.0/8, ::,
 * ::ffff:0.0.0.0: the kernel dials them as this host) is never connected to:
 * a tunnel's destination (TCP and UDP) or a client's server, in every mode but
 * through SOCKS5 (the proxy resolves), and not the SOCKS5 proxy's own address
 * (the operator's). The answer the socket itself uses is checked, so no
 * second lookup can differ. The refusal is a BLOCKED error in the policy's
 * words (src/policy/local.ts). IP literals, and the names the policy resolves
 * (it hands us the address it checked), are the policy's to refuse.
 */
import { lookup as lookupCallback, type LookupAddress, type LookupAllOptions, type LookupOneOptions } from 'node:dns';
import { lookup } from 'node:dns/promises';
import { connect as netConnect, isIP, type LookupFunction, type Socket } from 'node:net';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { ipKey } from '../policy/cidr.js';
import { isUnspecified, UNSPECIFIED_RULE } from '../policy/local.js';
import { connectIp, directTransport, fmt, openUdpIp, type SourceOptions, watchConnect } from './direct.js';
import { Resolver } from './resolver.js';
import { socks5Connect, socks5UdpAssociate, type Socks5Auth } from './socks5-client.js';
import type { Endpoint, IpTransport, ResolvedAddress, UdpChannel } from './types.js';
import type { DialConfig } from './options.js';

export interface Socks5Upstream extends Socks5Auth {
  host: string;
  port: number;
  /** --dialWithSocks5TCPTimeout, seconds (0 = only the caller's timeout): deadline of the negotiation. */
  tcpTimeoutSeconds: number;
  /** --dialWithSocks5UDPTimeout, seconds (0 = none): an association idle this long is closed. */
  udpTimeoutSeconds: number;
}

export interface DialerOptions extends SourceOptions {
  resolver?: Resolver | null;
  socks5?: Socks5Upstream | null;
}

export interface DialTimeout {
  /** Resolve + connect (+ SOCKS5 negotiation), at most this long. */
  timeoutMs: number;
}

export class Dialer {
  /** Connections to IP addresses from the configured source (what the resolver uses). */
  readonly transport: IpTransport;

  constructor(private readonly o: DialerOptions = {}) {
    this.transport = directTransport(o);
  }

  /** True when no --dialWith* option is set (plain net.connect / system resolver). */
  get isDefault(): boolean {
    const o = this.o;
    return !o.resolver && !o.socks5 && !o.ip4 && !o.ip6 && !o.nic;
  }

  get resolver(): Resolver | null {
    return this.o.resolver ?? null;
  }

  /**
   * One IP for host: an IP literal as it is; else --dialWithDNS's resolver, or
   * the system's (IPv4 first, as Go's resolver that upstream uses by default).
   */
  async resolve(host: string): Promise<ResolvedAddress> {
    const literal = isIP(host);
    if (literal) return { address: host, family: literal as 4 | 6 };
    if (this.o.resolver) return this.o.resolver.lookup(host);
    try {
      const all = await lookup(host, { all: true });
      const pick = all.find((a) => a.family === 4) ?? all[0];
      if (!pick) throw new BrookError(ErrorCodes.DNS_FAILED, `can not resolve ${host}`);
      return { address: pick.address, family: pick.family === 6 ? 6 : 4 };
    } catch (e) {
      throw toBrookError(e);
    }
  }

  /**
   * A TCP connection to dst, connected (and through SOCKS5: negotiated) when
   * the promise resolves. The socket is returned paused: the caller resumes it
   * (Relay does) or hands it to tls.connect({ socket }). Errors are BrookErrors
   * whose message names dst and whose code maps to the right SOCKS5 reply.
   */
  async connectTcp(dst: Endpoint, t: DialTimeout): Promise<Socket> {
    const deadline = Date.now() + t.timeoutMs;
    const left = () => Math.max(1, deadline - Date.now());
    try {
      const s5 = this.o.socks5;
      if (s5) {
        const sock = await this.connectHost(s5.host, s5.port, left);
        const negotiate = s5.tcpTimeoutSeconds > 0 ? Math.min(left(), s5.tcpTimeoutSeconds * 1000) : left();
        return await socks5Connect(sock, dst, s5, negotiate);
      }
      const sock = await this.connectHost(dst.host, dst.port, left, true);
      sock.pause();
      return sock;
    } catch (e) {
      throw named(e, `dial ${fmt(dst.host, dst.port)}`);
    }
  }

  /** Datagrams to and from dst: a local UDP socket, or a SOCKS5 UDP association. */
  async dialUdp(dst: Endpoint, t: DialTimeout): Promise<UdpChannel> {
    const deadline = Date.now() + t.timeoutMs;
    const left = () => Math.max(1, deadline - Date.now());
    try {
      const s5 = this.o.socks5;
      if (s5) {
        const control = await this.connectHost(s5.host, s5.port, left);
        const negotiate = s5.tcpTimeoutSeconds > 0 ? Math.min(left(), s5.tcpTimeoutSeconds * 1000) : left();
        return await socks5UdpAssociate(control, dst, {
          auth: s5,
          timeoutMs: negotiate,
          idleMs: s5.udpTimeoutSeconds * 1000,
          source: this.o,
        });
      }
      const ip = await withDeadline(this.resolve(dst.host), left(), `resolve ${dst.host}`);
      refuseUnspecified(dst.host, ip.address);
      return await openUdpIp(this.o, ip.address, dst.port, dst);
    } catch (e) {
      throw named(e, `udp ${fmt(dst.host, dst.port)}`);
    }
  }

  /** Free the resolver's cache and pooled DoH connections. */
  close(): void {
    this.o.resolver?.close();
  }

  /** `destination`: a tunnel's destination (not the SOCKS5 proxy): a name may not resolve to an unspecified address. */
  private async connectHost(host: string, port: number, left: () => number, destination = false): Promise<Socket> {
    if (this.isDefaultDirect()) {
      // exactly what the code did before the dial options: Node resolves (and may try both families)
      const lookup = destination ? lookupSpecified : undefined;
      return watchConnect(netConnect({ host, port, allowHalfOpen: true, noDelay: true, lookup }), fmt(host, port), left(), 'connect');
    }
    const ip = await withDeadline(this.resolve(host), left(), `resolve ${host}`);
    if (destination) refuseUnspecified(host, ip.address);
    return connectIp(this.o, ip.address, port, left());
  }

  private isDefaultDirect(): boolean {
    const o = this.o;
    return !o.resolver && !o.ip4 && !o.ip6 && !o.nic;
  }
}

let plainDialer: Dialer | null = null;
/** The dialer without --dialWith* options (net.connect, the system resolver), shared by the process. */
export function defaultDialer(): Dialer {
  plainDialer ??= new Dialer();
  return plainDialer;
}

/** A Dialer from parsed flags (see options.ts); `ca` is trusted for DoH in addition to the system roots. */
export function createDialer(c: DialConfig, extra: { ca?: string | Buffer; now?: () => number } = {}): Dialer {
  const source: SourceOptions = { ip4: c.ip4, ip6: c.ip6, nic: c.nic };
  const resolver = c.dns
    ? new Resolver({ server: c.dns, prefer: c.dnsPrefer, transport: directTransport(source), ca: extra.ca, now: extra.now })
    : null;
  return new Dialer({ ...source, resolver, socks5: c.socks5 });
}

function unspecifiedError(host: string, ip: string): BrookError | null {
  const k = isIP(host) ? null : ipKey(ip);
  return k && isUnspecified(k) ? new BrookError(ErrorCodes.BLOCKED, `destination blocked by ${UNSPECIFIED_RULE} (${ip})`) : null;
}

/** A name resolved to an unspecified address: refused (an IP literal is the policy's). */
function refuseUnspecified(host: string, ip: string): void {
  const err = unspecifiedError(host, ip);
  if (err) throw err;
}

/**
 * dns.lookup for net.connect that fails with BLOCKED when an answer is unspecified (any of them: a
 * connect with autoSelectFamily asks for all and may try each).
 */
const lookupSpecified = ((host: string, options: LookupOneOptions | LookupAllOptions, cb: (err: Error | null, a: string | LookupAddress[], f?: number) => void) => {
  lookupCallback(host, options as LookupAllOptions, (err, answer: string | LookupAddress[], family?: number) => {
    if (err) return cb(err, answer, family);
    const list = typeof answer === 'string' ? [answer] : answer.map((a) => a.address);
    const refused = list.map((ip) => unspecifiedError(host, ip)).find((e) => e !== null);
    if (refused) cb(refused, typeof answer === 'string' ? '' : [], family);
    else cb(null, answer, family);
  });
}) as LookupFunction;

function named(e: unknown, what: string): BrookError {
  const err = toBrookError(e);
  if (err.message.startsWith(what)) return err;
  return new BrookError(err.code, `${what}: ${err.message}`, { cause: err.cause ?? e });
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new BrookError(ErrorCodes.TIMEOUT, `${what} timed out after ${ms} ms`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}
