/**
 * wsclient, wssclient and connect: their flags (the shared part once) and the one function
 * that turns them into WsClientOptions. The server comes from the library's resolution of a
 * URL or a brook:// link (src/client/connect.ts), which checks it and the password; the
 * flags given beside a link win over it as options do there: --passwordFile's password,
 * --address, --ca; --insecure and --withoutBrookProtocol add to it.
 */
import { type Command, InvalidArgumentError } from 'commander';
import { socks5UdpPortForWorker } from '../cluster.js';
import { settingsFromLink, settingsFromUrl, type ClientSettings, type ServerOptions } from '../client/connect.js';
import { DEFAULT_POOL_MAX_IDLE_MS, DEFAULT_POOL_SIZE } from '../client/pool.js';
import { DEFAULT_SOCKS5_LISTEN, WsClient, type WsClientOptions } from '../client/wsclient.js';
import { BrookError, ErrorCodes } from '../errors.js';
import { type LinkKind, parseLink } from '../link.js';
import { formatBound } from '../net/listen.js';
import { formatHostPort } from '../protocol/address.js';
import { cryptoFields, EXAMPLE_FLAGS, LINK_PASSWORD_FILE_HELP, PASSWORD_FILE_HELP, type PasswordValues, processFlags, readPem, TIMEOUT_FLAGS, WITHOUT_BROOK_PROTOCOL_HELP, withPasswordSources } from './common.js';
import { addFlags, flag, type FlagTable, type FlagValues, listenAddress, positiveInt, toggle } from './flags.js';
import { type Runtime, runCommand } from './runtime.js';

/** Most --pool allows (idle connections per client process). */
const MAX_POOL_SIZE = 64;

function poolSize(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) > MAX_POOL_SIZE) throw new InvalidArgumentError(`expected a whole number from 0 to ${MAX_POOL_SIZE}`);
  return Number(v);
}

const POOL_HELP =
  'prewarmed tunnels: connections to the server kept ready past the WebSocket upgrade, so a new connection only sends its first fragment; 0 = off (per process with --workers)';
const POOL_MAX_IDLE_HELP = 'a prewarmed connection unused this long (s) is closed and replaced; keep it under the idle cut-off of the server (ours: --probeTimeout, 30 s) and of anything in between';
const NO_TLS_RESUME_HELP = 'do not resume TLS sessions (every connection to the server makes a full TLS handshake)';
const LINK_HELP = (server: string) => `brook link: replaces --${server} and --password; --address and --ca given beside it replace the link's`;
const ADDRESS_HELP = (server: string) => `dial this address instead of resolving the host of --${server} (or of the link, replacing its address)`;

/** The flags every client command has, after each command's own (in --help's order). */
const CLIENT_FLAGS = (passwordFileHelp: string) => ({
  passwordFile: flag('--passwordFile <file>', passwordFileHelp),
  socks5: flag('--socks5 <address>', 'where to listen for SOCKS5 connections', { parse: listenAddress, default: DEFAULT_SOCKS5_LISTEN }),
  socks5ServerIP: flag('--socks5ServerIP <ip>', 'only if your socks5 server IP is different from listen IP'),
  socks5Username: flag('--socks5Username <username>', 'require this SOCKS5 username (RFC 1929)'),
  socks5Password: flag('--socks5Password <password>', 'require this SOCKS5 password (RFC 1929)'),
  http: flag('--http <address>', 'where to listen for HTTP proxy connections', { parse: listenAddress }),
  ...TIMEOUT_FLAGS,
  pool: flag('--pool <n>', POOL_HELP, { parse: poolSize, default: DEFAULT_POOL_SIZE }),
  poolMaxIdle: flag('--poolMaxIdle <seconds>', POOL_MAX_IDLE_HELP, { parse: positiveInt, default: DEFAULT_POOL_MAX_IDLE_MS / 1000 }),
  ...processFlags('; with more than 1 each worker relays UDP on its own port, announced in the UDP ASSOCIATE reply'),
});

const WITH_LINK_PASSWORD_FILE_HELP = PASSWORD_FILE_HELP + "; with --link it replaces the link's password (the variable does not)";

const WSCLIENT_FLAGS = {
  ...EXAMPLE_FLAGS,
  wsserver: flag('-s, --wsserver <url>', 'brook wsserver address, like ws://1.2.3.4:80; if no path then /ws is used'),
  password: flag('-p, --password <password>', 'brook wsserver password'),
  link: flag('--link <link>', LINK_HELP('wsserver')),
  address: flag('--address <host:port>', ADDRESS_HELP('wsserver')),
  withoutBrookProtocol: toggle('--withoutBrookProtocol', WITHOUT_BROOK_PROTOCOL_HELP, false),
  ...CLIENT_FLAGS(WITH_LINK_PASSWORD_FILE_HELP),
};

