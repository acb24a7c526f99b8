/**
 * SOCKS5 server (RFC 1928, RFC 1929 username/password): the listener, its
 * options, stats and close(). What happens to a CONNECT or to UDP datagrams is
 * up to the injected handlers (see direct.ts for the plain pass-through, the
 * Brook clients for the tunnelled one).
 *
 * Each accepted connection runs the handshake in handshake.ts (connection
 * life, replies and failures are described at its top). The UDP relay (which
 * datagrams belong to which association, the one shared UDP socket) is in
 * udp.ts, with its rule at the top.
 */
import net from 'node:net';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import type { AcceptBackoff } from '../net/accept-backoff.js';
import { makeAddress, type Address } from '../protocol/address.js';
import { handleConnection, type ConnectRequest, type HandshakeContext } from './handshake.js';
import { createUdpRelay, normalizeIp, type UdpAssociation } from './udp.js';

export { type ConnectRequest } from './handshake.js';
export { normalizeIp, type UdpAssociation } from './udp.js';

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** After a failure reply we wait this long for the client to close before destroying. */
export const DEFAULT_LINGER_MS = 2_000;
/** Port 0: tries to find a port number free for both TCP and UDP. */
const MAX_BIND_ATTEMPTS = 8;


export interface Socks5LogEntry extends Record<string, unknown> {
  time: string;
  from: string;
  dst: string;
  network: 'tcp' | 'udp';
  error: string;
  code?: string;
}

export interface Socks5ServerOptions {
  host: string;
  /** TCP listen port; the UDP relay socket binds the same host and port number. 0 = ephemeral. */
  port: number;
  /**
   * Bind the UDP relay socket on this port instead of the TCP port (0 = an ephemeral
   * one); the UDP ASSOCIATE reply announces it. Used by --workers (src/cluster.ts):
   * each worker relays the datagrams of the associations it holds.
   */
  udpPort?: number;
  auth?: { username: string; password: string };
  /** Enable UDP ASSOCIATE (default true). */
  udp?: boolean;
  /** IP announced in the UDP ASSOCIATE reply; default the listen IP (required when listening on 0.0.0.0 / ::). */
  announceIP?: string;
  handshakeTimeoutMs?: number;
  lingerMs?: number;
  /** Clock for log timestamps (ms since epoch); default Date.now. */
  now?: () => number;
  log?: (entry: Record<string, unknown>) => void;
  onConnect: (req: ConnectRequest) => void | Promise<void>;
  /** While it is paused (dials out of descriptors), a new connection is closed at accept (src/net/accept-backoff.ts). */
  acceptBackoff?: AcceptBackoff;
  onUdpDatagram?: (assoc: UdpAssociation, dst: Address, data: Buffer) => void;
  onUdpAssociationClosed?: (assoc: UdpAssociation) => void;
}

export interface Socks5ServerStats {
  tcpAccepted: number;
  tcpActive: number;
  connectRequests: number;
  handshakeFailures: number;
  udpAssociations: number;
  udpActiveAssociations: number;
  udpDatagramsIn: number;
  udpDatagramsOut: number;
  udpDropped: number;
}

export interface Socks5Server {
  listen(): Promise<void>;
  close(): Promise<void>;
  /** The bound TCP address (throws CONFIG before listen()). */
  address(): net.AddressInfo;
  /** The bound UDP relay address, null when UDP is disabled or not listening. */
  udpAddress(): net.AddressInfo | null;
  readonly stats: Socks5ServerStats;
}


function isUnspecifiedHost(host: string): boolean {
  const h = normalizeIp(host.replace(/^\[|\]$/g, ''));
  return h === '' || h === '0.0.0.0' || h === '::' || h === '0:0:0:0:0:0:0:0';
}

function familyIsV6(family: string | number): boolean {
  return family === 'IPv6' || family === 6;
}

