/**
 * The workers' channel to their primary (askPrimary, src/cluster.ts) over a real IPC
 * channel: the answer to each question comes back to its own ask (answers out of order,
 * answers to no question and other messages ignored), no answer in time is a TIMEOUT, and
 * a process without a channel fails at once. The primary's side with real workers:
 * test/replay-workers.test.ts.
 */
import { fork } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { askPrimary } from '../src/cluster.js';
import { ErrorCodes } from '../src/errors.js';

interface Ask {
  t: string;
  s: string;
  id: number;
  q: { i: number };
}

/** Fork the child; `onAsk` sees each question and may answer through `send`. */
function run(args: string[], onAsk: (a: Ask, send: (m: unknown) => void) => void): Promise<Record<string, unknown>[]> {
  const child = fork('test/helpers/ask-primary-child.ts', args, { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.on('message', (m) => onAsk(m as Ask, (x) => child.send(x as never)));
  const killer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  return new Promise((resolve) =>
    child.once('close', () => {
      clearTimeout(killer);
      resolve(out.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>));
    }),
  );
}

describe('askPrimary', () => {
  it('each answer reaches its own question, in any order; strays are ignored', async () => {
    const asks: Ask[] = [];
    const results = await run(['2000', '3'], (a, send) => {
      expect(a).toMatchObject({ t: 'brook-ts:ask', s: 'echo' });
      asks.push(a);
      if (asks.length < 3) return;
      send({ t: 'brook-ts:answer', id: 999_999, a: 'nobody asked' });
      send({ t: 'something else', id: asks[0]!.id, a: 'not an answer' });
      for (const x of [...asks].reverse()) send({ t: 'brook-ts:answer', id: x.id, a: { echo: x.q.i } });
    });
    expect(results).toEqual([0, 1, 2].map((i) => ({ i, answer: { echo: i } })));
  }, 30_000);

  it('no answer within the timeout: TIMEOUT', async () => {
    const results = await run(['100', '1'], () => undefined);
    expect(results).toEqual([{ i: 0, code: ErrorCodes.TIMEOUT, error: 'the primary did not answer within 100 ms' }]);
  }, 30_000);

  it('without a channel: TIMEOUT at once', async () => {
    const send = process.send;
    process.send = undefined;
    try {
      await expect(askPrimary('echo', {}, 10_000)).rejects.toMatchObject({ code: ErrorCodes.TIMEOUT, message: 'no channel to the primary' });
    } finally {
      process.send = send;
    }
  });
});
