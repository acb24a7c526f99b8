/**
 * The process around a long-running command: the global options checked, where logs go,
 * the pid file, metrics, how the process dials, the block lists, signals, and `--workers`.
 *
 * With --workers N: the primary writes the pid file, serves the metrics (the sum over the
 * workers) and runs the command's primary services (the servers' replay cache); each worker
 * opens the log (appending), dials by itself and runs the command.
 */
import cluster from 'node:cluster';
import type { Command } from 'commander';
import { type PrimaryService, runWithWorkers } from '../cluster.js';
import { type BackendPreference, selectBackend } from '../crypto/index.js';
import { createDialer, defaultDialer, type Dialer } from '../dial/index.js';
import type { Logger } from '../log.js';
import { openLogDestination } from '../ops/logdest.js';
import { type Metrics, noMetrics } from '../ops/metrics.js';
import type { MetricsServer } from '../ops/prometheus.js';
import { writePidFile } from '../ops/pidfile.js';
import { DestinationPolicy, type DestinationPolicyOptions } from '../policy/index.js';
import { type GlobalFlags, type Globals, parseGlobals, refuseBlockOptions } from './globals.js';

/** What a command runs with in its process. */
export interface Runtime {
  log: Logger;
  metrics: Metrics;
  dialer: Dialer;
  /** Server commands with block options: the lists (null otherwise). */
  policy: DestinationPolicy | null;
  globals: Globals;
}

export interface Running {
  /** Stop: let open tunnels finish within graceMs. */
  close(graceMs: number): Promise<void>;
}

/** The flags every long-running command has (src/cli/common.ts, processFlags). */
export interface ProcessFlags {
  crypto: BackendPreference;
  shutdownGrace: number;
  workers: number;
}

export interface CommandRun<F> {
  command: string;
  /** wsserver, wssserver: the block lists apply (elsewhere they are refused). */
  server: boolean;
  /** Started in this process, or in each worker. */
  start(f: F, rt: Runtime): Promise<Running>;
  /** Services the --workers primary runs for its workers (src/cluster.ts). */
  services?(f: F): PrimaryService[];
  /** Server commands: the command's own destination rules (--blockLocal), beside the global block lists. */
  policy?(f: F): Pick<DestinationPolicyOptions, 'blockLocal'>;
}

/**
 * A commander action for a long-running command: globals checked, pid file and (in a
 * worker pool) the primary's metrics endpoint and services, then `start` in this process
 * or in each worker, with its log, metrics and dialer; SIGINT/SIGTERM stop it.
 */
export function runCommand<F extends ProcessFlags>(run: CommandRun<F>): (opts: unknown, cmd: Command) => Promise<void> {
  return async (_opts, cmd) => {
    const f = cmd.optsWithGlobals<F & GlobalFlags>();
    const g = parseGlobals(f);
    if (!run.server) refuseBlockOptions(run.command, g);
    const pool = !cluster.isWorker && f.workers > 1;
    // SIGUSR1 reopens a --log file; without a listener Node would open its inspector on it
    process.on('SIGUSR1', () => undefined);
    if (!cluster.isWorker && g.pid) writePidFile(g.pid);
    // prom-client (about 10 MiB) is loaded only when metrics are asked for
    const prometheus = g.prometheus ? await import('../ops/prometheus.js') : null;
    if (pool && g.prometheus) await prometheus!.serveMetrics(g.prometheus.listen, g.prometheus.path, 'cluster');
    await runWithWorkers({ workers: f.workers, shutdownGraceSeconds: f.shutdownGrace, services: pool ? (run.services?.(f) ?? []) : [] }, async () => {
      const dest = await openLogDestination(g.log, g.tags);
      let metrics: Metrics = noMetrics;
      let endpoint: MetricsServer | null = null;
      if (g.prometheus) {
        const m = prometheus!.createMetrics(run.command);
        metrics = m.metrics;
        if (cluster.isWorker) prometheus!.shareWithPrimary(m.registry);
        else endpoint = await prometheus!.serveMetrics(g.prometheus.listen, g.prometheus.path, m.registry);
      }
      const dialer = g.dialSet ? createDialer(g.dial) : defaultDialer();
      // a domain is checked at the address the process would dial it at (the same resolver)
      const policy = run.server
        ? await DestinationPolicy.load({ ...g.block, ...run.policy?.(f), log: dest.log, resolve: async (host) => [(await dialer.resolve(host)).address] })
        : null;
      selectBackend(f.crypto);
      const running = await run.start(f, { log: dest.log, metrics, dialer, policy, globals: g });
      onSignals(
        dest.log,
        async (graceMs) => {
          await running.close(graceMs);
          policy?.close();
          await endpoint?.close();
          dialer.close();
          await dest.close();
        },
        f.shutdownGrace,
      );
    });
  };
}

function onSignals(log: Logger, close: (graceMs: number) => Promise<void>, graceSeconds: number): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) process.exit(1); // second signal: leave now
    stopping = true;
    log({ msg: 'shutting down', signal, graceSeconds });
    close(graceSeconds * 1000).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}
