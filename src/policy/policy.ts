/**
 * Destination policy (server side): upstream's global options
 * --blockDomainList, --blockCIDR4List, --blockCIDR6List, --blockGeoIP and
 * --blockListUpdateInterval, our --blockLocal, and the unspecified addresses
 * refused always (local.ts); checked once per new TCP tunnel and per new UDP
 * flow, before the destination is dialled.
 *
 *   const policy = (await DestinationPolicy.load(opts)) ?? DestinationPolicy.baseline();
 *   const v = await policy.evaluate(dst);
 *   if (v.blocked) -> close the tunnel, log dst + v.rule, count it
 *   else dial v.ips ?? dst   (v.ips: the addresses that were checked)
 *
 * Order: an IP destination (or a domain that is an IP literal) is checked
 * against the local rules, then the CIDR list of its family and GeoIP. A
 * domain: the localhost names (--blockLocal), the domain list; a domain the
 * system resolver reads as an IPv4 (`127.1`, `2130706433`: ipforms.ts) is then
 * checked as that IPv4; else, if any IP rule is configured (a CIDR list,
 * GeoIP, --blockLocal), it is resolved and every address it resolved to is
 * checked as an IP (as upstream for the lists). Dial the returned `ips` rather
 * than resolving again: a second lookup could answer another address (DNS
 * rebinding, or a resolver that rotates) and escape the check.
 *
 * baseline() is the policy of a server with no block option: only the
 * unspecified rule, nothing resolved, nothing to close. A name that resolves
 * to an unspecified address is then refused by the dialer (src/dial/dialer.ts).
 *
 * Reloads (blockListUpdateInterval > 0) re-read each list on its own; a list
 * whose reload fails keeps its last good version and one line says why. The
 * lists are swapped whole; a check uses the lists of the moment it began, and
 * open tunnels are never re-checked.
 */
import { createHash } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { Address } from '../protocol/address.js';
import type { InterfaceLister } from '../dial/nic.js';
import { CidrSet, formatIpKey, ipKey, type IpFamily, type IpKey } from './cidr.js';
import { DomainSet } from './domains.js';
import { loadCountryLookup, normalizeCountryCodes, type CountryLookup } from './geoip.js';
import { formatIPv4, parseInetAton } from './ipforms.js';
import { LocalRules } from './local.js';
import { describeSource, listLines, normalizeSource, readListSource, type ListReadOptions } from './lists.js';

/** Largest --blockListUpdateInterval (a Node timer holds at most 2^31-1 ms). */
export const MAX_UPDATE_INTERVAL_S = Math.floor(0x7fffffff / 1000);

export type Resolver = (host: string) => Promise<string[]>;

export interface DestinationPolicyOptions {
  /** File path or http(s) URL; one domain a line, suffix match. */
  blockDomainList?: string;
  blockCIDR4List?: string;
  blockCIDR6List?: string;
  /** Two-letter country codes. */
  blockGeoIP?: readonly string[];
  /** Seconds between list reloads; 0 or absent: read once at start (upstream's default). */
  blockListUpdateInterval?: number;
  /** --blockLocal: destinations on this host (loopback, link-local, metadata, its own addresses; local.ts). */
  blockLocal?: boolean;
  /** The host's interfaces for --blockLocal (default os.networkInterfaces). */
  interfaces?: InterfaceLister;
  /** How often --blockLocal re-reads them (ms; default LOCAL_ADDRESS_REFRESH_MS). */
  localRefreshMs?: number;
  /** Resolves a domain for the CIDR / GeoIP check; default node:dns lookup({ all: true }). */
  resolve?: Resolver;
  /** Reload outcomes and the load summary (operator-facing, not outsider-triggered). */
  log?: Logger;
  /** MMDB country database instead of the shipped one. */
  geoipDatabase?: string;
  maxListBytes?: number;
  fetchTimeoutMs?: number;
  fetch?: typeof globalThis.fetch;
}

export type PolicyVerdict =
  | { blocked: true; rule: string; ip?: string }
  | { blocked: false; ips?: string[] };

