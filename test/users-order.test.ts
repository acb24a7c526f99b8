/**
 * The try order and the trial budget (src/users/order.ts, budget.ts; protocol/users.md#try-order and
 * #the-attackers-lever): outline-ss-server's order (the address's recent users, then the most recently
 * used), its bounds (addresses, users per address), carrying it over a reload; token buckets per source
 * (IPv4, IPv6 /64) and global with an injected clock, debt, and the bound on sources remembered.
 */
import { describe, expect, it } from 'vitest';
import { sourceKey, TrialBudget } from '../src/users/budget.js';
import { TryOrder } from '../src/users/order.js';

function order(o: TryOrder, address: string, limit?: number): number[] {
  const out = new Uint32Array(o.size);
  return Array.from(out.subarray(0, o.fill(address, out, limit)));
}

describe('TryOrder', () => {
  it('starts in index order (or the given one), every user exactly once', () => {
    expect(order(new TryOrder(5), 'a')).toEqual([0, 1, 2, 3, 4]);
    expect(order(new TryOrder(5, {}, [3, 1, 3, 9, -1]), 'a')).toEqual([3, 1, 0, 2, 4]);
    expect(order(new TryOrder(0), 'a')).toEqual([]);
  });

  it('the address\'s users first (most recent first), then the global most-recently-used list', () => {
    const o = new TryOrder(6);
    o.used('A', 4);
    o.used('B', 2);
    o.used('A', 1);
    expect(order(o, 'A')).toEqual([1, 4, 2, 0, 3, 5]);
    expect(order(o, 'B')).toEqual([2, 1, 4, 0, 3, 5]);
    expect(order(o, 'C')).toEqual([1, 2, 4, 0, 3, 5]);
    expect(order(o, 'A', 3)).toEqual([1, 4, 2]);
    expect(order(o, 'A', 1)).toEqual([1]);
    o.used('A', 4); // again: first for A
    expect(order(o, 'A')).toEqual([4, 1, 2, 0, 3, 5]);
  });

  it('keeps perAddress users an address (the oldest goes) and maxAddresses addresses (the least recent goes)', () => {
    const o = new TryOrder(10, { perAddress: 2, maxAddresses: 3 });
    o.used('A', 5);
    o.used('A', 6);
    o.used('A', 7);
    expect(order(o, 'A').slice(0, 2)).toEqual([7, 6]);
    o.used('B', 1);
    o.used('C', 2);
    o.used('A', 7); // A becomes the most recent address
    o.used('D', 3); // B (least recent) is forgotten
    expect(o.addresses).toBe(3);
    expect(order(o, 'B')[0]).toBe(3); // B has no list now: the global order
    expect(order(o, 'A').slice(0, 2)).toEqual([7, 6]);
  });

  it('fill writes into a reused buffer without stale marks across many calls', () => {
    const o = new TryOrder(4);
    const out = new Uint32Array(4);
    for (let i = 0; i < 1000; i++) {
      o.used(`addr${i % 7}`, i % 4);
      expect(new Set(out.subarray(0, o.fill(`addr${i % 5}`, out))).size).toBe(4);
    }
  });

  it('used() outside the set is a RangeError', () => {
    expect(() => new TryOrder(3).used('A', 3)).toThrow(RangeError);
  });

  it('remap carries recency to a reloaded set; users gone are dropped, new ones come last', () => {
    const o = new TryOrder(4, { perAddress: 3 });
    o.used('A', 2);
    o.used('A', 3);
    o.used('B', 0);
    // new set: old 0 -> 1, old 1 gone, old 2 -> 0, old 3 gone; plus new user 2
    const r = o.remap(3, Int32Array.from([1, -1, 0, -1]));
    expect(r.size).toBe(3);
    expect(order(r, 'C')).toEqual([1, 0, 2]);
    expect(order(r, 'A')).toEqual([0, 1, 2]);
    expect(order(r, 'B')).toEqual([1, 0, 2]);
    expect(r.perAddress).toBe(3);
  });
});

describe('TrialBudget', () => {
  it('allows a scan while a source has trials; a scan may run into debt, paid back at the rate', () => {
    let now = 0;
    const b = new TrialBudget({ perSource: 1000, perSourceBurst: 2000, global: 1e9, globalBurst: 1e9, now: () => now });
    expect(b.allow('s')).toBe(true);
    b.charge('s', 1500);
    expect(b.allow('s')).toBe(true); // 500 left
    b.charge('s', 1500); // -1000
    expect(b.allow('s')).toBe(false);
    now += 999; // -1
    expect(b.allow('s')).toBe(false);
    now += 2; // +1
    expect(b.allow('s')).toBe(true);
    expect(b.allow('other')).toBe(true);
    now += 1e6; // refills only up to the burst
    b.charge('s', 2000);
    expect(b.allow('s')).toBe(false);
  });

  it('the global bucket stops scans from every source', () => {
    let now = 0;
    const b = new TrialBudget({ perSource: 1e9, perSourceBurst: 1e9, global: 100, globalBurst: 100, now: () => now });
    b.charge('a', 150);
    expect(b.allow('fresh')).toBe(false);
    now += 600;
    expect(b.allow('fresh')).toBe(true);
  });

  it('remembers at most maxSources sources, forgetting the least recently seen', () => {
    const b = new TrialBudget({ perSource: 1, perSourceBurst: 10, maxSources: 2, now: () => 0 });
    b.charge('a', 20);
    b.charge('b', 20);
    expect(b.allow('a')).toBe(false); // a is now the most recent
    b.charge('c', 20); // b goes
    expect(b.size).toBe(2);
    expect(b.allow('a')).toBe(false); // a and c are remembered
    expect(b.allow('b')).toBe(true); // b was forgotten: a fresh bucket (the global bucket still bounds this)
    expect(b.size).toBe(2);
  });

  it('sourceKey: IPv4 as is, IPv4-mapped as IPv4, IPv6 by its /64', () => {
    expect(sourceKey('192.0.2.1')).toBe('192.0.2.1');
    expect(sourceKey('::ffff:192.0.2.1')).toBe('192.0.2.1');
    expect(sourceKey('2001:db8:1:2:aaaa::1')).toBe('20010db800010002/64');
    expect(sourceKey('2001:db8:1:2:ffff:ffff:ffff:ffff')).toBe('20010db800010002/64');
    expect(sourceKey('2001:db8:1:3::1')).not.toBe(sourceKey('2001:db8:1:2::1'));
    expect(sourceKey('not an ip')).toBe('not an ip');
  });
});
