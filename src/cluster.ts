/**
 * `--workers N`: run a server or client command in N processes (node:cluster)
 * that share one listening socket.
 *
 *   primary (no traffic)          worker 1 .. worker N (each a whole wsserver / wsclient)
 *   fork N, replace a crashed one  share the TCP listener (wsserver: the HTTP(S) port;
 *   shutdown: disconnect workers   client: the SOCKS5 and --http ports); every TCP
 *   (they stop accepting and       connection and every tunnel lives in one worker
 *   finish open tunnels), kill
 *   them after the grace period
 *
 * Scheduling: SCHED_NONE, the workers accept from the shared socket themselves
 * (the primary never touches a connection: no IPC hop on the connect path).
 *
 * UDP with workers:
 * - server: UDP travels inside TCP tunnels, so a UDP flow is one tunnel in one worker.
 * - client: a SOCKS5 UDP association must receive its datagrams in the worker that
 *   holds its TCP control connection. Each worker therefore binds its own UDP relay
 *   socket on an ephemeral port and announces that port in its UDP ASSOCIATE reply
 *   (RFC 1928: the client sends to BND.ADDR:BND.PORT). With one worker the UDP port
 *   is the TCP port, as upstream does.
 *
 * Replay cache with workers (protocol/probing.md#replays): a replayed stream may land
 * on any worker, so the primary holds the one cache. A worker asks it about each
 * accepted Brook header over the cluster IPC channel ({t: REPLAY_ASK}) and waits,
 * its socket paused, for the verdict. No answer within REPLAY_ANSWER_TIMEOUT_MS (or
 * no channel) refuses the handshake: the check fails closed, like a replay.
 */
import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import { BrookError, ErrorCodes } from './errors.js';
import { createLogger, type Logger } from './log.js';
import { NONCE_SIZE } from './protocol/sizes.js';
import { ReplayCache, type ReplayCacheOptions, type ReplayGuard, type ReplayVerdict } from './server/replay.js';

/**
 * Default worker count: 1. Measured on the 2-core benchmark machine (bench/), where
 * client, server and load generator share the cores, a second worker did not raise
 * 8-stream throughput enough to pay for a second process's ~70 MiB idle RSS; on a
 * dedicated server use --workers <cores>.
 */
export const DEFAULT_WORKERS = 1;
/** Replacements allowed per minute before the primary gives up (a worker that keeps crashing). */
const MAX_RESTARTS_PER_MINUTE = 10;
const RESTART_WINDOW_MS = 60_000;
/** Extra time after the grace period before the primary kills what is left. */
const KILL_SLACK_MS = 1_000;

/** Parse --workers: a positive whole number, or 'auto' (one per core). */
export function parseWorkers(v: string): number {
  if (v === 'auto') return availableParallelism();
  if (!/^[1-9]\d*$/.test(v)) throw new BrookError(ErrorCodes.CONFIG, `--workers expects a positive whole number or "auto", got "${v}"`);
  return Number(v);
}

/** True inside a worker forked by runWithWorkers with more than one worker. */
export function inWorkerPool(): boolean {
  return cluster.isWorker && process.env[WORKERS_ENV] !== undefined && Number(process.env[WORKERS_ENV]) > 1;
}

/**
 * The SOCKS5 UDP relay port a client should bind: undefined (= the TCP port) in a
 * single process, 0 (an ephemeral port of this worker's own) in a worker pool.
 */
export function socks5UdpPortForWorker(): number | undefined {
  return inWorkerPool() ? 0 : undefined;
}

const WORKERS_ENV = 'BROOK_TS_WORKERS';

export interface WorkerOptions {
  workers: number;
  /** Seconds workers get to finish open tunnels on SIGINT/SIGTERM. */
  shutdownGraceSeconds: number;
  log?: Logger;
  /** Servers in Brook mode: the primary holds the replay cache the workers ask. */
  replayCache?: ReplayCacheOptions;
}

const REPLAY_ASK = 'brook-ts:replay-ask';
const REPLAY_ANSWER = 'brook-ts:replay-answer';
/** How long a worker waits for the primary's verdict before refusing the handshake. */
export const REPLAY_ANSWER_TIMEOUT_MS = 2_000;

