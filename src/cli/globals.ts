/**
 * Upstream's global options (placed before the command, as `brook --log ... wsserver ...`;
 * commander takes them after it too), as one flag table, and their check at start:
 *
 *   --log console|FILE  --tag key:value  --pid FILE              src/ops/logdest.ts, pidfile.ts
 *   --prometheus ADDR  --prometheusPath PATH                     src/ops/metrics.ts
 *   --clientHKDFInfo  --serverHKDFInfo                           src/protocol/cipher.ts
 *   --dialWithDNS ... --dialWithSocks5 ...                       src/dial/ (DIAL_FLAGS)
 *   --blockDomainList ... --blockGeoIP  (server commands only)   src/policy/
 */
import type { Command } from 'commander';
import { DIAL_FLAGS, type DialConfig, dialConfigFromFlags, type DialFlags } from '../dial/index.js';
import { BrookError, ErrorCodes } from '../errors.js';
import { parseTags, type Tags } from '../ops/logdest.js';
import type { DestinationPolicyOptions } from '../policy/index.js';
import { addFlags, collect, type Flag, flag, type FlagValues } from './flags.js';

const dialFlagName = (spec: string) => spec.split(' ')[0]!.slice(2) as keyof DialFlags;

/** --dialWith*: names, help and defaults from src/dial (DIAL_FLAGS). */
const DIAL_TABLE = Object.fromEntries(
  DIAL_FLAGS.map((f) => [dialFlagName(f.flag), 'default' in f ? flag(f.flag, f.help, { default: String(f.default) }) : flag(f.flag, f.help)]),
) as Record<keyof DialFlags, Flag<string | undefined>>;

export const GLOBAL_FLAGS = {
  log: flag('--log <where>', "where log lines go: 'console' (stdout, the default) or a file they are appended to; SIGUSR1 reopens the file"),
  tag: flag('--tag <key:value>', 'added to every log line, such as region:eu (repeatable)', { parse: collect, default: [] as string[] }),
  pid: flag('--pid <file>', 'write the process id to this file at start, remove it at exit'),
  prometheus: flag('--prometheus <address>', 'serve Prometheus metrics on this address, such as :7070 (with --prometheusPath)'),
  prometheusPath: flag('--prometheusPath <path>', 'the path of the metrics; on a public address a hard-to-guess one, such as /xxx'),
  clientHKDFInfo: flag('--clientHKDFInfo <info>', "HKDF info of the client to server direction (default 'brook'); all clients and the server must agree"),
  serverHKDFInfo: flag('--serverHKDFInfo <info>', "HKDF info of the server to client direction (default 'brook'); all clients and the server must agree"),
  ...DIAL_TABLE,
  blockDomainList: flag('--blockDomainList <file|url>', 'wsserver/wssserver: block destinations in these domains (one a line, suffix match: example.com blocks a.example.com); a file or an http(s) URL'),
  blockCIDR4List: flag('--blockCIDR4List <file|url>', 'wsserver/wssserver: block destination IPv4 addresses in these CIDRs (one a line); a file or an http(s) URL'),
  blockCIDR6List: flag('--blockCIDR6List <file|url>', 'wsserver/wssserver: block destination IPv6 addresses in these CIDRs (one a line); a file or an http(s) URL'),
  blockGeoIP: flag('--blockGeoIP <country>', 'wsserver/wssserver: block destination IPs of this country, such as US (repeatable)', { parse: collect, default: [] as string[] }),
  blockGeoIPDatabase: flag('--blockGeoIPDatabase <file.mmdb>', 'with --blockGeoIP: a country MMDB file instead of the one shipped'),
  blockListUpdateInterval: flag('--blockListUpdateInterval <seconds>', 'read the block lists again this often (0: once at start); a failed read keeps the last good list', { default: '0' }),
  // upstream's Go profiler endpoint: recognised, so its command lines fail with a reason, not "unknown option"
  pprof: flag('--pprof <address>', '', { hidden: true }),
};

/** The global flags as commander holds them; `updateListInterval` is the servers' hidden old name of the interval. */
export type GlobalFlags = FlagValues<typeof GLOBAL_FLAGS> & { updateListInterval?: string | undefined };

export function addGlobalOptions(program: Command): Command {
  return addFlags(program, GLOBAL_FLAGS);
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
  /** The block options (DestinationPolicy.load; resolve and log are added per process). */
  block: DestinationPolicyOptions;
}

const info = (s: string | undefined) => (s === undefined ? undefined : new TextEncoder().encode(s));

/** Check every global option at start: a mistake is a one-line CONFIG error. */
export function parseGlobals(f: GlobalFlags): Globals {
  if (f.pprof !== undefined) {
    throw new BrookError(ErrorCodes.CONFIG, "--pprof is Go's profiler endpoint; brook-ts has none: profile with node --cpu-prof or --heapsnapshot-signal");
  }
  const interval = f.updateListInterval ?? f.blockListUpdateInterval;
  if (!/^\d+$/.test(interval)) throw new BrookError(ErrorCodes.CONFIG, `--blockListUpdateInterval expects whole seconds, got "${interval}"`);
  const { prometheus, prometheusPath } = f;
  if (prometheus && !prometheusPath) throw new BrookError(ErrorCodes.CONFIG, '--prometheus needs --prometheusPath');
  if (prometheusPath && !prometheus) throw new BrookError(ErrorCodes.CONFIG, '--prometheusPath goes with --prometheus');
  if (prometheusPath && !prometheusPath.startsWith('/')) throw new BrookError(ErrorCodes.CONFIG, `--prometheusPath must start with "/": ${prometheusPath}`);
  const dialFlags = Object.fromEntries(DIAL_FLAGS.map((d) => [dialFlagName(d.flag), f[dialFlagName(d.flag)]])) as DialFlags;
  const dialDefaults = Object.fromEntries(DIAL_FLAGS.filter((d) => 'default' in d).map((d) => [dialFlagName(d.flag), String((d as { default: unknown }).default)]));
  return {
    log: f.log,
    tags: parseTags(f.tag),
    pid: f.pid,
    prometheus: prometheus ? { listen: prometheus, path: prometheusPath! } : null,
    clientHKDFInfo: info(f.clientHKDFInfo),
    serverHKDFInfo: info(f.serverHKDFInfo),
    dial: dialConfigFromFlags(dialFlags),
    dialSet: Object.entries(dialFlags).some(([k, v]) => v !== undefined && v !== dialDefaults[k]),
    block: {
      blockDomainList: f.blockDomainList,
      blockCIDR4List: f.blockCIDR4List,
      blockCIDR6List: f.blockCIDR6List,
      blockGeoIP: f.blockGeoIP,
      geoipDatabase: f.blockGeoIPDatabase,
      blockListUpdateInterval: Number(interval),
    },
  };
}

const BLOCK_FLAGS = ['blockDomainList', 'blockCIDR4List', 'blockCIDR6List', 'blockGeoIPDatabase'] as const;

/** Upstream applies the block options to its server commands only; elsewhere they are a mistake, not a no-op. */
export function refuseBlockOptions(command: string, g: Globals): void {
  const given = [...BLOCK_FLAGS.filter((k) => g.block[k === 'blockGeoIPDatabase' ? 'geoipDatabase' : k]), ...(g.block.blockGeoIP?.length ? ['blockGeoIP'] : [])];
  if (given.length > 0) throw new BrookError(ErrorCodes.CONFIG, `--${given[0]} applies to wsserver and wssserver, not ${command}`);
}
