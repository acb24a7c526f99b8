/**
 * Destinations on the server's own host (protocol/resets.md, README "Blocking"):
 * checked with the block lists, per new TCP tunnel and per UDP flow, before
 * the destination is dialled (policy.ts).
 *
 * Always (no option, not even a list): the unspecified addresses, 0.0.0.0/8
 * and ::, in every form (::ffff:0.0.0.0, the name `0`). The kernel dials them
 * as this host (0.0.0.0 -> 127.0.0.1, :: -> ::1) and no client needs them.
 * Rule `local:unspecified`.
 *
 * With --blockLocal, also (rule `local:<kind>`):
 *   loopback    127.0.0.0/8, ::1
 *   link-local  169.254.0.0/16, fe80::/10
 *   metadata    169.254.169.254 (most clouds), 100.100.100.200 (Alibaba), fd00:ec2::254 (AWS IPv6)
 *   multicast   224.0.0.0/4, ff00::/8 (looped back to this host's own listeners)
 *   broadcast   255.255.255.255
 *   interface   every address of this host's interfaces (os.networkInterfaces(): the public
 *               address, a docker bridge's, ...), read at start and again every refreshMs
 *   localhost   the names localhost and *.localhost (RFC 6761), without resolving them
 * and each IPv4 one inside an IPv6 address (ipforms.ts: compat, SIIT, NAT64, 6to4,
 * Teredo), the log naming the IPv4. Names are resolved and every address checked
 * (policy.ts), so a name whose address is local is refused too.
 *
 * Cost: a few integer compares, and a binary search in the (small) set of the
 * host's addresses; no allocation unless an embedded IPv4 matches. The
 * interface list is never read on the connect path.
 */
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { type InterfaceLister, systemInterfaces } from '../dial/nic.js';
import { silentLogger, type Logger } from '../log.js';
import { CidrSet, type IpKey } from './cidr.js';
import { normalizeDomain } from './domains.js';
import { embeddedIPv4, formatIPv4 } from './ipforms.js';

/** How often --blockLocal re-reads the host's interface addresses (they change: DHCP, VPNs, containers). */
export const LOCAL_ADDRESS_REFRESH_MS = 30_000;

export interface LocalMatch {
  rule: string;
  /** The IPv4 inside an IPv6 destination that matched. */
  ip?: string;
}

export interface LocalRulesOptions {
  /** --blockLocal: everything above; false: only the unspecified addresses. */
  blockLocal: boolean;
  /** The host's interfaces (default os.networkInterfaces). */
  interfaces?: InterfaceLister;
  /** Interval of the re-read (ms), default LOCAL_ADDRESS_REFRESH_MS. */
  refreshMs?: number;
  /** A failed re-read (operator-facing: at most one line per interval). */
  log?: Logger;
}

const rule = (kind: string): LocalMatch => Object.freeze({ rule: `local:${kind}` });
/** The rule of the always-on refusal (also the dialer's, src/dial/dialer.ts). */
export const UNSPECIFIED_RULE = 'local:unspecified';
const UNSPECIFIED: LocalMatch = Object.freeze({ rule: UNSPECIFIED_RULE });
const LOOPBACK = rule('loopback');
const LINK_LOCAL = rule('link-local');
const METADATA = rule('metadata');
const MULTICAST = rule('multicast');
const BROADCAST = rule('broadcast');
const INTERFACE = rule('interface');
const LOCALHOST = rule('localhost');

/** 169.254.169.254 and 100.100.100.200, as u32. */
const METADATA_V4 = [0xa9fea9fe, 0x646464c8];
/** fd00:ec2::254 as four u32 words. */
const METADATA_V6 = [0xfd000ec2, 0, 0, 0x254];
const BROADCAST_V4 = 0xffffffff;

/** 0.0.0.0/8 or :: (IPv4-mapped IPv6 is IPv4 in a key). */
export function isUnspecified(k: IpKey): boolean {
  const w = k.words;
  return k.family === 4 ? w[0]! >>> 24 === 0 : w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 0;
}

