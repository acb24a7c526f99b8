/**
 * The brook-ts command line: upstream Brook's command and flag names, short
 * aliases and defaults for wsserver, wsclient, wssserver, wssclient, link and
 * connect. A mistake is one line on stderr and a non-zero exit.
 */
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { resolveServer } from './client/connect.js';
import { WsClient, type WsClientOptions, DEFAULT_SOCKS5_LISTEN } from './client/wsclient.js';
import { DEFAULT_POOL_MAX_IDLE_MS, DEFAULT_POOL_SIZE } from './client/pool.js';
import type { ServerEndpoint } from './client/dial.js';
import { backendName, NATIVE_BACKEND_NAME as NATIVE_NAME, nativeStatus, parseBackendPreference, selectBackend } from './crypto/index.js';
import { PASSWORD_FILE_ENV, resolvePassword } from './password.js';
import { BrookError, ErrorCodes } from './errors.js';
import { buildLink, type LinkKind, linkKindForServer, type LinkOptions, parseLink, parseServerUrl } from './link.js';
import { formatBound } from './net/listen.js';
import { parseHostPort } from './protocol/address.js';
import { DEFAULT_HEAD_TIMEOUT_MS, DEFAULT_PATH, WsServer } from './server/wsserver.js';
import { DEFAULT_PROBE_BYTE_BUDGET, DEFAULT_PROBE_TIMEOUT_MS } from './server/tunnel.js';
import { serverOptionsFromFlags, startWssServer } from './server/wssserver.js';
import { DEFAULT_MAX_HEADER_AHEAD_SECONDS, DEFAULT_REPLAY_CACHE_SIZE } from './server/replay.js';
import { DEFAULT_WORKERS, parseWorkers, socks5UdpPortForWorker } from './cluster.js';
import { addGlobalOptions, runCommand, type Running, type Runtime } from './runtime.js';

export const VERSION = '0.1.0';
/** Seconds open tunnels get to finish after SIGINT/SIGTERM. */
export const DEFAULT_SHUTDOWN_GRACE_SECONDS = 10;

function seconds(v: string): number {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError('expected a whole number of seconds');
  return Number(v);
}

function positiveInt(v: string): number {
  if (!/^[1-9]\d*$/.test(v)) throw new InvalidArgumentError('expected a positive whole number');
  return Number(v);
}

/** Most --pool allows (idle connections per client process). */
const MAX_POOL_SIZE = 64;

function poolSize(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) > MAX_POOL_SIZE) throw new InvalidArgumentError(`expected a whole number from 0 to ${MAX_POOL_SIZE}`);
  return Number(v);
}

function maxPendingFlag(v: string): number | 'auto' {
  return v === 'auto' ? v : positiveInt(v);
}

function listenAddress(v: string): string {
  if (!/^(\[[^\]]+\]|[^:[\]]*):\d{1,5}$/.test(v)) throw new InvalidArgumentError('expected host:port or :port');
  return v;
}

const EXAMPLES: Record<string, string> = {
  wsserver: 'brook-ts wsserver --listen :9999 --password hello',
  wsclient: 'brook-ts wsclient --wsserver ws://1.2.3.4:9999 --password hello --socks5 127.0.0.1:1080',
  wssserver: 'brook-ts wssserver --domainaddress domain.com:443 --password hello',
  wssclient: 'brook-ts wssclient --wssserver wss://domain.com:443/ws --password hello --socks5 127.0.0.1:1080',
  link: 'brook-ts link --server ws://1.2.3.4:9999 --password hello',
  connect: "brook-ts connect --link 'brook://wsserver?password=hello&wsserver=ws%3A%2F%2F1.2.3.4%3A9999' --socks5 127.0.0.1:1080",
};

/** Adds --example to the help; main() answers it before required options are checked. */
function withExample(cmd: Command, _name: string): Command {
  return cmd.option('--example', 'print an example and exit');
}

