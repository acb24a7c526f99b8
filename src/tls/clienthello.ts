/**
 * A TLS ClientHello read from the bytes a client sends first, and its JA3 and
 * JA4 fingerprints (pure: no I/O). For the tests and bench/clienthello.ts, which
 * compare our ClientHello with Node's default one and with Chrome's
 * (protocol/tls-client.md).
 *
 *   record:    type u8 (22 handshake) | version u16 | length u16 | fragment
 *   handshake: type u8 (1 client_hello) | length u24 | body (may span records)
 *   body:      legacy_version u16 | random [32] | session_id <0..32> u8-len
 *              | cipher_suites <2..2^16-2> u16-len | compression <1..255> u8-len
 *              | extensions <0..2^16-1> u16-len: (type u16 | length u16 | data)*
 *
 * JA3 (Salesforce): "version,ciphers,extensions,groups,point formats", each list
 * of decimal values joined by "-", GREASE values left out, extensions in the
 * order sent; the fingerprint is its MD5 in hex.
 * JA4 (FoxIO, TLS over TCP): "t" + version ("13": the highest supported_versions
 * entry, else legacy_version) + "d" (server_name present) or "i" + ciphers (2
 * digits, at most 99) + extensions (2 digits) + first and last character of the
 * first ALPN value ("00" without ALPN); then "_" and the first 12 hex digits of
 * SHA-256 over the sorted cipher list ("002f,0035,..."), then "_" and those of
 * SHA-256 over the sorted extensions without server_name and ALPN, "_", and the
 * signature algorithms in the order sent. GREASE never counts.
 */
import { createHash } from 'node:crypto';
import { BrookError, ErrorCodes } from '../errors.js';

export const TLS_RECORD_HEADER_SIZE = 5;
export const TLS_CONTENT_HANDSHAKE = 22;
export const TLS_HANDSHAKE_CLIENT_HELLO = 1;
export const TLS_HANDSHAKE_HEADER_SIZE = 4;
export const TLS_RANDOM_SIZE = 32;
/** Largest ClientHello handshake message we read (a real one is a few KiB; Chrome's with ML-KEM ~1.8 KiB). */
export const MAX_CLIENT_HELLO_SIZE = 64 * 1024;
/** JA4 writes each count as 2 digits, capped here. */
export const JA4_MAX_COUNT = 99;
/** JA4 keeps this many hex digits of each SHA-256. */
export const JA4_HASH_DIGITS = 12;

/** Extension code points this file reads (IANA TLS ExtensionType). */
export const Ext = {
  SERVER_NAME: 0x0000,
  STATUS_REQUEST: 0x0005,
  SUPPORTED_GROUPS: 0x000a,
  EC_POINT_FORMATS: 0x000b,
  SIGNATURE_ALGORITHMS: 0x000d,
  ALPN: 0x0010,
  PADDING: 0x0015,
  SUPPORTED_VERSIONS: 0x002b,
  PRE_SHARED_KEY: 0x0029,
  KEY_SHARE: 0x0033,
} as const;

export interface TlsExtension {
  type: number;
  data: Buffer;
}

export interface ClientHello {
  /** The version in the first record's header (0x0301 for a TLS 1.3 client). */
  recordVersion: number;
  legacyVersion: number;
  random: Buffer;
  sessionId: Buffer;
  cipherSuites: number[];
  compressionMethods: number[];
  /** In the order sent. */
  extensions: TlsExtension[];
  serverName?: string;
  alpn: string[];
  supportedVersions: number[];
  groups: number[];
  pointFormats: number[];
  signatureAlgorithms: number[];
  /** Groups of the key shares sent. */
  keyShareGroups: number[];
  /** Bytes of the records that carried the ClientHello (headers included). */
  recordBytes: number;
}

/** GREASE (RFC 8701): 0x0a0a, 0x1a1a, ... 0xfafa. */
export function isGrease(v: number): boolean {
  return (v & 0x0f0f) === 0x0a0a && v >> 8 === (v & 0xff);
}

function invalid(why: string): BrookError {
  return new BrookError(ErrorCodes.CLIENT_HELLO_INVALID, `not a TLS ClientHello: ${why}`);
}

