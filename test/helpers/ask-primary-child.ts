/**
 * A child with an IPC channel (test/cluster-ask.test.ts forks it): asks its parent, as a
 * --workers worker asks its primary (askPrimary, src/cluster.ts), and prints each outcome
 * as a JSON line: {i, answer} or {i, code, error}.
 */
import { askPrimary } from '../../src/cluster.js';

const timeoutMs = Number(process.argv[2] ?? 200);
const asks = Number(process.argv[3] ?? 1);
const outcomes = Array.from({ length: asks }, (_, i) =>
  askPrimary('echo', { i }, timeoutMs).then(
    (answer) => ({ i, answer }),
    (e: { code?: string; message?: string }) => ({ i, code: e.code, error: e.message }),
  ),
);
for (const o of await Promise.all(outcomes)) process.stdout.write(JSON.stringify(o) + '\n');
process.disconnect();
