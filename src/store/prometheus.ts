/**
 * The Prometheus side of src/store/metrics.ts (loaded only with --redis and
 * --prometheus, into the registry of src/ops/prometheus.ts's createMetrics):
 *
 *   brook_store_state{state}               1 for the current state (up, degraded, down), 0 for the others
 *   brook_store_calls_total{op,result}     calls by purpose and outcome (ok, error, timeout, refused)
 *   brook_store_call_seconds{op}           time to an answer, answered calls only
 *   brook_store_fallbacks_total{what}      decisions taken locally (replay, device)
 *   brook_store_pending{what}              held for the store now: calls, bytes, nonces
 *   brook_store_late_replays_total         nonces another instance had accepted too during an outage
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { STORE_FALLBACKS, STORE_OPS, STORE_RESULTS, STORE_STATES, type StoreMetrics, type StorePending } from './metrics.js';

/** Seconds: loopback answers in ~0.1 ms, a stall ends at the call's timeout. */
const CALL_BUCKETS = [0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2];

export function createStoreMetrics(registry: Registry): StoreMetrics {
  const registers = [registry];
  const state = new Gauge({ name: 'brook_store_state', help: 'The shared store: 1 for the current state', labelNames: ['state'], registers, aggregator: 'max' });
  const calls = new Counter({ name: 'brook_store_calls_total', help: 'Calls to the shared store by purpose and outcome', labelNames: ['op', 'result'], registers });
  const seconds = new Histogram({ name: 'brook_store_call_seconds', help: 'Time the shared store took to answer', labelNames: ['op'], buckets: CALL_BUCKETS, registers });
  const fallbacks = new Counter({ name: 'brook_store_fallbacks_total', help: 'Decisions taken locally because the store did not answer', labelNames: ['what'], registers });
  const late = new Counter({ name: 'brook_store_late_replays_total', help: 'Nonces accepted here during an outage that another instance had accepted too', registers });
  const sources: Array<() => StorePending> = [];
  new Gauge({
    name: 'brook_store_pending',
    help: 'Held for the shared store now (calls, estimated bytes, unrecorded nonces)',
    labelNames: ['what'],
    registers,
    collect() {
      const sum: StorePending = { calls: 0, bytes: 0, nonces: 0 };
      for (const f of sources) {
        const p = f();
        sum.calls += p.calls;
        sum.bytes += p.bytes;
        sum.nonces += p.nonces;
      }
      for (const what of ['calls', 'bytes', 'nonces'] as const) this.set({ what }, sum[what]);
    },
  });
  // every label set exists from the start (a scrape shows zeros, not gaps)
  for (const s of STORE_STATES) state.set({ state: s }, s === 'down' ? 1 : 0);
  for (const op of STORE_OPS) for (const result of STORE_RESULTS) calls.inc({ op, result }, 0);
  for (const what of STORE_FALLBACKS) fallbacks.inc({ what }, 0);
  return {
    state: (now) => {
      for (const s of STORE_STATES) state.set({ state: s }, s === now ? 1 : 0);
    },
    call: (op, result, ms) => {
      calls.inc({ op, result });
      if (result === 'ok') seconds.observe({ op }, ms / 1000);
    },
    fallback: (what) => fallbacks.inc({ what }),
    pending: (source) => void sources.push(source),
    lateReplays: (n) => late.inc(n),
  };
}