/** A cursor over a buffer whose reads throw CLIENT_HELLO_INVALID past the end. */
class Reader {
  private at = 0;
  constructor(private readonly b: Buffer, private readonly what: string) {}
  get left(): number {
    return this.b.length - this.at;
  }
  bytes(n: number): Buffer {
    if (n > this.left) throw invalid(`${this.what} truncated`);
    const out = this.b.subarray(this.at, this.at + n);
    this.at += n;
    return out;
  }
  u8(): number {
    return this.bytes(1)[0]!;
  }
  u16(): number {
    return this.bytes(2).readUInt16BE(0);
  }
  /** A vector with a length prefix of `size` bytes. */
  vector(size: 1 | 2): Reader {
    const n = size === 1 ? this.u8() : this.u16();
    return new Reader(this.bytes(n), this.what);
  }
  u16s(): number[] {
    const out: number[] = [];
    while (this.left > 0) out.push(this.u16());
    return out;
  }
  u8s(): number[] {
    return [...this.bytes(this.left)];
  }
}

/**
 * The length of the first TLS record in `b` (header included) once its header
 * is there, else null. Any content type: this is what a record splitter needs.
 */
export function firstRecordLength(b: Uint8Array): number | null {
  if (b.length < TLS_RECORD_HEADER_SIZE) return null;
  return TLS_RECORD_HEADER_SIZE + ((b[3]! << 8) | b[4]!);
}

/**
 * The ClientHello handshake message from the first bytes a client sent, or null
 * when more bytes are needed. Throws CLIENT_HELLO_INVALID when they are not one.
 */
export function extractClientHello(b: Uint8Array): { message: Buffer; recordVersion: number; recordBytes: number } | null {
  const parts: Buffer[] = [];
  let have = 0;
  let at = 0;
  let need = -1;
  let recordVersion = -1;
  while (need < 0 || have < need) {
    const len = firstRecordLength(b.subarray(at));
    if (len === null || at + len > b.length) return null;
    if (b[at] !== TLS_CONTENT_HANDSHAKE) throw invalid(`record type ${b[at]}, not handshake`);
    if (recordVersion < 0) recordVersion = (b[at + 1]! << 8) | b[at + 2]!;
    parts.push(Buffer.from(b.subarray(at + TLS_RECORD_HEADER_SIZE, at + len)));
    have += len - TLS_RECORD_HEADER_SIZE;
    at += len;
    if (need < 0 && have >= TLS_HANDSHAKE_HEADER_SIZE) {
      const head = Buffer.concat(parts);
      if (head[0] !== TLS_HANDSHAKE_CLIENT_HELLO) throw invalid(`handshake type ${head[0]}`);
      need = TLS_HANDSHAKE_HEADER_SIZE + head.readUIntBE(1, 3);
      if (need > MAX_CLIENT_HELLO_SIZE) throw invalid(`${need} bytes, over ${MAX_CLIENT_HELLO_SIZE}`);
    }
  }
  return { message: Buffer.concat(parts).subarray(0, need), recordVersion, recordBytes: at };
}

/** Parse the ClientHello in the first bytes a client sent (whole: throws when bytes are missing). */
export function parseClientHello(b: Uint8Array): ClientHello {
  const found = extractClientHello(b);
  if (!found) throw invalid('incomplete');
  return { ...parseBody(found.message.subarray(TLS_HANDSHAKE_HEADER_SIZE)), recordVersion: found.recordVersion, recordBytes: found.recordBytes };
}

function parseBody(body: Buffer): Omit<ClientHello, 'recordVersion' | 'recordBytes'> {
  const r = new Reader(body, 'ClientHello');
  const legacyVersion = r.u16();
  const random = Buffer.from(r.bytes(TLS_RANDOM_SIZE));
  const sid = r.vector(1);
  const sessionId = Buffer.from(sid.bytes(sid.left));
  const cipherSuites = r.vector(2).u16s();
  const compressionMethods = r.vector(1).u8s();
  const extensions: TlsExtension[] = [];
  if (r.left > 0) {
    const all = r.vector(2);
    while (all.left > 0) {
      const type = all.u16();
      const data = all.vector(2);
      extensions.push({ type, data: Buffer.from(data.bytes(data.left)) });
    }
  }
  if (r.left > 0) throw invalid(`${r.left} bytes after the extensions`);
  return { legacyVersion, random, sessionId, cipherSuites, compressionMethods, extensions, ...readExtensions(extensions) };
}

type KnownExtensions = Pick<ClientHello, 'serverName' | 'alpn' | 'supportedVersions' | 'groups' | 'pointFormats' | 'signatureAlgorithms' | 'keyShareGroups'>;