export function createSocks5Server(opts: Socks5ServerOptions): Socks5Server {
  const handshakeTimeoutMs = opts.handshakeTimeoutMs ?? DEFAULT_HANDSHAKE_TIMEOUT_MS;
  const lingerMs = opts.lingerMs ?? DEFAULT_LINGER_MS;
  const now = opts.now ?? Date.now;
  const udpEnabled = opts.udp !== false;
  const authUser = opts.auth ? Buffer.from(opts.auth.username, 'utf8') : null;
  const authPass = opts.auth ? Buffer.from(opts.auth.password, 'utf8') : null;

  const stats: Socks5ServerStats = {
    tcpAccepted: 0,
    tcpActive: 0,
    connectRequests: 0,
    handshakeFailures: 0,
    udpAssociations: 0,
    udpActiveAssociations: 0,
    udpDatagramsIn: 0,
    udpDatagramsOut: 0,
    udpDropped: 0,
  };

  let tcp: net.Server | null = null;
  let tcpAddr: net.AddressInfo | null = null;

  function log(from: string, dst: string, network: 'tcp' | 'udp', err: unknown): void {
    if (!opts.log) return;
    const e = toBrookError(err);
    const entry: Socks5LogEntry = {
      time: new Date(now()).toISOString(),
      from,
      dst,
      network,
      error: e.message,
      code: e.code,
    };
    try {
      opts.log(entry);
    } catch {
      // a failing logger must not take the server down
    }
  }

  const relay = createUdpRelay({
    stats,
    log,
    onUdpDatagram: opts.onUdpDatagram,
    onUdpAssociationClosed: opts.onUdpAssociationClosed,
  });

  // ---- TCP connections: one context for the server, the handshake per socket in handshake.ts ----

  const ctx: HandshakeContext = {
    handshakeTimeoutMs,
    lingerMs,
    udpEnabled,
    authUser,
    authPass,
    stats,
    log,
    relay,
    announced: null,
    nextId: 1,
    sessions: new Set<() => void>(),
    onConnect: opts.onConnect,
  };

  const backoff = opts.acceptBackoff;
  function onConnection(socket: net.Socket): void {
    if (backoff && !backoff.admit(socket)) return;
    handleConnection(socket, ctx);
  }

  // ---- listen / close -----------------------------------------------------

  function listenTcp(server: net.Server, host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const onErr = (e: Error): void => reject(e);
      server.once('error', onErr);
      server.listen({ host, port }, () => {
        server.removeListener('error', onErr);
        resolve();
      });
    });
  }

  function closeTcp(server: net.Server): Promise<void> {
    return new Promise((resolve) => server.close(() => resolve()));
  }

  function configError(msg: string, cause?: unknown): BrookError {
    return new BrookError(ErrorCodes.CONFIG, msg, { cause });
  }

  async function listen(): Promise<void> {
    if (tcp) throw configError('SOCKS5 server already listening');
    if (udpEnabled && !opts.announceIP && isUnspecifiedHost(opts.host)) {
      throw configError(
        `SOCKS5 listen host ${opts.host || '(any)'} is unspecified: set announceIP (--socks5ServerIP) to the IP clients should send UDP to`,
      );
    }
    for (let attempt = 0; attempt < MAX_BIND_ATTEMPTS; attempt++) {
      // no Nagle on the application's side either (as upstream's Go sockets): a relayed answer in two
      // writes must not wait for the application's delayed ACK
      const server = net.createServer({ allowHalfOpen: true, noDelay: true }, onConnection);
      server.on('error', (e) => log(`${opts.host}:${opts.port}`, '', 'tcp', e));
      try {
        await listenTcp(server, opts.host, opts.port);
      } catch (e) {
        throw configError(`cannot listen on ${opts.host}:${opts.port}: ${(e as Error).message}`, e);
      }
      const a = server.address() as net.AddressInfo;
      if (udpEnabled && !opts.announceIP && isUnspecifiedHost(a.address)) {
        await closeTcp(server);
        throw configError(`SOCKS5 listen address ${a.address} is unspecified: set announceIP`);
      }
      if (!udpEnabled) {
        tcp = server;
        tcpAddr = a;
        return;
      }
      try {
        const u = await relay.bind(
          familyIsV6(a.family) ? 'udp6' : 'udp4',
          a.address,
          opts.udpPort ?? a.port,
          `${a.address}:${a.port}`,
        );
        tcp = server;
        tcpAddr = a;
        ctx.announced = makeAddress(opts.announceIP ?? a.address, u.port);
        return;
      } catch (e) {
        await closeTcp(server);
        const inUse = (e as NodeJS.ErrnoException).code === 'EADDRINUSE';
        if (opts.port === 0 && inUse && attempt + 1 < MAX_BIND_ATTEMPTS) continue;
        throw configError(`cannot bind UDP ${a.address}:${a.port}: ${(e as Error).message}`, e);
      }
    }
    throw configError('no port free for both TCP and UDP');
  }

  async function close(): Promise<void> {
    const server = tcp;
    tcp = null;
    const closing = server ? closeTcp(server) : Promise.resolve();
    for (const t of [...ctx.sessions]) t();
    await relay.close();
    await closing;
  }

  return {
    listen,
    close,
    address(): net.AddressInfo {
      if (!tcpAddr) throw configError('SOCKS5 server is not listening');
      return tcpAddr;
    },
    udpAddress(): net.AddressInfo | null {
      return relay.address();
    },
    stats,
  };
}
