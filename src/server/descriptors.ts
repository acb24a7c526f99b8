/**
 * Descriptor budget of the wsserver (protocol/websocket-upgrade.md, "Connections
 * that are not tunnels yet"):
 *
 * - readDescriptorLimit: the soft RLIMIT_NOFILE of this process (Linux:
 *   /proc/self/limits; Node raises the soft limit to the hard one at startup,
 *   so this is the real ceiling), null when unknown or unlimited.
 * - defaultMaxPending: how many not-yet-tunnel connections may hold a
 *   descriptor: a quarter of what is left once RESERVED_DESCRIPTORS are set
 *   aside, so that at least three quarters stay for tunnels (2 each).
 * - DescriptorWatch: Node gives no sign when accept fails for lack of
 *   descriptors (libuv's "emfile trick" silently accepts and closes the
 *   waiting connections; only if that trick fails does net.Server emit an
 *   'error'). So the watch probes: every intervalMs it opens and at once
 *   closes /dev/null; EMFILE/ENFILE there means accept is failing too. It
 *   reports each exhausted probe and the recovery.
 */
import { readFileSync } from 'node:fs';
import { isExhaustion, probeDescriptor } from '../net/descriptor-probe.js';

export { EXHAUSTION_CODES, isExhaustion } from '../net/descriptor-probe.js';

/** Descriptors kept for the process itself: stdio, the event loop, listeners, DNS, log files. */
export const RESERVED_DESCRIPTORS = 64;
/** Share of the remaining descriptors pending connections may take (1/PENDING_SHARE). */
export const PENDING_SHARE = 4;
/** Never fewer pending slots than this, however low the limit. */
export const MIN_MAX_PENDING = 16;
/** Where the limit cannot be read (not Linux) or is unlimited. */
export const FALLBACK_MAX_PENDING = 1024;
/** How often the descriptor watch probes, and how often while exhausted. */
export const DESCRIPTOR_PROBE_INTERVAL_MS = 1000;
export const DESCRIPTOR_PROBE_INTERVAL_EXHAUSTED_MS = 100;

/** Soft "Max open files" from a /proc/<pid>/limits text; null when absent or unlimited. */
export function parseNofileLimit(limitsText: string): number | null {
  const m = /^Max open files\s+(\S+)/m.exec(limitsText);
  if (!m || m[1] === 'unlimited') return null;
  const n = Number(m[1]);
  return Number.isSafeInteger(n) && n > 0 ? n : null;
}

export function readDescriptorLimit(): number | null {
  if (process.platform !== 'linux') return null;
  try {
    return parseNofileLimit(readFileSync('/proc/self/limits', 'latin1'));
  } catch {
    return null;
  }
}

/** max(MIN_MAX_PENDING, (limit - RESERVED_DESCRIPTORS) / PENDING_SHARE); FALLBACK_MAX_PENDING when unknown. */
export function defaultMaxPending(limit: number | null = readDescriptorLimit()): number {
  if (limit === null) return FALLBACK_MAX_PENDING;
  return Math.max(MIN_MAX_PENDING, Math.floor((limit - RESERVED_DESCRIPTORS) / PENDING_SHARE));
}

export interface DescriptorWatchOptions {
  /** Called for every probe that fails for lack of descriptors. */
  onExhausted: (err: NodeJS.ErrnoException) => void;
  /** Called once when a probe succeeds again after exhaustion. */
  onRecovered: () => void;
  intervalMs?: number;
  exhaustedIntervalMs?: number;
  /** Throws like fs.openSync when no descriptor is available (tests inject one). */
  probe?: () => void;
}

export class DescriptorWatch {
  private timer: NodeJS.Timeout | null = null;
  private exhausted = false;
  private readonly probe: () => void;

  constructor(private readonly o: DescriptorWatchOptions) {
    this.probe = o.probe ?? probeDescriptor;
  }

  start(): void {
    if (!this.timer) this.schedule(this.o.intervalMs ?? DESCRIPTOR_PROBE_INTERVAL_MS);
  }

  /** Probe now (also called when an accept error is seen). Returns true when exhausted. */
  check(): boolean {
    try {
      this.probe();
    } catch (e) {
      if (!isExhaustion(e)) return false;
      this.exhausted = true;
      this.o.onExhausted(e as NodeJS.ErrnoException);
      return true;
    }
    if (this.exhausted) {
      this.exhausted = false;
      this.o.onRecovered();
    }
    return false;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private schedule(ms: number): void {
    this.timer = setTimeout(() => {
      const bad = this.check();
      if (this.timer) this.schedule(bad ? (this.o.exhaustedIntervalMs ?? DESCRIPTOR_PROBE_INTERVAL_EXHAUSTED_MS) : (this.o.intervalMs ?? DESCRIPTOR_PROBE_INTERVAL_MS));
    }, ms);
    this.timer.unref();
  }
}
