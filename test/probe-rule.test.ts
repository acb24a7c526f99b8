/**
 * The handshake under the probe rule (src/server/probe-rule.ts), without a socket: bytes in,
 * the next step out. What it says decides when and how the server closes (protocol/probing.md);
 * the same rule over real sockets: test/close-rule.test.ts, test/server-probing.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { BrookError, ErrorCodes } from '../src/errors.js';
import { passwordCredential } from '../src/protocol/credential.js';
import type { FirstPayload } from '../src/protocol/header.js';
import { BROOK_MODE, type ProtocolMode, WOB_MODE } from '../src/protocol/mode.js';
import { NONCE_SIZE } from '../src/protocol/sizes.js';
import { handshakeFailureReason, type ReplayWaiter, TunnelHandshake } from '../src/server/probe-rule.js';
import { createReplayCache, type ReplayGuard, type ReplayVerdict } from '../src/server/replay.js';

const PASSWORD = 'probe-rule';
const DST = { type: 'ipv4' as const, host: '127.0.0.1', port: 80 };
const T0 = 1_700_000_000_000;
const now = () => T0;
const LIMITS = { probeTimeoutMs: 1000, probeByteBudget: 4096 };
const none = () => undefined;

function handshake(mode: ProtocolMode = BROOK_MODE, replay: ReplayGuard | null = null, limits = LIMITS) {
  return new TunnelHandshake(mode.serverCodec(passwordCredential(PASSWORD), { now }), limits, replay);
}

function hello(mode: ProtocolMode = BROOK_MODE, nonceByte = 1): Buffer {
  return mode.clientCodec({ password: PASSWORD, network: 'tcp', destination: DST, now, random: (n) => Buffer.alloc(n, nonceByte) }).hello();
}

/** A ReplayWaiter that records what it was told. */
function waiter(): ReplayWaiter & { answers: (BrookError | null)[] } {
  const answers: (BrookError | null)[] = [];
  return { answers, replayAnswered: (r) => answers.push(r) };
}

describe('TunnelHandshake: bytes in, the next step out', () => {
  it.each([['brook', BROOK_MODE], ['withoutBrookProtocol', WOB_MODE]] as const)('%s: a valid preamble a byte at a time is undecided, then a header', (_n, mode) => {
    const hs = handshake(mode);
    const h = hello(mode);
    for (let i = 0; i < h.length - 1; i++) expect(hs.push(h.subarray(i, i + 1), none)).toBe('more');
    expect(hs.push(h.subarray(h.length - 1), none)).toBe('header');
    expect(hs.codec.header?.destination).toEqual(DST);
    expect(hs.received).toBe(h.length);
    expect(hs.failure).toBeNull();
  });

  it('payloads after the header in the same chunk go to emit', () => {
    const c = BROOK_MODE.clientCodec({ password: PASSWORD, network: 'tcp', destination: DST, now });
    const hs = handshake();
    const got: Buffer[] = [];
    expect(hs.push(Buffer.concat([c.hello(), c.seal(Buffer.from('early'))]), (p) => got.push(Buffer.from(p)))).toBe('header');
    expect(Buffer.concat(got).toString()).toBe('early');
  });

  it('a failure is told once ("failed"); later bytes are only counted until the budget ("reset" with the failure)', () => {
    const hs = handshake(BROOK_MODE, null, { probeTimeoutMs: 1000, probeByteBudget: 100 });
    expect(hs.push(Buffer.alloc(NONCE_SIZE + 18, 7), none)).toBe('failed');
    expect(hs.failure?.code).toBe(ErrorCodes.AUTH_FAILED);
    expect(hs.push(Buffer.alloc(70), none)).toBe('more'); // 100 bytes: not past the budget
    expect(hs.push(Buffer.alloc(1), none)).toBe('reset');
    expect(hs.overBudgetError()).toBe(hs.failure);
    expect(hs.deadlineError()).toBe(hs.failure);
  });

  it('a failure past the budget at once is a reset; an undecided stream past it is PROBE_BUDGET', () => {
    const small = { probeTimeoutMs: 1000, probeByteBudget: 10 };
    const bad = handshake(WOB_MODE, null, small);
    expect(bad.push(Buffer.alloc(40), none)).toBe('reset');
    expect(bad.overBudgetError().code).toBe(ErrorCodes.WOB_PASSWORD);
    const undecided = handshake(BROOK_MODE, null, small);
    expect(undecided.push(hello().subarray(0, 11), none)).toBe('reset');
    expect(undecided.overBudgetError().code).toBe(ErrorCodes.PROBE_BUDGET);
    // the budget bounds bytes without a valid header: a header completed in the same chunk is still one
    expect(handshake(BROOK_MODE, null, small).push(hello(), none)).toBe('header');
  });

  it('the deadline: TIMEOUT, or STREAM_TRUNCATED after the client half-closed; the FIN alone changes no step', () => {
    const silent = handshake();
    expect(silent.deadlineError().code).toBe(ErrorCodes.TIMEOUT);
    const ended = handshake();
    expect(ended.push(hello().subarray(0, 5), none)).toBe('more');
    ended.clientEnd();
    expect(ended.push(hello().subarray(5, 6), none)).toBe('more');
    expect(ended.deadlineError().code).toBe(ErrorCodes.STREAM_TRUNCATED);
    expect(ended.deadlineError().message).toContain('after 6 bytes');
  });

  it('refuse(): failed from then on, a reset when already past the budget', () => {
    const hs = handshake(BROOK_MODE, null, { probeTimeoutMs: 1000, probeByteBudget: 100 });
    expect(hs.push(hello(), none)).toBe('header');
    const err = new BrookError(ErrorCodes.REPLAY, 'seen');
    expect(hs.refuse(err)).toBe('failed');
    expect(hs.push(Buffer.alloc(10), none)).toBe('more');
    expect(hs.deadlineError()).toBe(err);
    const late = handshake(BROOK_MODE, null, { probeTimeoutMs: 1000, probeByteBudget: 10 });
    expect(late.push(hello(), none)).toBe('header');
    expect(late.refuse(err)).toBe('reset');
  });

  it('the metrics reason of each failure', () => {
    const reason = (code: string) => handshakeFailureReason(new BrookError(code as never, 'x'));
    expect(reason(ErrorCodes.AUTH_FAILED)).toBe('auth');
    expect(reason(ErrorCodes.WOB_PASSWORD)).toBe('auth');
    expect(reason(ErrorCodes.TIME_STALE)).toBe('stale_time');
    expect(reason(ErrorCodes.TIME_AHEAD)).toBe('stale_time');
    expect(reason(ErrorCodes.REPLAY)).toBe('replay');
    expect(reason(ErrorCodes.PROBE_BUDGET)).toBe('probe_budget');
    expect(reason(ErrorCodes.TIMEOUT)).toBe('timeout');
    expect(reason(ErrorCodes.LENGTH_OVERSIZED)).toBe('malformed');
  });
});

