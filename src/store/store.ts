/**
 * One connection to the fleet's store (Redis or Valkey), through ioredis, with
 * every bound the server needs when the store misbehaves (protocol/fleet.md#failures):
 *
 *   - nothing waits for the store: no offline queue (a call while disconnected is
 *     refused at once), no resend of unanswered calls after a reconnect;
 *   - every call has its own timeout (the caller's: 250 ms on the connect path);
 *   - what is outstanding is capped (calls and estimated bytes): past the cap a call
 *     is refused at once, so a stalled Redis cannot make us hold memory;
 *   - a connection that reads nothing for stallMs while calls are outstanding is
 *     dropped, which fails every call still held on it (a SIGSTOPped Redis frees
 *     everything within stallMs);
 *   - reconnects back off exponentially (with jitter) up to reconnectMaxMs.
 *
 * A heartbeat each heartbeatMs refreshes this instance's marker key; finding it
 * gone means the store lost its data (restarted empty, flushed, or a long outage)
 * and the listeners re-send what they hold (src/store/replay.ts, src/store/usage.ts).
 *
 * ioredis itself is imported when a store is opened, not when this module loads:
 * a server without --redis never pays for it (as prom-client in src/runtime.ts).
 */
import type { Redis, RedisOptions } from 'ioredis';
import { BrookError, ErrorCodes } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { StoreEndpoint } from './config.js';
import { StoreHealth } from './health.js';
import { noStoreMetrics, type StoreMetrics, type StoreOp, type StorePending, type StoreState } from './metrics.js';
import { SCRIPTS } from './scripts.js';

export const DEFAULT_STORE_PREFIX = 'brook:';
export const DEFAULT_CALL_TIMEOUT_MS = 1000;
export const DEFAULT_CONNECT_TIMEOUT_MS = 2000;
export const DEFAULT_STALL_MS = 2000;
export const DEFAULT_MAX_PENDING_CALLS = 4096;
export const DEFAULT_MAX_PENDING_BYTES = 1 << 20;
export const DEFAULT_HEARTBEAT_MS = 1000;
export const DEFAULT_RECONNECT_MIN_MS = 100;
export const DEFAULT_RECONNECT_MAX_MS = 5000;
/** Lifetime of an instance's marker key; refreshed by every heartbeat. */
export const MARKER_TTL_MS = 3_600_000;
/** Share of a reconnect delay that is random (so a fleet does not reconnect in step). */
const RECONNECT_JITTER = 0.2;
/** Estimated bytes of a call beyond its arguments (RESP framing, ioredis's command object). */
const CALL_OVERHEAD_BYTES = 64;
/** Estimated bytes per argument beyond its length. */
const ARG_OVERHEAD_BYTES = 16;
/** Instance names: a field name and a key part, printable. */
const INSTANCE_ID = /^[A-Za-z0-9._:@\-/]{1,64}$/;
/** Time quit() may take at close before the socket is dropped. */
const QUIT_TIMEOUT_MS = 500;

export interface FleetStoreOptions {
  endpoint: StoreEndpoint;
  /** This server's name in the fleet: unique, and the same across its restarts (its usage counts are filed under it). */
  instanceId: string;
  /** Start of every key (default "brook:"): one Redis can hold several fleets. */
  prefix?: string;
  log?: Logger;
  metrics?: StoreMetrics;
  callTimeoutMs?: number;
  connectTimeoutMs?: number;
  stallMs?: number;
  maxPendingCalls?: number;
  maxPendingBytes?: number;
  heartbeatMs?: number;
  logIntervalMs?: number;
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  now?: () => number;
  random?: () => number;
}

export interface CallOptions {
  op: StoreOp;
  /** Estimated size (storeCallBytes of its arguments). */
  bytes: number;
  timeoutMs?: number;
}

/** What a heartbeat found: `empty` when this instance's marker was gone (the store lost its data). */
export type BeatListener = (empty: boolean) => void;

/** Estimated wire size of a call with these arguments (for the pending-bytes cap). */
export function storeCallBytes(args: ReadonlyArray<string | Buffer | number>): number {
  let n = CALL_OVERHEAD_BYTES;
  for (const a of args) n += ARG_OVERHEAD_BYTES + (typeof a === 'number' ? 20 : a.length);
  return n;
}

/** The error of every store failure (the message says which). */
export function storeUnavailable(msg: string, cause?: unknown): BrookError {
  return new BrookError(ErrorCodes.STORE_UNAVAILABLE, msg, cause === undefined ? undefined : { cause });
}

function positive(name: string, v: number): number {
  if (!Number.isFinite(v) || v <= 0) throw new RangeError(`${name} must be a positive number, got ${v}`);
  return v;
}

type ScriptFn = (numKeys: number, ...args: Array<string | Buffer>) => Promise<unknown>;

