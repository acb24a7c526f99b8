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
 * Services of the primary (runWithWorkers' `services`): a worker asks one a question over
 * the cluster IPC channel (askPrimary: {t: ASK, s: name, id, q}) and the primary answers
 * ({t: ANSWER, id, a}); what a service knows (the servers' replay cache, src/server/replay.ts)
 * is its own, this file only carries the messages. An unknown service or a question the
 * service does not answer gets no answer: the worker's ask times out.
 */
import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import { BrookError, ErrorCodes } from './errors.js';
import { createLogger, type Logger } from './log.js';

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

/** A service the primary runs for its workers: a question in, an answer out (undefined: no answer). */
export interface PrimaryService {
  readonly name: string;
  answer(question: unknown): unknown;
}

export interface WorkerOptions {
  workers: number;
  /** Seconds workers get to finish open tunnels on SIGINT/SIGTERM. */
  shutdownGraceSeconds: number;
  log?: Logger;
  /** Run by the primary of a worker pool for its workers (askPrimary). */
  services?: readonly PrimaryService[];
}

const ASK = 'brook-ts:ask';
const ANSWER = 'brook-ts:answer';

interface Ask {
  t: typeof ASK;
  /** The service's name. */
  s: string;
  id: number;
  q: unknown;
}
interface Answer {
  t: typeof ANSWER;
  id: number;
  a: unknown;
}

function isAsk(m: unknown): m is Ask {
  const a = m as Ask | null;
  return typeof a === 'object' && a !== null && a.t === ASK && typeof a.s === 'string' && Number.isSafeInteger(a.id);
}

/** Primary: answer the workers' questions to `services`. */
function serveWorkers(services: readonly PrimaryService[]): void {
  const byName = new Map(services.map((s) => [s.name, s]));
  cluster.on('message', (w: Worker, m: unknown) => {
    if (!isAsk(m)) return;
    const a = byName.get(m.s)?.answer(m.q);
    if (a === undefined) return;
    const answer: Answer = { t: ANSWER, id: m.id, a };
    if (w.isConnected()) w.send(answer, undefined, () => undefined);
  });
}

/** Worker: the questions waiting for the primary's answer (one listener on the channel per process). */
type Waiting = Map<number, { resolve: (a: unknown) => void; timer: NodeJS.Timeout }>;
let waiting: Waiting | null = null;
let lastId = 0;

function answers(): Waiting {
  if (waiting) return waiting;
  const pending: Waiting = new Map();
  process.on('message', (m: unknown) => {
    const a = m as Answer | null;
    if (typeof a !== 'object' || a === null || a.t !== ANSWER) return;
    const p = pending.get(a.id);
    if (!p) return;
    pending.delete(a.id);
    clearTimeout(p.timer);
    p.resolve(a.a);
  });
  waiting = pending;
  return pending;
}

/**
 * Worker: ask the primary's service `service`. Resolves with its answer (to be checked by
 * the caller: it crossed a process boundary); rejects with TIMEOUT without a channel to the
 * primary, when the message cannot be sent, or when no answer comes within timeoutMs.
 */
export function askPrimary(service: string, question: unknown, timeoutMs: number): Promise<unknown> {
  return new Promise<unknown>((resolve, reject) => {
    const send = process.send?.bind(process);
    if (!send || !process.connected) {
      reject(new BrookError(ErrorCodes.TIMEOUT, 'no channel to the primary'));
      return;
    }
    const pending = answers();
    const id = ++lastId;
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new BrookError(ErrorCodes.TIMEOUT, `the primary did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    pending.set(id, { resolve, timer });
    const ask: Ask = { t: ASK, s: service, id, q: question };
    send(ask, undefined, undefined, (err: Error | null) => {
      if (!err || !pending.delete(id)) return;
      clearTimeout(timer);
      reject(new BrookError(ErrorCodes.TIMEOUT, err.message));
    });
  });
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
  if (o.services?.length) serveWorkers(o.services);
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
