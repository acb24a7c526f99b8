/**
 * The device limit across a fleet (protocol/fleet.md#devices): a user's client IPs
 * in a sorted set <prefix>d:<user> (member: the IP, score: when Redis last saw it),
 * each instance refreshing the IPs of its live tunnels at every sync
 * (src/store/usage.ts), an IP leaving ttlMs after its last tunnel anywhere closed.
 *
 *   admit(user, ip, limit)
 *     the IP has a live tunnel here            -> true, at once (it is counted already)
 *     otherwise the ADMIT script               -> true while fewer than `limit` IPs are there
 *     down / timeout / error                   -> this instance's own count decides (default),
 *                                                 or STORE_UNAVAILABLE is thrown (required)
 *
 * opened / closed keep the live set (tunnels per user and IP); the caller bounds it
 * (one entry per live tunnel's user and IP at most).
 */
import { ADMIT } from './scripts.js';
import { storeUnavailable, type FleetStore } from './store.js';

/** An IP counts this long after the last sync that saw a tunnel from it. */
export const DEFAULT_DEVICE_TTL_MS = 30_000;
/** An admit waits this long for the store (it is on the connect path). */
export const DEFAULT_DEVICE_TIMEOUT_MS = 250;

export interface FleetDevicesOptions {
  store: FleetStore;
  ttlMs?: number;
  timeoutMs?: number;
  required?: boolean;
}

export class FleetDevices {
  readonly ttlMs: number;
  private readonly store: FleetStore;
  private readonly timeoutMs: number;
  private readonly required: boolean;
  /** user -> ip -> live tunnels here. */
  private readonly live = new Map<string, Map<string, number>>();

  constructor(o: FleetDevicesOptions) {
    this.store = o.store;
    this.ttlMs = o.ttlMs ?? DEFAULT_DEVICE_TTL_MS;
    this.timeoutMs = o.timeoutMs ?? DEFAULT_DEVICE_TIMEOUT_MS;
    this.required = o.required ?? false;
  }

  /** May `ip` open a tunnel as `user`, who may use `limit` IPs at once across the fleet? */
  admit(user: string, ip: string, limit: number): boolean | Promise<boolean> {
    const mine = this.live.get(user);
    if (mine?.has(ip)) return true;
    if (this.store.state === 'down') return this.withoutStore(user, limit, null);
    return this.store.script<[number, number]>({ op: 'device', timeoutMs: this.timeoutMs }, ADMIT.name, [this.store.key('d', user)], [ip, String(this.ttlMs), String(limit)]).then(
      ([admitted]) => admitted === 1,
      (e: unknown) => this.withoutStore(user, limit, e),
    );
  }

  /** A tunnel of `user` from `ip` is open here (after admit said yes). */
  opened(user: string, ip: string): void {
    let ips = this.live.get(user);
    if (!ips) this.live.set(user, (ips = new Map()));
    ips.set(ip, (ips.get(ip) ?? 0) + 1);
  }

  closed(user: string, ip: string): void {
    const ips = this.live.get(user);
    const n = ips?.get(ip);
    if (!ips || n === undefined) return;
    if (n > 1) ips.set(ip, n - 1);
    else {
      ips.delete(ip);
      if (ips.size === 0) this.live.delete(user);
    }
  }

  /** Users with a live tunnel here. */
  users(): IterableIterator<string> {
    return this.live.keys();
  }

  /** The IPs of `user`'s live tunnels here. */
  ips(user: string): string[] {
    const ips = this.live.get(user);
    return ips ? [...ips.keys()] : [];
  }

  private withoutStore(user: string, limit: number, e: unknown): boolean {
    if (this.required) throw e ?? storeUnavailable('device: the store is down (--redisRequired)');
    this.store.health.fellBack('device');
    return (this.live.get(user)?.size ?? 0) < limit;
  }
}