export class FleetStore {
  readonly instanceId: string;
  readonly prefix: string;
  readonly display: string;
  readonly log: Logger;
  readonly metrics: StoreMetrics;
  readonly health: StoreHealth;
  private readonly o: Required<Pick<FleetStoreOptions, 'callTimeoutMs' | 'maxPendingCalls' | 'maxPendingBytes' | 'heartbeatMs'>>;
  private readonly now: () => number;
  private client: Redis | null = null;
  private pendingCalls = 0;
  private pendingBytes = 0;
  private lastFailureAt = -Infinity;
  private beatTimer: NodeJS.Timeout | null = null;
  private beating = false;
  private closed = false;
  private readonly beatListeners: BeatListener[] = [];
  private readonly pendingSources: Array<() => number> = [];

  /** Make a store and start connecting; resolves at once, up or not (a store down at start is a state, not an error). */
  static async open(o: FleetStoreOptions): Promise<FleetStore> {
    const { Redis: RedisClass } = await import('ioredis');
    const store = new FleetStore(o);
    store.attach(new RedisClass(store.clientOptions(o)));
    return store;
  }

  private constructor(o: FleetStoreOptions) {
    if (!INSTANCE_ID.test(o.instanceId)) throw new BrookError(ErrorCodes.CONFIG, `instance id must be 1-64 characters of A-Z a-z 0-9 . _ : @ - /, got ${JSON.stringify(o.instanceId)}`);
    this.instanceId = o.instanceId;
    this.prefix = o.prefix ?? DEFAULT_STORE_PREFIX;
    this.display = o.endpoint.display;
    this.log = o.log ?? silentLogger;
    this.metrics = o.metrics ?? noStoreMetrics;
    this.now = o.now ?? Date.now;
    this.o = {
      callTimeoutMs: positive('callTimeoutMs', o.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS),
      maxPendingCalls: positive('maxPendingCalls', o.maxPendingCalls ?? DEFAULT_MAX_PENDING_CALLS),
      maxPendingBytes: positive('maxPendingBytes', o.maxPendingBytes ?? DEFAULT_MAX_PENDING_BYTES),
      heartbeatMs: positive('heartbeatMs', o.heartbeatMs ?? DEFAULT_HEARTBEAT_MS),
    };
    this.health = new StoreHealth({ display: this.display, log: this.log, metrics: this.metrics, logIntervalMs: o.logIntervalMs, now: this.now });
    this.metrics.pending(() => this.pending);
  }

  private clientOptions(o: FleetStoreOptions): RedisOptions {
    const e = o.endpoint;
    const min = positive('reconnectMinMs', o.reconnectMinMs ?? DEFAULT_RECONNECT_MIN_MS);
    const max = positive('reconnectMaxMs', o.reconnectMaxMs ?? DEFAULT_RECONNECT_MAX_MS);
    const random = o.random ?? Math.random;
    return {
      host: e.host,
      port: e.port,
      db: e.db,
      username: e.username,
      password: e.password,
      tls: e.tls,
      connectionName: `brook-ts/${this.instanceId}`,
      lazyConnect: true,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      enableAutoPipelining: true,
      enableReadyCheck: true,
      disableClientInfo: true,
      connectTimeout: positive('connectTimeoutMs', o.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS),
      socketTimeout: positive('stallMs', o.stallMs ?? DEFAULT_STALL_MS),
      retryStrategy: (times) => Math.round(Math.min(max, min * 2 ** Math.min(times - 1, 20)) * (1 - RECONNECT_JITTER + 2 * RECONNECT_JITTER * random())),
      reconnectOnError: null,
      scripts: Object.fromEntries(SCRIPTS.map((s) => [s.name, { lua: s.lua }])),
    };
  }

  private attach(client: Redis): void {
    this.client = client;
    let lastError: string | undefined;
    client.on('error', (e: Error) => {
      lastError = e.message;
      if (this.health.state !== 'down') this.failed(`redis: ${e.message}`);
      else this.health.set('down', e.message);
    });
    client.on('ready', () => {
      lastError = undefined;
      this.health.set('up');
      this.beat();
    });
    client.on('close', () => this.health.set('down', lastError ?? 'connection closed'));
    client.connect().catch(() => {}); // failures arrive as 'error' events; retryStrategy reconnects
    this.beatTimer = setInterval(() => this.beat(), this.o.heartbeatMs);
    this.beatTimer.unref();
  }

  get state(): StoreState {
    return this.closed ? 'down' : this.health.state;
  }

  /** Bytes and calls outstanding, and what the listeners hold for the store. */
  get pending(): StorePending {
    let nonces = 0;
    for (const f of this.pendingSources) nonces += f();
    return { calls: this.pendingCalls, bytes: this.pendingBytes, nonces };
  }

  /** A holder of nonces not yet recorded (for the pending metric). */
  addPendingSource(f: () => number): void {
    this.pendingSources.push(f);
  }

  onBeat(f: BeatListener): void {
    this.beatListeners.push(f);
  }

  key(kind: string, name: string): string {
    return `${this.prefix}${kind}:${name}`;
  }

