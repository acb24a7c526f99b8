/**
 * The front door's connection bookkeeping (protocol/websocket-upgrade.md,
 * "Connections that are not tunnels yet").
 *
 * Every accepted TCP connection is PENDING from its accept until serveTunnel
 * accepts its Brook header (TunnelEvents.onEstablished): during the TLS
 * handshake (wss), while its request head arrives, while a refused request
 * lingers, on a keep-alive HTTP connection between requests, and after the
 * 101 while the Brook handshake runs. A pending connection:
 *
 * - holds at most one deadline (one timer): the head (and the TLS handshake)
 *   must be complete and answered within headTimeoutMs of the accept; each
 *   answer on a keep-alive connection starts the same bound for the next
 *   request; a refused request is read and discarded at most headTimeoutMs
 *   after its answer. An upgraded connection in its Brook handshake has no
 *   deadline here: serveTunnel bounds it (probeTimeoutMs).
 * - counts against maxPending, charged to its source (src/server/sources.ts:
 *   an IPv4 /24 or an IPv6 /64; the TCP peer at accept, then the client the
 *   server believes once it knows it: charge()). At the cap one pending
 *   connection is closed for each new one, chosen among the sources that are
 *   not known, or, when every pending connection comes from a known source
 *   (one that opened a tunnel in the last KNOWN_SOURCE_TTL_MS, i.e. whose
 *   client has the password), among those: the oldest connection of the
 *   source holding most when that source holds more than sourceAllowance
 *   (a client's prewarmed pool and a few handshakes), else the oldest
 *   connection. So a flood from one source (or a few) sheds itself, a flood
 *   from many sources sheds itself before any client that has had a tunnel
 *   lately, and a real client keeps its handshake however long its round
 *   trip is; a new client among many flooding sources is where it was before
 *   (the oldest goes: its handshake lives about maxPending / flood rate).
 *   Refusing new connections instead would let an attacker starve real
 *   clients. Descriptor shedding (shed()) picks the same way.
 *
 * Every close here is socket.destroy(): no answer, as upstream's Go server
 * closes a request on a read timeout. Tunnels are never touched.
 */
import net from 'node:net';
import { KnownSources, type KnownSourcesOptions, SourceLedger, sourceOf } from './sources.js';

export type EvictReason = 'timeout' | 'cap' | 'shed';

export interface GateOptions {
  headTimeoutMs: number;
  maxPending: number;
  /** Told about every connection the gate closes: why, how many stay pending, the closed one's source and whether it is known. */
  onEvict?: (reason: EvictReason, pending: number, source: string, known: boolean) => void;
  /** Which sources count as known (limits and clock; tests inject them). */
  known?: KnownSourcesOptions;
  /** Pending connections a source may hold before the cap takes from it first (default DEFAULT_SOURCE_ALLOWANCE). */
  sourceAllowance?: number;
}

/**
 * A source holding more pending connections than this is shed first (oldest of the heaviest): above a
 * client's prewarmed pool (4 by default) and a few handshakes at once.
 */
export const DEFAULT_SOURCE_ALLOWANCE = 8;

interface Entry {
  /** The accepted TCP socket (its descriptor). */
  raw: net.Socket;
  /** The TLS socket over `raw` (wss), once known. */
  outer: net.Socket | null;
  timer: NodeJS.Timeout | null;
  /** The ledger it is charged in (strangers or regulars). */
  ledger: SourceLedger<Entry>;
}

/** The TCP socket under a TLS socket (Node keeps it as `_parent`), else the socket itself. */
export function rawSocketOf(s: net.Socket): net.Socket {
  const parent = (s as net.Socket & { _parent?: unknown })._parent;
  return parent instanceof net.Socket ? parent : s;
}

export class ConnectionGate {
  /** Pending connections by their TCP socket. */
  private readonly pending = new Map<net.Socket, Entry>();
  /** The same entries by source, for the cap and for shedding: sources not known, then known ones. */
  private readonly strangers = new SourceLedger<Entry>();
  private readonly regulars = new SourceLedger<Entry>();
  private readonly known: KnownSources;
  private closed = false;

  constructor(private readonly o: GateOptions) {
    this.known = new KnownSources(o.known);
  }

