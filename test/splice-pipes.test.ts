/**
 * The splice relay's pipes (native/src/splice_worker.c, splice_internal.h): a busy direction's
 * pipe grows once to the growth maximum, the quiet direction keeps the kernel's default, the
 * process-wide growth budget is respected and given back when relays end, growth can be turned
 * off, bad limits are refused with a typed error, and a destination that stops reading and
 * reads again gets every byte (the worker waits for its edge instead of retrying).
 */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes, type BrookError } from '../src/errors.js';
import { PLAIN_TRANSFORM, type RelayStats } from '../src/net/relay.js';
import {
  setSpliceEnabled,
  setSplicePipeLimits,
  SPLICE_PIPE_GROW_BUDGET_DEFAULT,
  SPLICE_PIPE_GROW_MAX_DEFAULT,
  spliceAvailability,
  splicedRelays,
  SpliceRelay,
  startRelay,
} from '../src/net/splice.js';
import { loadSpliceAddon } from '../src/net/splice-addon.js';
import { LOOPBACK, readAllHashed, sendRandom, waitFor, withTimeout } from './helpers/net.js';

const avail = spliceAvailability();
const SKIP = !avail.available;
const NOTE = avail.available ? '' : ` [SKIPPED: ${avail.reason}]`;
const KIB = 1024;
/** The kernel's default pipe size (16 pages of 4 KiB). */
const DEFAULT_PIPE = 64 * KIB;

interface Tunnel {
  c: net.Socket;
  d: net.Socket;
  relay: SpliceRelay;
  ended: Promise<{ err: BrookError | null; stats: RelayStats }>;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanups.splice(0)) await f();
  if (!SKIP) setSplicePipeLimits({ growMaxBytes: SPLICE_PIPE_GROW_MAX_DEFAULT, growBudgetBytes: SPLICE_PIPE_GROW_BUDGET_DEFAULT });
  setSpliceEnabled(true);
});

/** A relay host: each tunnel is client c -> host x <-relay-> y -> destination d. */
async function startHost(): Promise<{ open(early?: Buffer): Promise<Tunnel> }> {
  const all = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    all.add(s);
    s.on('close', () => all.delete(s));
    s.on('error', () => {});
  };
  const accepted: Array<(d: net.Socket) => void> = [];
  const dst = net.createServer({ allowHalfOpen: true }, (d) => {
    track(d);
    accepted.shift()?.(d);
  });
  const relays: Array<(t: Omit<Tunnel, 'c' | 'd'>) => void> = [];
  const host = net.createServer({ allowHalfOpen: true }, (x) => {
    track(x);
    const y = net.connect({ host: LOOPBACK, port: (dst.address() as net.AddressInfo).port, allowHalfOpen: true });
    track(y);
    y.once('connect', () => {
      let done!: (v: { err: BrookError | null; stats: RelayStats }) => void;
      const ended = new Promise<{ err: BrookError | null; stats: RelayStats }>((r) => (done = r));
      const relay = startRelay(x, y, PLAIN_TRANSFORM, { splice: true, onClose: (err, stats) => done({ err, stats }) });
      relays.shift()?.({ relay: relay as SpliceRelay, ended });
    });
  });
  for (const s of [dst, host]) await new Promise<void>((r) => s.listen(0, LOOPBACK, r));
  cleanups.push(async () => {
    for (const s of all) s.destroy();
    await Promise.all([dst, host].map((s) => new Promise<void>((r) => s.close(() => r()))));
  });
  return {
    async open(early) {
      const gotD = new Promise<net.Socket>((r) => accepted.push(r));
      const gotRelay = new Promise<Omit<Tunnel, 'c' | 'd'>>((r) => relays.push(r));
      const c = net.connect({ host: LOOPBACK, port: (host.address() as net.AddressInfo).port, allowHalfOpen: true });
      track(c);
      if (early) c.write(early);
      const d = await withTimeout(gotD, 5000, 'destination accept');
      const t = await withTimeout(gotRelay, 5000, 'relay start');
      expect(t.relay).toBeInstanceOf(SpliceRelay);
      await waitFor(() => t.relay.spliced, 5000, 'spliced');
      return { c, d, ...t };
    },
  };
}

/** Send `bytes` from a to b while both pipes are watched; returns the largest capacities seen. */
async function bulk(t: Tunnel, bytes: number): Promise<{ up: number; down: number }> {
  const seen = { up: 0, down: 0 };
  const watch = setInterval(() => {
    const p = t.relay.pipeCapacity;
    if (p) {
      seen.up = Math.max(seen.up, p.up);
      seen.down = Math.max(seen.down, p.down);
    }
  }, 1);
  try {
    t.d.pause(); // let the pipe fill up first
    const sending = sendRandom(t.c, bytes, { end: true });
    await new Promise((r) => setTimeout(r, 50));
    const [sent, got] = await withTimeout(Promise.all([sending, readAllHashed(t.d)]), 30_000, 'bulk transfer');
    expect(got).toEqual({ hash: sent.hash, bytes, gotEnd: true });
  } finally {
    clearInterval(watch);
  }
  return seen;
}

