/**
 * Prewarmed tunnels (client): a few connections to the server kept ready
 * past the 101, so a new tunnel (SOCKS5 CONNECT, HTTP proxy request, UDP
 * flow) only has to send its preamble. protocol/prewarm.md has what the
 * server sees.
 *
 *   connect (TCP, TLS) -> upgrade -> 101 -> idle in the pool (next tick:
 *   client nonce + key made, `prepare`) -> take(): startTunnel() builds the
 *   first fragment with the time now, seals and writes it (src/client/dial.ts)
 *
 * Rules:
 * - No preamble is made ahead: the pool holds upgraded connections. With
 *   `prepare`, each idle connection gets its own client nonce, key and AES
 *   context on the tick after it joins (prepareClientKey, src/protocol/session.ts),
 *   handed out with it and dropped with it, never moved to another one; the
 *   header time is read at take(). Taken before that tick: made at take().
 * - At most `size` idle connections, and at most `size` minus the idle ones
 *   being opened.
 * - An idle connection is read (flowing) so that the server's FIN or RST, or
 *   any byte (a Brook server sends nothing before the client's preamble), is
 *   seen: such a connection is dropped and replaced, never handed out. At
 *   take() the connection is checked again (destroyed, ended, reset while the
 *   event is still queued, older than maxIdleMs).
 * - maxIdleMs after its 101 an idle connection is retired (closed with an RST
 *   over TCP, a plain close over TLS) and replaced: servers close silent
 *   upgraded connections (ours after --probeTimeout, 30 s by default).
 * - Refill in the background after every drop and after every take, but not in
 *   the take's own tick: after a hand-out the pool refills once that tunnel is
 *   under way (settled(): its first answer reached the application), or
 *   refillDeferMs after the hand-out, whichever comes first, so the connect, the
 *   upgrade and (wss) the TLS handshake do not compete for the CPU with the
 *   tunnel being started, on either end. The hand-out that leaves the pool
 *   empty refills at once. A failed
 *   connect, or a connection the server closes within MIN_HEALTHY_IDLE_MS,
 *   backs off: backoffMinMs doubling up to backoffMaxMs, one attempt at a
 *   time, until a connect succeeds. take() never waits: an empty pool means
 *   the caller dials as without a pool.
 * - Dormant: with no take() for dormantMs the pool is not refilled (a client
 *   left alone stops opening connections); the next take() wakes it.
 * - close() aborts connects under way and closes every idle connection.
 */
import type { Socket } from 'node:net';
import { endWasReset, resetSocket } from '../net/reset.js';
import type { PreparedClientKey } from '../protocol/session.js';
import type { UpgradedConnection } from './dial.js';

/** Idle connections kept by default (per client process: each --workers worker has its own pool). */
export const DEFAULT_POOL_SIZE = 4;
/** Default maximum idle age (ms): well under the server's --probeTimeout (30 s). */
export const DEFAULT_POOL_MAX_IDLE_MS = 15_000;
/** First wait after a failed connect (ms), doubled per failure... */
export const DEFAULT_POOL_BACKOFF_MIN_MS = 250;
/** ...up to this (ms). */
export const DEFAULT_POOL_BACKOFF_MAX_MS = 30_000;
/** No take() for this long (ms): stop refilling until the next one. */
export const DEFAULT_POOL_DORMANT_MS = 5 * 60_000;
/** A connection the server closes younger than this (ms) counts as a failed connect (backoff). */
export const MIN_HEALTHY_IDLE_MS = 500;
/** A hand-out's replacement waits for its tunnel's first answer at most this long (ms). */
export const DEFAULT_POOL_REFILL_DEFER_MS = 2;