const WSSCLIENT_FLAGS = {
  ...EXAMPLE_FLAGS,
  wssserver: flag('-s, --wssserver <url>', 'brook wssserver address, like wss://domain.com:443; if no path then /ws is used'),
  password: flag('-p, --password <password>', 'brook wssserver password'),
  link: flag('--link <link>', LINK_HELP('wssserver')),
  address: flag('--address <host:port>', ADDRESS_HELP('wssserver')),
  insecure: toggle('--insecure', "do not verify the server's certificate chain and host name", false),
  ca: flag('--ca <file>', 'trust this CA (PEM) in addition to the system ones'),
  noTlsResume: toggle('--noTlsResume', NO_TLS_RESUME_HELP, false),
  withoutBrookProtocol: toggle('--withoutBrookProtocol', WITHOUT_BROOK_PROTOCOL_HELP, false),
  ...CLIENT_FLAGS(WITH_LINK_PASSWORD_FILE_HELP),
};

const CONNECT_FLAGS = {
  ...EXAMPLE_FLAGS,
  link: flag('-l, --link <link>', 'brook link, you can get it via brook-ts link', { required: true }),
  noTlsResume: toggle('--noTlsResume', NO_TLS_RESUME_HELP + ' (wssserver links)', false),
  ...CLIENT_FLAGS(LINK_PASSWORD_FILE_HELP),
};

type CommonClientFlags = FlagValues<ReturnType<typeof CLIENT_FLAGS>>;
/** Every client command's flags; those a command does not have are undefined. */
export type ClientFlags = CommonClientFlags &
  PasswordValues &
  Partial<Omit<FlagValues<typeof WSCLIENT_FLAGS> & FlagValues<typeof WSSCLIENT_FLAGS>, keyof CommonClientFlags>>;

type ClientCommand = 'wsclient' | 'wssclient' | 'connect';
/** The link kind each command takes (connect: either). */
const KIND: Record<ClientCommand, LinkKind | null> = { wsclient: 'wsserver', wssclient: 'wssserver', connect: null };

/** The server: a --link (its kind the command's, but for connect), or --wsserver/--wssserver and a password. */
function serverSettings(command: ClientCommand, f: ClientFlags): ClientSettings {
  const kind = KIND[command];
  const beside: ServerOptions = {
    address: f.address || undefined,
    insecure: Boolean(f.insecure),
    ca: f.ca ? readPem(f.ca, 'CA file') : undefined,
    withoutBrookProtocol: Boolean(f.withoutBrookProtocol),
  };
  if (f.link || !kind) {
    const l = parseLink(f.link ?? '');
    if (kind && l.kind !== kind) {
      throw new BrookError(ErrorCodes.LINK_KIND, `this is a ${l.kind} link; use brook-ts ${l.kind === 'wsserver' ? 'wsclient' : 'wssclient'} or connect`);
    }
    return settingsFromLink(l, { ...beside, password: f.linkPassword });
  }
  const url = f[kind];
  if (!url) throw new BrookError(ErrorCodes.CONFIG, `--${kind} or --link is required`);
  return settingsFromUrl(kind, url, { ...beside, password: f.password });
}

/** WsClient options from a client command's flags and the process's runtime. */
export function clientOptions(command: ClientCommand, f: ClientFlags, rt: Runtime): WsClientOptions {
  const s = serverSettings(command, f);
  // a link's HKDF infos win over the global options
  s.clientHKDFInfo ??= rt.globals.clientHKDFInfo;
  s.serverHKDFInfo ??= rt.globals.serverHKDFInfo;
  const auth = f.socks5Username !== undefined || f.socks5Password !== undefined ? { username: f.socks5Username ?? '', password: f.socks5Password ?? '' } : undefined;
  return {
    ...s,
    socks5: f.socks5,
    socks5ServerIP: f.socks5ServerIP,
    socks5Auth: auth,
    socks5UdpPort: socks5UdpPortForWorker(),
    http: f.http,
    tcpTimeout: f.tcpTimeout,
    udpTimeout: f.udpTimeout,
    keepalive: f.keepalive,
    pool: { size: f.pool, maxIdleMs: f.poolMaxIdle * 1000 },
    tlsResume: !f.noTlsResume,
    dialer: rt.dialer,
    metrics: rt.metrics,
    log: rt.log,
  };
}

function addClientCommand(program: Command, command: ClientCommand, description: string, flags: FlagTable): void {
  const cmd = addFlags(program.command(command).description(description), flags);
  withPasswordSources(cmd, 'client').action(
    runCommand<ClientFlags>({
      command,
      server: false,
      start: async (f, rt) => {
        const o = clientOptions(command, f, rt);
        const client = new WsClient(o);
        await client.listen();
        const h = client.httpAddress();
        rt.log({
          msg: 'listening',
          command,
          socks5: formatBound(client.socks.address()),
          ...(h ? { http: formatHostPort(h.host, h.port) } : {}),
          server: `${o.endpoint.secure ? 'wss' : 'ws'}://${o.endpoint.hostPort}${o.endpoint.path}`,
          withoutBrookProtocol: Boolean(o.withoutBrookProtocol),
          ...cryptoFields(f.crypto),
        });
        return client;
      },
    }),
  );
}

export function addClientCommands(program: Command): void {
  addClientCommand(program, 'wsclient', 'Run as brook wsclient, both TCP and UDP, to start a socks5 proxy', WSCLIENT_FLAGS);
  addClientCommand(program, 'wssclient', 'Run as brook wssclient, both TCP and UDP, to start a socks5 proxy', WSSCLIENT_FLAGS);
  addClientCommand(program, 'connect', 'Connect to a brook link (wsserver or wssserver)', CONNECT_FLAGS);
}
