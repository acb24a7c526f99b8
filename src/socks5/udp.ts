/**
 * The SOCKS5 UDP relay (RFC 1928 section 7): one UDP socket per SOCKS5 server,
 * shared by every UDP association; the TCP handshake that creates an
 * association lives in handshake.ts.
 *
 * UDP client address rule (which datagrams belong to which association):
 *   - One UDP socket per server, bound to the same host and port number as
 *     TCP (or `udpPort`), shared by all associations.
 *   - A datagram's source IP must equal the control connection's peer IP
 *     (IPv4-mapped IPv6 forms compare equal to plain IPv4).
 *   - If the UDP ASSOCIATE request carries a non-zero DST.PORT, the source
 *     port must equal it: the association is bound to (peer IP, DST.PORT) at
 *     once (and refused with 0x01 if another live association holds it).
 *   - Otherwise (DST.PORT 0) the first well-formed datagram from the peer IP
 *     whose (ip, port) is not already bound to another association binds the
 *     oldest unbound association from that IP to that (ip, port).
 *   - Anything else (strangers, FRAG != 0, truncated header, unknown ATYP) is
 *     dropped with a log line and counted in stats.udpDropped; never thrown.
 *   - Closing the control connection ends the association
 *     (onUdpAssociationClosed), after which its (ip, port) is a stranger.
 *
 * Per-datagram work is kept to a few comparisons: the endpoint of the last
 * datagram from a bound association is remembered (valid while that association
 * lives: a live association keeps its endpoint), each association remembers the
 * header bytes it last parsed and hands out the same Address object while they
 * repeat (consumers may compare destinations by identity; never mutate them),
 * and replies go out as [cached header, data] in one sendmsg (no copy).
 *
 * Phases, each carrying its own state: the relay is unbound or bound (its socket and
 * address); an association is pending (DST.PORT 0, no datagram yet: queued by peer IP),
 * bound (its endpoint key in byEndpoint) or closed. One teardown path each: close() for
 * the relay, release() for an association. An association is one object (it is the
 * UdpAssociation consumers get), its send() a method; nothing is allocated per datagram
 * beyond the parsed view and the two-part send.
 */
import type net from 'node:net';
import dgram from 'node:dgram';
import { lookup as dnsLookup, type LookupOneOptions } from 'node:dns';
import { isIP } from 'node:net';
import { BrookError, ErrorCodes } from '../errors.js';
import { formatAddress, type Address } from '../protocol/address.js';
import { buildUdpHeader, parseUdpHeader, type Socks5Request } from './codec.js';

const EMPTY = new Uint8Array(0);

const IPV4_MAPPED_PREFIX = '::ffff:';

export interface UdpAssociation {
  id: number;
  controlSocket: net.Socket;
  /** Learned client endpoint (see the rule at the top of this file); null until bound. */
  clientAddress: string | null;
  clientPort: number | null;
  /** Wrap in a SOCKS5 UDP header (src as the datagram's address) and send to the client. */
  send(src: Address, data: Buffer): void;
  /** End the association (closes the control connection). */
  close(): void;
}

/** The UDP counters of Socks5ServerStats (the relay updates the server's stats object). */
export interface UdpRelayStats {
  udpAssociations: number;
  udpActiveAssociations: number;
  udpDatagramsIn: number;
  udpDatagramsOut: number;
  udpDropped: number;
}

export type UdpRelayLog = (from: string, dst: string, network: 'tcp' | 'udp', err: unknown) => void;

export interface UdpRelayOptions {
  stats: UdpRelayStats;
  log: UdpRelayLog;
  onUdpDatagram?: (assoc: UdpAssociation, dst: Address, data: Buffer) => void;
  onUdpAssociationClosed?: (assoc: UdpAssociation) => void;
}

export interface UdpRelay {
  /** Bind the relay socket (throws the bind error; the socket is closed then). */
  bind(type: 'udp4' | 'udp6', host: string, port: number, label: string): Promise<net.AddressInfo>;
  /** True while the relay socket is bound. */
  readonly bound: boolean;
  address(): net.AddressInfo | null;
  /** Register the association of an accepted UDP ASSOCIATE request, or say why not. */
  associate(socket: net.Socket, id: number, request: Socks5Request, from: string): AssocState | BrookError;
  /** The control connection ended: forget the association (idempotent). */
  release(a: AssocState): void;
  close(): Promise<void>;
}

export function normalizeIp(ip: string): string {
  const lower = ip.toLowerCase();
  return lower.startsWith(IPV4_MAPPED_PREFIX) && lower.includes('.') ? lower.slice(IPV4_MAPPED_PREFIX.length) : lower;
}

/**
 * The relay socket's lookup: a client address is always an IP literal (it came from
 * rinfo), answered at once, so a reply leaves inside send() instead of one tick later
 * (dns.lookup answers literals through process.nextTick). Anything else: dns.lookup.
 */
