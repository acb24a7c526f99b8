/**
 * DNS messages for the --dialWithDNS resolver (RFC 1035 section 4.1), built and
 * read with the `dns-packet` package. No I/O here: bytes in, an answer or a
 * typed error out.
 *
 *   +--------+--------+--------+--------+--------+--------+
 *   | ID  2  | FLAGS 2| QD  2  | AN  2  | NS  2  | AR  2  |  header, 12 bytes
 *   +--------+--------+--------+--------+--------+--------+
 *   | question (QNAME QTYPE QCLASS) | answers | authorities | additionals |
 *
 * A reply is hostile input: it must be a response (QR set) to our id, with
 * exactly our one question, at most `maxSize` bytes. Only A/AAAA records owned
 * by the question's name, or by a name it reaches through at most
 * MAX_CNAME_CHAIN CNAME records in the same answer, are used.
 */
import type DnsPacket from 'dns-packet';
import { BrookError, ErrorCodes } from '../errors.js';
import { isIPv4, isIPv6 } from '../protocol/address.js';

/** dns-packet, loaded on first use (loadDnsCodec): only --dialWithDNS needs it, and it adds several MiB to a process. */
let loaded: typeof DnsPacket | null = null;

/** Load the message codec; the resolver awaits it before its first query. */
export async function loadDnsCodec(): Promise<void> {
  loaded ??= (await import('dns-packet')).default;
}

function codec(): typeof DnsPacket {
  if (!loaded) throw new BrookError(ErrorCodes.INTERNAL, 'DNS message codec used before loadDnsCodec()');
  return loaded;
}

export type RecordKind = 'A' | 'AAAA';

/** A DNS message header is 12 bytes. */
export const DNS_HEADER_SIZE = 12;
const ID_OFFSET = 0;
const FLAGS_OFFSET = 2;
const QDCOUNT_OFFSET = 4;
const FLAG_QR = 0x8000;
const FLAG_TC = 0x0200;
const RCODE_MASK = 0x000f;
/** The largest DNS message (TCP length prefix is a u16; UDP cannot carry more either). */
export const MAX_DNS_MESSAGE = 65_535;
/** What we announce with EDNS(0) for UDP answers (the DNS flag day 2020 value). */
export const EDNS_UDP_PAYLOAD = 1232;
/** CNAME records followed inside one answer, at most. */
export const MAX_CNAME_CHAIN = 8;
/** Longest domain name in presentation form without the trailing dot (RFC 1035: 255 octets on the wire). */
export const MAX_NAME_LENGTH = 253;
export const MAX_LABEL_LENGTH = 63;

export interface DnsAnswer {
  /** Addresses found (may be empty: NOERROR without data, or NXDOMAIN). */
  addresses: string[];
  /** TTL of the answer in seconds (lowest of the records used); for an empty answer, the negative TTL from the SOA if any. */
  ttl: number | null;
  nxdomain: boolean;
}

/**
 * Normalise and check a name to look up: lower case, no trailing dot, labels
 * of 1..63 bytes of letters, digits, '-' and '_' (what can be a host name).
 */
export function normalizeName(host: string): string {
  let name = host.toLowerCase();
  if (name.endsWith('.')) name = name.slice(0, -1);
  if (name.length === 0 || name.length > MAX_NAME_LENGTH) {
    throw new BrookError(ErrorCodes.DNS_FAILED, `not a domain name: ${JSON.stringify(host.slice(0, 64))}`);
  }
  for (const label of name.split('.')) {
    if (label.length === 0 || label.length > MAX_LABEL_LENGTH || !/^[a-z0-9_-]+$/.test(label)) {
      throw new BrookError(ErrorCodes.DNS_FAILED, `not a domain name: ${JSON.stringify(host.slice(0, 64))}`);
    }
  }
  return name;
}

/** A recursive query for `name` (already normalised). `edns` adds an OPT record announcing EDNS_UDP_PAYLOAD. */
export function encodeQuery(id: number, name: string, kind: RecordKind, edns: boolean): Buffer {
  const dnsPacket = codec();
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type: kind, name, class: 'IN' }],
    additionals: edns ? [{ type: 'OPT', name: '.', udpPayloadSize: EDNS_UDP_PAYLOAD, flags: 0, options: [] } as never] : [],
  });
}

/** The id of a message, or null when it is too short to have one. */
export function messageId(buf: Uint8Array): number | null {
  return buf.length < DNS_HEADER_SIZE ? null : (buf[ID_OFFSET]! << 8) | buf[ID_OFFSET + 1]!;
}

