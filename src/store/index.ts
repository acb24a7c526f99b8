/**
 * The fleet's shared store (protocol/fleet.md): what a server opens with --redis.
 * Import this module lazily (`await import('./store/index.js')`) only when --redis
 * is given; even then ioredis is loaded by openFleet, not by the import.
 *
 *   const fleet = await openFleet({ store: { url, urlFrom: 'argv', passwordFile }, instanceId, required, log });
 *   replay: fleet.replay                       (a ReplayGuard for serveTunnel)
 *   usage:  fleet.usage.add(user, up, down)    fleet.usage.fleet(user) for the quota
 *   devices: await fleet.devices.admit(user, ip, limit); fleet.devices.opened/closed(user, ip)
 *   on SIGTERM: await fleet.close()            (a last flush, then QUIT)
 */
import type { Logger } from '../log.js';
import type { Clock } from '../protocol/header.js';
import { resolveStoreEndpoint, type StoreConfigInput } from './config.js';
import { FleetDevices } from './devices.js';
import type { StoreMetrics } from './metrics.js';
import { FleetReplayGuard } from './replay.js';
import { FleetStore, type FleetStoreOptions } from './store.js';
import { FleetUsage, type Counts } from './usage.js';

export { REDIS_URL_ENV, resolveStoreEndpoint, type StoreConfigInput, type StoreEndpoint } from './config.js';
export { DEFAULT_DEVICE_TTL_MS, FleetDevices } from './devices.js';
export { STORE_STATES, noStoreMetrics, type StoreMetrics, type StoreState } from './metrics.js';
export { DEFAULT_CLOCK_SKEW_MS, DEFAULT_REPLAY_TIMEOUT_MS, FleetReplayGuard } from './replay.js';
export { DEFAULT_STORE_PREFIX, FleetStore, storeUnavailable } from './store.js';
export { DEFAULT_SYNC_INTERVAL_MS, FleetUsage, type Counts } from './usage.js';

export interface FleetOptions {
  store: StoreConfigInput;
  instanceId: string;
  /** --redisRequired: refuse what the store cannot check (default: decide locally). */
  required?: boolean;
  prefix?: string;
  log?: Logger;
  metrics?: StoreMetrics;
  /** Brook mode's replay guard (none for withoutBrookProtocol). */
  replay?: boolean;
  replayCacheSize?: number;
  aheadSeconds?: number;
  syncIntervalMs?: number;
  deviceTtlMs?: number;
  onTotals?: (user: string, fleet: Counts) => void;
  /** Lower-level bounds (timeouts, caps, backoff): see FleetStoreOptions. */
  tuning?: Partial<Omit<FleetStoreOptions, 'endpoint' | 'instanceId' | 'prefix' | 'log' | 'metrics' | 'now'>>;
  now?: Clock;
}

export interface Fleet {
  store: FleetStore;
  replay: FleetReplayGuard | undefined;
  usage: FleetUsage;
  devices: FleetDevices;
  close(): Promise<void>;
}

/** Resolve the URL (a CONFIG error for a bad one), start connecting, and return at once, up or not. */
export async function openFleet(o: FleetOptions): Promise<Fleet> {
  const endpoint = resolveStoreEndpoint(o.store);
  const store = await FleetStore.open({ ...o.tuning, endpoint, instanceId: o.instanceId, prefix: o.prefix, log: o.log, metrics: o.metrics, now: o.now });
  const replay = o.replay === false ? undefined : new FleetReplayGuard({ store, required: o.required, capacity: o.replayCacheSize, aheadSeconds: o.aheadSeconds, now: o.now });
  const devices = new FleetDevices({ store, required: o.required, ttlMs: o.deviceTtlMs });
  const usage = new FleetUsage({ store, devices, intervalMs: o.syncIntervalMs, onTotals: o.onTotals, now: o.now });
  return {
    store,
    replay,
    usage,
    devices,
    close: async () => {
      await usage.close();
      await store.close();
    },
  };
}
