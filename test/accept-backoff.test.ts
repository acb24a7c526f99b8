/**
 * Issue 22, item 6 (unit): the client's listeners stop accepting while dials run out of descriptors,
 * waiting dials are tried again once a descriptor is free (the newest quarter given up at each probe
 * that still fails), and one line marks each stop and each resume.
 */
import { describe, expect, it } from 'vitest';
import { BrookError, ErrorCodes, toBrookError } from '../src/errors.js';
import type { LogEntry } from '../src/log.js';
import { AcceptBackoff } from '../src/net/accept-backoff.js';
import { isExhaustion } from '../src/net/descriptor-probe.js';
import { sleep, waitFor } from './helpers/net.js';

const emfile = (): NodeJS.ErrnoException => Object.assign(new Error('connect EMFILE'), { code: 'EMFILE' });

/** A probe that fails while `out.v` is true. */
function probeOf(out: { v: boolean }): () => void {
  return () => {
    if (out.v) throw emfile();
  };
}

describe('isExhaustion', () => {
  it('an errno error with EMFILE/ENFILE/ENOMEM/ENOBUFS, or a BrookError made from one', () => {
    expect(isExhaustion(emfile())).toBe(true);
    expect(isExhaustion(toBrookError(Object.assign(new Error('x'), { code: 'ENFILE' })))).toBe(true);
    expect(isExhaustion(toBrookError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })))).toBe(false);
    expect(isExhaustion(new BrookError(ErrorCodes.OUT_OF_RESOURCES, 'no cause'))).toBe(false);
    expect(isExhaustion(null)).toBe(false);
  });
});

describe('AcceptBackoff', () => {
  it('pauses on a dial out of descriptors (not on another failure), closes new connections at accept, resumes with one line each', async () => {
    const log: LogEntry[] = [];
    const out = { v: true };
    const b = new AcceptBackoff({ log: (e) => log.push(e), probeIntervalMs: 5, probe: probeOf(out) });
    b.dialFailed(toBrookError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' })));
    expect(b.paused).toBe(false);
    b.dialFailed(toBrookError(emfile()));
    b.dialFailed(toBrookError(emfile()));
    expect(b.paused).toBe(true);
    let destroyed = 0;
    const sock = { destroy: () => void destroyed++ };
    expect(b.admit(sock)).toBe(false);
    expect(b.admit(sock)).toBe(false);
    expect(destroyed).toBe(2);
    await sleep(30);
    expect(b.paused).toBe(true);
    out.v = false;
    await waitFor(() => !b.paused, 2000, 'resumed');
    expect(b.admit(sock)).toBe(true);
    expect(log).toEqual([
      { msg: 'out of descriptors: not accepting new connections', code: ErrorCodes.OUT_OF_RESOURCES, error: 'a dial ran out of descriptors: connect EMFILE' },
      { msg: 'descriptors available again: accepting', dropped: 2, gaveUp: 0 },
    ]);
    b.close();
  });

  it('retry(): a dial out of descriptors waits and runs again once a descriptor is free; another failure is thrown at once', async () => {
    const out = { v: true };
    const b = new AcceptBackoff({ probeIntervalMs: 5, probe: probeOf(out) });
    let tries = 0;
    const ok = b.retry(async () => {
      tries++;
      if (tries < 3) throw toBrookError(emfile());
      return 'tunnel';
    });
    await sleep(30);
    expect(tries).toBe(1);
    out.v = false;
    // the first retry runs out again (tries 2) and pauses again; the next probe lets the third through
    expect(await ok).toBe('tunnel');
    expect(tries).toBe(3);
    const refused = toBrookError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }));
    await expect(b.retry(async () => Promise.reject(refused))).rejects.toBe(refused);
    b.close();
  });

  it('each probe that still fails gives up the newest quarter of the waiting dials, with their own error', async () => {
    const out = { v: true };
    const b = new AcceptBackoff({ probeIntervalMs: 20, probe: probeOf(out) });
    const settled: Array<number | string> = [];
    const errors: unknown[] = [];
    const all = Array.from({ length: 8 }, (_, i) => {
      const e = toBrookError(emfile());
      errors.push(e);
      return b.retry(() => Promise.reject(e)).then(
        () => settled.push(`ok ${i}`),
        (err: unknown) => settled.push(err === errors[i] ? i : `wrong error ${i}`),
      );
    });
    await waitFor(() => settled.length >= 2, 2000, 'the first probe gives up two');
    expect(settled.slice(0, 2).sort()).toEqual([6, 7]);
    b.close(); // gives up the rest
    await Promise.all(all);
    expect(settled.slice(2).sort()).toEqual([0, 1, 2, 3, 4, 5]);
    expect(b.paused).toBe(false);
  });

  it('a dial waits at most maxWaitMs in all', async () => {
    let t = 0;
    const b = new AcceptBackoff({ probeIntervalMs: 5, maxWaitMs: 1000, now: () => t, probe: probeOf({ v: true }) });
    const e = toBrookError(emfile());
    const p = b.retry(() => Promise.reject(e));
    await sleep(20);
    t = 1000;
    await expect(p).rejects.toBe(e);
    b.close();
  });
});
