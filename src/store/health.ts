/**
 * The store's health (up / degraded / down) and its log lines: at most one line
 * per interval, whatever the store does (a Redis flapping every 10 ms writes one
 * line per interval, with the number of changes folded into it). While the state
 * is not up, one line per interval says so again, with how many decisions were
 * taken locally meanwhile (protocol/fleet.md#failures):
 *
 *   {"msg":"store","store":"redis://10.0.0.5:6379","state":"down","reason":"connect ECONNREFUSED ...","changes":3,"fallbacks":{"replay":120}}
 *
 * Pure of I/O: the logger, clock and metrics are injected.
 */
import type { Logger } from '../log.js';
import { STORE_FALLBACKS, type StoreFallback, type StoreMetrics, type StoreState } from './metrics.js';

/** Default: one state line per 10 s at most. */
export const DEFAULT_STORE_LOG_INTERVAL_MS = 10_000;
/** A reason is a Redis or socket error's first line; longer ones are cut. */
const MAX_REASON_CHARS = 200;

export interface StoreHealthOptions {
  /** The store's URL without a password. */
  display: string;
  log: Logger;
  metrics: StoreMetrics;
  logIntervalMs?: number;
  now?: () => number;
  /** Called on every change (after the metric). */
  onChange?: (state: StoreState, prev: StoreState) => void;
}

export class StoreHealth {
  private current: StoreState = 'down';
  private reason: string | undefined = 'not connected yet';
  private lastLogged: StoreState | null = null;
  private lastLogAt = -Infinity;
  /** State changes since the last line. */
  private changes = 0;
  private readonly fallbacks = new Map<StoreFallback, number>();
  private late = 0;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly intervalMs: number;
  private readonly now: () => number;

  constructor(private readonly o: StoreHealthOptions) {
    this.intervalMs = o.logIntervalMs ?? DEFAULT_STORE_LOG_INTERVAL_MS;
    this.now = o.now ?? Date.now;
    o.metrics.state('down');
    this.arm();
  }

  get state(): StoreState {
    return this.current;
  }

  /** Why the state is not up (the last failure's first line), or undefined. */
  get why(): string | undefined {
    return this.current === 'up' ? undefined : this.reason;
  }

  /** Move to `next` (nothing when it is the state already; the reason of the last failure is kept for the line). */
  set(next: StoreState, reason?: string): void {
    if (reason !== undefined) this.reason = reason.split('\n')[0]!.slice(0, MAX_REASON_CHARS);
    if (this.closed) return;
    if (next === this.current) {
      // the first outcome is said at once (a store down at start is seen in the first second)
      if (this.lastLogged === null && reason !== undefined) this.write();
      return;
    }
    const prev = this.current;
    this.current = next;
    if (next === 'up') this.reason = undefined;
    this.changes++;
    this.o.metrics.state(next);
    this.o.onChange?.(next, prev);
    if (this.now() - this.lastLogAt >= this.intervalMs) this.write();
    else this.arm();
  }

  /** A decision taken without the store (counted in the metric and in the next line). */
  fellBack(what: StoreFallback): void {
    this.o.metrics.fallback(what);
    this.fallbacks.set(what, (this.fallbacks.get(what) ?? 0) + 1);
  }

  /** Nonces found held by another instance when pushed after an outage (replays that got through). */
  lateReplays(n: number): void {
    this.late += n;
    this.arm();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  /** One timer while there is something to say (changes not logged yet, or a state other than up), due when the interval allows a line. */
  private arm(): void {
    if (this.timer || this.closed) return;
    const due = this.lastLogAt + this.intervalMs - this.now();
    this.timer = setTimeout(
      () => {
        this.timer = null;
        this.tick();
      },
      Number.isFinite(due) ? Math.max(0, due) : this.intervalMs,
    );
    this.timer.unref();
  }

  private tick(): void {
    if (this.changes === 0 && this.current === 'up' && this.late === 0) return;
    if (this.now() - this.lastLogAt >= this.intervalMs) this.write();
    else this.arm();
  }

  private write(): void {
    const line: Record<string, unknown> = { msg: 'store', store: this.o.display, state: this.current };
    if (this.current !== 'up' && this.reason !== undefined) line['reason'] = this.reason;
    if (this.changes > 1) line['changes'] = this.changes;
    if (this.fallbacks.size > 0) {
      const f: Record<string, number> = {};
      for (const what of STORE_FALLBACKS) {
        const n = this.fallbacks.get(what);
        if (n) f[what] = n;
      }
      line['fallbacks'] = f;
      this.fallbacks.clear();
    }
    if (this.late > 0) line['lateReplays'] = this.late;
    this.late = 0;
    this.o.log(line);
    this.lastLogged = this.current;
    this.lastLogAt = this.now();
    this.changes = 0;
    if (this.current !== 'up') this.arm();
  }
}