interface ReplayAsk {
  t: typeof REPLAY_ASK;
  id: number;
  /** The client nonce, hex. */
  nonce: string;
  time: number;
}
interface ReplayAnswer {
  t: typeof REPLAY_ANSWER;
  id: number;
  v: ReplayVerdict;
}

function isReplayAsk(m: unknown): m is ReplayAsk {
  const a = m as ReplayAsk | null;
  return (
    typeof a === 'object' && a !== null && a.t === REPLAY_ASK && Number.isSafeInteger(a.id) &&
    typeof a.nonce === 'string' && a.nonce.length === NONCE_SIZE * 2 && /^[0-9a-f]+$/.test(a.nonce) && Number.isSafeInteger(a.time)
  );
}

/** Primary: answer the workers' replay questions from one cache. */
function serveReplayChecks(o: ReplayCacheOptions): void {
  const cache = new ReplayCache(o);
  cluster.on('message', (w: Worker, m: unknown) => {
    if (!isReplayAsk(m)) return;
    const answer: ReplayAnswer = { t: REPLAY_ANSWER, id: m.id, v: cache.check(Buffer.from(m.nonce, 'hex'), m.time) };
    if (w.isConnected()) w.send(answer, undefined, () => undefined);
  });
}

let workerGuard: ReplayGuard | null = null;