function commonServerOptions(cmd: Command): Command {
  return withPasswordSources(cmd, 'server')
    .option('-p, --password <password>', 'server password (visible to local users in ps: prefer --passwordFile)')
    .option('--passwordFile <file>', PASSWORD_FILE_HELP)
    .option('--path <path>', 'URL path', DEFAULT_PATH)
    .option('--tcpTimeout <seconds>', 'connection idle timeout (s), 0 = none', seconds, 0)
    .option('--udpTimeout <seconds>', 'UDP flow idle timeout (s)', seconds, 60)
    .option('--keepalive <seconds>', KEEPALIVE_HELP, seconds, 0)
    .option('--withoutBrookProtocol', 'the data will not be encrypted with brook protocol', false)
    .option('--xForwardedFor', 'log the first X-Forwarded-For address as the client address', false)
    .option('--trustedProxies <cidrs>', 'comma-separated addresses/CIDRs of proxies in front: X-Forwarded-For (walked from the right) and PROXY headers are believed only from these; with --proxyProtocol other peers are refused')
    .option('--proxyProtocol', 'every connection starts with a PROXY protocol v1/v2 header (HAProxy send-proxy / send-proxy-v2); its source is logged as the client; connections without one are closed', false)
    .option('--fallback <url|dir>', 'every request that is not a tunnel goes to this site (http(s)://host:port, reverse-proxied) or is served from this folder')
    .option('--host <name>', 'tunnels only for upgrades with this Host (name, or name:port); others get the non-tunnel answer (or the fallback)')
    .option('--probeTimeout <seconds>', 'bound on a silent handshake and on the drain after a bad one (s)', seconds, DEFAULT_PROBE_TIMEOUT_MS / 1000)
    .option('--probeBytes <bytes>', 'bytes read and discarded after a bad handshake before closing', positiveInt, DEFAULT_PROBE_BYTE_BUDGET)
    .option('--headTimeout <seconds>', 'a request head (over TLS: handshake + head) not complete within this is closed without an answer; also the keep-alive idle bound (s)', positiveInt, DEFAULT_HEAD_TIMEOUT_MS / 1000)
    .option('--maxPending <n>', 'connections that are not tunnels yet (handshake, head, keep-alive); at the cap one is closed for each new one, from the source (IPv4 /24, IPv6 /64) holding most, strangers before sources that had a tunnel lately. auto = (soft RLIMIT_NOFILE - 64) / 4, at least 16 (1024 where the limit is unknown)', maxPendingFlag, 'auto')
    .option('--maxTimeAhead <seconds>', 'refuse a client header time further than this in the future (upstream: no bound)', seconds, DEFAULT_MAX_HEADER_AHEAD_SECONDS)
    .option('--replayCacheSize <n>', 'client nonces remembered against replays; when full the oldest go and the window shrinks', positiveInt, DEFAULT_REPLAY_CACHE_SIZE)
    .addOption(new Option('--crypto <backend>', 'AES-GCM backend: auto, native, node').default('auto').argParser(parseBackendPreference))
    .option('--shutdownGrace <seconds>', 'time open tunnels get to finish on SIGINT/SIGTERM', seconds, DEFAULT_SHUTDOWN_GRACE_SECONDS)
    .option('--workers <n>', WORKERS_HELP, parseWorkers, DEFAULT_WORKERS)
    // upstream's per-command name of --blockListUpdateInterval (deprecated there)
    .addOption(new Option('--updateListInterval <seconds>', 'old name of the global --blockListUpdateInterval').hideHelp());
}

