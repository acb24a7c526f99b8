/**
 * Upstream's global options (placed before the command, as `brook --log ... wsserver ...`;
 * accepted after it too) and the process around a command: where logs go, the pid
 * file, metrics, how the process dials, signals, and `--workers`.
 *
 *   --log console|FILE  --tag key:value  --pid FILE              src/ops/logdest.ts, pidfile.ts
 *   --prometheus ADDR  --prometheusPath PATH                     src/ops/metrics.ts
 *   --clientHKDFInfo  --serverHKDFInfo                           src/protocol/cipher.ts
 *   --dialWithDNS ... --dialWithSocks5 ...                       src/dial/
 *
 * With --workers N: the primary writes the pid file and serves the metrics (the sum
 * over the workers); each worker opens the log (appending) and dials by itself.
 */
import cluster from 'node:cluster';
import type { Command } from 'commander';
import { createDialer, defaultDialer, DIAL_FLAGS, type DialConfig, dialConfigFromFlags, type Dialer, type DialFlags } from './dial/index.js';
import { BrookError, ErrorCodes } from './errors.js';
import type { Logger } from './log.js';
import { openLogDestination, parseTags, type Tags } from './ops/logdest.js';
import { createMetrics, type Metrics, type MetricsServer, noMetrics, serveMetrics, shareWithPrimary } from './ops/metrics.js';
import { writePidFile } from './ops/pidfile.js';
import { DEFAULT_WORKERS, withWorkers } from './cluster.js';

type Opts = Record<string, unknown>;

const collect = (v: string, prev: string[]): string[] => [...prev, v];

/** The global options, on the program (commander also takes them after the command). */
export function addGlobalOptions(program: Command): Command {
  program
    .option('--log <where>', "where log lines go: 'console' (stdout, the default) or a file they are appended to; SIGUSR1 reopens the file")
    .option('--tag <key:value>', 'added to every log line, such as region:eu (repeatable)', collect, [])
    .option('--pid <file>', 'write the process id to this file at start, remove it at exit')
    .option('--prometheus <address>', 'serve Prometheus metrics on this address, such as :7070 (with --prometheusPath)')
    .option('--prometheusPath <path>', 'the path of the metrics; on a public address a hard-to-guess one, such as /xxx')
    .option('--clientHKDFInfo <info>', "HKDF info of the client to server direction (default 'brook'); all clients and the server must agree")
    .option('--serverHKDFInfo <info>', "HKDF info of the server to client direction (default 'brook'); all clients and the server must agree");
  for (const f of DIAL_FLAGS) {
    if ('default' in f) program.option(f.flag, f.help, String(f.default));
    else program.option(f.flag, f.help);
  }
  return program;
}

export interface Globals {
  log: string | undefined;
  tags: Tags;
  pid: string | undefined;
  prometheus: { listen: string; path: string } | null;
  clientHKDFInfo: Uint8Array | undefined;
  serverHKDFInfo: Uint8Array | undefined;
  dial: DialConfig;
  /** Whether any --dialWith* option was given (else the plain dialer). */
  dialSet: boolean;
}

/** Check every global option at start: a mistake is a one-line CONFIG error. */
export function parseGlobals(o: Opts): Globals {
  const prometheus = o['prometheus'] as string | undefined;
  const prometheusPath = o['prometheusPath'] as string | undefined;
  if (prometheus && !prometheusPath) throw new BrookError(ErrorCodes.CONFIG, '--prometheus needs --prometheusPath');
  if (prometheusPath && !prometheus) throw new BrookError(ErrorCodes.CONFIG, '--prometheusPath goes with --prometheus');
  if (prometheusPath && !prometheusPath.startsWith('/')) throw new BrookError(ErrorCodes.CONFIG, `--prometheusPath must start with "/": ${prometheusPath}`);
  const info = (k: string) => (typeof o[k] === 'string' ? new TextEncoder().encode(o[k] as string) : undefined);
  const dialFlags = Object.fromEntries(DIAL_FLAGS.map((f) => f.flag.split(' ')[0]!.slice(2)).map((k) => [k, o[k]])) as DialFlags;
  const defaults = Object.fromEntries(DIAL_FLAGS.filter((f) => 'default' in f).map((f) => [f.flag.split(' ')[0]!.slice(2), String((f as { default: unknown }).default)]));
  return {
    log: o['log'] as string | undefined,
    tags: parseTags((o['tag'] as string[] | undefined) ?? []),
    pid: o['pid'] as string | undefined,
    prometheus: prometheus ? { listen: prometheus, path: prometheusPath! } : null,
    clientHKDFInfo: info('clientHKDFInfo'),
    serverHKDFInfo: info('serverHKDFInfo'),
    dial: dialConfigFromFlags(dialFlags),
    dialSet: Object.entries(dialFlags).some(([k, v]) => v !== undefined && v !== defaults[k]),
  };
}

/** What a command runs with in its process. */
export interface Runtime {
  log: Logger;
  metrics: Metrics;
  dialer: Dialer;
  globals: Globals;
}

export interface Running {
  /** Stop: let open tunnels finish within graceMs. */
  close(graceMs: number): Promise<void>;
}

/**
 * A commander action for a long-running command: globals checked, pid file and
 * (in a worker pool) the primary's metrics endpoint, then `start` in this process
 * or in each worker, with its log, metrics and dialer; SIGINT/SIGTERM stop it.
 */
export function runCommand(command: string, start: (o: Opts, rt: Runtime) => Promise<Running>): (o: Opts, cmd: Command) => Promise<void> {
  return async (_o, cmd) => {
    const o = cmd.optsWithGlobals() as Opts;
    const g = parseGlobals(o);
    const pool = !cluster.isWorker && typeof o['workers'] === 'number' && o['workers'] > DEFAULT_WORKERS;
    // SIGUSR1 reopens a --log file; without a listener Node would open its inspector on it
    process.on('SIGUSR1', () => undefined);
    if (!cluster.isWorker && g.pid) writePidFile(g.pid);
    if (pool && g.prometheus) await serveMetrics(g.prometheus.listen, g.prometheus.path, 'cluster');
    await withWorkers(async (wo: Opts) => {
      const dest = await openLogDestination(g.log, g.tags);
      let metrics: Metrics = noMetrics;
      let endpoint: MetricsServer | null = null;
      if (g.prometheus) {
        const m = createMetrics(command);
        metrics = m.metrics;
        if (cluster.isWorker) shareWithPrimary(m.registry);
        else endpoint = await serveMetrics(g.prometheus.listen, g.prometheus.path, m.registry);
      }
      const dialer = g.dialSet ? createDialer(g.dial) : defaultDialer();
      const running = await start(wo, { log: dest.log, metrics, dialer, globals: g });
      onSignals(
        dest.log,
        async (graceMs) => {
          await running.close(graceMs);
          await endpoint?.close();
          dialer.close();
          await dest.close();
        },
        Number(wo['shutdownGrace']),
      );
    })(o);
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