/** True when the header says the answer was truncated (TC): ask again over TCP. */
export function isTruncated(buf: Uint8Array): boolean {
  return buf.length >= DNS_HEADER_SIZE && (readU16(buf, FLAGS_OFFSET) & FLAG_TC) !== 0;
}

/**
 * Cheap check before any decoding: is this a response to query `id` with one
 * question? A datagram that fails it is not ours (dropped by the UDP reader, it
 * may be a spoof or a late answer to an earlier try).
 */
export function looksLikeReplyTo(buf: Uint8Array, id: number): boolean {
  if (buf.length < DNS_HEADER_SIZE || buf.length > MAX_DNS_MESSAGE) return false;
  const flags = readU16(buf, FLAGS_OFFSET);
  return readU16(buf, ID_OFFSET) === id && (flags & FLAG_QR) !== 0 && readU16(buf, QDCOUNT_OFFSET) === 1;
}

/**
 * Decode a reply to (id, name, kind). Throws DNS_FAILED for anything that is
 * not a usable answer: malformed, oversized, not ours, or an error rcode other
 * than NXDOMAIN (SERVFAIL, REFUSED, ...).
 */
export function parseReply(buf: Buffer, id: number, name: string, kind: RecordKind, maxSize = MAX_DNS_MESSAGE): DnsAnswer {
  if (buf.length > maxSize) throw dnsError(`answer of ${buf.length} bytes exceeds ${maxSize}`);
  if (!looksLikeReplyTo(buf, id)) throw dnsError('answer is not a reply to our query (id, QR or question count)');
  const rcode = readU16(buf, FLAGS_OFFSET) & RCODE_MASK;
  const dnsPacket = codec();
  let packet: DnsPacket.DecodedPacket;
  try {
    packet = dnsPacket.decode(buf);
  } catch (e) {
    throw dnsError(`malformed answer: ${(e as Error).message}`, e);
  }
  // dns-packet reads record data past the end of a short message without throwing
  if (dnsPacket.decode.bytes > buf.length) throw dnsError('malformed answer: records run past its end');
  const q = packet.questions?.[0];
  if (!q || q.type !== kind || q.class !== 'IN' || q.name.toLowerCase() !== name) {
    throw dnsError('answer is for another question');
  }
  const RCODE_NXDOMAIN = 3;
  if (rcode !== 0 && rcode !== RCODE_NXDOMAIN) throw dnsError(`server answered rcode ${rcode} for ${name} ${kind}`);
  const answers = packet.answers ?? [];
  // follow the CNAME chain from the question's name
  const owners = new Set([name]);
  let ttl: number | null = null;
  for (let hop = 0; hop < MAX_CNAME_CHAIN; hop++) {
    let added = false;
    for (const a of answers) {
      if (a.type === 'CNAME' && owners.has(a.name.toLowerCase())) {
        const target = String(a.data).toLowerCase();
        if (!owners.has(target)) {
          owners.add(target);
          ttl = minTtl(ttl, a.ttl);
          added = true;
        }
      }
    }
    if (!added) break;
  }
  const addresses: string[] = [];
  let addrTtl: number | null = null;
  for (const a of answers) {
    if (a.type === kind && owners.has(a.name.toLowerCase()) && (a.class ?? 'IN') === 'IN') {
      const ip = String(a.data);
      if (!(kind === 'A' ? isIPv4(ip) : isIPv6(ip))) throw dnsError(`malformed ${kind} record for ${name}`);
      addresses.push(ip);
      addrTtl = minTtl(addrTtl, a.ttl);
    }
  }
  if (addresses.length > 0) return { addresses, ttl: minTtl(ttl, addrTtl ?? undefined), nxdomain: false };
  // negative answer: RFC 2308 section 5, TTL = min(SOA TTL, SOA MINIMUM)
  let negTtl: number | null = null;
  for (const a of packet.authorities ?? []) {
    if (a.type === 'SOA') negTtl = minTtl(minTtl(negTtl, a.ttl), a.data.minimum);
  }
  return { addresses: [], ttl: negTtl, nxdomain: rcode === RCODE_NXDOMAIN };
}

function minTtl(a: number | null, b: number | undefined): number | null {
  if (b === undefined || !Number.isFinite(b)) return a;
  return a === null ? b : Math.min(a, b);
}

function readU16(buf: Uint8Array, o: number): number {
  return (buf[o]! << 8) | buf[o + 1]!;
}

function dnsError(message: string, cause?: unknown): BrookError {
  return new BrookError(ErrorCodes.DNS_FAILED, message, cause === undefined ? undefined : { cause });
}