function commonClientOptions(cmd: Command): Command {
  return withPasswordSources(cmd, 'client')
    .option('--passwordFile <file>', PASSWORD_FILE_HELP + "; with --link it replaces the link's password (the variable does not)")
    .option('--socks5 <address>', 'where to listen for SOCKS5 connections', listenAddress, DEFAULT_SOCKS5_LISTEN)
    .option('--socks5ServerIP <ip>', 'only if your socks5 server IP is different from listen IP')
    .option('--socks5Username <username>', 'require this SOCKS5 username (RFC 1929)')
    .option('--socks5Password <password>', 'require this SOCKS5 password (RFC 1929)')
    .option('--http <address>', 'where to listen for HTTP proxy connections', listenAddress)
    .option('--tcpTimeout <seconds>', 'connection idle timeout (s), 0 = none', seconds, 0)
    .option('--udpTimeout <seconds>', 'UDP flow idle timeout (s)', seconds, 60)
    .option('--keepalive <seconds>', KEEPALIVE_HELP, seconds, 0)
    .option('--pool <n>', POOL_HELP, poolSize, DEFAULT_POOL_SIZE)
    .option('--poolMaxIdle <seconds>', POOL_MAX_IDLE_HELP, positiveInt, DEFAULT_POOL_MAX_IDLE_MS / 1000)
    .addOption(new Option('--crypto <backend>', 'AES-GCM backend: auto, native, node').default('auto').argParser(parseBackendPreference))
    .option('--shutdownGrace <seconds>', 'time open tunnels get to finish on SIGINT/SIGTERM', seconds, DEFAULT_SHUTDOWN_GRACE_SECONDS)
    .option('--workers <n>', WORKERS_HELP + '; with more than 1 each worker relays UDP on its own port, announced in the UDP ASSOCIATE reply', parseWorkers, DEFAULT_WORKERS);
}

const POOL_HELP =
  'prewarmed tunnels: connections to the server kept ready past the WebSocket upgrade, so a new connection only sends its first fragment; 0 = off (per process with --workers)';
const POOL_MAX_IDLE_HELP = 'a prewarmed connection unused this long (s) is closed and replaced; keep it under the idle cut-off of the server (ours: --probeTimeout, 30 s) and of anything in between';
const NO_TLS_RESUME_HELP = 'do not resume TLS sessions (every connection to the server makes a full TLS handshake)';
const WORKERS_HELP = 'processes sharing the listening socket, or "auto" (one per core)';
const PASSWORD_FILE_HELP = `read the password from this file (one line; a trailing newline is dropped), so it is not on the command line; default: $${PASSWORD_FILE_ENV} when no --password is given`;
const KEEPALIVE_HELP =
  'after this many seconds without sending on a TCP tunnel, send an empty Brook fragment (keeps proxies and CDNs with an idle cut-off from closing it; upstream peers read it as nothing); 0 = off; Brook protocol only';

type Opts = Record<string, unknown>;

function readPem(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new BrookError(ErrorCodes.CONFIG, `cannot read ${what} ${path}: ${(e as Error).message}`);
  }
}

/**
 * --password / --passwordFile / $BROOK_TS_PASSWORD_FILE (src/password.ts), resolved before the
 * command runs: the password becomes the command's --password value, so nothing below reads the
 * file. A client with --link keeps the link's password unless --passwordFile is given.
 */
function withPasswordSources(cmd: Command, role: 'server' | 'client' | 'link'): Command {
  return cmd.hook('preAction', (_self, action) => {
    const o = action.opts() as Opts;
    const link = role === 'client' && o['link'] !== undefined;
    const r = resolvePassword({ password: o['password'] as string | undefined, passwordFile: o['passwordFile'] as string | undefined, link });
    if (link) {
      if (r.source === 'file') action.setOptionValue('linkPassword', r.password);
    } else if (r.password !== undefined) {
      action.setOptionValue('password', r.password);
    } else if (role === 'server') {
      throw new BrookError(ErrorCodes.CONFIG, `--password or --passwordFile (or $${PASSWORD_FILE_ENV}) is required`);
    }
  });
}

/** The start line's "crypto", and with --crypto auto on node:crypto why the addon is not used. */
function cryptoFields(pref: unknown): Record<string, string> {
  const name = backendName();
  const why = name !== NATIVE_NAME && pref === 'auto' ? nativeStatus().reason : null;
  return why ? { crypto: name, cryptoReason: why } : { crypto: name };
}

/**
 * Client settings from --wsserver/--wssserver or --link. With a link, the flags given next to it
 * win over what the link says, as options do in the library's resolveServer (src/client/connect.ts):
 * --passwordFile's password, --address, --ca; --insecure and --withoutBrookProtocol add to it.
 */