/** The verdict when nothing matched and nothing was resolved (shared, never mutated). */
export const ALLOWED: PolicyVerdict = Object.freeze({ blocked: false as const });

type ListName = 'blockDomainList' | 'blockCIDR4List' | 'blockCIDR6List';

interface Slot<T> {
  name: ListName;
  source: string;
  parse: (source: string, text: string) => T;
  count: (v: T) => number;
  /** SHA-256 of the last good text (an unchanged list is not parsed again). */
  digest: string;
  value: T;
}

interface Lists {
  domains: DomainSet | null;
  cidr4: CidrSet | null;
  cidr6: CidrSet | null;
}

export interface ReloadOutcome {
  list: ListName;
  /** 'unchanged', 'reloaded', or the error that kept the last good list. */
  result: 'unchanged' | 'reloaded' | BrookError;
}

export const defaultResolver: Resolver = async (host) => (await lookup(host, { all: true, verbatim: true })).map((a) => a.address);

export class DestinationPolicy {
  private lists: Lists;
  private readonly slots: Slot<DomainSet | CidrSet>[];
  private readonly countries: ReadonlySet<string>;
  private readonly country: CountryLookup | null;
  private readonly resolve: Resolver;
  private readonly local: LocalRules;
  private readonly log: Logger;
  private readonly readOpts: ListReadOptions;
  private readonly abort = new AbortController();
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private reloading: Promise<ReloadOutcome[]> | null = null;

  /** True when any block option is given (otherwise load() returns null and nothing is checked). */
  static isConfigured(o: DestinationPolicyOptions): boolean {
    return !!(o.blockDomainList || o.blockCIDR4List || o.blockCIDR6List || (o.blockGeoIP && o.blockGeoIP.length > 0) || o.blockLocal);
  }

  /** The policy of a server without block options: the unspecified addresses refused, nothing else (no I/O, no timer). */
  static baseline(): DestinationPolicy {
    return new DestinationPolicy([], [], null, {}, {});
  }

