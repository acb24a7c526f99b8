/**
 * Upstream's global options (placed before the command, as `brook --log ... wsserver ...`;
 * accepted after it too) and the process around a command: where logs go, the pid
 * file, metrics, how the process dials, signals, and `--workers`.
 *
 *   --log console|FILE  --tag key:value  --pid FILE              src/ops/logdest.ts, pidfile.ts
 *   --prometheus ADDR  --prometheusPath PATH                     src/ops/metrics.ts
 *   --clientHKDFInfo  --serverHKDFInfo                           src/protocol/cipher.ts
 *   --dialWithDNS ... --dialWithSocks5 ...                       src/dial/
 *   --blockDomainList ... --blockGeoIP  (server commands only)   src/policy/
 *
 * With --workers N: the primary writes the pid file and serves the metrics (the sum
 * over the workers); each worker opens the log (appending) and dials by itself.
 */
import cluster from 'node:cluster';
import { type Command, Option } from 'commander';
import { createDialer, defaultDialer, DIAL_FLAGS, type DialConfig, dialConfigFromFlags, type Dialer, type DialFlags } from './dial/index.js';
import { BrookError, ErrorCodes } from './errors.js';
import type { Logger } from './log.js';
import { openLogDestination, parseTags, type Tags } from './ops/logdest.js';
import { type Metrics, noMetrics } from './ops/metrics.js';
import type { MetricsServer } from './ops/prometheus.js';
import { writePidFile } from './ops/pidfile.js';
import { DestinationPolicy, type DestinationPolicyOptions } from './policy/index.js';
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
  program
    .option('--blockDomainList <file|url>', 'wsserver/wssserver: block destinations in these domains (one a line, suffix match: example.com blocks a.example.com); a file or an http(s) URL')
    .option('--blockCIDR4List <file|url>', 'wsserver/wssserver: block destination IPv4 addresses in these CIDRs (one a line); a file or an http(s) URL')
    .option('--blockCIDR6List <file|url>', 'wsserver/wssserver: block destination IPv6 addresses in these CIDRs (one a line); a file or an http(s) URL')
    .option('--blockGeoIP <country>', 'wsserver/wssserver: block destination IPs of this country, such as US (repeatable)', collect, [])
    .option('--blockGeoIPDatabase <file.mmdb>', 'with --blockGeoIP: a country MMDB file instead of the one shipped')
    .option('--blockListUpdateInterval <seconds>', 'read the block lists again this often (0: once at start); a failed read keeps the last good list', '0')
    // upstream's Go profiler endpoint: recognised, so its command lines fail with a reason, not "unknown option"
    .addOption(new Option('--pprof <address>').hideHelp());
  return program;
}

const BLOCK_FLAGS = ['blockDomainList', 'blockCIDR4List', 'blockCIDR6List', 'blockGeoIPDatabase'] as const;

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
  /** The block options (DestinationPolicy.load; resolve and log are added per process). */
  block: DestinationPolicyOptions;
}

/** Check every global option at start: a mistake is a one-line CONFIG error. */
export function parseGlobals(o: Opts): Globals {
  if (o['pprof'] !== undefined) {
    throw new BrookError(ErrorCodes.CONFIG, "--pprof is Go's profiler endpoint; brook-ts has none: profile with node --cpu-prof or --heapsnapshot-signal");
  }
  const interval = String(o['updateListInterval'] ?? o['blockListUpdateInterval'] ?? '0');
  if (!/^\d+$/.test(interval)) throw new BrookError(ErrorCodes.CONFIG, `--blockListUpdateInterval expects whole seconds, got "${interval}"`);
  const block: DestinationPolicyOptions = {
    blockDomainList: o['blockDomainList'] as string | undefined,
    blockCIDR4List: o['blockCIDR4List'] as string | undefined,
    blockCIDR6List: o['blockCIDR6List'] as string | undefined,
    blockGeoIP: (o['blockGeoIP'] as string[] | undefined) ?? [],
    geoipDatabase: o['blockGeoIPDatabase'] as string | undefined,
    blockListUpdateInterval: Number(interval),
  };
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
    block,
  };
}

/** Upstream applies the block options to its server commands only; elsewhere they are a mistake, not a no-op. */
function refuseBlockOptions(command: string, g: Globals): void {
  const given = [...BLOCK_FLAGS.filter((k) => g.block[k === 'blockGeoIPDatabase' ? 'geoipDatabase' : k]), ...(g.block.blockGeoIP?.length ? ['blockGeoIP'] : [])];
  if (given.length > 0) throw new BrookError(ErrorCodes.CONFIG, `--${given[0]} applies to wsserver and wssserver, not ${command}`);
}

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

/**
 * A commander action for a long-running command: globals checked, pid file and
 * (in a worker pool) the primary's metrics endpoint, then `start` in this process
 * or in each worker, with its log, metrics and dialer; SIGINT/SIGTERM stop it.
 */
export function runCommand(command: string, start: (o: Opts, rt: Runtime) => Promise<Running>): (o: Opts, cmd: Command) => Promise<void> {
  const server = command === 'wsserver' || command === 'wssserver';
  return async (_o, cmd) => {
    const o = cmd.optsWithGlobals() as Opts;
    const g = parseGlobals(o);
    if (!server) refuseBlockOptions(command, g);
    const pool = !cluster.isWorker && typeof o['workers'] === 'number' && o['workers'] > DEFAULT_WORKERS;
    // SIGUSR1 reopens a --log file; without a listener Node would open its inspector on it
    process.on('SIGUSR1', () => undefined);
    if (!cluster.isWorker && g.pid) writePidFile(g.pid);
    // prom-client (about 10 MiB) is loaded only when metrics are asked for
    const prometheus = g.prometheus ? await import('./ops/prometheus.js') : null;
    if (pool && g.prometheus) await prometheus!.serveMetrics(g.prometheus.listen, g.prometheus.path, 'cluster');
    await withWorkers(async (wo: Opts) => {
      const dest = await openLogDestination(g.log, g.tags);
      let metrics: Metrics = noMetrics;
      let endpoint: MetricsServer | null = null;
      if (g.prometheus) {
        const m = prometheus!.createMetrics(command);
        metrics = m.metrics;
        if (cluster.isWorker) prometheus!.shareWithPrimary(m.registry);
        else endpoint = await prometheus!.serveMetrics(g.prometheus.listen, g.prometheus.path, m.registry);
      }
      const dialer = g.dialSet ? createDialer(g.dial) : defaultDialer();
      // a domain is checked at the address the process would dial it at (the same resolver)
      const policy = server
        ? await DestinationPolicy.load({ ...g.block, blockLocal: o['blockLocal'] === true, log: dest.log, resolve: async (host) => [(await dialer.resolve(host)).address] })
        : null;
      const running = await start(wo, { log: dest.log, metrics, dialer, policy, globals: g });
      onSignals(
        dest.log,
        async (graceMs) => {
          await running.close(graceMs);
          policy?.close();
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