  get size(): number {
    return this.pending.size;
  }

  get headTimeoutMs(): number {
    return this.o.headTimeoutMs;
  }

  /** A new TCP connection (net.Server 'connection'): pending, with the head deadline. */
  admit(raw: net.Socket): void {
    if (this.closed) {
      raw.destroy();
      return;
    }
    while (this.pending.size >= this.o.maxPending) {
      if (!this.evictNext('cap')) break;
    }
    const e: Entry = { raw, outer: null, timer: null, ledger: this.strangers };
    this.pending.set(raw, e);
    this.chargeTo(e, sourceOf(raw.remoteAddress));
    this.arm(raw, this.o.headTimeoutMs);
    raw.once('close', () => this.forget(raw));
  }

  /** The TLS socket of a pending connection ('secureConnection' or the upgrade). */
  attach(outer: net.Socket): void {
    const raw = rawSocketOf(outer);
    const e = this.pending.get(raw);
    if (!e || raw === outer || e.outer) return;
    e.outer = outer;
    outer.once('close', () => this.forget(raw));
  }

  /**
   * Charge a pending connection to the client the server believes it comes from (the PROXY header's
   * source, a trusted X-Forwarded-For) instead of its TCP peer; no change when the source is the same.
   */
  charge(s: net.Socket, address: string): void {
    const e = this.pending.get(rawSocketOf(s));
    if (e) this.chargeTo(e, sourceOf(address));
  }

  /** Replace the connection's deadline: close it in `ms` (null: no deadline). */
  arm(s: net.Socket, ms: number | null): void {
    const e = this.pending.get(rawSocketOf(s));
    if (!e) return;
    if (e.timer) clearTimeout(e.timer);
    e.timer = null;
    if (ms === null) return;
    e.timer = setTimeout(() => this.evict(e, 'timeout'), ms);
    e.timer.unref();
  }

  /** The connection became a tunnel: no longer pending, never closed by the gate; its source is known from now on. */
  established(s: net.Socket): void {
    const e = this.pending.get(rawSocketOf(s));
    const key = e?.ledger.keyOf(e);
    if (key !== undefined) this.known.add(key);
    this.forget(rawSocketOf(s));
  }

  /** Close up to `n` pending connections, chosen as at the cap; returns how many. */
  shed(n: number): number {
    let done = 0;
    while (done < n && this.evictNext('shed')) done++;
    return done;
  }

  /** Close every pending connection and refuse new ones (server shutdown). */
  closeAll(): void {
    this.closed = true;
    for (const e of [...this.pending.values()]) this.evict(e, null);
  }

  private chargeTo(e: Entry, key: string): void {
    const ledger = this.known.has(key) ? this.regulars : this.strangers;
    if (ledger !== e.ledger) e.ledger.delete(e);
    e.ledger = ledger;
    ledger.add(e, key);
  }

  /** The connection the cap (or shedding) closes next from `l`: see the top of this file. */
  private victimIn(l: SourceLedger<Entry>): Entry | undefined {
    return l.maxCount > (this.o.sourceAllowance ?? DEFAULT_SOURCE_ALLOWANCE) ? l.heaviestOldest() : l.oldest();
  }

  private evictNext(reason: EvictReason): boolean {
    const e = this.victimIn(this.strangers) ?? this.victimIn(this.regulars);
    if (!e) return false;
    this.evict(e, reason);
    return true;
  }

  private evict(e: Entry, reason: EvictReason | null): void {
    const source = e.ledger.keyOf(e) ?? '';
    const known = e.ledger === this.regulars;
    this.forget(e.raw);
    // destroying the TLS socket also destroys the TCP one; before the
    // handshake the TLS socket is not known, and destroying the TCP socket
    // ends the handshake (tlsClientError) and frees the descriptor.
    (e.outer ?? e.raw).destroy();
    if (e.outer) e.raw.destroy();
    if (reason) this.o.onEvict?.(reason, this.pending.size, source, known);
  }

  private forget(raw: net.Socket): void {
    const e = this.pending.get(raw);
    if (!e) return;
    if (e.timer) clearTimeout(e.timer);
    this.pending.delete(raw);
    e.ledger.delete(e);
  }
}