describe('TunnelHandshake.checkReplay', () => {
  const headerOf = (hs: TunnelHandshake, mode: ProtocolMode = BROOK_MODE, nonceByte = 1): FirstPayload => {
    expect(hs.push(hello(mode, nonceByte), none)).toBe('header');
    return hs.codec.header!;
  };

  it('no guard, or no nonce (withoutBrookProtocol): accepted', () => {
    const w = waiter();
    const a = handshake();
    expect(a.checkReplay(headerOf(a), w)).toBeNull();
    const cache = createReplayCache({ now });
    const b = handshake(WOB_MODE, cache);
    expect(b.checkReplay(headerOf(b, WOB_MODE), w)).toBeNull();
    expect(w.answers).toEqual([]);
  });

  it('a local cache answers at once: fresh, then a replay of the same nonce', () => {
    const cache = createReplayCache({ now });
    const w = waiter();
    const first = handshake(BROOK_MODE, cache);
    expect(first.checkReplay(headerOf(first), w)).toBeNull();
    const again = handshake(BROOK_MODE, cache);
    expect((again.checkReplay(headerOf(again), w) as BrookError).code).toBe(ErrorCodes.REPLAY);
    const other = handshake(BROOK_MODE, cache);
    expect(other.checkReplay(headerOf(other, BROOK_MODE, 2), w)).toBeNull();
  });

  it('the verdicts "stale" and a throwing guard are refusals', () => {
    const w = waiter();
    const stale = handshake(BROOK_MODE, { check: () => 'stale' });
    expect((stale.checkReplay(headerOf(stale), w) as BrookError).code).toBe(ErrorCodes.TIME_STALE);
    const throwing = handshake(BROOK_MODE, {
      check: () => {
        throw new BrookError(ErrorCodes.TIMEOUT, 'no answer');
      },
    });
    expect((throwing.checkReplay(headerOf(throwing), w) as BrookError).code).toBe(ErrorCodes.TIMEOUT);
  });

  it('an asynchronous guard: "pending", then the waiter hears the verdict (or the rejection)', async () => {
    const answers: Record<string, Promise<ReplayVerdict>> = {
      fresh: Promise.resolve('fresh'),
      replay: Promise.resolve('replay'),
      failed: Promise.reject(new BrookError(ErrorCodes.TIMEOUT, 'the primary did not answer')),
    };
    const w = waiter();
    for (const k of ['fresh', 'replay', 'failed']) {
      const hs = handshake(BROOK_MODE, { check: () => answers[k]! });
      expect(hs.checkReplay(headerOf(hs), w)).toBe('pending');
    }
    await new Promise((r) => setImmediate(r));
    expect(w.answers.map((a) => a?.code ?? null)).toEqual([null, ErrorCodes.REPLAY, ErrorCodes.TIMEOUT]);
  });
});