function readExtensions(extensions: TlsExtension[]): KnownExtensions {
  const out: KnownExtensions = { alpn: [], supportedVersions: [], groups: [], pointFormats: [], signatureAlgorithms: [], keyShareGroups: [] };
  for (const e of extensions) {
    const r = new Reader(e.data, `extension ${e.type}`);
    switch (e.type) {
      case Ext.SERVER_NAME: {
        const list = r.vector(2);
        while (list.left > 0) {
          const type = list.u8();
          const name = list.vector(2);
          if (type === 0) out.serverName = name.bytes(name.left).toString('latin1');
        }
        break;
      }
      case Ext.ALPN: {
        const list = r.vector(2);
        while (list.left > 0) {
          const p = list.vector(1);
          out.alpn.push(p.bytes(p.left).toString('latin1'));
        }
        break;
      }
      case Ext.SUPPORTED_VERSIONS:
        out.supportedVersions = r.vector(1).u16s();
        break;
      case Ext.SUPPORTED_GROUPS:
        out.groups = r.vector(2).u16s();
        break;
      case Ext.EC_POINT_FORMATS:
        out.pointFormats = r.vector(1).u8s();
        break;
      case Ext.SIGNATURE_ALGORITHMS:
        out.signatureAlgorithms = r.vector(2).u16s();
        break;
      case Ext.KEY_SHARE: {
        const list = r.vector(2);
        while (list.left > 0) {
          out.keyShareGroups.push(list.u16());
          list.vector(2);
        }
        break;
      }
    }
  }
  return out;
}

const noGrease = (l: number[]): number[] => l.filter((v) => !isGrease(v));

/** The JA3 text: "771,4865-4866-...,0-11-...,29-23-24,0". */
export function ja3String(h: ClientHello): string {
  return [
    String(h.legacyVersion),
    noGrease(h.cipherSuites).join('-'),
    noGrease(h.extensions.map((e) => e.type)).join('-'),
    noGrease(h.groups).join('-'),
    h.pointFormats.join('-'),
  ].join(',');
}

/** JA3: the MD5 of ja3String, in hex. */
export function ja3(h: ClientHello): string {
  return createHash('md5').update(ja3String(h)).digest('hex');
}

const JA4_VERSIONS: Record<number, string> = { 0x0304: '13', 0x0303: '12', 0x0302: '11', 0x0301: '10', 0x0300: 's3', 0x0002: 's2' };

const hex4 = (v: number): string => v.toString(16).padStart(4, '0');
const count2 = (n: number): string => String(Math.min(n, JA4_MAX_COUNT)).padStart(2, '0');
const isAlnum = (c: string): boolean => /^[A-Za-z0-9]$/.test(c);

function ja4Alpn(alpn: string[]): string {
  const first = alpn[0];
  if (first === undefined || first.length === 0) return '00';
  const a = first[0]!;
  const z = first[first.length - 1]!;
  if (isAlnum(a) && isAlnum(z)) return a + z;
  const hex = Buffer.from(first, 'latin1').toString('hex');
  return hex[0]! + hex[hex.length - 1]!;
}

function ja4Hash(text: string): string {
  return text === '' ? '0'.repeat(JA4_HASH_DIGITS) : createHash('sha256').update(text).digest('hex').slice(0, JA4_HASH_DIGITS);
}

/** The three parts of JA4 before hashing (JA4_r): a, the sorted ciphers, the sorted extensions "_" sigalgs. */
export function ja4Parts(h: ClientHello): { a: string; ciphers: string; extensions: string } {
  const versions = noGrease(h.supportedVersions);
  const version = versions.length > 0 ? Math.max(...versions) : h.legacyVersion;
  const ciphers = noGrease(h.cipherSuites);
  const exts = noGrease(h.extensions.map((e) => e.type));
  const a = `t${JA4_VERSIONS[version] ?? '00'}${h.serverName !== undefined ? 'd' : 'i'}${count2(ciphers.length)}${count2(exts.length)}${ja4Alpn(h.alpn)}`;
  const sortedCiphers = ciphers.map(hex4).sort().join(',');
  const sortedExts = exts.filter((t) => t !== Ext.SERVER_NAME && t !== Ext.ALPN).map(hex4).sort().join(',');
  const sigalgs = noGrease(h.signatureAlgorithms).map(hex4).join(',');
  return { a, ciphers: sortedCiphers, extensions: sigalgs === '' ? sortedExts : `${sortedExts}_${sigalgs}` };
}

/** JA4 of a ClientHello over TCP: "t13d1516h1_8daaf6152771_02713d6af862". */
export function ja4(h: ClientHello): string {
  const p = ja4Parts(h);
  return `${p.a}_${ja4Hash(p.ciphers)}_${ja4Hash(p.extensions)}`;
}