describe(`splice pipes${NOTE}`, () => {
  it('bad limits are refused with a typed error (and nothing changes)', () => {
    const bad: Array<[number, number]> = [
      [-1, 0],
      [0, -1],
      [1.5, 0],
      [0, 0.5],
      [Number.NaN, 0],
      [0, Number.NaN],
      [Number.POSITIVE_INFINITY, 0],
      [64 * 1024 * 1024, 0],
      [0, 2 ** 41],
    ];
    for (const [growMaxBytes, growBudgetBytes] of bad) {
      let err: unknown = null;
      try {
        setSplicePipeLimits({ growMaxBytes, growBudgetBytes });
      } catch (e) {
        err = e;
      }
      expect((err as BrookError | null)?.code, `${growMaxBytes}, ${growBudgetBytes}`).toBe(ErrorCodes.CONFIG);
    }
  });

  it.skipIf(SKIP)('the addon itself refuses bad limits with EINVAL (and takes good ones)', () => {
    const addon = loadSpliceAddon().addon!;
    const limits = addon.spliceLimits!.bind(addon) as (...a: unknown[]) => number;
    const EINVAL = -22;
    for (const args of [[], [1], ['1', 0], [0, '1'], [null, 0], [-1, 0], [0, -1], [0.5, 0], [Number.NaN, 0], [0, Number.POSITIVE_INFINITY], [17 * 1024 * 1024, 0], [0, 2 ** 41]]) {
      expect(limits(...args), JSON.stringify(args)).toBe(EINVAL);
    }
    expect(limits(0, 0)).toBe(0);
    expect(limits(SPLICE_PIPE_GROW_MAX_DEFAULT, SPLICE_PIPE_GROW_BUDGET_DEFAULT)).toBe(0);
    // spliceInfo of no relay, or without a Float64Array of at least 3
    expect(addon.spliceInfo(12345, new Float64Array(5))).toBeLessThan(0);
  });

  it.skipIf(SKIP)('a busy direction grows its pipe once to the maximum; the quiet one keeps the default', async () => {
    setSplicePipeLimits({ growMaxBytes: 256 * KIB, growBudgetBytes: SPLICE_PIPE_GROW_BUDGET_DEFAULT });
    const h = await startHost();
    const t = await h.open();
    t.d.end();
    const seen = await bulk(t, 16 * 1024 * 1024);
    expect(seen.up).toBe(256 * KIB);
    expect(seen.down).toBe(DEFAULT_PIPE);
    const end = await withTimeout(t.ended, 5000, 'relay end');
    expect(end.err).toBeNull();
    expect(splicedRelays()).toBe(0);
  });

  it.skipIf(SKIP)('growth off (maximum 0, or no budget): pipes keep the default size, bytes intact', async () => {
    const h = await startHost();
    for (const limits of [
      { growMaxBytes: 0, growBudgetBytes: SPLICE_PIPE_GROW_BUDGET_DEFAULT },
      { growMaxBytes: 256 * KIB, growBudgetBytes: 0 },
    ]) {
      setSplicePipeLimits(limits);
      const t = await h.open();
      t.d.end();
      const seen = await bulk(t, 8 * 1024 * 1024);
      expect(seen).toEqual({ up: DEFAULT_PIPE, down: DEFAULT_PIPE });
      expect((await withTimeout(t.ended, 5000, 'relay end')).err).toBeNull();
    }
  });

  it.skipIf(SKIP)('the budget is shared by all relays and given back when a relay ends', async () => {
    // room for exactly one grown pipe
    setSplicePipeLimits({ growMaxBytes: 256 * KIB, growBudgetBytes: 256 * KIB - DEFAULT_PIPE });
    const h = await startHost();
    const first = await h.open();
    expect((await bulk(first, 8 * 1024 * 1024)).up).toBe(256 * KIB);
    // the first relay is still open (its destination has not ended): its growth is in use
    const second = await h.open();
    expect((await bulk(second, 8 * 1024 * 1024)).up).toBe(DEFAULT_PIPE);
    first.d.end();
    second.d.end();
    await withTimeout(Promise.all([first.ended, second.ended]), 5000, 'both ended');
    const third = await h.open();
    third.d.end();
    expect((await bulk(third, 8 * 1024 * 1024)).up).toBe(256 * KIB);
  });

  it.skipIf(SKIP)('a destination that stops reading, then reads again: the worker waits for room, then everything arrives', async () => {
    // the worker's splice toward d answers EAGAIN (it then waits for d's EPOLLOUT instead of
    // retrying), the pipe and the buffers fill, the source stops; d reads again: all arrives
    const h = await startHost();
    const t = await h.open();
    t.d.pause();
    const BYTES = 24 * 1024 * 1024;
    const sending = sendRandom(t.c, BYTES, { end: true });
    let last = -1;
    for (let i = 0; i < 100; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const up = t.relay.stats.up;
      if (up === last) break;
      last = up;
    }
    expect(t.relay.spliced).toBe(true);
    const got = readAllHashed(t.d);
    const sent = await withTimeout(sending, 30_000, 'send');
    expect(await withTimeout(got, 30_000, 'read')).toEqual({ hash: sent.hash, bytes: BYTES, gotEnd: true });
    t.d.end();
    expect((await withTimeout(t.ended, 5000, 'relay end')).err).toBeNull();
  });
});
