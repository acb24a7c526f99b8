/**
 * Usage counters and the device limit across a fleet (src/store/usage.ts,
 * src/store/devices.ts) against a real Redis: the fleet total is the sum of the
 * instances' counts; a flush whose reply is lost (the connection cut right after
 * the script reached Redis) and is sent again counts nothing twice; counts made
 * during an outage arrive when Redis is back; a Redis restarted empty gets every
 * running instance's whole count back; a script error loses nothing; a store that
 * holds more for an instance than it sent is adopted; devices count across
 * instances and fall back to the local count when Redis is down.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { FleetDevices } from '../src/store/devices.js';
import type { FleetStoreOptions } from '../src/store/store.js';
import { FleetUsage } from '../src/store/usage.js';
import { startCutProxy, storeKit, until, type TestRedis } from './helpers/redis.js';

const kit = storeKit();
afterEach(kit.cleanup);
const { redis } = kit;
const cleanup = { push: kit.defer };

/** An instance: its store, devices and usage (no timer-driven sync: the test calls sync()). */
async function instance(url: string, id: string, o: Partial<FleetStoreOptions> & { required?: boolean; deviceTtlMs?: number } = {}) {
  const t = await kit.store(url, { instanceId: id, ...o });
  const devices = new FleetDevices({ store: t.s, required: o.required, ttlMs: o.deviceTtlMs });
  const usage = new FleetUsage({ store: t.s, devices, intervalMs: 3_600_000 });
  cleanup.push(() => usage.close());
  await until(() => t.s.state === 'up', 5000, `${id} up`);
  return { ...t, devices, usage };
}

/** The fleet totals as Redis holds them. */
async function totals(r: TestRedis, user: string): Promise<{ up: number; down: number }> {
  const raw = await r.command('HMGET', `brook:u:${user}`, 'up', 'down');
  const [up, down] = raw
    .split('\r\n')
    .filter((l) => /^\d+$/.test(l))
    .map(Number);
  return { up: up ?? 0, down: down ?? 0 };
}

describe('FleetUsage', () => {
  it('sums the instances, reads the fleet total back in the same script, and a second flush of the same counts changes nothing', async () => {
    const r = await redis();
    const a = await instance(r.url, 'a');
    const b = await instance(r.url, 'b');
    a.usage.add('alice', 1000, 5000);
    b.usage.add('alice', 300, 700);
    a.usage.add('bob', 1, 2);
    expect(a.usage.fleet('alice')).toEqual({ up: 1000, down: 5000, readAt: 0 }); // nothing read yet: its own
    await a.usage.sync();
    await b.usage.sync();
    expect(await totals(r, 'alice')).toEqual({ up: 1300, down: 5700 });
    expect(b.usage.fleet('alice')).toMatchObject({ up: 1300, down: 5700 });
    a.usage.add('alice', 10, 10); // not flushed: part of a's view at once
    expect(a.usage.fleet('alice')).toMatchObject({ up: 1010, down: 5010 }); // b's part arrives with a's next read
    await a.usage.sync();
    expect(a.usage.fleet('alice')).toMatchObject({ up: 1310, down: 5710 });
    await a.usage.sync();
    await b.usage.sync();
    expect(await totals(r, 'alice')).toEqual({ up: 1310, down: 5710 });
    expect(await totals(r, 'bob')).toEqual({ up: 1, down: 2 });
    expect(a.usage.own('alice')).toEqual({ up: 1010, down: 5010 });
  });

  it('a flush whose reply is lost (connection cut after Redis ran it) is sent again and counted once', async () => {
    const r = await redis();
    const proxy = await startCutProxy(r.port);
    cleanup.push(() => proxy.close());
    const a = await instance(`redis://127.0.0.1:${proxy.port}`, 'a', { heartbeatMs: 3_600_000 });
    a.usage.add('alice', 1, 1);
    await a.usage.sync(); // a user's first sync reads (reconciles), then writes
    expect(await totals(r, 'alice')).toEqual({ up: 1, down: 1 });
    a.usage.add('alice', 4095, 8191);
    proxy.cutNextReply();
    await a.usage.sync(); // never rejects: the failure is the store's to count
    expect(a.calls.at(-1)).toEqual(['sync', 'error']);
    expect(await totals(r, 'alice')).toEqual({ up: 4096, down: 8192 }); // it did run
    expect(a.usage.unflushed).toBe(1); // but a cannot know
    await until(() => a.s.state === 'up', 5000, 'reconnect');
    a.usage.add('alice', 4, 8);
    await a.usage.sync();
    expect(await totals(r, 'alice')).toEqual({ up: 4100, down: 8200 });
    expect(a.usage.unflushed).toBe(0);
  });

  it('counts made while Redis is down arrive when it is back; a Redis restarted empty gets every running instance whole', async () => {
    const r = await redis();
    const a = await instance(r.url, 'a');
    const b = await instance(r.url, 'b');
    a.usage.seed('alice', { up: 10_000, down: 20_000 }); // from a's state file
    a.devices.opened('alice', '192.0.2.1'); // a live tunnel: a reads alice's total at every sync
    b.usage.add('alice', 1, 1);
    await a.usage.sync();
    await b.usage.sync();
    await a.usage.sync(); // a reads b's part
    expect(await totals(r, 'alice')).toEqual({ up: 10_001, down: 20_001 });

    await r.kill();
    await until(() => a.s.state === 'down' && b.s.state === 'down', 3000, 'down');
    a.usage.add('alice', 500, 500);
    await a.usage.sync(); // down: nothing sent, nothing lost
    expect(a.usage.fleet('alice')).toMatchObject({ up: 10_501, down: 20_501 });

    await r.restart(); // empty
    await until(() => a.s.state === 'up' && b.s.state === 'up', 5000, 'up');
    // the heartbeat finds the store empty and every user is flushed again (b had nothing new)
    await until(() => a.usage.unflushed === 0 && b.usage.unflushed === 0, 5000, 'flushed');
    await a.usage.sync();
    await b.usage.sync();
    expect(await totals(r, 'alice')).toEqual({ up: 10_501, down: 20_501 }); // a's 10,500 (b's 1 came back with b's flush)
  });

  it('a script error (a key of the wrong type) loses nothing: the counts go with the next sync once it is fixed', async () => {
    const r = await redis();
    const a = await instance(r.url, 'a');
    await r.command('SET', 'brook:u:carol', 'not a hash');
    a.usage.add('carol', 7, 9);
    await a.usage.sync();
    expect(a.calls.at(-1)).toEqual(['sync', 'error']);
    expect(a.s.state).toBe('degraded');
    await r.command('DEL', 'brook:u:carol');
    await a.usage.sync();
    expect(await totals(r, 'carol')).toEqual({ up: 7, down: 9 });
  });

  it("adopts what the store holds for this instance above its own count (a state file older than the store)", async () => {
    const r = await redis();
    const a = await instance(r.url, 'a');
    a.usage.add('dave', 100, 100);
    await a.usage.sync();
    await a.usage.close();
    const a2 = await instance(r.url, 'a'); // restarted with a state file from before that flush
    a2.usage.seed('dave', { up: 60, down: 100 });
    a2.usage.add('dave', 5, 0);
    await a2.usage.sync(); // reads 100 (more than the file's 60), adopts the 40, writes 105
    expect(a2.usage.own('dave')).toEqual({ up: 105, down: 100 });
    expect(await totals(r, 'dave')).toEqual({ up: 105, down: 100 });
    expect(a2.usage.conflicts).toBe(0);
  });

  it('refuses counts that are not non-negative safe integers at seed', async () => {
    const r = await redis();
    const a = await instance(r.url, 'a');
    expect(() => a.usage.seed('x', { up: -1, down: 0 })).toThrow(RangeError);
    expect(() => a.usage.seed('x', { up: 2 ** 53, down: 0 })).toThrow(RangeError);
  });
});