function clientSettings(kind: LinkKind, o: Opts): Pick<WsClientOptions, 'endpoint' | 'password' | 'withoutBrookProtocol' | 'clientHKDFInfo' | 'serverHKDFInfo'> {
  if (o['link']) {
    const link = String(o['link']);
    const l = parseLink(link);
    if (kind && l.kind !== kind && o['command'] !== 'connect') {
      throw new BrookError(ErrorCodes.LINK_KIND, `this is a ${l.kind} link; use brook-ts ${l.kind === 'wsserver' ? 'wsclient' : 'wssclient'} or connect`);
    }
    return resolveServer(link, {
      password: o['linkPassword'] as string | undefined,
      address: o['address'] ? String(o['address']) : undefined,
      insecure: Boolean(o['insecure']),
      ca: o['ca'] ? readPem(String(o['ca']), 'CA file') : undefined,
      withoutBrookProtocol: Boolean(o['withoutBrookProtocol']),
    });
  }
  const url = o[kind] as string | undefined;
  const flag = kind === 'wsserver' ? '--wsserver' : '--wssserver';
  if (!url) throw new BrookError(ErrorCodes.CONFIG, `${flag} or --link is required`);
  if (!o['password']) throw new BrookError(ErrorCodes.CONFIG, '--password or --passwordFile is required');
  const u = parseServerUrl(kind, url);
  const address = o['address'] ? parseHostPort(String(o['address'])) : undefined;
  const endpoint: ServerEndpoint = {
    secure: kind === 'wssserver',
    hostPort: u.hostPort,
    hostname: u.hostname,
    port: u.port,
    path: u.path,
    address: address ? { host: address.host, port: address.port } : undefined,
    insecure: Boolean(o['insecure']),
    ca: o['ca'] ? readPem(String(o['ca']), 'CA file') : undefined,
  };
  return { endpoint, password: String(o['password']), withoutBrookProtocol: Boolean(o['withoutBrookProtocol']) };
}

async function runClient(kind: LinkKind, command: string, o: Opts, rt: Runtime): Promise<Running> {
  const log = rt.log;
  selectBackend(o['crypto'] as 'auto');
  const s = clientSettings(kind, { ...o, command });
  // a link's HKDF infos win over the global options
  s.clientHKDFInfo ??= rt.globals.clientHKDFInfo;
  s.serverHKDFInfo ??= rt.globals.serverHKDFInfo;
  const auth =
    o['socks5Username'] !== undefined || o['socks5Password'] !== undefined
      ? { username: String(o['socks5Username'] ?? ''), password: String(o['socks5Password'] ?? '') }
      : undefined;
  const client = new WsClient({
    ...s,
    socks5: String(o['socks5']),
    socks5ServerIP: o['socks5ServerIP'] as string | undefined,
    socks5Auth: auth,
    socks5UdpPort: socks5UdpPortForWorker(),
    http: o['http'] as string | undefined,
    tcpTimeout: o['tcpTimeout'] as number,
    udpTimeout: o['udpTimeout'] as number,
    keepalive: o['keepalive'] as number,
    pool: { size: o['pool'] as number, maxIdleMs: (o['poolMaxIdle'] as number) * 1000 },
    tlsResume: !o['noTlsResume'],
    dialer: rt.dialer,
    metrics: rt.metrics,
    log,
  });
  await client.listen();
  const a = client.socks.address();
  const h = client.httpAddress();
  log({
    msg: 'listening',
    command,
    socks5: formatBound(a),
    ...(h ? { http: `${h.host}:${h.port}` } : {}),
    server: `${s.endpoint.secure ? 'wss' : 'ws'}://${s.endpoint.hostPort}${s.endpoint.path}`,
    withoutBrookProtocol: Boolean(s.withoutBrookProtocol),
    ...cryptoFields(o['crypto']),
  });
  return client;
}

