/**
 * Usage counters across a fleet, for the quotas of the users issue
 * (protocol/fleet.md#usage). The data path only adds to local numbers (add(): no
 * I/O, never per-fragment traffic to Redis); once per interval one SYNC script per
 * batch of users writes this instance's own cumulative counts, refreshes the live
 * devices and reads the fleet totals back, in the same round trip.
 *
 * Idempotent by construction: what is sent is this instance's absolute count (its
 * state file's number plus what it carried since), and the script moves the fleet
 * total by the difference to what the store held for this instance, upwards only. A
 * flush whose reply was lost is sent again as it is, and changes nothing the second
 * time; an outage only delays the next flush (counts keep growing here, nothing is
 * lost, nothing counted twice). No sequence number is needed, and a Redis that came
 * back empty gets each running instance's whole count at its next flush (a heartbeat
 * that finds the store empty marks every user for it).
 *
 *   fleet(user) = the fleet total at the last read - this instance's part of it then
 *                 + this instance's count now      (what a quota is checked against)
 *
 * The first call for a user only reads (its counts go in the same sync's next
 * round): if the store holds more for this instance than its state file said (the
 * file is older than the store: kill -9 after a flush, or a lost file), the
 * difference is adopted into own(), so the count never goes back. Reading first
 * keeps a lost reply from looking like such a past.
 * Later, the store holding more than was sent means a second server uses this
 * instance id (a configuration mistake): the script keeps the larger count, nothing
 * is adopted, and `conflicts` counts it.
 */
import { SYNC } from './scripts.js';
import type { FleetDevices } from './devices.js';
import type { FleetStore } from './store.js';

export const DEFAULT_SYNC_INTERVAL_MS = 1000;
export const DEFAULT_SYNC_TIMEOUT_MS = 2000;
/** Users per SYNC script (a script runs alone in Redis: keep each short). */
export const SYNC_BATCH_USERS = 256;
/** Users tracked at most (the users file bounds them; this bounds a mistake). */
export const DEFAULT_MAX_USERS = 100_000;
/** Values per user in a SYNC reply. */
const SYNC_REPLY_FIELDS = 7;

export interface Counts {
  up: number;
  down: number;
}

interface UserRecord {
  /** This instance's cumulative bytes. */
  own: Counts;
  /** What the state file said (seed), until the first (read-only) call reconciles it with the store; then null. */
  seeded: Counts | null;
  /** What the store is known to hold for this instance. */
  acked: Counts;
  /** The fleet total at the last read, and this instance's part of it then. */
  fleet: Counts;
  ownInFleet: Counts;
  readAt: number;
}

export interface FleetUsageOptions {
  store: FleetStore;
  /** Its live IPs are refreshed in the same script (optional). */
  devices?: FleetDevices;
  intervalMs?: number;
  timeoutMs?: number;
  maxUsers?: number;
  /** After each read of a user's fleet total (the quota check can cut tunnels here). */
  onTotals?: (user: string, fleet: Counts) => void;
  now?: () => number;
}

function count(name: string, v: number): number {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`${name} must be a non-negative safe integer, got ${v}`);
  return v;
}

export class FleetUsage {
  private readonly store: FleetStore;
  private readonly devices: FleetDevices | undefined;
  private readonly users = new Map<string, UserRecord>();
  private readonly timeoutMs: number;
  private readonly maxUsers: number;
  private readonly now: () => number;
  private readonly timer: NodeJS.Timeout;
  private running: Promise<void> | null = null;
  /** add() calls for users past maxUsers (dropped). */
  dropped = 0;
  /** Reads that found more stored for this instance than it sent, after the first (a shared instance id). */
  conflicts = 0;

  constructor(private readonly o: FleetUsageOptions) {
    this.store = o.store;
    this.devices = o.devices;
    this.timeoutMs = o.timeoutMs ?? DEFAULT_SYNC_TIMEOUT_MS;
    this.maxUsers = o.maxUsers ?? DEFAULT_MAX_USERS;
    this.now = o.now ?? Date.now;
    this.store.onBeat((empty) => {
      if (!empty) return;
      for (const r of this.users.values()) r.acked = { up: 0, down: 0 };
      void this.sync();
    });
    this.timer = setInterval(() => void this.sync(), o.intervalMs ?? DEFAULT_SYNC_INTERVAL_MS);
    this.timer.unref();
  }

  /** This instance's counts for `user` from its state file (at start, before traffic). */
  seed(user: string, c: Counts): void {
    const r = this.record(user);
    if (!r) throw new RangeError(`more than ${this.maxUsers} users`);
    r.own = { up: count('up', c.up), down: count('down', c.down) };
    r.seeded = { ...r.own };
  }

