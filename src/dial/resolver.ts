/**
 * The --dialWithDNS resolver: domain -> one IP, from the configured server
 * (IP:port over UDP, retried over TCP when the answer is truncated; or DoH),
 * never from the system's resolver.
 *
 * As upstream: with prefer A, ask A; if there is none ask AAAA (and the
 * reverse with prefer AAAA); an error from the first query is the result; the
 * first address of the answer is used. Ours also: answers cached for their TTL
 * (at most maxTtlSeconds) in a bounded LRU cache; empty answers (NXDOMAIN,
 * no data) cached for the SOA's negative TTL, at most negativeTtlSeconds;
 * concurrent identical queries share one exchange; an NXDOMAIN for the first
 * type ends the lookup (the name exists for no type).
 */
import { randomInt } from 'node:crypto';
import { isIP } from 'node:net';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { TtlCache } from './cache.js';
import { exchangeTcp, exchangeUdp } from './dns-classic.js';
import { encodeQuery, isTruncated, loadDnsCodec, normalizeName, parseReply, type RecordKind } from './dns-message.js';
import { DohClient, type DohServer } from './doh.js';
import type { IpTransport, ResolvedAddress } from './types.js';

export type DnsServerSpec = ({ kind: 'udp'; host: string; port: number } | ({ kind: 'doh' } & DohServer));

export type DnsPrefer = 'A' | 'AAAA';

/** Cached answers (name + type), at most. */
export const DNS_CACHE_ENTRIES = 4096;
/** Longest a positive answer is kept, whatever its TTL. */
export const DNS_MAX_TTL_SECONDS = 3600;
/** Longest an empty answer is kept; also used when it carries no SOA. */
export const DNS_NEGATIVE_TTL_SECONDS = 30;
/** An empty answer without an SOA is kept this long. */
export const DNS_NEGATIVE_DEFAULT_TTL_SECONDS = 5;
/** UDP: wait this long for each try ... */
export const DNS_UDP_TRY_TIMEOUT_MS = 2000;
/** ... and try this many times (a fresh socket and id each time). */
export const DNS_UDP_TRIES = 3;
/** TCP (after a truncated answer) and DoH: one exchange, at most this long. */
export const DNS_STREAM_TIMEOUT_MS = 5000;
/** DoH: tries (a kept-alive connection the server closed fails the first). */
export const DNS_DOH_TRIES = 2;
/** Distinct queries in flight at once, at most; more fail at once with DNS_FAILED. */
export const DNS_MAX_IN_FLIGHT = 256;

export interface ResolverOptions {
  server: DnsServerSpec;
  prefer?: DnsPrefer;
  /** How queries leave the process (source address rules); see dialer.ts. */
  transport: IpTransport;
  /** DoH: extra trusted CA (PEM). */
  ca?: string | Buffer | Array<string | Buffer>;
  dohMethod?: 'POST' | 'GET';
  now?: () => number;
  /** A random u16 for query ids. */
  randomId?: () => number;
  cacheEntries?: number;
  maxTtlSeconds?: number;
  negativeTtlSeconds?: number;
  udpTryTimeoutMs?: number;
  udpTries?: number;
  streamTimeoutMs?: number;
  maxInFlight?: number;
}

/** Counters for tests and metrics. */
export interface ResolverStats {
  queries: number;
  cacheHits: number;
  tcpRetries: number;
  failures: number;
}

export class Resolver {
  readonly prefer: DnsPrefer;
  readonly stats: ResolverStats = { queries: 0, cacheHits: 0, tcpRetries: 0, failures: 0 };
  private readonly cache: TtlCache<string[]>;
  private readonly inFlight = new Map<string, Promise<string[]>>();
  private readonly doh: DohClient | null;
  private readonly now: () => number;
  private readonly randomId: () => number;

  constructor(private readonly o: ResolverOptions) {
    this.prefer = o.prefer ?? 'A';
    this.now = o.now ?? Date.now;
    this.randomId = o.randomId ?? (() => randomInt(0, 0x10000));
    this.cache = new TtlCache(o.cacheEntries ?? DNS_CACHE_ENTRIES, this.now);
    this.doh = o.server.kind === 'doh' ? new DohClient(o.server, o.transport, { ca: o.ca, method: o.dohMethod }) : null;
  }