describe('FleetDevices', () => {
  it('counts client IPs across instances; a known IP is admitted without a call; an IP leaves after its TTL', async () => {
    const r = await redis();
    const a = await instance(r.url, 'a', { deviceTtlMs: 400 });
    const b = await instance(r.url, 'b', { deviceTtlMs: 400 });
    expect(await a.devices.admit('erin', '192.0.2.1', 2)).toBe(true);
    a.devices.opened('erin', '192.0.2.1');
    expect(await b.devices.admit('erin', '192.0.2.2', 2)).toBe(true);
    b.devices.opened('erin', '192.0.2.2');
    expect(await a.devices.admit('erin', '192.0.2.3', 2)).toBe(false);
    expect(await b.devices.admit('erin', '192.0.2.1', 2)).toBe(true); // already counted (a's)
    const n = a.calls.length;
    expect(a.devices.admit('erin', '192.0.2.1', 2)).toBe(true); // live here: synchronous
    expect(a.calls.length).toBe(n);
    // a's tunnel stays and its sync refreshes the IP; b's closes and its IP expires
    b.devices.closed('erin', '192.0.2.2');
    for (let i = 0; i < 6; i++) {
      await a.usage.sync();
      await new Promise((res) => setTimeout(res, 120));
    }
    expect(await a.devices.admit('erin', '192.0.2.3', 2)).toBe(true);
    expect(await b.devices.admit('erin', '192.0.2.4', 2)).toBe(false); // .1 (kept alive by a) and .3
  });

  it('Redis down: the local count decides (required: refused)', async () => {
    const r = await redis();
    const a = await instance(r.url, 'a');
    const req = await instance(r.url, 'q', { required: true });
    a.devices.opened('fay', '192.0.2.1');
    await r.kill();
    await until(() => a.s.state === 'down' && req.s.state === 'down', 3000, 'down');
    expect(a.devices.admit('fay', '192.0.2.2', 2)).toBe(true);
    a.devices.opened('fay', '192.0.2.2');
    expect(a.devices.admit('fay', '192.0.2.3', 2)).toBe(false);
    expect(() => req.devices.admit('fay', '192.0.2.9', 2)).toThrow(expect.objectContaining({ code: ErrorCodes.STORE_UNAVAILABLE }));
  });
});
