/**
 * The replay cache (src/server/replay.ts) with an injected clock: one verdict
 * per nonce, expiry with the freshness window, the future bound, and what
 * happens at capacity (the oldest second goes and the floor rises past it, so
 * an evicted nonce is refused as stale, never accepted again).
 */
import { describe, expect, it } from 'vitest';
import { makeAddress } from '../src/protocol/address.js';
import { createClientCodec, createServerCodec } from '../src/protocol/session.js';
import { ReplayCache } from '../src/server/replay.js';

const T = 1_700_000_000;

/** A settable clock in seconds. */
function clock(start = T) {
  let sec = start;
  return { now: () => sec * 1000, set: (s: number) => (sec = s), add: (d: number) => (sec += d) };
}

/** Distinct deterministic nonces. */
function nonce(i: number, salt = 0): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(i >>> 0, 0);
  b.writeUInt32LE(salt >>> 0, 4);
  b.writeUInt32LE((i * 2654435761) >>> 0, 8);
  return b;
}

describe('ReplayCache', () => {
  it('accepts a nonce once; a second use is a replay, another nonce is fresh', () => {
    const c = clock();
    const cache = new ReplayCache({ now: c.now });
    expect(cache.check(nonce(1), T)).toBe('fresh');
    expect(cache.check(nonce(1), T)).toBe('replay');
    expect(cache.check(Buffer.from(nonce(1)), T)).toBe('replay'); // by value
    expect(cache.check(nonce(2), T)).toBe('fresh');
    expect(cache.size).toBe(2);
  });

  it('remembers a nonce while its time is within the window; then refuses it as stale', () => {
    const c = clock();
    const cache = new ReplayCache({ now: c.now, windowSeconds: 60 });
    expect(cache.check(nonce(1), T)).toBe('fresh');
    c.set(T + 60); // exactly 60 s old: still fresh for the codec, so still remembered
    expect(cache.check(nonce(1), T)).toBe('replay');
    c.set(T + 61);
    expect(cache.check(nonce(1), T)).toBe('stale');
    expect(cache.size).toBe(0);
    expect(cache.floor).toBe(T + 1);
  });

  it('refuses times beyond now + ahead as stale, accepts up to it', () => {
    const c = clock();
    const cache = new ReplayCache({ now: c.now, aheadSeconds: 60 });
    expect(cache.check(nonce(1), T + 61)).toBe('stale');
    expect(cache.check(nonce(2), T + 60)).toBe('fresh');
    // an entry from the future lives until its own time leaves the window: window + ahead at most
    c.set(T + 120);
    expect(cache.check(nonce(2), T + 60)).toBe('replay');
    c.set(T + 121);
    expect(cache.check(nonce(2), T + 60)).toBe('stale');
  });

  it('never lowers its floor when the clock steps back', () => {
    const c = clock();
    const cache = new ReplayCache({ now: c.now });
    cache.check(nonce(1), T);
    c.set(T + 100);
    expect(cache.check(nonce(2), T + 100)).toBe('fresh');
    c.set(T);
    expect(cache.floor).toBe(T + 40);
    expect(cache.check(nonce(1), T)).toBe('stale');
  });

  it('at capacity: evicts the oldest second whole and raises the floor past it', () => {
    const c = clock();
    const cache = new ReplayCache({ now: c.now, capacity: 100 });
    // 50 at T, 50 at T + 1: full
    for (let i = 0; i < 50; i++) expect(cache.check(nonce(i), T)).toBe('fresh');
    c.set(T + 1);
    for (let i = 50; i < 100; i++) expect(cache.check(nonce(i), T + 1)).toBe('fresh');
    expect(cache.size).toBe(100);
    // one more: the second T goes
    expect(cache.check(nonce(100), T + 1)).toBe('fresh');
    expect(cache.size).toBe(51);
    expect(cache.floor).toBe(T + 1);
    // a replay of an evicted nonce is refused (stale), never accepted
    for (let i = 0; i < 50; i++) expect(cache.check(nonce(i), T)).toBe('stale');
    // the rest are still remembered
    for (let i = 50; i < 101; i++) expect(cache.check(nonce(i), T + 1)).toBe('replay');
  });

  it('at capacity a new header as old as the evicted second is refused as stale', () => {
    const c = clock();
    const cache = new ReplayCache({ now: c.now, capacity: 10 });
    for (let i = 0; i < 5; i++) cache.check(nonce(i), T - 5);
    for (let i = 5; i < 10; i++) cache.check(nonce(i), T);
    expect(cache.check(nonce(10), T - 5)).toBe('stale');
    expect(cache.floor).toBe(T - 4);
    expect(cache.check(nonce(11), T)).toBe('fresh');
  });

  it('stays within its capacity and table bound under a long high rate, with no replay accepted', () => {
    const c = clock();
    const capacity = 5_000;
    const cache = new ReplayCache({ now: c.now, capacity });
    let maxBytes = 0;
    let n = 0;
    // 300 s at 2,000 handshakes a second (above what the capacity holds for 60 s)
    for (let s = 0; s < 300; s++) {
      c.set(T + s);
      let refused = 0;
      for (let k = 0; k < 2_000; k++) if (cache.check(nonce(n++, 7), T + s) !== 'fresh') refused++;
      expect(refused).toBe(0);
      expect(cache.size).toBeLessThanOrEqual(capacity);
      maxBytes = Math.max(maxBytes, cache.tableBytes);
      // the last few seconds' nonces are all remembered
      expect(cache.check(nonce(n - 1, 7), T + s)).toBe('replay');
      expect(cache.check(nonce(n - 1500, 7), T + s)).toBe('replay');
    }
    // 16 bytes a slot, at most nextPow2(2 * capacity) slots
    expect(maxBytes).toBeLessThanOrEqual(16 * 16_384);
    // every earlier nonce is refused one way or the other
    let accepted = 0;
    for (let i = 0; i < n; i += 97) if (cache.check(nonce(i, 7), T + Math.floor(i / 2_000)) === 'fresh') accepted++;
    expect(accepted).toBe(0);
  });

  it('shrinks back after a burst and keeps working across many rebuilds', () => {
    const c = clock();
    const cache = new ReplayCache({ now: c.now, capacity: 50_000 });
    for (let i = 0; i < 40_000; i++) cache.check(nonce(i, 1), T);
    const big = cache.tableBytes;
    c.set(T + 61);
    const verdicts = new Map<string, number>();
    const count = (v: string) => verdicts.set(v, (verdicts.get(v) ?? 0) + 1);
    for (let i = 0; i < 10_000; i++) count(cache.check(nonce(i, 2), T + 61));
    expect(cache.size).toBe(10_000);
    expect(cache.tableBytes).toBeLessThan(big);
    for (let i = 0; i < 10_000; i++) count(cache.check(nonce(i, 2), T + 61));
    for (let i = 0; i < 40_000; i += 101) count(cache.check(nonce(i, 1), T));
    expect(Object.fromEntries(verdicts)).toEqual({ fresh: 10_000, replay: 10_000, stale: 397 });
  });

  it('checks its arguments', () => {
    expect(() => new ReplayCache({ capacity: 0 })).toThrow(RangeError);
    expect(() => new ReplayCache().check(Buffer.alloc(11), T)).toThrow(RangeError);
  });
});

describe('ServerCodec.clientNonce (what the cache is asked about)', () => {
  it('Brook: the 12 bytes once they are all in, also across chunks; withoutBrookProtocol: none', () => {
    const nonce = Buffer.from('a47067184574bffdd688b715', 'hex');
    const hello = createClientCodec({ password: 'p', network: 'tcp', destination: makeAddress('1.2.3.4', 80), random: () => Buffer.from(nonce) }).hello();
    const server = createServerCodec({ password: 'p' });
    server.push(hello.subarray(0, 5), () => {});
    expect(server.clientNonce).toBeNull();
    server.push(hello.subarray(5, 13), () => {});
    expect(server.clientNonce).toEqual(nonce);
    expect(server.push(hello.subarray(13), () => {})).not.toBeNull();
    expect(server.clientNonce).toEqual(nonce);
    const wob = createServerCodec({ password: 'p', withoutBrookProtocol: true });
    wob.push(createClientCodec({ password: 'p', withoutBrookProtocol: true, network: 'tcp', destination: makeAddress('1.2.3.4', 80) }).hello(), () => {});
    expect(wob.header).not.toBeNull();
    expect(wob.clientNonce).toBeNull();
  });
});