export interface PoolOptions {
  /** Idle connections to keep (> 0). */
  size: number;
  maxIdleMs?: number;
  /** Open one upgraded connection; abort when the signal fires. */
  connect: (signal: AbortSignal) => Promise<UpgradedConnection>;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  dormantMs?: number;
  /** See DEFAULT_POOL_REFILL_DEFER_MS (0: refill in the take's own tick). */
  refillDeferMs?: number;
  /**
   * The client key of the tunnel an idle connection will carry, made on the tick after it
   * joins (prepareClientKey with the tunnels' session options). Absent: made at take().
   */
  prepare?: () => PreparedClientKey | null;
  now?: () => number;
}

/** A connection handed out by take(). */
export interface PooledConnection extends UpgradedConnection {
  /** The tunnel is under way (its first answer arrived, or it is over): its replacement may open now. Once; later calls do nothing. */
  settled(): void;
}

interface Idle {
  socket: Socket;
  /** When it joined the pool (its 101). */
  since: number;
  /** Its tunnel's client key, once made (PoolOptions.prepare). */
  prepared: PreparedClientKey | null;
  /** Remove our listeners and timers; pause. */
  detach(): void;
}

export interface PoolStats {
  /** Tunnels that took a pooled connection. */
  hits: number;
  /** Tunnels that found the pool empty. */
  misses: number;
  /** Connections opened into the pool. */
  opened: number;
  /** Connects that failed. */
  failed: number;
  /** Connections retired at maxIdleMs. */
  expired: number;
  /** Connections the server closed (or wrote to) while idle. */
  lost: number;
}

export class TunnelPool {
  private readonly idle: Idle[] = [];
  private connecting = 0;
  /** Failures since the last good connect (0: no backoff). */
  private failures = 0;
  private backoff: NodeJS.Timeout | null = null;
  private closed = false;
  private lastUse: number;
  private readonly abort = new AbortController();
  readonly stats: PoolStats = { hits: 0, misses: 0, opened: 0, failed: 0, expired: 0, lost: 0 };
  private readonly now: () => number;
  private readonly maxIdleMs: number;

  constructor(private readonly o: PoolOptions) {
    if (!Number.isInteger(o.size) || o.size < 1) throw new RangeError(`pool size must be a positive whole number, got ${o.size}`);
    this.now = o.now ?? Date.now;
    this.maxIdleMs = o.maxIdleMs ?? DEFAULT_POOL_MAX_IDLE_MS;
    this.lastUse = this.now();
  }

  /** Begin filling. */
  start(): void {
    this.lastUse = this.now();
    this.fill();
  }

  /** Idle connections ready now. */
  get size(): number {
    return this.idle.length;
  }

  /** Connects under way. */
  get pending(): number {
    return this.connecting;
  }

  /** A live upgraded connection (paused, our listeners removed), or null: dial as without a pool. */
  take(): PooledConnection | null {
    if (this.closed) return null;
    this.lastUse = this.now();
    let got: Idle | undefined;
    while ((got = this.idle.shift())) {
      got.detach();
      if (this.usable(got)) break;
      this.stats.lost++;
      got.socket.destroy();
    }
    if (!got) {
      this.stats.misses++;
      this.fill();
      return null;
    }
    this.stats.hits++;
    const deferMs = this.o.refillDeferMs ?? DEFAULT_POOL_REFILL_DEFER_MS;
    let settled: () => void = () => undefined;
    if (deferMs <= 0 || this.idle.length === 0) {
      this.fill();
    } else {
      let pending = true;
      const timer = setTimeout(() => settled(), deferMs);
      timer.unref();
      settled = () => {
        if (!pending) return;
        pending = false;
        clearTimeout(timer);
        this.fill();
      };
    }
    return { socket: got.socket, leftover: Buffer.alloc(0), prepared: got.prepared ?? undefined, settled };
  }

  private usable(c: Idle): boolean {
    const s = c.socket;
    if (s.destroyed || s.readableEnded || !s.writable) return false;
    if (this.now() - c.since >= this.maxIdleMs) return false;
    // a reset the kernel has and the event loop has not delivered yet
    return !endWasReset(s);
  }