  /**
   * Read every list (and the GeoIP database if --blockGeoIP is given); null
   * when no block option is set. Throws a BrookError with a one-line message:
   * CONFIG (bad option value), LIST_INVALID (bad line, too large),
   * LIST_UNREACHABLE (unreadable file, unreachable URL), GEOIP_UNAVAILABLE,
   * INTERNAL (--blockLocal could not read the interface addresses).
   */
  static async load(o: DestinationPolicyOptions): Promise<DestinationPolicy | null> {
    if (!DestinationPolicy.isConfigured(o)) return null;
    const interval = o.blockListUpdateInterval ?? 0;
    if (!Number.isInteger(interval) || interval < 0 || interval > MAX_UPDATE_INTERVAL_S) {
      throw new BrookError(ErrorCodes.CONFIG, `--blockListUpdateInterval wants whole seconds from 0 to ${MAX_UPDATE_INTERVAL_S}`);
    }
    const countries = normalizeCountryCodes(o.blockGeoIP ?? []);
    const readOpts: ListReadOptions = { maxBytes: o.maxListBytes, timeoutMs: o.fetchTimeoutMs, fetch: o.fetch };
    const startAbort = new AbortController();
    const specs: [ListName, string | undefined, Slot<DomainSet | CidrSet>['parse']][] = [
      ['blockDomainList', o.blockDomainList, (src, text) => DomainSet.fromLines(src, listLines(text))],
      ['blockCIDR4List', o.blockCIDR4List, cidrParser(4)],
      ['blockCIDR6List', o.blockCIDR6List, cidrParser(6)],
    ];
    const wanted = specs.filter(([, src]) => !!src).map(([name, src, parse]) => ({ name, source: normalizeSource(src!), parse }));
    const [geo, ...read] = await Promise.allSettled([
      countries.length > 0 ? loadCountryLookup(o.geoipDatabase) : Promise.resolve(null),
      ...wanted.map(async (w): Promise<Slot<DomainSet | CidrSet>> => {
        try {
          const text = await readListSource(w.source, { ...readOpts, signal: startAbort.signal });
          return { ...w, count: (v) => v.size, digest: digest(text), value: w.parse(w.source, text) };
        } catch (e) {
          startAbort.abort(); // one failure fails the start: stop the other downloads
          throw e;
        }
      }),
    ]);
    // Report the first failure in option order, so the message does not depend on timing
    // (a download aborted because another list failed says 'aborted': skip those).
    const failed = [...read, geo].filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => toBrookError(r.reason));
    const first = failed.find((e) => !/: aborted$/.test(e.message)) ?? failed[0];
    if (first) throw first;
    const slots = read.map((r) => (r as PromiseFulfilledResult<Slot<DomainSet | CidrSet>>).value);
    const country = (geo as PromiseFulfilledResult<CountryLookup | null>).value;
    const p = new DestinationPolicy(slots, countries, country, o, readOpts);
    p.log({ msg: 'block lists loaded', ...p.sizes(), updateInterval: interval });
    if (interval > 0 && slots.length > 0) p.schedule(interval * 1000);
    return p;
  }

  private constructor(
    slots: Slot<DomainSet | CidrSet>[],
    countries: string[],
    country: CountryLookup | null,
    o: DestinationPolicyOptions,
    readOpts: ListReadOptions,
  ) {
    this.slots = slots;
    this.countries = new Set(countries);
    this.country = country;
    this.resolve = o.resolve ?? defaultResolver;
    this.log = o.log ?? silentLogger;
    this.local = new LocalRules({ blockLocal: o.blockLocal === true, interfaces: o.interfaces, refreshMs: o.localRefreshMs, log: this.log });
    this.readOpts = { ...readOpts, signal: this.abort.signal };
    this.lists = this.assemble();
  }

  /** Entries in force: list sizes, the blocked countries, and with --blockLocal the host's own addresses. */
  sizes(): { domains: number; cidr4: number; cidr6: number; geoip: string[]; local?: number } {
    const l = this.lists;
    const local = this.local.blockLocal ? { local: this.local.interfaceAddresses } : {};
    return { domains: l.domains?.size ?? 0, cidr4: l.cidr4?.size ?? 0, cidr6: l.cidr6?.size ?? 0, geoip: [...this.countries], ...local };
  }

  /** The rule that blocks `dst`, or null. See evaluate() for the addresses to dial. */
  async check(dst: Address): Promise<{ rule: string; ip?: string } | null> {
    const v = await this.evaluate(dst);
    return v.blocked ? { rule: v.rule, ...(v.ip !== undefined ? { ip: v.ip } : {}) } : null;
  }

  /**
   * Blocked (with the rule, and the resolved IP that matched if any), or
   * allowed (with the addresses it resolved to, when it had to resolve).
   * Throws DNS_FAILED when a domain needed for an IP rule does not resolve,
   * as the dial would have failed; ADDRESS_INVALID for an unparsable IP.
   */
  async evaluate(dst: Address): Promise<PolicyVerdict> {
    const lists = this.lists;
    const host = dst.type === 'domain' ? unbracket(dst.host) : dst.host;
    const literal = ipKey(host);
    if (literal) return this.matchIp(lists, literal);
    if (dst.type !== 'domain') throw new BrookError(ErrorCodes.ADDRESS_INVALID, `bad IP address ${dst.host}`);
    const name = this.local.matchName(host);
    if (name) return { blocked: true, rule: name.rule };
    const entry = lists.domains?.match(host);
    if (entry) return { blocked: true, rule: `domain:${entry}` };
    const numeric = parseInetAton(host);
    if (numeric !== null) return this.matchNumeric(lists, numeric);
    if (!this.resolves(lists)) return ALLOWED;
    let answers: string[];
    try {
      answers = await this.resolve(dst.host);
    } catch (e) {
      const err = toBrookError(e);
      throw err.code === ErrorCodes.INTERNAL ? new BrookError(ErrorCodes.DNS_FAILED, err.message, { cause: e }) : err;
    }
    const ips: string[] = [];
    for (const ip of answers) {
      const k = ipKey(ip);
      if (!k) continue;
      const v = this.matchIp(lists, k);
      if (v.blocked) return { blocked: true, rule: v.rule, ip };
      ips.push(ip);
    }
    if (ips.length === 0) throw new BrookError(ErrorCodes.DNS_FAILED, `${dst.host}: no address`);
    return { blocked: false, ips };
  }

  /** Whether a domain is resolved for the check: some rule is about its addresses. */
  private resolves(lists: Lists): boolean {
    return !!(lists.cidr4 || lists.cidr6 || this.country || this.local.blockLocal);
  }

  /**
   * A domain the system resolver reads as this IPv4 (`127.1`): checked as it; dialled at it when the
   * domain would have been resolved for the check (without IP rules it is dialled as given, as upstream).
   */
  private matchNumeric(lists: Lists, v4: number): PolicyVerdict {
    const ip = formatIPv4(v4);
    const v = this.matchIp(lists, { family: 4, words: Uint32Array.of(v4) });
    if (v.blocked) return { blocked: true, rule: v.rule, ip };
    return this.resolves(lists) ? { blocked: false, ips: [ip] } : ALLOWED;
  }

  private matchIp(lists: Lists, k: IpKey): PolicyVerdict {
    const local = this.local.match(k);
    if (local) return { blocked: true, ...local };
    const set = k.family === 4 ? lists.cidr4 : lists.cidr6;
    const net = set?.match(k);
    if (net) return { blocked: true, rule: `cidr${k.family}:${net}` };
    if (this.country) {
      const cc = this.country(formatIpKey(k));
      if (cc !== null && this.countries.has(cc)) return { blocked: true, rule: `geoip:${cc}` };
    }
    return ALLOWED;
  }

  /**
   * Re-read every list now. Each list that fails keeps its last good version
   * and logs why. Concurrent calls share one reload.
   */
  reload(): Promise<ReloadOutcome[]> {
    this.reloading ??= this.reloadAll().finally(() => {
      this.reloading = null;
    });
    return this.reloading;
  }

  private async reloadAll(): Promise<ReloadOutcome[]> {
    const outcomes = await Promise.all(this.slots.map((s) => this.reloadSlot(s)));
    if (!this.closed && outcomes.some((o) => o.result === 'reloaded')) this.lists = this.assemble();
    return outcomes;
  }

  private async reloadSlot(s: Slot<DomainSet | CidrSet>): Promise<ReloadOutcome> {
    try {
      const text = await readListSource(s.source, this.readOpts);
      const d = digest(text);
      if (d === s.digest) return { list: s.name, result: 'unchanged' };
      s.value = s.parse(s.source, text);
      s.digest = d;
      this.log({ msg: 'block list reloaded', list: s.name, source: describeSource(s.source), entries: s.count(s.value) });
      return { list: s.name, result: 'reloaded' };
    } catch (e) {
      const err = toBrookError(e);
      if (!this.closed) {
        this.log({
          msg: 'block list reload failed, keeping the last good list',
          list: s.name,
          source: describeSource(s.source),
          code: err.code,
          error: err.message,
          entries: s.count(s.value),
        });
      }
      return { list: s.name, result: err };
    }
  }

  /** The next reload starts intervalMs after the previous one ended (reloads never overlap). */
  private schedule(intervalMs: number): void {
    if (this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.reload().finally(() => this.schedule(intervalMs));
    }, intervalMs);
    this.timer.unref();
  }

  /** Stop the reload timer (and --blockLocal's re-read) and abort a download in flight. The lists stay usable. */
  close(): void {
    this.closed = true;
    this.local.close();
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.abort.abort();
  }

  private assemble(): Lists {
    const get = (n: ListName) => this.slots.find((s) => s.name === n)?.value ?? null;
    return {
      domains: get('blockDomainList') as DomainSet | null,
      cidr4: get('blockCIDR4List') as CidrSet | null,
      cidr6: get('blockCIDR6List') as CidrSet | null,
    };
  }
}

function cidrParser(family: IpFamily): (source: string, text: string) => CidrSet {
  return (source, text) => CidrSet.fromLines(family, source, listLines(text));
}

function digest(text: string): string {
  return createHash('sha256').update(text).digest('base64');
}

function unbracket(h: string): string {
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}