  /**
   * Run one call (a command or a pipeline) under the bounds: refused at once when the
   * store is down or the cap is reached, rejected after the timeout (its slot in the cap
   * is held until Redis answers or the connection drops). Every failure is a
   * STORE_UNAVAILABLE BrookError saying why.
   */
  call<T>(c: CallOptions, run: (r: Redis) => Promise<T>): Promise<T> {
    const client = this.client;
    if (this.closed || !client || client.status !== 'ready') return this.refuse(c, 'the store is down');
    if (this.pendingCalls >= this.o.maxPendingCalls || this.pendingBytes + c.bytes > this.o.maxPendingBytes) {
      this.failed(`over the cap of what may wait for the store (${this.o.maxPendingCalls} calls, ${this.o.maxPendingBytes} bytes)`);
      return this.refuse(c, 'too much is waiting for the store');
    }
    const started = this.now();
    const timeoutMs = c.timeoutMs ?? this.o.callTimeoutMs;
    this.pendingCalls++;
    this.pendingBytes += c.bytes;
    let p: Promise<T>;
    try {
      p = run(client);
    } catch (e) {
      p = Promise.reject(e);
    }
    return new Promise<T>((resolve, reject) => {
      let done = false;
      const timer = setTimeout(() => {
        done = true;
        this.metrics.call(c.op, 'timeout', this.now() - started);
        this.failed(`no answer within ${timeoutMs} ms`);
        reject(storeUnavailable(`${c.op}: the store did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      p.then(
        (v) => {
          this.settled(c);
          if (done) return;
          clearTimeout(timer);
          this.metrics.call(c.op, 'ok', this.now() - started);
          this.succeeded();
          resolve(v);
        },
        (e: unknown) => {
          this.settled(c);
          if (done) return;
          clearTimeout(timer);
          // ioredis fails what a dropped connection held with MaxRetriesPerRequestError (maxRetriesPerRequest 0)
          const msg = e instanceof Error ? (e.name === 'MaxRetriesPerRequestError' ? 'the connection to the store was lost' : e.message) : String(e);
          this.metrics.call(c.op, 'error', this.now() - started);
          this.failed(msg);
          reject(storeUnavailable(`${c.op}: ${msg}`, e));
        },
      );
    });
  }

  /** Run one of src/store/scripts.ts (EVALSHA, EVAL when Redis lost the script) under call()'s bounds. */
  script<T>(c: Omit<CallOptions, 'bytes'>, name: string, keys: readonly string[], args: ReadonlyArray<string>): Promise<T> {
    const all = [...keys, ...args];
    return this.call({ ...c, bytes: storeCallBytes(all) }, (r) => (r as unknown as Record<string, ScriptFn>)[name]!(keys.length, ...all) as Promise<T>);
  }

  /** Stop: the heartbeat, the state lines, the connection (QUIT, then dropped after QUIT_TIMEOUT_MS). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.beatTimer) clearInterval(this.beatTimer);
    this.health.close();
    const client = this.client;
    if (!client) return;
    if (client.status === 'ready') {
      await Promise.race([client.quit().catch(() => {}), new Promise((r) => setTimeout(r, QUIT_TIMEOUT_MS).unref())]);
    }
    client.disconnect();
  }

  private refuse<T>(c: CallOptions, why: string): Promise<T> {
    this.metrics.call(c.op, 'refused', 0);
    return Promise.reject(storeUnavailable(`${c.op}: ${why}`));
  }

  private settled(c: CallOptions): void {
    this.pendingCalls--;
    this.pendingBytes -= c.bytes;
  }

  /** A call failed: degraded if up; when down, the connection's own error is the better reason and is kept. */
  private failed(reason: string): void {
    this.lastFailureAt = this.now();
    if (this.health.state === 'up') this.health.set('degraded', reason);
    else if (this.health.state === 'degraded') this.health.set('degraded', reason);
  }

  /** Back to up once a call succeeds a heartbeat after the last failure. */
  private succeeded(): void {
    if (this.health.state === 'degraded' && this.now() - this.lastFailureAt >= this.o.heartbeatMs) this.health.set('up');
  }

  /** Refresh the marker (SET NX: "OK" = it was gone, the store lost its data); one at a time. */
  private beat(): void {
    if (this.beating || this.closed || this.client?.status !== 'ready') return;
    this.beating = true;
    const k = this.key('i', this.instanceId);
    const ttl = String(MARKER_TTL_MS);
    this.call({ op: 'heartbeat', bytes: storeCallBytes([k, k, ttl, ttl]) }, (r) => r.pipeline().set(k, String(this.now()), 'PX', ttl, 'NX').pexpire(k, ttl).exec())
      .then((res) => {
        const err = res?.find(([e]) => e)?.[0];
        if (err) throw err;
        const empty = res?.[0]?.[1] === 'OK';
        for (const f of this.beatListeners) f(empty);
      })
      .catch((e: unknown) => this.failed(e instanceof Error ? e.message : String(e)))
      .finally(() => (this.beating = false));
  }
}