  private fill(): void {
    if (this.closed || this.backoff) return;
    if (this.now() - this.lastUse > (this.o.dormantMs ?? DEFAULT_POOL_DORMANT_MS)) return;
    let want = this.o.size - this.idle.length - this.connecting;
    // backing off: one attempt at a time until one succeeds
    if (this.failures > 0) want = Math.min(want, this.connecting === 0 ? 1 : 0);
    for (let i = 0; i < want; i++) this.open();
  }

  private open(): void {
    this.connecting++;
    this.o.connect(this.abort.signal).then(
      (u) => {
        this.connecting--;
        if (this.closed || this.idle.length >= this.o.size) {
          u.socket.destroy();
          return;
        }
        this.stats.opened++;
        // a server that speaks before our preamble is not one a tunnel can use
        if (u.leftover.length > 0) {
          this.stats.lost++;
          u.socket.destroy();
          this.failed();
          return;
        }
        this.failures = 0;
        this.park(u.socket);
        this.fill();
      },
      () => {
        this.connecting--;
        if (this.closed) return;
        this.stats.failed++;
        this.failed();
      },
    );
  }

  /** One more failure: wait (doubling, bounded), then try again. */
  private failed(): void {
    this.failures++;
    if (this.closed || this.backoff) return;
    const min = this.o.backoffMinMs ?? DEFAULT_POOL_BACKOFF_MIN_MS;
    const max = this.o.backoffMaxMs ?? DEFAULT_POOL_BACKOFF_MAX_MS;
    const wait = Math.min(max, min * 2 ** Math.min(this.failures - 1, 30));
    this.backoff = setTimeout(() => {
      this.backoff = null;
      this.fill();
    }, wait);
    this.backoff.unref();
  }

  private park(socket: Socket): void {
    const since = this.now();
    const entry: Idle = { socket, since, prepared: null, detach: () => undefined };
    const drop = (why: 'expired' | 'lost') => {
      const i = this.idle.indexOf(entry);
      if (i < 0) return;
      this.idle.splice(i, 1);
      entry.detach();
      if (why === 'expired') {
        this.stats.expired++;
        // over TCP an RST frees the server's side at once; over TLS a plain close (src/net/reset.ts)
        resetSocket(socket);
      } else {
        this.stats.lost++;
        socket.destroy();
        if (this.now() - since < MIN_HEALTHY_IDLE_MS) {
          this.failed();
          return;
        }
      }
      this.fill();
    };
    const lost = () => drop('lost');
    const timer = setTimeout(() => drop('expired'), this.maxIdleMs);
    timer.unref();
    const prepare = this.o.prepare;
    // not in the tick of the 101: that one may be a tunnel's
    const keying = prepare ? setImmediate(() => this.prepareKey(entry, prepare)) : null;
    socket.on('data', lost);
    socket.on('end', lost);
    socket.on('error', lost);
    socket.on('close', lost);
    entry.detach = () => {
      clearTimeout(timer);
      if (keying) clearImmediate(keying);
      socket.off('data', lost);
      socket.off('end', lost);
      socket.off('error', lost);
      socket.off('close', lost);
      socket.pause();
    };
    this.idle.push(entry);
    socket.resume();
  }

  /** Make an idle connection's client key; a failure leaves it to take() (where it fails the tunnel, counted there). */
  private prepareKey(entry: Idle, prepare: () => PreparedClientKey | null): void {
    if (this.closed || !this.idle.includes(entry)) return;
    try {
      entry.prepared = prepare();
    } catch {
      entry.prepared = null;
    }
  }

  /** Stop: abort connects under way, close every idle connection; take() returns null from now on. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.backoff) clearTimeout(this.backoff);
    this.backoff = null;
    this.abort.abort();
    for (const c of this.idle.splice(0)) {
      c.detach();
      resetSocket(c.socket);
    }
  }
}