  /** Bytes carried for `user` (up: towards the destination). Local only. */
  add(user: string, up: number, down: number): void {
    const r = this.record(user);
    if (!r) {
      this.dropped++;
      return;
    }
    r.own.up += up;
    r.own.down += down;
  }

  /** This instance's cumulative counts (what its state file keeps). */
  own(user: string): Counts {
    const r = this.users.get(user);
    return r ? { ...r.own } : { up: 0, down: 0 };
  }

  /** The fleet's total for `user` as known here (see the top of this file), and when it was read (0: never). */
  fleet(user: string): Counts & { readAt: number } {
    const r = this.users.get(user);
    if (!r) return { up: 0, down: 0, readAt: 0 };
    return {
      up: r.fleet.up - r.ownInFleet.up + r.own.up,
      down: r.fleet.down - r.ownInFleet.down + r.own.down,
      readAt: r.readAt,
    };
  }

  /** Users whose count the store does not hold yet. */
  get unflushed(): number {
    let n = 0;
    for (const r of this.users.values()) if (r.own.up > r.acked.up || r.own.down > r.acked.down) n++;
    return n;
  }

  /** One sync now (the timer's): every user with unflushed counts or a live tunnel here. Never rejects. */
  sync(): Promise<void> {
    if (!this.running) this.running = this.run().finally(() => (this.running = null));
    return this.running;
  }

  /** Stop the timer and flush once more (on SIGTERM, before the store closes). */
  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.running;
    await this.sync();
  }

  private record(user: string): UserRecord | undefined {
    let r = this.users.get(user);
    if (!r) {
      if (this.users.size >= this.maxUsers) return undefined;
      r = { own: { up: 0, down: 0 }, seeded: { up: 0, down: 0 }, acked: { up: 0, down: 0 }, fleet: { up: 0, down: 0 }, ownInFleet: { up: 0, down: 0 }, readAt: 0 };
      this.users.set(user, r);
    }
    return r;
  }

  private due(): string[] {
    const due = new Set<string>();
    for (const [user, r] of this.users) if (r.own.up > r.acked.up || r.own.down > r.acked.down) due.add(user);
    if (this.devices) for (const user of this.devices.users()) due.add(user);
    return [...due];
  }

  private async run(): Promise<void> {
    // a second round writes what the first round's reads reconciled
    for (let round = 0; round < 2; round++) {
      if (this.store.state === 'down') return;
      const due = this.due();
      let reconciled = 0;
      try {
        for (let i = 0; i < due.length; i += SYNC_BATCH_USERS) reconciled += await this.syncBatch(due.slice(i, i + SYNC_BATCH_USERS));
      } catch {
        return; // counted and logged by the store; the counts stay here and go with the next sync
      }
      if (reconciled === 0) return;
    }
  }

  /** One SYNC call; returns how many users it reconciled (read only). */
  private async syncBatch(users: string[]): Promise<number> {
    const keys: string[] = [];
    const args = [this.store.instanceId, String(this.devices?.ttlMs ?? 0)];
    for (const user of users) {
      const r = this.record(user)!;
      const ips = this.devices?.ips(user) ?? [];
      keys.push(this.store.key('u', user), this.store.key('d', user));
      if (r.seeded) args.push('', '', String(ips.length), ...ips);
      else args.push(String(r.own.up), String(r.own.down), String(ips.length), ...ips);
    }
    const reply = await this.store.script<Array<string | number>>({ op: 'sync', timeoutMs: this.timeoutMs }, SYNC.name, keys, args);
    const at = this.now();
    let reconciled = 0;
    users.forEach((user, i) => {
      const v = reply.slice(i * SYNC_REPLY_FIELDS, (i + 1) * SYNC_REPLY_FIELDS).map(Number);
      const r = this.users.get(user)!;
      const before = { up: v[2]!, down: v[3]! };
      const stored = { up: v[4]!, down: v[5]! };
      if (r.seeded) {
        // first read: the store knew more of this instance's past than its state file (sent again next sync)
        r.own.up += Math.max(0, before.up - r.seeded.up);
        r.own.down += Math.max(0, before.down - r.seeded.down);
        r.seeded = null;
        reconciled++;
      } else if (before.up > r.acked.up || before.down > r.acked.down) this.conflicts++;
      r.acked = { up: Math.max(r.acked.up, stored.up), down: Math.max(r.acked.down, stored.down) };
      r.fleet = { up: v[0]!, down: v[1]! };
      r.ownInFleet = stored;
      r.readAt = at;
      this.o.onTotals?.(user, this.fleet(user));
    });
    return reconciled;
  }
}
