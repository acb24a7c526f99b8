/**
 * wsserver and wssserver: their flags (one table each, the shared part once) and the one
 * function per command that turns them into the library's options (WsServerOptions,
 * WssServerOptions). The library checks the options; the mapping only translates.
 *
 * --workers: the primary holds the replay cache (a primary service, src/cluster.ts) and
 * each worker's server asks it (WsServerOptions.replay, src/server/replay.ts).
 */
import type { Command } from 'commander';
import { askPrimary, inWorkerPool, type PrimaryService } from '../cluster.js';
import { formatBound } from '../net/listen.js';
import { protocolMode } from '../protocol/mode.js';
import { DEFAULT_PROBE_BYTE_BUDGET, DEFAULT_PROBE_TIMEOUT_MS } from '../server/tunnel.js';
import {
  answerReplayQuestions,
  DEFAULT_MAX_HEADER_AHEAD_SECONDS,
  DEFAULT_REPLAY_CACHE_SIZE,
  remoteReplayGuard,
  REPLAY_ANSWER_TIMEOUT_MS,
  ReplayCache,
  type ReplayGuard,
} from '../server/replay.js';
import { DEFAULT_HEAD_TIMEOUT_MS, DEFAULT_PATH, WsServer, type WsServerOptions } from '../server/wsserver.js';
import { startWssServer, type WssServerOptions } from '../server/wssserver.js';
import { BrookError, ErrorCodes } from '../errors.js';
import {
  cryptoFields,
  EXAMPLE_FLAGS,
  PASSWORD_FILE_HELP,
  processFlags,
  readFlagFile,
  TIMEOUT_FLAGS,
  WITHOUT_BROOK_PROTOCOL_HELP,
  withPasswordSources,
} from './common.js';
import { addFlags, flag, type FlagTable, type FlagValues, listenAddress, positiveInt, seconds, toggle } from './flags.js';
import { type CommandRun, type Runtime, runCommand } from './runtime.js';

function maxPendingFlag(v: string): number | 'auto' {
  return v === 'auto' ? v : positiveInt(v);
}

const BLOCK_LOCAL_HELP =
  "refuse destinations on this host: loopback, link-local (cloud metadata 169.254.169.254), multicast, this host's own addresses, in any form (127.1, ::ffff:127.0.0.1, localhost, a name that resolves there); a name is resolved first and dialled at the address checked (--dialWithSocks5: the proxy gets that address, not the name)";

/** The flags wsserver and wssserver share, in --help's order (after each command's own). */
const SERVER_FLAGS = {
  password: flag('-p, --password <password>', 'server password (visible to local users in ps: prefer --passwordFile)'),
  passwordFile: flag('--passwordFile <file>', PASSWORD_FILE_HELP),
  path: flag('--path <path>', 'URL path', { default: DEFAULT_PATH }),
  ...TIMEOUT_FLAGS,
  withoutBrookProtocol: toggle('--withoutBrookProtocol', WITHOUT_BROOK_PROTOCOL_HELP, false),
  xForwardedFor: toggle('--xForwardedFor', 'log the first X-Forwarded-For address as the client address', false),
  trustedProxies: flag(
    '--trustedProxies <cidrs>',
    'comma-separated addresses/CIDRs of proxies in front: X-Forwarded-For (walked from the right) and PROXY headers are believed only from these; with --proxyProtocol other peers are refused',
  ),
  proxyProtocol: toggle(
    '--proxyProtocol',
    'every connection starts with a PROXY protocol v1/v2 header (HAProxy send-proxy / send-proxy-v2); its source is logged as the client; connections without one are closed',
    false,
  ),
  fallback: flag('--fallback <url|dir>', 'every request that is not a tunnel goes to this site (http(s)://host:port, reverse-proxied) or is served from this folder'),
  host: flag('--host <name>', 'tunnels only for upgrades with this Host (name, or name:port); others get the non-tunnel answer (or the fallback)'),
  probeTimeout: flag('--probeTimeout <seconds>', 'bound on a silent handshake and on the drain after a bad one (s)', { parse: seconds, default: DEFAULT_PROBE_TIMEOUT_MS / 1000 }),
  probeBytes: flag('--probeBytes <bytes>', 'bytes read and discarded after a bad handshake before closing', { parse: positiveInt, default: DEFAULT_PROBE_BYTE_BUDGET }),
  headTimeout: flag(
    '--headTimeout <seconds>',
    'a request head (over TLS: handshake + head) not complete within this is closed without an answer; also the keep-alive idle bound (s)',
    { parse: positiveInt, default: DEFAULT_HEAD_TIMEOUT_MS / 1000 },
  ),
  maxPending: flag<number | 'auto'>(
    '--maxPending <n>',
    'connections that are not tunnels yet (handshake, head, keep-alive); at the cap one is closed for each new one, from the source (IPv4 /24, IPv6 /64) holding most, strangers before sources that had a tunnel lately. auto = (soft RLIMIT_NOFILE - 64) / 4, at least 16 (1024 where the limit is unknown)',
    { parse: maxPendingFlag, default: 'auto' },
  ),
  maxTimeAhead: flag('--maxTimeAhead <seconds>', 'refuse a client header time further than this in the future (upstream: no bound)', { parse: seconds, default: DEFAULT_MAX_HEADER_AHEAD_SECONDS }),
  blockLocal: toggle('--blockLocal', BLOCK_LOCAL_HELP, false),
  replayCacheSize: flag('--replayCacheSize <n>', 'client nonces remembered against replays; when full the oldest go and the window shrinks', { parse: positiveInt, default: DEFAULT_REPLAY_CACHE_SIZE }),
  ...processFlags(),
  // upstream's per-command name of --blockListUpdateInterval (deprecated there); read by parseGlobals
  updateListInterval: flag('--updateListInterval <seconds>', 'old name of the global --blockListUpdateInterval', { hidden: true }),
};

