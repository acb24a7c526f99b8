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

/** An association as the relay tracks it; opaque to handshake.ts and server.ts. */
export interface AssocState {
  pub: UdpAssociation;
  peerIp: string; // normalized
  /** "host:port" of the control connection, for log lines. */
  from: string;
  key: string | null; // bound endpoint key
  closed: boolean;
  /** RSV FRAG ADDR bytes of the last datagram parsed, and the address they gave (same object while they repeat). */
  inHeader: Buffer | null;
  inAddress: Address | null;
  /** The source last passed to send() and its encoded SOCKS5 UDP header. */
  outAddress: Address | null;
  outHeader: Buffer | null;
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

export function createUdpRelay(opts: UdpRelayOptions): UdpRelay {
  const { stats, log } = opts;
  let udp: dgram.Socket | null = null;
  let udpAddr: net.AddressInfo | null = null;
  const byEndpoint = new Map<string, AssocState>();
  const pendingByIp = new Map<string, AssocState[]>();
  /** The bound association the last datagram came from, and that datagram's source. */
  let last: AssocState | null = null;
  let lastIp = '';
  let lastPort = -1;

  function removePending(a: AssocState): void {
    const list = pendingByIp.get(a.peerIp);
    if (!list) return;
    const i = list.indexOf(a);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) pendingByIp.delete(a.peerIp);
  }

  function bindAssoc(a: AssocState, rawIp: string, port: number): void {
    removePending(a);
    a.key = endpointKey(normalizeIp(rawIp), port);
    a.pub.clientAddress = rawIp;
    a.pub.clientPort = port;
    byEndpoint.set(a.key, a);
  }

  function release(a: AssocState): void {
    if (a.closed) return;
    a.closed = true;
    removePending(a);
    if (a.key && byEndpoint.get(a.key) === a) byEndpoint.delete(a.key);
    if (last === a) last = null;
    stats.udpActiveAssociations--;
    try {
      opts.onUdpAssociationClosed?.(a.pub);
    } catch (e) {
      log(a.from, '', 'udp', e);
    }
  }

  function fromOf(rinfo: dgram.RemoteInfo): string {
    return formatAddress({ type: rinfo.family === 'IPv6' ? 'ipv6' : 'ipv4', host: rinfo.address, port: rinfo.port });
  }

  /** The SOCKS5 UDP header of `msg`: from the association's cache when its bytes repeat, else parsed (throws). */
  function parseCached(a: AssocState, msg: Buffer): { address: Address; data: Buffer } {
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

  function onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    stats.udpDatagramsIn++;
    let target: AssocState | undefined;
    let pending: AssocState | undefined;
    if (last !== null && rinfo.port === lastPort && rinfo.address === lastIp) {
      target = last;
    } else {
      const ip = normalizeIp(rinfo.address);
      const bound = byEndpoint.get(endpointKey(ip, rinfo.port));
      pending = bound ? undefined : pendingByIp.get(ip)?.[0];
      target = bound ?? pending;
      if (!target) {
        stats.udpDropped++;
        log(fromOf(rinfo), '', 'udp', new BrookError(ErrorCodes.SOCKS_MALFORMED, 'datagram from a stranger dropped'));
        return;
      }
    }
    let header;
    try {
      header = parseCached(target, msg);
    } catch (e) {
      stats.udpDropped++;
      log(fromOf(rinfo), '', 'udp', e);
      return;
    }
    if (pending) bindAssoc(pending, rinfo.address, rinfo.port);
    last = target;
    lastIp = rinfo.address;
    lastPort = rinfo.port;
    if (!opts.onUdpDatagram) {
      stats.udpDropped++;
      return;
    }
    try {
      opts.onUdpDatagram(target.pub, header.address, header.data);
    } catch (e) {
      log(fromOf(rinfo), formatAddress(header.address), 'udp', e);
    }
  }

  function associate(socket: net.Socket, id: number, request: Socks5Request, from: string): AssocState | BrookError {
    const rawIp = socket.remoteAddress ?? '';
    const a: AssocState = {
      pub: {
        id,
        controlSocket: socket,
        clientAddress: null,
        clientPort: null,
        send(src: Address, data: Buffer): void {
          if (a.closed || !udp || a.pub.clientAddress === null || a.pub.clientPort === null) {
            stats.udpDropped++;
            return;
          }
          if (src !== a.outAddress) {
            try {
              a.outHeader = buildUdpHeader(src, EMPTY);
            } catch (e) {
              a.outAddress = null;
              a.outHeader = null;
              stats.udpDropped++;
              log(formatAddress(src), a.from, 'udp', e);
              return;
            }
            a.outAddress = src;
          }
          stats.udpDatagramsOut++;
          udp.send([a.outHeader!, data], a.pub.clientPort, a.pub.clientAddress, onSent);
        },
        close(): void {
          socket.destroy();
        },
      },
      peerIp: normalizeIp(rawIp),
      from,
      key: null,
      closed: false,
      inHeader: null,
      inAddress: null,
      outAddress: null,
      outHeader: null,
    };
    /** One callback per association (not a closure per datagram); names the source last sent from. */
    const onSent = (err: Error | null): void => {
      if (err) log(a.outAddress ? formatAddress(a.outAddress) : '', a.from, 'udp', err);
    };
    const wantPort = request.destination.port;
    if (wantPort !== 0) {
      const key = endpointKey(a.peerIp, wantPort);
      if (byEndpoint.has(key)) {
        return new BrookError(ErrorCodes.SOCKS_MALFORMED, `UDP endpoint ${rawIp}:${wantPort} already associated`);
      }
      bindAssoc(a, rawIp, wantPort);
    } else {
      const list = pendingByIp.get(a.peerIp);
      if (list) list.push(a);
      else pendingByIp.set(a.peerIp, [a]);
    }
    stats.udpAssociations++;
    stats.udpActiveAssociations++;
    return a;
  }

  function bind(type: 'udp4' | 'udp6', host: string, port: number, label: string): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket({ type, lookup: literalLookup });
      const onErr = (e: Error): void => {
        s.close();
        reject(e);
      };
      s.once('error', onErr);
      s.bind({ address: host, port, exclusive: true }, () => {
        s.removeListener('error', onErr);
        s.on('message', onDatagram);
        s.on('error', (e) => log(label, '', 'udp', e));
        udp = s;
        udpAddr = s.address();
        resolve(udpAddr);
      });
    });
  }

  async function close(): Promise<void> {
    if (!udp) return;
    const s = udp;
    udp = null;
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  return {
    bind,
    get bound(): boolean {
      return udp !== null;
    },
    address(): net.AddressInfo | null {
      return udp ? udpAddr : null;
    },
    associate,
    release,
    close,
  };
}