export class LocalRules {
  readonly blockLocal: boolean;
  private own4: CidrSet | null = null;
  private own6: CidrSet | null = null;
  private readonly interfaces: InterfaceLister;
  private readonly log: Logger;
  private timer: NodeJS.Timeout | null = null;
  /** The IPv4 being checked, as a CidrSet key (matching is synchronous: one is enough). */
  private readonly key4: IpKey = { family: 4, words: new Uint32Array(1) };

  /** With blockLocal, reads the interface addresses now: a failure throws (BrookError), as a bad list does at start. */
  constructor(o: LocalRulesOptions) {
    this.blockLocal = o.blockLocal;
    this.interfaces = o.interfaces ?? systemInterfaces;
    this.log = o.log ?? silentLogger;
    if (!this.blockLocal) return;
    this.readInterfaces();
    this.timer = setInterval(() => this.refresh(), o.refreshMs ?? LOCAL_ADDRESS_REFRESH_MS);
    this.timer.unref();
  }

  /** The host's own addresses in force. */
  get interfaceAddresses(): number {
    return (this.own4?.size ?? 0) + (this.own6?.size ?? 0);
  }

  /** The rule a destination IP breaks, or null. */
  match(k: IpKey): LocalMatch | null {
    return k.family === 4 ? this.match4(k.words[0]!) : this.match6(k);
  }

  /** --blockLocal: the localhost names, refused by name (other names are resolved and their addresses checked). */
  matchName(host: string): LocalMatch | null {
    if (!this.blockLocal) return null;
    const h = normalizeDomain(host);
    return h === 'localhost' || h.endsWith('.localhost') ? LOCALHOST : null;
  }

  private match4(w: number): LocalMatch | null {
    this.key4.words[0] = w;
    if (isUnspecified(this.key4)) return UNSPECIFIED;
    if (!this.blockLocal) return null;
    if (w >>> 24 === 127) return LOOPBACK;
    if (METADATA_V4.includes(w)) return METADATA;
    if (w >>> 16 === 0xa9fe) return LINK_LOCAL;
    if (w >>> 28 === 0xe) return MULTICAST;
    if (w === BROADCAST_V4) return BROADCAST;
    if (this.own4?.match(this.key4)) return INTERFACE;
    return null;
  }

  private match6(k: IpKey): LocalMatch | null {
    if (isUnspecified(k)) return UNSPECIFIED;
    if (!this.blockLocal) return null;
    const w = k.words;
    if (w[0] === 0 && w[1] === 0 && w[2] === 0 && w[3] === 1) return LOOPBACK;
    if (METADATA_V6.every((x, i) => w[i] === x)) return METADATA;
    if (((w[0]! >>> 16) & 0xffc0) === 0xfe80) return LINK_LOCAL; // fe80::/10
    if (w[0]! >>> 24 === 0xff) return MULTICAST;
    if (this.own6?.match(k)) return INTERFACE;
    const e = embeddedIPv4(k);
    if (!e) return null;
    const m = this.match4(e.v4);
    return m ? { rule: m.rule, ip: formatIPv4(e.v4) } : null;
  }

  /** Re-read the interface addresses; a failure keeps the last ones and logs why. */
  refresh(): boolean {
    try {
      this.readInterfaces();
      return true;
    } catch (e) {
      const err = toBrookError(e);
      this.log({ msg: 'reading the interface addresses failed, keeping the last ones', code: err.code, error: err.message, addresses: this.interfaceAddresses });
      return false;
    }
  }

  private readInterfaces(): void {
    let all: ReturnType<InterfaceLister>;
    try {
      all = this.interfaces();
    } catch (e) {
      throw new BrookError(ErrorCodes.INTERNAL, `--blockLocal: cannot read the interface addresses: ${(e as Error).message}`, { cause: e });
    }
    const v4: string[] = [];
    const v6: string[] = [];
    for (const list of Object.values(all)) {
      for (const a of list ?? []) {
        const ip = a.address.split('%')[0]!;
        (a.family === 'IPv4' ? v4 : v6).push(ip);
      }
    }
    this.own4 = CidrSet.of(4, v4);
    this.own6 = CidrSet.of(6, v6);
  }

  /** Stop re-reading (the rules stay usable). */
  close(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