  /** One address for `host` (an IP literal is returned as it is). Throws DNS_FAILED / TIMEOUT. */
  async lookup(host: string): Promise<ResolvedAddress> {
    const literal = isIP(host);
    if (literal) return { address: host, family: literal as 4 | 6 };
    const name = normalizeName(host);
    const [first, second]: [RecordKind, RecordKind] = this.prefer === 'A' ? ['A', 'AAAA'] : ['AAAA', 'A'];
    for (const kind of [first, second]) {
      const addrs = await this.query(name, kind);
      if (addrs.length > 0) return { address: addrs[0]!, family: kind === 'A' ? 4 : 6 };
      if (this.cache.get(nxKey(name)) !== undefined) break;
    }
    throw new BrookError(ErrorCodes.DNS_FAILED, `can not resolve ${name}: no A or AAAA record`);
  }

  /** The addresses of one type (cached; identical concurrent queries share one exchange). */
  query(name: string, kind: RecordKind): Promise<string[]> {
    const key = `${kind} ${name}`;
    const hit = this.cache.get(key);
    if (hit !== undefined) {
      this.stats.cacheHits++;
      return Promise.resolve(hit);
    }
    const pending = this.inFlight.get(key);
    if (pending) return pending;
    if (this.inFlight.size >= (this.o.maxInFlight ?? DNS_MAX_IN_FLIGHT)) {
      return Promise.reject(new BrookError(ErrorCodes.DNS_FAILED, `too many DNS queries in flight, ${name} ${kind} refused`));
    }
    const p = this.fetch(name, kind).finally(() => this.inFlight.delete(key));
    this.inFlight.set(key, p);
    return p;
  }

  private async fetch(name: string, kind: RecordKind): Promise<string[]> {
    this.stats.queries++;
    let answer;
    try {
      answer = await this.exchange(name, kind);
    } catch (e) {
      this.stats.failures++;
      throw toBrookError(e);
    }
    const maxTtl = this.o.maxTtlSeconds ?? DNS_MAX_TTL_SECONDS;
    if (answer.addresses.length > 0) {
      this.cache.set(`${kind} ${name}`, answer.addresses, Math.min(answer.ttl ?? 0, maxTtl) * 1000);
    } else {
      const negMax = this.o.negativeTtlSeconds ?? DNS_NEGATIVE_TTL_SECONDS;
      const ttl = Math.min(answer.ttl ?? DNS_NEGATIVE_DEFAULT_TTL_SECONDS, negMax) * 1000;
      this.cache.set(`${kind} ${name}`, [], ttl);
      if (answer.nxdomain) this.cache.set(nxKey(name), [], ttl);
    }
    return answer.addresses;
  }

  private async exchange(name: string, kind: RecordKind) {
    await loadDnsCodec();
    const s = this.o.server;
    const streamTimeout = this.o.streamTimeoutMs ?? DNS_STREAM_TIMEOUT_MS;
    if (s.kind === 'doh') {
      const query = encodeQuery(0, name, kind, false);
      let last: unknown;
      for (let i = 0; i < DNS_DOH_TRIES; i++) {
        try {
          return parseReply(await this.doh!.exchange(query, streamTimeout), 0, name, kind);
        } catch (e) {
          last = e;
          if (toBrookError(e).code === ErrorCodes.TIMEOUT) break;
        }
      }
      throw last;
    }
    const tries = this.o.udpTries ?? DNS_UDP_TRIES;
    const tryTimeout = this.o.udpTryTimeoutMs ?? DNS_UDP_TRY_TIMEOUT_MS;
    let last: unknown;
    for (let i = 0; i < tries; i++) {
      const id = this.randomId() & 0xffff;
      const query = encodeQuery(id, name, kind, true);
      let reply: Buffer;
      try {
        reply = await exchangeUdp(this.o.transport, s.host, s.port, query, id, tryTimeout);
      } catch (e) {
        last = e;
        if (toBrookError(e).code === ErrorCodes.TIMEOUT) continue;
        throw e;
      }
      if (isTruncated(reply)) {
        this.stats.tcpRetries++;
        const tcpId = this.randomId() & 0xffff;
        const tcpReply = await exchangeTcp(this.o.transport, s.host, s.port, encodeQuery(tcpId, name, kind, false), streamTimeout);
        return parseReply(tcpReply, tcpId, name, kind);
      }
      return parseReply(reply, id, name, kind);
    }
    throw last;
  }

  /** Drop cached answers and pooled DoH connections. */
  close(): void {
    this.cache.clear();
    this.doh?.close();
  }
}

function nxKey(name: string): string {
  return `NX ${name}`;
}
