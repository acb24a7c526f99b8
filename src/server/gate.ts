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
 * - counts against maxPending: at the cap, the OLDEST pending connection is
 *   closed for each new one (a real client finishes its head within a round
 *   trip, so it is never the oldest for long; refusing new connections
 *   instead would let an attacker starve real clients).
 *
 * Every close here is socket.destroy(): no answer, as upstream's Go server
 * closes a request on a read timeout. Tunnels are never touched.
 */
import net from 'node:net';

export type EvictReason = 'timeout' | 'cap' | 'shed';

export interface GateOptions {
  headTimeoutMs: number;
  maxPending: number;
  /** Told about every connection the gate closes. */
  onEvict?: (reason: EvictReason, pending: number) => void;
}

interface Entry {
  /** The accepted TCP socket (its descriptor). */
  raw: net.Socket;
  /** The TLS socket over `raw` (wss), once known. */
  outer: net.Socket | null;
  timer: NodeJS.Timeout | null;
}

/** The TCP socket under a TLS socket (Node keeps it as `_parent`), else the socket itself. */
export function rawSocketOf(s: net.Socket): net.Socket {
  const parent = (s as net.Socket & { _parent?: unknown })._parent;
  return parent instanceof net.Socket ? parent : s;
}

export class ConnectionGate {
  /** Pending connections by their TCP socket, oldest accept first (Map keeps insertion order). */
  private readonly pending = new Map<net.Socket, Entry>();
  private closed = false;

  constructor(private readonly o: GateOptions) {}

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
      if (!this.evictOldest('cap')) break;
    }
    const e: Entry = { raw, outer: null, timer: null };
    this.pending.set(raw, e);
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

  /** The connection became a tunnel: no longer pending, never closed by the gate. */
  established(s: net.Socket): void {
    this.forget(rawSocketOf(s));
  }

  /** Close up to `n` of the oldest pending connections; returns how many. */
  shed(n: number): number {
    let done = 0;
    while (done < n && this.evictOldest('shed')) done++;
    return done;
  }

  /** Close every pending connection and refuse new ones (server shutdown). */
  closeAll(): void {
    this.closed = true;
    for (const e of [...this.pending.values()]) this.evict(e, null);
  }

  private evictOldest(reason: EvictReason): boolean {
    const first = this.pending.values().next();
    if (first.done) return false;
    this.evict(first.value, reason);
    return true;
  }

  private evict(e: Entry, reason: EvictReason | null): void {
    this.forget(e.raw);
    // destroying the TLS socket also destroys the TCP one; before the
    // handshake the TLS socket is not known, and destroying the TCP socket
    // ends the handshake (tlsClientError) and frees the descriptor.
    (e.outer ?? e.raw).destroy();
    if (e.outer) e.raw.destroy();
    if (reason) this.o.onEvict?.(reason, this.pending.size);
  }

  private forget(raw: net.Socket): void {
    const e = this.pending.get(raw);
    if (!e) return;
    if (e.timer) clearTimeout(e.timer);
    this.pending.delete(raw);
  }
}
