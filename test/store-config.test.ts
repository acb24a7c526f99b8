/**
 * The store's pure parts: the URL and its password / CA sources (src/store/config.ts),
 * the state lines (src/store/health.ts: one line per interval at most, whatever the
 * store does) and the nonce backlog (src/store/backlog.ts: bounded, oldest first out).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import type { LogEntry } from '../src/log.js';
import { NonceBacklog } from '../src/store/backlog.js';
import { resolveStoreEndpoint } from '../src/store/config.js';
import { StoreHealth } from '../src/store/health.js';
import { Registry } from 'prom-client';
import { noStoreMetrics, type StoreState } from '../src/store/metrics.js';
import { createStoreMetrics } from '../src/store/prometheus.js';
import { tempDir } from './helpers/cli.js';

const tmp = tempDir('brook-store-cfg-');
afterAll(() => tmp.remove());
const file = (name: string, content: string): string => {
  const p = join(tmp.dir, name);
  writeFileSync(p, content);
  return p;
};
const CA = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

describe('resolveStoreEndpoint', () => {
  it('parses redis:// with the defaults and rediss:// with TLS (servername for a name, none for an IP)', () => {
    expect(resolveStoreEndpoint({ url: 'redis://10.0.0.5' })).toEqual({ host: '10.0.0.5', port: 6379, db: 0, username: undefined, password: undefined, tls: undefined, display: 'redis://10.0.0.5:6379' });
    const e = resolveStoreEndpoint({ url: 'rediss://ops@store.example:6380/2', caFile: file('ca.pem', CA) });
    expect(e).toMatchObject({ host: 'store.example', port: 6380, db: 2, username: 'ops', password: undefined, display: 'rediss://ops@store.example:6380/2' });
    expect(e.tls?.servername).toBe('store.example');
    expect(e.tls?.ca?.toString()).toBe(CA);
    expect(resolveStoreEndpoint({ url: 'rediss://[::1]:7000' })).toMatchObject({ host: '::1', port: 7000, tls: {}, display: 'rediss://[::1]:7000' });
  });

  it('takes the password from a file (one line, as --passwordFile), never shows it', () => {
    const e = resolveStoreEndpoint({ url: 'redis://127.0.0.1:6380', passwordFile: file('pw', 's3cret\n') });
    expect(e.password).toBe('s3cret');
    expect(e.display).not.toContain('s3cret');
  });

  it('accepts a password in a URL that did not come from argv (the environment, a file, the API)', () => {
    const e = resolveStoreEndpoint({ url: 'redis://:p%40ss@127.0.0.1', urlFrom: 'env' });
    expect(e.password).toBe('p@ss');
    expect(e.display).toBe('redis://127.0.0.1:6379');
  });

  it.each([
    ['a password in an argv URL', { url: 'redis://:pw@h' }, /visible to every local user .*--redisPasswordFile/],
    ['a password in the URL and a file', { url: 'redis://:pw@h', urlFrom: 'env' as const, passwordFile: '/x' }, /use one of them/],
    ['another scheme', { url: 'http://h' }, /not redis:\/\/ or rediss:\/\//],
    ['not a URL', { url: 'localhost:6379' }, /not redis|not a URL/],
    ['a query string (client options are ours)', { url: 'redis://h?enableOfflineQueue=true' }, /query strings/],
    ['a path that is not a db number', { url: 'redis://h/x' }, /database number/],
    ['port 0', { url: 'redis://h:0' }, /port 0/],
    ['--redisCA with redis://', { url: 'redis://h', caFile: '/x' }, /needs a rediss:\/\//],
    ['an unreadable CA', { url: 'rediss://h', caFile: '/nonexistent/ca' }, /cannot read --redisCA .*no such file/],
    ['a CA file with no certificate', { url: 'rediss://h', caFile: join(tmp.dir, 'pw') }, /holds no PEM certificate/],
    ['an empty password file', { url: 'redis://h', passwordFile: join(tmp.dir, 'empty') }, /is empty/],
  ])('refuses %s with a one-line CONFIG error', (_name, input, re) => {
    file('pw', 's3cret\n');
    file('empty', '');
    try {
      resolveStoreEndpoint(input);
      expect.unreachable();
    } catch (e) {
      expect((e as { code: string }).code).toBe(ErrorCodes.CONFIG);
      expect((e as Error).message).toMatch(re);
      expect((e as Error).message).not.toContain('\n');
    }
  });
});

describe('StoreHealth', () => {
  const make = (intervalMs = 1000) => {
    let t = 0;
    const lines: LogEntry[] = [];
    const states: StoreState[] = [];
    const h = new StoreHealth({ display: 'redis://x:1', log: (l) => lines.push(l), metrics: { ...noStoreMetrics, state: (s) => states.push(s) }, logIntervalMs: intervalMs, now: () => t });
    return { h, lines, states, at: (ms: number) => (t = ms) };
  };

  it('says the first outcome at once, then at most one line per interval however often the state flaps', () => {
    vi.useFakeTimers();
    try {
      const { h, lines, states, at } = make();
      h.set('down', 'connect ECONNREFUSED');
      expect(lines).toEqual([{ msg: 'store', store: 'redis://x:1', state: 'down', reason: 'connect ECONNREFUSED' }]);
      for (let i = 1; i <= 50; i++) {
        at(i * 10);
        h.set(i % 2 ? 'up' : 'down', 'flap');
      }
      expect(lines).toHaveLength(1);
      expect(states).toHaveLength(51); // the metric sees every change
      at(1000);
      vi.advanceTimersByTime(1000);
      expect(lines).toHaveLength(2);
      expect(lines[1]).toMatchObject({ state: 'down', changes: 50 });
      h.close();
    } finally {
      vi.useRealTimers();
    }
  });

  it('while not up, repeats the state once per interval with the local decisions counted; quiet once up', () => {
    vi.useFakeTimers();
    try {
      const { h, lines, at } = make();
      h.set('down', 'x');
      h.fellBack('replay');
      h.fellBack('replay');
      h.fellBack('device');
      at(1000);
      vi.advanceTimersByTime(1000);
      expect(lines[1]).toMatchObject({ state: 'down', fallbacks: { replay: 2, device: 1 } });
      at(2000);
      vi.advanceTimersByTime(1000);
      expect(lines).toHaveLength(3);
      expect(lines[2]).not.toHaveProperty('fallbacks');
      at(2500);
      h.set('up');
      at(3000);
      vi.advanceTimersByTime(1000);
      expect(lines.at(-1)).toEqual({ msg: 'store', store: 'redis://x:1', state: 'up' });
      const n = lines.length;
      at(10_000);
      vi.advanceTimersByTime(10_000);
      expect(lines).toHaveLength(n);
      h.close();
    } finally {
      vi.useRealTimers();
    }
  });
});

describe('NonceBacklog', () => {
  const nonce = (i: number) => {
    const b = Buffer.alloc(12);
    b.writeUInt32LE(i, 0);
    b.writeUInt32LE(i ^ 0x5a5a5a5a, 8);
    return b;
  };

  it('keeps the unrecorded ones for a push, bounded by its capacity (oldest out first)', () => {
    const b = new NonceBacklog(2048);
    for (let i = 0; i < 5000; i++) b.add(nonce(i), 100 + Math.floor(i / 100), i % 2 === 0);
    expect(b.size).toBe(2048);
    expect(b.unrecorded).toBe(1024);
    const got = b.collect(0, 10, 0);
    expect(got.nonces[0]).toEqual(nonce(5000 - 2048 + 1)); // the oldest kept, odd (unrecorded)
    b.markRecorded(got.seqs);
    expect(b.unrecorded).toBe(1014);
    b.markRecorded(got.seqs); // twice: nothing more
    expect(b.unrecorded).toBe(1014);
  });

  it('prunes what left the window, and marks everything again when the store lost it', () => {
    const b = new NonceBacklog(100);
    for (let i = 0; i < 60; i++) b.add(nonce(i), 1000 + i, true);
    expect(b.unrecorded).toBe(0);
    b.prune(1030);
    expect(b.size).toBe(30);
    b.forgetRecorded();
    expect(b.unrecorded).toBe(30);
    const all = b.collect(0, 1000, 1040);
    expect(all.times[0]).toBe(1040);
    expect(all.seqs).toHaveLength(20);
  });
});

describe('createStoreMetrics', () => {
  it('shows the state, the calls by op and result, fallbacks and what is pending, with fixed label sets', async () => {
    const registry = new Registry();
    const m = createStoreMetrics(registry);
    m.pending(() => ({ calls: 3, bytes: 300, nonces: 7 }));
    m.state('degraded');
    m.call('replay', 'ok', 0.3);
    m.call('replay', 'timeout', 250);
    m.fallback('replay');
    m.lateReplays(2);
    const text = await registry.metrics();
    expect(text).toContain('brook_store_state{state="degraded"} 1');
    expect(text).toContain('brook_store_state{state="up"} 0');
    expect(text).toContain('brook_store_calls_total{op="replay",result="timeout"} 1');
    expect(text).toContain('brook_store_calls_total{op="sync",result="ok"} 0');
    expect(text).toContain('brook_store_call_seconds_count{op="replay"} 1');
    expect(text).toContain('brook_store_fallbacks_total{what="replay"} 1');
    expect(text).toContain('brook_store_pending{what="nonces"} 7');
    expect(text).toContain('brook_store_late_replays_total 2');
  });
});