function literalLookup(
  host: string,
  options: LookupOneOptions | number,
  cb: (err: NodeJS.ErrnoException | null, address: string, family: number) => void,
): void {
  const v = isIP(host);
  if (v !== 0) cb(null, host, v);
  else if (typeof options === 'number') dnsLookup(host, options, cb);
  else dnsLookup(host, options, cb);
}

function endpointKey(ip: string, port: number): string {
  return `${ip}|${port}`;
}

function fromOf(rinfo: dgram.RemoteInfo): string {
  return formatAddress({ type: rinfo.family === 'IPv6' ? 'ipv6' : 'ipv4', host: rinfo.address, port: rinfo.port });
}

/** The relay socket's phase. */
type RelayPhase = { name: 'unbound' } | { name: 'bound'; socket: dgram.Socket; address: net.AddressInfo };

/**
 * An association's phase: pending (DST.PORT 0 and no datagram yet: waits in pendingByIp for
 * the first datagram from its peer IP), bound (clientAddress/clientPort known, held in
 * byEndpoint under `key`), closed (released; its endpoint is a stranger again).
 */
type AssocPhase = { name: 'pending' } | { name: 'bound'; key: string } | { name: 'closed' };

const UNBOUND: RelayPhase = { name: 'unbound' };
const PENDING: AssocPhase = { name: 'pending' };
const CLOSED: AssocPhase = { name: 'closed' };

/** An association as the relay tracks it; the same object is the UdpAssociation consumers get. */
class Association implements UdpAssociation {
  clientAddress: string | null = null;
  clientPort: number | null = null;
  phase: AssocPhase = PENDING;
  /** RSV FRAG ADDR bytes of the last datagram parsed, and the address they gave (same object while they repeat). */
  inHeader: Buffer | null = null;
  inAddress: Address | null = null;
  /** The source last passed to send() and its encoded SOCKS5 UDP header. */
  private outAddress: Address | null = null;
  private outHeader: Buffer | null = null;

  constructor(
    private readonly relay: Socks5UdpRelay,
    readonly id: number,
    readonly controlSocket: net.Socket,
    /** The control connection's peer IP, normalized. */
    readonly peerIp: string,
    /** "host:port" of the control connection, for log lines. */
    readonly from: string,
  ) {}

  send(src: Address, data: Buffer): void {
    const { relay } = this;
    const rp = relay.phase;
    if (this.phase.name !== 'bound' || rp.name !== 'bound') {
      relay.stats.udpDropped++;
      return;
    }
    if (src !== this.outAddress) {
      try {
        this.outHeader = buildUdpHeader(src, EMPTY);
      } catch (e) {
        this.outAddress = null;
        this.outHeader = null;
        relay.stats.udpDropped++;
        relay.log(formatAddress(src), this.from, 'udp', e);
        return;
      }
      this.outAddress = src;
    }
    relay.stats.udpDatagramsOut++;
    rp.socket.send([this.outHeader!, data], this.clientPort!, this.clientAddress!, this.onSent);
  }

  close(): void {
    this.controlSocket.destroy();
  }

  /** One callback per association (not a closure per datagram); names the source last sent from. */
  private readonly onSent = (err: Error | null): void => {
    if (err) this.relay.log(this.outAddress ? formatAddress(this.outAddress) : '', this.from, 'udp', err);
  };
}

/** An association as the relay tracks it; opaque to handshake.ts and server.ts. */
export type AssocState = Association;

/** The SOCKS5 UDP header of `msg`: from the association's cache when its bytes repeat, else parsed (throws). */
function parseCached(a: Association, msg: Buffer): { address: Address; data: Buffer } {
  const h = a.inHeader;
  if (h !== null && msg.length >= h.length && msg.compare(h, 0, h.length, 0, h.length) === 0) {
    return { address: a.inAddress!, data: msg.subarray(h.length) };
  }
  const header = parseUdpHeader(msg);
  const n = msg.length - header.data.length;
  a.inHeader = Buffer.from(msg.subarray(0, n)); // a copy: msg may be a view of a reused buffer
  a.inAddress = header.address;
  return { address: header.address, data: header.data };
}

class Socks5UdpRelay implements UdpRelay {
  phase: RelayPhase = UNBOUND;
  readonly stats: UdpRelayStats;
  readonly log: UdpRelayLog;
  private readonly onUdpDatagram: UdpRelayOptions['onUdpDatagram'];
  private readonly onUdpAssociationClosed: UdpRelayOptions['onUdpAssociationClosed'];
  private readonly byEndpoint = new Map<string, Association>();
  private readonly pendingByIp = new Map<string, Association[]>();
  /** The bound association the last datagram came from, and that datagram's source. */
  private last: Association | null = null;
  private lastIp = '';
  private lastPort = -1;

