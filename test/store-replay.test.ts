/**
 * Replay protection across a fleet (src/store/replay.ts) against a real Redis
 * (Debian's redis-server, our own instance on a loopback port): a nonce accepted by
 * one guard is a replay for another on the same Redis; a replay to the same
 * instance costs no round trip; and when Redis is down at start, killed, stalled
 * (SIGSTOP), restarted empty or answering errors, the guard answers within its
 * timeout from the local cache (or refuses, when required), holds nothing past
 * its caps, and records what it accepted meanwhile once Redis is back.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import type { ReplayVerdict } from '../src/server/replay.js';
import { FleetReplayGuard } from '../src/store/replay.js';
import { freePort, storeKit, until } from './helpers/redis.js';

const kit = storeKit();
afterEach(kit.cleanup);
const { redis, store } = kit;
const cleanup = { push: kit.defer };

/** One Redis, two instances (a, b) up, a guard on each. */
async function twoGuards() {
  const r = await redis();
  const a = await store(r.url, { instanceId: 'a' });
  const b = await store(r.url, { instanceId: 'b' });
  await until(() => a.s.state === 'up' && b.s.state === 'up');
  return { r, a, b, ga: new FleetReplayGuard({ store: a.s }), gb: new FleetReplayGuard({ store: b.s }) };
}

let seq = 0;
function nonce(): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt32LE(process.pid, 0);
  b.writeUInt32LE(++seq, 4);
  b.writeUInt32LE((seq * 2654435761) >>> 0, 8);
  return b;
}
const nowSec = () => Math.floor(Date.now() / 1000);

describe('FleetReplayGuard on one Redis', () => {
  it('a nonce accepted by one instance is a replay on another; on the same instance the local cache answers with no round trip', async () => {
    const { r, a, b, ga, gb } = await twoGuards();
    const n = nonce();
    const t = nowSec();
    expect(await ga.check(n, t)).toBe('fresh');
    expect(await gb.check(n, t)).toBe('replay');
    const before = a.calls.filter(([op]) => op === 'replay').length;
    expect(ga.check(n, t)).toBe('replay'); // synchronous: no promise, no call
    expect(a.calls.filter(([op]) => op === 'replay').length).toBe(before);
    // the key holds the instance that accepted it, for the window + skew
    const key = `brook:r:${n.toString('hex')}`;
    expect(await r.command('GET', key)).toBe('$1\r\na\r\n');
    const pttl = Number((await r.command('PTTL', key)).slice(1));
    expect(pttl).toBeGreaterThan(60_000);
    expect(pttl).toBeLessThanOrEqual(67_000);
    // a stale time never reaches the store
    expect(gb.check(nonce(), t - 3600)).toBe('stale');
  });

  it('two instances racing on one nonce: exactly one accepts', async () => {
    const { r, a, b, ga, gb } = await twoGuards();
    const t = nowSec();
    for (let i = 0; i < 200; i++) {
      const n = nonce();
      const v = await Promise.all([ga.check(n, t), gb.check(n, t)]);
      expect(v.sort()).toEqual(['fresh', 'replay']);
    }
  });
});