export function buildProgram(): Command {
  const program = new Command('brook-ts')
    .description("Brook's WebSocket mode for Node.js, wire-compatible with upstream Brook")
    .version(VERSION)
    .showSuggestionAfterError(true)
    // commander's errors (and its "(Did you mean ...?)" hint) as one line, like ours: "brook-ts: ..."
    .configureOutput({ outputError: (str, write) => write(`brook-ts: ${str.trim().replace(/^error: /, '').replace(/\s*\n\s*/g, ' ')}\n`) });
  addGlobalOptions(program);

  const wsserver = commonServerOptions(
    withExample(program.command('wsserver').description('Run as brook wsserver, both TCP and UDP: a standard http server and websocket server'), 'wsserver').requiredOption(
      '-l, --listen <address>',
      "listen address, like ':9999'",
      listenAddress,
    ),
  );
  wsserver.action(runCommand('wsserver', async (o: Opts, rt: Runtime) => {
    const log = rt.log;
    selectBackend(o['crypto'] as 'auto');
    const srv = new WsServer(serverOptionsFromFlags(o, String(o['listen']), rt));
    const a = await srv.listen();
    log({
      msg: 'listening',
      command: 'wsserver',
      listen: formatBound(a),
      path: String(o['path']),
      withoutBrookProtocol: Boolean(o['withoutBrookProtocol']),
      ...cryptoFields(o['crypto']),
    });
    return srv;
  }));

  const wssserver = commonServerOptions(
    withExample(program.command('wssserver').description('Run as brook wssserver, both TCP and UDP: a standard https server and websocket server'), 'wssserver')
      .requiredOption('--domainaddress <domain:port>', 'such as domain.com:443; with automatic certificates port 80 is used too')
      .option('--cert <file>', 'certificate file (PEM); without --cert/--certkey a certificate is obtained by ACME')
      .option('--certkey <file>', 'certificate key file (PEM)')
      .option('--listen <address>', 'listen address for https (default: all interfaces, the port of --domainaddress)', listenAddress)
      .option('--httpListen <address>', 'where to serve ACME HTTP-01 challenges and redirect to https', listenAddress, ':80')
      .option('--acmeDirectory <url>', "ACME directory URL, or 'production' / 'staging' (Let's Encrypt)", 'production')
      .option('--acmeEmail <email>', 'contact email for the ACME account')
      .option('--acmeCA <file>', 'CA bundle (PEM) trusted to reach the ACME server')
      .option('--cacheDir <dir>', 'where the ACME account key and certificates are kept', '.letsencrypt')
      .addOption(
        new Option('--acmeSkipChallengeVerification', "testing only: skip acme-client's own DNS/HTTP pre-check of the HTTP-01 challenge (e.g. against pebble with a name the system resolver does not know)")
          .default(false)
          .hideHelp(),
      ),
  );
  wssserver.action(runCommand('wssserver', async (o: Opts, rt: Runtime) => {
    selectBackend(o['crypto'] as 'auto');
    return startWssServer(o, rt);
  }));

  const wsclient = commonClientOptions(
    withExample(program.command('wsclient').description('Run as brook wsclient, both TCP and UDP, to start a socks5 proxy'), 'wsclient')
      .option('-s, --wsserver <url>', 'brook wsserver address, like ws://1.2.3.4:80; if no path then /ws is used')
      .option('-p, --password <password>', 'brook wsserver password')
      .option('--link <link>', "brook link: replaces --wsserver and --password; --address and --ca given beside it replace the link's")
      .option('--address <host:port>', 'dial this address instead of resolving the host of --wsserver (or of the link, replacing its address)')
      .option('--withoutBrookProtocol', 'the data will not be encrypted with brook protocol', false),
  );
  wsclient.action(runCommand('wsclient', (o: Opts, rt: Runtime) => runClient('wsserver', 'wsclient', o, rt)));

  const wssclient = commonClientOptions(
    withExample(program.command('wssclient').description('Run as brook wssclient, both TCP and UDP, to start a socks5 proxy'), 'wssclient')
      .option('-s, --wssserver <url>', 'brook wssserver address, like wss://domain.com:443; if no path then /ws is used')
      .option('-p, --password <password>', 'brook wssserver password')
      .option('--link <link>', "brook link: replaces --wssserver and --password; --address and --ca given beside it replace the link's")
      .option('--address <host:port>', 'dial this address instead of resolving the host of --wssserver (or of the link, replacing its address)')
      .option('--insecure', "do not verify the server's certificate chain and host name", false)
      .option('--ca <file>', 'trust this CA (PEM) in addition to the system ones')
      .option('--noTlsResume', NO_TLS_RESUME_HELP, false)
      .option('--withoutBrookProtocol', 'the data will not be encrypted with brook protocol', false),
  );
  wssclient.action(runCommand('wssclient', (o: Opts, rt: Runtime) => runClient('wssserver', 'wssclient', o, rt)));

  const connect = commonClientOptions(
    withExample(program.command('connect').description('Connect to a brook link (wsserver or wssserver)'), 'connect')
      .requiredOption('-l, --link <link>', 'brook link, you can get it via brook-ts link')
      .option('--noTlsResume', NO_TLS_RESUME_HELP + ' (wssserver links)', false),
  );
  connect.action(runCommand('connect', (o: Opts, rt: Runtime) => {
    const l = parseLink(String(o['link']));
    return runClient(l.kind, 'connect', o, rt);
  }));

  withPasswordSources(withExample(program.command('link').description('Generate a brook link'), 'link'), 'link')
    .requiredOption('-s, --server <url>', 'ws://1.2.3.4:9999 or wss://domain.com:443/ws')
    .option('-p, --password <password>', 'password (default: empty)')
    .option('--passwordFile <file>', PASSWORD_FILE_HELP)
    .option('-u, --username <username>', 'username')
    .option('--name <name>', 'give this server a name')
    .option('--address <host:port>', 'dial this address instead of resolving the host of the server')
    .option('--insecure', "client does not verify the server's certificate chain and host name")
    .option('--ca <file>', 'embed this CA (PEM) in the link')
    .option('--withoutBrookProtocol', 'the data will not be encrypted with brook protocol')
    .option('--clientHKDFInfo <info>', 'HKDF info for the client to server direction')
    .option('--serverHKDFInfo <info>', 'HKDF info for the server to client direction')
    .action((_o: Opts, cmd: Command) => {
      // --clientHKDFInfo / --serverHKDFInfo are global options too: read them from there
      const o = cmd.optsWithGlobals() as Opts;
      const server = String(o['server']);
      const kind = linkKindForServer(server);
      parseServerUrl(kind, server);
      const options: LinkOptions = {
        address: o['address'] as string | undefined,
        insecure: o['insecure'] ? true : undefined,
        ca: o['ca'] ? readPem(String(o['ca']), 'CA file') : undefined,
        withoutBrookProtocol: o['withoutBrookProtocol'] ? true : undefined,
        clientHKDFInfo: o['clientHKDFInfo'] as string | undefined,
        serverHKDFInfo: o['serverHKDFInfo'] as string | undefined,
        name: o['name'] as string | undefined,
        username: o['username'] as string | undefined,
      };
      process.stdout.write(buildLink(kind, server, String(o['password'] ?? ''), options) + '\n');
    });

  return program;
}

/** Entry point: runs the program; a BrookError becomes one line on stderr and exit code 1. */
export async function main(argv: string[] = process.argv): Promise<void> {
  const command = argv[2];
  if (command && argv.slice(3).includes('--example') && EXAMPLES[command]) {
    process.stdout.write(EXAMPLES[command] + '\n');
    return;
  }
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    const msg = e instanceof BrookError ? e.message : (e as Error)?.message ?? String(e);
    const sys = (e as NodeJS.ErrnoException)?.code;
    process.stderr.write(`brook-ts: ${sys === 'EADDRINUSE' ? 'address already in use: ' : ''}${msg.split('\n')[0]}\n`);
    process.exit(1);
  }
}