const WSSERVER_FLAGS = {
  ...EXAMPLE_FLAGS,
  listen: flag('-l, --listen <address>', "listen address, like ':9999'", { parse: listenAddress, required: true }),
  ...SERVER_FLAGS,
};

const WSSSERVER_FLAGS = {
  ...EXAMPLE_FLAGS,
  domainaddress: flag('--domainaddress <domain:port>', 'such as domain.com:443; with automatic certificates port 80 is used too', { required: true }),
  cert: flag('--cert <file>', 'certificate file (PEM); without --cert/--certkey a certificate is obtained by ACME'),
  certkey: flag('--certkey <file>', 'certificate key file (PEM)'),
  listen: flag('--listen <address>', 'listen address for https (default: all interfaces, the port of --domainaddress)', { parse: listenAddress }),
  httpListen: flag('--httpListen <address>', 'where to serve ACME HTTP-01 challenges and redirect to https', { parse: listenAddress, default: ':80' }),
  acmeDirectory: flag('--acmeDirectory <url>', "ACME directory URL, or 'production' / 'staging' (Let's Encrypt)", { default: 'production' }),
  acmeEmail: flag('--acmeEmail <email>', 'contact email for the ACME account'),
  acmeCA: flag('--acmeCA <file>', 'CA bundle (PEM) trusted to reach the ACME server'),
  cacheDir: flag('--cacheDir <dir>', 'where the ACME account key and certificates are kept', { default: '.letsencrypt' }),
  acmeSkipChallengeVerification: flag<boolean>(
    '--acmeSkipChallengeVerification',
    "testing only: skip acme-client's own DNS/HTTP pre-check of the HTTP-01 challenge (e.g. against pebble with a name the system resolver does not know)",
    { default: false, hidden: true },
  ),
  ...SERVER_FLAGS,
};

export type ServerFlags = FlagValues<typeof SERVER_FLAGS>;
export type WsServerFlags = FlagValues<typeof WSSERVER_FLAGS>;
export type WssServerFlags = FlagValues<typeof WSSSERVER_FLAGS>;

const REPLAY_SERVICE = 'replay';

/** The primary's replay cache, answering its workers (a mode with a client nonce only: withoutBrookProtocol has none). */
function replayService(f: ServerFlags): PrimaryService[] {
  if (!protocolMode(f.withoutBrookProtocol).replayNonce) return [];
  const answer = answerReplayQuestions(new ReplayCache({ capacity: f.replayCacheSize, aheadSeconds: f.maxTimeAhead }));
  return [{ name: REPLAY_SERVICE, answer }];
}

