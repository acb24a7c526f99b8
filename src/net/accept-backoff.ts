/**
 * The client's listeners (SOCKS5, --http) out of descriptors (README "Hardening"; the server side is
 * protocol/websocket-upgrade.md, "Connections that are not tunnels yet").
 *
 * When a dial to the server fails for lack of descriptors (EMFILE/ENFILE), every connection accepted
 * after it would take a descriptor that a dial needs, and fail the same way. So the listeners stop
 * taking new work: a connection accepted while paused is closed at once, before anything is read
 * (Node cannot leave connections in the kernel's backlog: it accepts them, as libuv's own EMFILE
 * trick does, so closing is the fastest way to give the descriptor back). Connections accepted
 * before keep theirs, and their dials (retry()) wait instead of failing: while paused, a probe (open
 * and close /dev/null) runs every probeIntervalMs; each probe that fails gives up the newest quarter
 * of the waiting dials, rounded down (they fail as they would have, and their connections give their
 * descriptors back), the first that succeeds resumes accepting and tries every waiting dial again (one that runs
 * out again pauses again). A dial waits at most maxWaitMs in all. So a burst at the descriptor limit
 * ends with as many working tunnels as the descriptors allow, not with only those whose dial came
 * before the limit. One line when accepting stops, one when it resumes (with how many connections
 * were closed at accept and how many waiting dials were given up), whatever happened in between.
 */
import { BrookError, ErrorCodes } from '../errors.js';
import type { Logger } from '../log.js';
import { isExhaustion, probeDescriptor } from './descriptor-probe.js';

/** How often a paused listener checks whether a descriptor is free again. */
export const ACCEPT_PROBE_INTERVAL_MS = 100;
/** How long a dial may wait for descriptors in all (below the SOCKS5 handshake's 10 s). */
export const DIAL_MAX_WAIT_MS = 5_000;
/** Each failed probe gives up 1/WAIT_SHED_DIVISOR of the waiting dials, the newest, rounded down (fewer wait for their deadline). */
export const WAIT_SHED_DIVISOR = 4;

interface Waiter {
  resume: () => void;
  giveUp: () => void;
  deadline: number;
}

export interface AcceptBackoffOptions {
  log?: Logger;
  probeIntervalMs?: number;
  maxWaitMs?: number;
  /** Throws like fs.openSync when no descriptor is free (tests inject one). */
  probe?: () => void;
  now?: () => number;
}

export class AcceptBackoff {
  private timer: NodeJS.Timeout | null = null;
  /** Connections closed at accept during the current pause, and waiting dials given up. */
  private dropped = 0;
  private gaveUp = 0;
  private closed = false;
  /** Dials waiting for descriptors, oldest first. */
  private waiters: Waiter[] = [];
  private readonly probe: () => void;
  private readonly now: () => number;

  constructor(private readonly o: AcceptBackoffOptions = {}) {
    this.probe = o.probe ?? probeDescriptor;
    this.now = o.now ?? Date.now;
  }

  get paused(): boolean {
    return this.timer !== null;
  }

  /** A dial failed: when for lack of descriptors, stop accepting until a descriptor is free again. */
  dialFailed(err: unknown): void {
    if (this.closed || this.timer || !isExhaustion(err)) return;
    this.dropped = 0;
    this.gaveUp = 0;
    const e = new BrookError(ErrorCodes.OUT_OF_RESOURCES, `a dial ran out of descriptors: ${(err as Error).message}`, { cause: err });
    this.o.log?.({ msg: 'out of descriptors: not accepting new connections', code: e.code, error: e.message });
    this.schedule();
  }

  /** At accept: true to go on; false while paused (the socket has been closed). */
  admit(socket: { destroy(): void }): boolean {
    if (!this.timer) return true;
    this.dropped++;
    socket.destroy();
    return false;
  }

  /**
   * Run `attempt` (a dial); while it fails for lack of descriptors, pause and wait for descriptors, then
   * run it again; its last error once it has waited maxWaitMs, is given up, or the backoff is closed.
   */
  retry<T>(attempt: () => Promise<T>): Promise<T> {
    const deadline = this.now() + (this.o.maxWaitMs ?? DIAL_MAX_WAIT_MS);
    const run = (): Promise<T> =>
      attempt().catch((e: unknown) => {
        if (this.closed || !isExhaustion(e) || this.now() >= deadline) throw e;
        this.dialFailed(e);
        return new Promise<void>((resume, reject) => this.waiters.push({ resume, giveUp: () => reject(e), deadline })).then(run);
      });
    return run();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.release(this.waiters.length, false);
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      try {
        this.probe();
      } catch (e) {
        if (isExhaustion(e)) {
          this.stillOut();
          this.schedule();
          return;
        }
      }
      this.timer = null;
      this.o.log?.({ msg: 'descriptors available again: accepting', dropped: this.dropped, gaveUp: this.gaveUp });
      this.release(this.waiters.length, true);
    }, this.o.probeIntervalMs ?? ACCEPT_PROBE_INTERVAL_MS);
    this.timer.unref();
  }

  /** A probe failed: give up the waiting dials past their deadline and the newest quarter of the rest (rounded down). */
  private stillOut(): void {
    const t = this.now();
    const late = this.waiters.filter((w) => w.deadline <= t);
    if (late.length > 0) this.waiters = this.waiters.filter((w) => w.deadline > t);
    const shed = this.waiters.splice(this.waiters.length - Math.floor(this.waiters.length / WAIT_SHED_DIVISOR));
    for (const w of [...late, ...shed]) w.giveUp();
    this.gaveUp += late.length + shed.length;
  }

  /** The oldest `n` waiting dials: tried again (`resume`) or given up. */
  private release(n: number, resume: boolean): void {
    for (const w of this.waiters.splice(0, n)) (resume ? w.resume : w.giveUp)();
  }
}
