/** rateLimitLogger: what an outsider can make us log is bounded per key and per interval, and nothing is lost silently. */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { type LogEntry, OTHER_KEY, rateLimitLogger } from '../src/log.js';

function setup(o: { intervalMs?: number; maxKeys?: number } = {}) {
  const lines: LogEntry[] = [];
  let t = 1_000_000;
  const log = rateLimitLogger((e) => lines.push(e), { key: (e) => String(e['code']), now: () => t, ...o });
  return { lines, log, advance: (ms: number) => (t += ms) };
}

afterEach(() => vi.useRealTimers());

describe('rateLimitLogger', () => {
  it('lets the first line of each key through per interval and reports the rest as a count', () => {
    const { lines, log, advance } = setup({ intervalMs: 1000 });
    for (let i = 0; i < 6000; i++) log({ code: i % 2 ? 'A' : 'B', n: i });
    expect(lines).toHaveLength(2);
    advance(1000);
    log({ code: 'A', n: 'next' });
    // the ended interval of A is reported before its next line
    expect(lines.slice(2)).toEqual([{ msg: 'suppressed', key: 'A', count: 2999, intervalMs: 1000 }, { code: 'A', n: 'next' }]);
    log.close();
    expect(lines.slice(4)).toEqual([{ msg: 'suppressed', key: 'B', count: 2999, intervalMs: 1000 }]);
    log.close();
    expect(lines).toHaveLength(5);
  });

  it('writes the counts of ended intervals from its timer, and stops the timer when idle', () => {
    vi.useFakeTimers();
    const lines: LogEntry[] = [];
    const log = rateLimitLogger((e) => lines.push(e), { key: (e) => String(e['code']), intervalMs: 500 });
    for (let i = 0; i < 10; i++) log({ code: 'X' });
    expect(lines).toHaveLength(1);
    vi.advanceTimersByTime(1000);
    expect(lines[1]).toEqual({ msg: 'suppressed', key: 'X', count: 9, intervalMs: 500 });
    expect(vi.getTimerCount()).toBe(0);
    log({ code: 'X' });
    expect(lines).toHaveLength(3);
    log.close();
  });

  it('tracks at most maxKeys keys; lines of further keys share one key', () => {
    const { lines, log } = setup({ maxKeys: 4 });
    for (let i = 0; i < 1000; i++) log({ code: `k${i}` });
    expect(lines).toHaveLength(5);
    log.close();
    expect(lines.at(-1)).toEqual({ msg: 'suppressed', key: OTHER_KEY, count: 995, intervalMs: 1000 });
  });
});