/** The replay guard of this process: the primary's in a worker pool, else the server's own cache (undefined). */
function replayGuard(f: ServerFlags): ReplayGuard | undefined {
  if (!protocolMode(f.withoutBrookProtocol).replayNonce || !inWorkerPool()) return undefined;
  return remoteReplayGuard((q) => askPrimary(REPLAY_SERVICE, q, REPLAY_ANSWER_TIMEOUT_MS));
}

/** WsServer options from the flags wsserver and wssserver share, and the process's runtime. */
export function serverOptions(f: ServerFlags, rt: Runtime): Omit<WsServerOptions, 'listen'> {
  return {
    password: f.password!, // withPasswordSources refused the command without one
    path: f.path,
    tcpTimeout: f.tcpTimeout,
    udpTimeout: f.udpTimeout,
    keepalive: f.keepalive,
    withoutBrookProtocol: f.withoutBrookProtocol,
    xForwardedFor: f.xForwardedFor,
    trustedProxies: f.trustedProxies,
    proxyProtocol: f.proxyProtocol,
    fallback: f.fallback,
    host: f.host,
    probeTimeoutMs: f.probeTimeout * 1000,
    probeByteBudget: f.probeBytes,
    headTimeoutMs: f.headTimeout * 1000,
    maxPending: typeof f.maxPending === 'number' ? f.maxPending : undefined,
    maxTimeAheadSeconds: f.maxTimeAhead,
    replayCacheSize: f.replayCacheSize,
    replay: replayGuard(f),
    clientHKDFInfo: rt.globals.clientHKDFInfo,
    serverHKDFInfo: rt.globals.serverHKDFInfo,
    dialer: rt.dialer,
    policy: rt.policy,
    metrics: rt.metrics,
    log: rt.log,
  };
}

/** wssserver's options: the certificate from --cert/--certkey, else ACME. */
export function wssServerOptions(f: WssServerFlags, rt: Runtime): WssServerOptions {
  if ((f.cert || f.certkey) && !(f.cert && f.certkey)) throw new BrookError(ErrorCodes.CONFIG, '--cert and --certkey go together');
  const acme = {
    directory: f.acmeDirectory,
    email: f.acmeEmail,
    cacheDir: f.cacheDir,
    caBundle: f.acmeCA ? readFlagFile(f.acmeCA, '--acmeCA') : undefined,
    httpListen: f.httpListen,
    skipChallengeVerification: f.acmeSkipChallengeVerification,
  };
  return {
    ...serverOptions(f, rt),
    domainAddress: f.domainaddress,
    listen: f.listen,
    certificate: f.cert && f.certkey ? { certFile: f.cert, keyFile: f.certkey } : { acme },
  };
}

function addServerCommand<F extends WsServerFlags | WssServerFlags>(program: Command, command: string, description: string, flags: FlagTable, start: CommandRun<F>['start']): void {
  const cmd = addFlags(program.command(command).description(description), flags);
  withPasswordSources(cmd, 'server').action(runCommand<F>({ command, server: true, services: replayService, policy: (f) => ({ blockLocal: f.blockLocal }), start }));
}

export function addServerCommands(program: Command): void {
  addServerCommand<WsServerFlags>(program, 'wsserver', 'Run as brook wsserver, both TCP and UDP: a standard http server and websocket server', WSSERVER_FLAGS, async (f, rt) => {
    const srv = new WsServer({ ...serverOptions(f, rt), listen: f.listen });
    const a = await srv.listen();
    rt.log({ msg: 'listening', command: 'wsserver', listen: formatBound(a), path: f.path, withoutBrookProtocol: f.withoutBrookProtocol, ...cryptoFields(f.crypto) });
    return srv;
  });
  addServerCommand<WssServerFlags>(program, 'wssserver', 'Run as brook wssserver, both TCP and UDP: a standard https server and websocket server', WSSSERVER_FLAGS, async (f, rt) => {
    const h = await startWssServer(wssServerOptions(f, rt));
    rt.log({ msg: 'listening', command: 'wssserver', listen: formatBound(h.address), domain: h.domain, certificate: h.certificate, notAfter: h.notAfter.toISOString() });
    return h;
  });
}
