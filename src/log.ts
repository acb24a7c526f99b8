/**
 * One JSON object per line, like upstream's `--log console`:
 *   {"time":"2026-11-22T03:00:00.000Z","from":"127.0.0.1:50000","dst":"example.com:443","network":"tcp","error":"..."}
 *
 * Lines an outsider can trigger in bulk (failed handshakes, accept errors) go
 * through rateLimitLogger, so an attacker does not set our log volume.
 */
export type LogEntry = Record<string, unknown>;
export type Logger = (entry: LogEntry) => void;

export function createLogger(write: (line: string) => void = (l) => process.stdout.write(l)): Logger {
  return (entry) => {
    write(JSON.stringify({ time: new Date().toISOString(), ...entry }) + '\n');
  };
}

export const silentLogger: Logger = () => {};

/** Default: one line per key per second. */
export const DEFAULT_LOG_INTERVAL_MS = 1000;
/** Distinct keys tracked at once; lines of further keys share the key OTHER_KEY. */
export const DEFAULT_MAX_LOG_KEYS = 64;
export const OTHER_KEY = 'other';

export interface RateLimitOptions {
  /** What lines are counted by (e.g. the error code). */
  key: (entry: LogEntry) => string;
  intervalMs?: number;
  maxKeys?: number;
  now?: () => number;
}

export interface RateLimitedLogger extends Logger {
  /** Write the pending "suppressed" counts now and stop the timer. */
  close(): void;
}

interface KeyState {
  /** When the current interval of this key began. */
  since: number;
  /** Lines held back in the current interval. */
  suppressed: number;
}

/**
 * The first line of each key per interval passes; the rest are counted, and
 * when the interval ends one {"msg":"suppressed","key","count","intervalMs"}
 * line per key says how many were held back. State is bounded by maxKeys.
 */
export function rateLimitLogger(log: Logger, o: RateLimitOptions): RateLimitedLogger {
  const intervalMs = o.intervalMs ?? DEFAULT_LOG_INTERVAL_MS;
  const maxKeys = o.maxKeys ?? DEFAULT_MAX_LOG_KEYS;
  const now = o.now ?? Date.now;
  const keys = new Map<string, KeyState>();
  let timer: NodeJS.Timeout | null = null;

  const report = (key: string, st: KeyState) => {
    if (st.suppressed > 0) log({ msg: 'suppressed', key, count: st.suppressed, intervalMs });
  };

  /** Close the intervals that have ended: report their counts and forget idle keys. */
  const sweep = (force = false) => {
    const t = now();
    for (const [key, st] of keys) {
      if (!force && t - st.since < intervalMs) continue;
      report(key, st);
      keys.delete(key);
    }
    if (keys.size === 0 && timer) {
      clearInterval(timer);
      timer = null;
    }
  };

  const limited = ((entry: LogEntry) => {
    let key = o.key(entry);
    if (!keys.has(key) && keys.size >= maxKeys) key = OTHER_KEY;
    const t = now();
    const st = keys.get(key);
    if (st && t - st.since < intervalMs) {
      st.suppressed++;
      return;
    }
    if (st) report(key, st);
    keys.set(key, { since: t, suppressed: 0 });
    log(entry);
    if (!timer) {
      timer = setInterval(() => sweep(), intervalMs);
      timer.unref();
    }
  }) as RateLimitedLogger;
  limited.close = () => sweep(true);
  return limited;
}