/** Worker: a replay guard that asks the primary (one per process: one listener on the channel). */
export function primaryReplayGuard(timeoutMs = REPLAY_ANSWER_TIMEOUT_MS): ReplayGuard {
  if (workerGuard) return workerGuard;
  let nextId = 0;
  const pending = new Map<number, { resolve: (v: ReplayVerdict) => void; timer: NodeJS.Timeout }>();
  process.on('message', (m: unknown) => {
    const a = m as ReplayAnswer | null;
    if (typeof a !== 'object' || a === null || a.t !== REPLAY_ANSWER) return;
    const p = pending.get(a.id);
    if (!p) return;
    pending.delete(a.id);
    clearTimeout(p.timer);
    p.resolve(a.v === 'fresh' || a.v === 'replay' ? a.v : 'stale');
  });
  workerGuard = {
    check: (nonce, time) =>
      new Promise<ReplayVerdict>((resolve, reject) => {
        const send = process.send?.bind(process);
        if (!send || !process.connected) {
          reject(new BrookError(ErrorCodes.TIMEOUT, 'replay check: no channel to the primary'));
          return;
        }
        const id = ++nextId;
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new BrookError(ErrorCodes.TIMEOUT, `replay check: the primary did not answer within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, { resolve, timer });
        const ask: ReplayAsk = { t: REPLAY_ASK, id, nonce: Buffer.from(nonce).toString('hex'), time };
        send(ask, undefined, undefined, (err: Error | null) => {
          if (!err || !pending.delete(id)) return;
          clearTimeout(timer);
          reject(new BrookError(ErrorCodes.TIMEOUT, `replay check: ${err.message}`));
        });
      }),
  };
  return workerGuard;
}

/** The replay guard a server in this process should use: the primary's in a worker pool, else its own (undefined). */
export function replayGuardForProcess(): ReplayGuard | undefined {
  return inWorkerPool() ? primaryReplayGuard() : undefined;
}

/**
 * Run `start` in this process (workers <= 1, or inside a worker), or fork `workers`
 * workers that each run the same command line (and so `start`). In the primary the
 * returned promise resolves once every worker listens; it rejects when a worker
 * exits before listening (bad flags, port in use) after stopping the others.
 */
export async function runWithWorkers(o: WorkerOptions, start: () => Promise<void>): Promise<void> {
  if (cluster.isWorker) {
    // the primary disconnects us to shut down: our shared listeners are closed by then;
    // open tunnels get the grace period, then we leave (also when they are done: UDP
    // sockets and timers would keep the process alive)
    cluster.worker?.on('disconnect', () => setTimeout(() => process.exit(0), o.shutdownGraceSeconds * 1000));
  }
  if (o.workers <= 1 || cluster.isWorker) {
    await start();
    return;
  }
  const log = o.log ?? createLogger();
  if (o.replayCache) serveReplayChecks(o.replayCache);
  cluster.schedulingPolicy = cluster.SCHED_NONE;
  cluster.setupPrimary({ silent: false });
  let stopping = false;
  const restarts: number[] = [];
  const listening = new Set<number>();

  const fork = () => cluster.fork({ [WORKERS_ENV]: String(o.workers) });
  const forked: import('node:cluster').Worker[] = [];
  const liveWorkers = () => forked.filter((w) => w.process.exitCode === null && w.process.signalCode === null).length;

  await new Promise<void>((resolve, reject) => {
    let ready = false;
    cluster.on('listening', (w) => {
      if (listening.has(w.id)) return;
      listening.add(w.id);
      if (!ready && listening.size >= o.workers) {
        ready = true;
        log({ msg: 'workers listening', workers: o.workers, pids: Object.values(cluster.workers ?? {}).map((x) => x?.process.pid) });
        resolve();
      }
    });
    cluster.on('exit', (w, code, signal) => {
      const wasListening = listening.delete(w.id);
      if (stopping) {
        if (liveWorkers() === 0) process.exit(0);
        return;
      }
      if (!wasListening) {
        // failed at start: stop everything with the worker's code
        stopping = true;
        for (const x of Object.values(cluster.workers ?? {})) x?.process.kill('SIGKILL');
        const err = new BrookError(ErrorCodes.CONFIG, `worker ${w.process.pid} exited before listening (${signal ?? code})`);
        if (!ready) reject(err);
        else process.exit(code || 1);
        return;
      }
      const now = Date.now();
      while (restarts.length > 0 && now - restarts[0]! > RESTART_WINDOW_MS) restarts.shift();
      if (restarts.length >= MAX_RESTARTS_PER_MINUTE) {
        log({ msg: 'workers keep crashing; stopping', restarts: restarts.length });
        stopping = true;
        for (const x of Object.values(cluster.workers ?? {})) x?.process.kill('SIGKILL');
        process.exit(1);
      }
      restarts.push(now);
      log({ msg: 'worker exited; starting a new one', pid: w.process.pid, code, signal });
      forked.push(fork());
    });
    for (let i = 0; i < o.workers; i++) forked.push(fork());
  });

  const shutdown = (signal: string) => {
    if (stopping) {
      // second signal: leave now
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
      process.exit(1);
    }
    stopping = true;
    log({ msg: 'shutting down workers', signal, graceSeconds: o.shutdownGraceSeconds });
    // disconnect (not a signal: a worker in the same process group may have had the
    // terminal's SIGINT already, and a second signal means "leave now"): each worker
    // closes its listeners, finishes its tunnels within the grace period and exits
    const all = Object.values(cluster.workers ?? {});
    for (const w of all) w?.disconnect();
    setTimeout(() => {
      for (const w of all) if (w && w.process.exitCode === null && w.process.signalCode === null) w.process.kill('SIGKILL');
      process.exit(0);
    }, o.shutdownGraceSeconds * 1000 + KILL_SLACK_MS);
    if (liveWorkers() === 0) process.exit(0);
  };
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  // --log FILE: logrotate signals the pid in --pid (ours); each worker reopens its own stream
  process.on('SIGUSR1', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGUSR1');
  });
}

/** Wrap a commander action: `--workers` and `--shutdownGrace` come from its options. */
export function withWorkers<O extends Record<string, unknown>>(action: (o: O) => Promise<void>): (o: O) => Promise<void> {
  return (o: O) =>
    runWithWorkers(
      {
        workers: typeof o['workers'] === 'number' ? o['workers'] : DEFAULT_WORKERS,
        shutdownGraceSeconds: Number(o['shutdownGrace'] ?? 10),
        // servers in Brook mode (the flag exists only on server commands)
        replayCache:
          typeof o['replayCacheSize'] === 'number' && !o['withoutBrookProtocol']
            ? { capacity: o['replayCacheSize'], aheadSeconds: Number(o['maxTimeAhead']) }
            : undefined,
      },
      () => action(o),
    );
}
