/**
 * What the fleet store reports (protocol/fleet.md#metrics). Every label takes its
 * values from the fixed sets below, never from traffic or user names. The
 * Prometheus side is src/store/prometheus.ts (prom-client, loaded with --prometheus).
 */

/** up: answering in time; degraded: connected, but calls time out, fail or hit the cap; down: no connection. */
export const STORE_STATES = ['up', 'degraded', 'down'] as const;
export type StoreState = (typeof STORE_STATES)[number];

/** What a call was for. */
export const STORE_OPS = ['replay', 'replay_push', 'sync', 'device', 'heartbeat'] as const;
export type StoreOp = (typeof STORE_OPS)[number];

/** ok: answered; error: Redis answered an error or the connection broke; timeout: no answer in time; refused: not sent (down, or over the cap). */
export const STORE_RESULTS = ['ok', 'error', 'timeout', 'refused'] as const;
export type StoreCallResult = (typeof STORE_RESULTS)[number];

/** Decisions taken locally because the store did not answer. */
export const STORE_FALLBACKS = ['replay', 'device'] as const;
export type StoreFallback = (typeof STORE_FALLBACKS)[number];

/** What is held for the store right now. */
export interface StorePending {
  /** Calls sent (or being sent) and not answered. */
  calls: number;
  /** Their estimated size on the wire. */
  bytes: number;
  /** Accepted nonces not yet recorded in the store (pushed when it is back). */
  nonces: number;
}

export interface StoreMetrics {
  state(s: StoreState): void;
  call(op: StoreOp, result: StoreCallResult, ms: number): void;
  fallback(what: StoreFallback): void;
  /** Read at scrape time. */
  pending(source: () => StorePending): void;
  /** Nonces accepted here while the store was out that another instance had accepted too (replays let through). */
  lateReplays(n: number): void;
}

export const noStoreMetrics: StoreMetrics = {
  state: () => {},
  call: () => {},
  fallback: () => {},
  pending: () => {},
  lateReplays: () => {},
};