  constructor(opts: UdpRelayOptions) {
    this.stats = opts.stats;
    this.log = opts.log;
    this.onUdpDatagram = opts.onUdpDatagram;
    this.onUdpAssociationClosed = opts.onUdpAssociationClosed;
  }

  get bound(): boolean {
    return this.phase.name === 'bound';
  }

  address(): net.AddressInfo | null {
    const p = this.phase;
    return p.name === 'bound' ? p.address : null;
  }

  bind(type: 'udp4' | 'udp6', host: string, port: number, label: string): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket({ type, lookup: literalLookup });
      const onErr = (e: Error): void => {
        s.close();
        reject(e);
      };
      s.once('error', onErr);
      s.bind({ address: host, port, exclusive: true }, () => {
        s.removeListener('error', onErr);
        s.on('message', this.onDatagram);
        s.on('error', (e) => this.log(label, '', 'udp', e));
        const address = s.address();
        this.phase = { name: 'bound', socket: s, address };
        resolve(address);
      });
    });
  }

  /** The relay's one teardown path: back to unbound, the socket closed. */
  async close(): Promise<void> {
    const p = this.phase;
    if (p.name !== 'bound') return;
    this.phase = UNBOUND;
    await new Promise<void>((resolve) => p.socket.close(() => resolve()));
  }

  associate(socket: net.Socket, id: number, request: Socks5Request, from: string): Association | BrookError {
    const rawIp = socket.remoteAddress ?? '';
    const a = new Association(this, id, socket, normalizeIp(rawIp), from);
    const wantPort = request.destination.port;
    if (wantPort !== 0) {
      if (this.byEndpoint.has(endpointKey(a.peerIp, wantPort))) {
        return new BrookError(ErrorCodes.SOCKS_MALFORMED, `UDP endpoint ${rawIp}:${wantPort} already associated`);
      }
      this.bindAssoc(a, rawIp, wantPort);
    } else {
      const list = this.pendingByIp.get(a.peerIp);
      if (list) list.push(a);
      else this.pendingByIp.set(a.peerIp, [a]);
    }
    this.stats.udpAssociations++;
    this.stats.udpActiveAssociations++;
    return a;
  }

  /** An association's one teardown path (its control connection ended); idempotent. */
  release(a: Association): void {
    const p = a.phase;
    if (p.name === 'closed') return;
    a.phase = CLOSED;
    if (p.name === 'pending') this.removePending(a);
    else if (this.byEndpoint.get(p.key) === a) this.byEndpoint.delete(p.key);
    if (this.last === a) this.last = null;
    this.stats.udpActiveAssociations--;
    try {
      this.onUdpAssociationClosed?.(a);
    } catch (e) {
      this.log(a.from, '', 'udp', e);
    }
  }

  private removePending(a: Association): void {
    const list = this.pendingByIp.get(a.peerIp);
    if (!list) return;
    const i = list.indexOf(a);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.pendingByIp.delete(a.peerIp);
  }

  private bindAssoc(a: Association, rawIp: string, port: number): void {
    this.removePending(a);
    const key = endpointKey(normalizeIp(rawIp), port);
    a.phase = { name: 'bound', key };
    a.clientAddress = rawIp;
    a.clientPort = port;
    this.byEndpoint.set(key, a);
  }

  /** Which association a datagram belongs to: the last one's source, else its endpoint, else the oldest pending from its IP. */
  private readonly onDatagram = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    const { stats } = this;
    stats.udpDatagramsIn++;
    let target: Association | undefined;
    let pending: Association | undefined;
    if (this.last !== null && rinfo.port === this.lastPort && rinfo.address === this.lastIp) {
      target = this.last;
    } else {
      const ip = normalizeIp(rinfo.address);
      const bound = this.byEndpoint.get(endpointKey(ip, rinfo.port));
      pending = bound ? undefined : this.pendingByIp.get(ip)?.[0];
      target = bound ?? pending;
      if (!target) {
        stats.udpDropped++;
        this.log(fromOf(rinfo), '', 'udp', new BrookError(ErrorCodes.SOCKS_MALFORMED, 'datagram from a stranger dropped'));
        return;
      }
    }
    let header;
    try {
      header = parseCached(target, msg);
    } catch (e) {
      stats.udpDropped++;
      this.log(fromOf(rinfo), '', 'udp', e);
      return;
    }
    if (pending) this.bindAssoc(pending, rinfo.address, rinfo.port);
    this.last = target;
    this.lastIp = rinfo.address;
    this.lastPort = rinfo.port;
    if (!this.onUdpDatagram) {
      stats.udpDropped++;
      return;
    }
    try {
      this.onUdpDatagram(target, header.address, header.data);
    } catch (e) {
      this.log(fromOf(rinfo), formatAddress(header.address), 'udp', e);
    }
  };
}

export function createUdpRelay(opts: UdpRelayOptions): UdpRelay {
  return new Socks5UdpRelay(opts);
}