describe('FleetReplayGuard when Redis fails', () => {
  it('Redis down at start: fresh from the local cache at once (required: refused at once); recorded once Redis is up', async () => {
    const port = await freePort();
    const url = `redis://127.0.0.1:${port}`;
    const a = await store(url, { instanceId: 'a' });
    const ga = new FleetReplayGuard({ store: a.s });
    const req = new FleetReplayGuard({ store: a.s, required: true });
    const early = Array.from({ length: 50 }, () => nonce());
    const t = nowSec();
    for (const n of early) expect(ga.check(n, t)).toBe('fresh'); // synchronous: the store is down, no wait
    expect(() => req.check(nonce(), t)).toThrow(expect.objectContaining({ code: ErrorCodes.STORE_UNAVAILABLE }));
    expect(ga.unrecorded).toBe(50);
    expect(a.s.pending.nonces).toBe(50);
    await redis({ port });
    await until(() => a.s.state === 'up' && ga.unrecorded === 0, 5000, 'the push');
    const b = await store(url, { instanceId: 'b' });
    await until(() => b.s.state === 'up');
    const gb = new FleetReplayGuard({ store: b.s });
    for (const n of early) expect(await gb.check(n, t)).toBe('replay');
  });

  it('killed mid-run, then restarted empty: local verdicts meanwhile; everything accepted in the window is recorded again', async () => {
    const { r, a, b, ga, gb } = await twoGuards();
    const t = nowSec();
    const before = Array.from({ length: 20 }, () => nonce());
    for (const n of before) expect(await ga.check(n, t)).toBe('fresh');

    await r.kill();
    await until(() => a.s.state === 'down', 2000, 'down');
    const during = Array.from({ length: 20 }, () => nonce());
    for (const n of during) expect(ga.check(n, t)).toBe('fresh');
    expect(ga.unrecorded).toBe(20);

    await r.restart(); // empty: the 20 recorded before are gone from Redis
    await until(() => a.s.state === 'up' && ga.unrecorded === 0, 5000, 'the push');
    await until(() => b.s.state === 'up');
    for (const n of [...before, ...during]) expect(await gb.check(n, t)).toBe('replay');
    expect(a.late()).toBe(0);
  });

  it('a replay that got through during an outage is counted when the nonces are pushed', async () => {
    const { r, a, b, ga, gb } = await twoGuards();
    await r.kill();
    await until(() => a.s.state === 'down' && b.s.state === 'down');
    const n = nonce();
    const t = nowSec();
    expect(ga.check(n, t)).toBe('fresh');
    expect(gb.check(n, t)).toBe('fresh'); // the same stream to both, while they cannot tell
    await r.restart();
    await until(() => ga.unrecorded === 0 && gb.unrecorded === 0, 5000, 'the pushes');
    expect(a.late() + b.late()).toBe(1);
  });

  it('SIGSTOP for 2.5 s: every check answers within its timeout, nothing waits past the cap, all freed when the connection is dropped', async () => {
    const r = await redis();
    const cap = 40;
    const timeoutMs = 100;
    const byteCap = 2000;
    const a = await store(r.url, { instanceId: 'a', maxPendingCalls: cap, stallMs: 800 });
    const b = await store(r.url, { instanceId: 'b', maxPendingBytes: byteCap, stallMs: 800 });
    await until(() => a.s.state === 'up' && b.s.state === 'up');
    const ga = new FleetReplayGuard({ store: a.s, timeoutMs });
    const gb = new FleetReplayGuard({ store: b.s, timeoutMs });
    const req = new FleetReplayGuard({ store: a.s, timeoutMs, required: true });
    r.pause();
    cleanup.push(() => r.resume());
    const t = nowSec();
    let maxPending = 0;
    let maxBytes = 0;
    let slowest = 0;
    const timed = (f: () => ReplayVerdict | Promise<ReplayVerdict>): Promise<string> => {
      const t0 = Date.now();
      return Promise.resolve()
        .then(f)
        .catch((e: { code: string }) => e.code)
        .finally(() => (slowest = Math.max(slowest, Date.now() - t0)));
    };
    const fresh: Array<Promise<string>> = [];
    const refused: Array<Promise<string>> = [];
    const stallEnd = Date.now() + 2500;
    while (Date.now() < stallEnd) {
      fresh.push(timed(() => ga.check(nonce(), t)));
      refused.push(timed(() => req.check(nonce(), t)));
      fresh.push(timed(() => gb.check(nonce(), t)));
      maxPending = Math.max(maxPending, a.s.pending.calls);
      maxBytes = Math.max(maxBytes, b.s.pending.bytes);
      await new Promise((res) => setTimeout(res, 5));
    }
    expect((await Promise.all(fresh)).filter((v) => v !== 'fresh')).toEqual([]);
    expect((await Promise.all(refused)).filter((v) => v !== ErrorCodes.STORE_UNAVAILABLE)).toEqual([]);
    expect(maxPending).toBeLessThanOrEqual(cap);
    expect(maxBytes).toBeLessThanOrEqual(byteCap);
    expect(maxBytes).toBeGreaterThan(byteCap / 2);
    expect(slowest).toBeLessThan(timeoutMs + 400); // the timeout, plus event-loop lag on a loaded machine
    expect(a.calls.some(([, res]) => res === 'refused')).toBe(true); // the cap (then the down state) refused at once
    expect(a.calls.some(([, res]) => res === 'timeout')).toBe(true);
    // stallMs after the last read the connection was dropped: nothing is held for the stalled Redis
    expect(a.s.state).toBe('down');
    expect(a.s.pending.calls).toBe(0);
    r.resume();
    await until(() => a.s.state === 'up' && ga.unrecorded === 0, 5000, 'recovery and push');
  });

  it('a Redis answering errors (out of memory): local verdicts, degraded; a wrong password: down', async () => {
    const r = await redis();
    const a = await store(r.url, { instanceId: 'a' });
    await until(() => a.s.state === 'up');
    const ga = new FleetReplayGuard({ store: a.s });
    const req = new FleetReplayGuard({ store: a.s, required: true });
    expect(await r.command('CONFIG', 'SET', 'maxmemory', '1')).toBe('+OK\r\n');
    const t = nowSec();
    expect(await ga.check(nonce(), t)).toBe('fresh');
    await expect(req.check(nonce(), t)).rejects.toMatchObject({ code: ErrorCodes.STORE_UNAVAILABLE, message: expect.stringMatching(/OOM/) });
    expect(a.s.state).toBe('degraded');
    await r.command('CONFIG', 'SET', 'maxmemory', '0');
    await until(() => a.s.state === 'up' && ga.unrecorded === 0, 5000, 'back up');

    const locked = await redis({ requirepass: 'right' });
    const w = await store(locked.url, { instanceId: 'w', password: 'wrong' });
    await new Promise((res) => setTimeout(res, 300));
    expect(w.s.state).toBe('down');
    const gw = new FleetReplayGuard({ store: w.s });
    expect(gw.check(nonce(), t)).toBe('fresh');
  });
});
