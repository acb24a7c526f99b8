/**
 * TLS session resumption for wssclient: the last session (TLS 1.3 ticket, or
 * TLS 1.2 session) a server gave us, offered on the next connection to the
 * same server (tls.connect's `session`), so that handshake skips the
 * certificate exchange and its verification.
 *
 * Keyed by everything that decides whether a connection is the same server
 * to us: the address dialled, the name sent as SNI and checked in the
 * certificate, how the certificate is checked (--insecure, --ca), and the
 * ClientHello's fingerprint (tlsfingerprint: another cipher list). A
 * session obtained under one setting is never offered under another.
 * Bounded: at most `maxServers` keys, the least recently used go first; one
 * session per key (the newest; a server that refuses it costs one full
 * handshake, which brings a new one).
 */
import { createHash } from 'node:crypto';
import type { ServerEndpoint } from './dial.js';

/** Servers remembered by default (a client talks to one). */
export const DEFAULT_TLS_SESSION_SERVERS = 16;

export class TlsSessionCache {
  private readonly sessions = new Map<string, Buffer>();
  /** Sessions offered so far (for tests and stats). */
  offered = 0;

  constructor(private readonly maxServers = DEFAULT_TLS_SESSION_SERVERS) {}

  /** The cache key of an endpoint. */
  keyOf(e: ServerEndpoint): string {
    const host = e.address?.host ?? e.hostname;
    const port = e.address?.port ?? e.port;
    const ca = e.ca ? createHash('sha256').update(e.ca).digest('hex').slice(0, 16) : '';
    return `${host}|${port}|${e.hostname}|${e.insecure ? 'insecure' : 'verify'}|${ca}|${e.tlsFingerprint ?? ''}`;
  }

  get(key: string): Buffer | undefined {
    const s = this.sessions.get(key);
    if (!s) return undefined;
    // most recently used last
    this.sessions.delete(key);
    this.sessions.set(key, s);
    this.offered++;
    return s;
  }

  set(key: string, session: Buffer): void {
    this.sessions.delete(key);
    this.sessions.set(key, session);
    while (this.sessions.size > this.maxServers) {
      const oldest = this.sessions.keys().next().value as string;
      this.sessions.delete(oldest);
    }
  }

  get size(): number {
    return this.sessions.size;
  }
}
