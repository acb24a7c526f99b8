/**
 * SOCKS5 server (RFC 1928, RFC 1929 username/password). The handshake is
 * ours; what happens to a CONNECT or to UDP datagrams is up to the injected
 * handlers (see direct.ts for the plain pass-through, the Brook clients for
 * the tunnelled one).
 *
 * Connection life: greeting -> [auth] -> request -> one of
 *   CONNECT:        handler gets a ConnectRequest and calls accept() (success
 *                   reply, the paused client socket is handed over, pipelined
 *                   bytes unshifted back) or reject() (reply code, then close);
 *   UDP ASSOCIATE:  reply with announceIP (or the listen IP) and the UDP port;
 *                   the association lives as long as the control connection;
 *   BIND / other:   reply 0x07 and close.
 * Failures: bad greeting version -> close (no reply); no acceptable method ->
 * 0xFF then close; bad credentials -> RFC 1929 status 0x01 then close; unknown
 * ATYP -> 0x08; malformed request -> 0x01; silent client -> closed after
 * handshakeTimeoutMs. Every connection has one teardown path (`teardown`).
 *
 * The UDP relay (which datagrams belong to which association, the one shared
 * UDP socket) is in udp.ts, with its rule at the top.
 */
import net from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { BrookError, ErrorCodes, socks5ReplyFor, Socks5Reply, toBrookError } from '../errors.js';
import { formatAddress, makeAddress, type Address } from '../protocol/address.js';
import {
  buildMethodReply,
  buildReply,
  buildUserPassReply,
  chooseMethod,
  parseGreeting,
  parseRequest,
  parseUserPassAuth,
  Socks5Command,
  Socks5Method,
  type Socks5Request,
} from './codec.js';
import { createUdpRelay, normalizeIp, type AssocState, type UdpAssociation } from './udp.js';

export { normalizeIp, type UdpAssociation } from './udp.js';

export const DEFAULT_HANDSHAKE_TIMEOUT_MS = 10_000;
/** After a failure reply we wait this long for the client to close before destroying. */
export const DEFAULT_LINGER_MS = 2_000;
/** Port 0: tries to find a port number free for both TCP and UDP. */
const MAX_BIND_ATTEMPTS = 8;

export interface ConnectRequest {
  /** Connection id (unique per server). */
  id: number;
  destination: Address;
  source: { address: string; port: number };
  /** Aborted when the client connection closes before accept()/reject(). */
  signal: AbortSignal;
  /**
   * Write the success reply (BND default 0.0.0.0:0) and hand the client socket
   * over. The socket is PAUSED with any pipelined bytes unshifted back: call
   * pipe() or resume(). If the client already went away the returned socket is
   * destroyed (check `socket.destroyed`).
   */
  accept(bound?: Address): net.Socket;
  /** Write the reply socks5ReplyFor(err) (or the given reply code), then close. */
  reject(errorOrReplyCode: unknown): void;
}

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

type Phase = 'greeting' | 'auth' | 'request' | 'connecting' | 'handed' | 'udp' | 'closing' | 'closed';

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
  let announced: Address | null = null;
  let nextId = 1;
  const sessions = new Set<() => void>();

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

  // ---- TCP connections ----------------------------------------------------

  function peerOf(socket: net.Socket): string {
    const ip = socket.remoteAddress ?? '?';
    return ip.includes(':') ? `[${ip}]:${socket.remotePort}` : `${ip}:${socket.remotePort}`;
  }

  function onConnection(socket: net.Socket): void {
    stats.tcpAccepted++;
    stats.tcpActive++;
    const id = nextId++;
    const from = peerOf(socket);
    const abort = new AbortController();
    let phase: Phase = 'greeting';
    let buf: Buffer = Buffer.alloc(0);
    let dst = '';
    let assoc: AssocState | null = null;
    let lastError: unknown = null;
    let handshakeTimer: NodeJS.Timeout | null = setTimeout(() => {
      handshakeTimer = null;
      stats.handshakeFailures++;
      teardown(new BrookError(ErrorCodes.TIMEOUT, `SOCKS5 handshake not done within ${handshakeTimeoutMs} ms`));
    }, handshakeTimeoutMs);
    let lingerTimer: NodeJS.Timeout | null = null;
    /** onData() corked the socket for its replies and has not uncorked it yet. */
    let corked = false;

    const clearHandshakeTimer = (): void => {
      if (handshakeTimer) clearTimeout(handshakeTimer);
      handshakeTimer = null;
    };

    /** The one teardown path: every exit (error, close, timeout, server close) ends here. */
    function teardown(err?: unknown): void {
      if (phase === 'closed') return;
      const wasHanded = phase === 'handed';
      phase = 'closed';
      clearHandshakeTimer();
      if (lingerTimer) clearTimeout(lingerTimer);
      lingerTimer = null;
      sessions.delete(teardown);
      stats.tcpActive--;
      if (err && !wasHanded) log(from, dst, assoc ? 'udp' : 'tcp', err);
      if (assoc) relay.release(assoc);
      abort.abort(err ?? new BrookError(ErrorCodes.CLOSED, 'client connection closed'));
      socket.removeListener('data', onData);
      socket.removeListener('end', onEnd);
      if (!socket.destroyed) socket.destroy();
    }
    sessions.add(teardown);

    /** Send a final reply, then close: FIN after the bytes, drain input, destroy after linger. */
    function finish(reply: Buffer | null, err: unknown, handshakeFailure = true): void {
      if (phase === 'closed' || phase === 'closing') return;
      phase = 'closing';
      if (handshakeFailure) stats.handshakeFailures++;
      clearHandshakeTimer();
      if (err) log(from, dst, assoc ? 'udp' : 'tcp', err);
      buf = Buffer.alloc(0);
      if (reply === null) {
        teardown();
        return;
      }
      socket.end(reply);
      socket.resume();
      lingerTimer = setTimeout(() => teardown(), lingerMs);
    }

    function onEnd(): void {
      // Client half-closed before the handshake finished (or its UDP control connection).
      if (phase === 'closing') teardown();
      else teardown(phase === 'udp' ? undefined : new BrookError(ErrorCodes.CLOSED, 'client closed during handshake'));
    }

    function onData(chunk: Buffer): void {
      if (phase === 'connecting') {
        buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
        return;
      }
      if (phase !== 'greeting' && phase !== 'auth' && phase !== 'request') return; // udp control / closing: discard
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      // the replies this chunk makes (a method reply, and a success given at once) leave in one write
      socket.cork();
      corked = true;
      try {
        step();
      } catch (e) {
        onHandshakeError(e);
      }
      uncorkReplies();
    }

    /** Send what onData() held back (see there); once. */
    function uncorkReplies(): void {
      if (!corked) return;
      corked = false;
      socket.uncork();
    }

    function onHandshakeError(e: unknown): void {
      const err = toBrookError(e);
      if (phase === 'greeting') {
        finish(null, err); // wrong version in the greeting: close, no reply
      } else if (phase === 'auth') {
        finish(buildUserPassReply(false), err);
      } else {
        finish(buildReply(socks5ReplyFor(err)), err);
      }
    }

    /** Advance the handshake as far as the buffered bytes allow. */
    function step(): void {
      for (;;) {
        if (phase === 'greeting') {
          const g = parseGreeting(buf);
          if (!g) return;
          buf = buf.subarray(g.bytesRead);
          const method = chooseMethod(g.value.methods, authUser !== null);
          if (method === Socks5Method.NO_ACCEPTABLE) {
            finish(
              buildMethodReply(Socks5Method.NO_ACCEPTABLE),
              new BrookError(ErrorCodes.SOCKS_NO_METHOD, `no acceptable method in [${g.value.methods.join(',')}]`),
            );
            return;
          }
          socket.write(buildMethodReply(method));
          phase = method === Socks5Method.USERNAME_PASSWORD ? 'auth' : 'request';
        } else if (phase === 'auth') {
          const a = parseUserPassAuth(buf);
          if (!a) return;
          buf = buf.subarray(a.bytesRead);
          if (!credentialsMatch(a.value.username, a.value.password)) {
            finish(buildUserPassReply(false), new BrookError(ErrorCodes.SOCKS_AUTH, 'bad username or password'));
            return;
          }
          socket.write(buildUserPassReply(true));
          phase = 'request';
        } else if (phase === 'request') {
          const r = parseRequest(buf);
          if (!r) return;
          buf = buf.subarray(r.bytesRead);
          dst = formatAddress(r.value.destination);
          handleRequest(r.value);
          return;
        } else {
          return;
        }
      }
    }

    function handleRequest(request: Socks5Request): void {
      clearHandshakeTimer();
      switch (request.command) {
        case Socks5Command.CONNECT:
          startConnect(request);
          return;
        case Socks5Command.UDP_ASSOCIATE:
          startUdp(request);
          return;
        default:
          finish(
            buildReply(Socks5Reply.COMMAND_NOT_SUPPORTED),
            new BrookError(ErrorCodes.SOCKS_COMMAND, `command 0x0${request.command} not supported`),
          );
      }
    }

    function startConnect(request: Socks5Request): void {
      phase = 'connecting';
      socket.pause();
      stats.connectRequests++;
      let settled = false;
      const req: ConnectRequest = {
        id,
        destination: request.destination,
        source: { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 },
        signal: abort.signal,
        accept(bound?: Address): net.Socket {
          if (settled || phase !== 'connecting') return socket;
          settled = true;
          socket.write(buildReply(Socks5Reply.SUCCEEDED, bound));
          // accepted at once (a pooled tunnel): the method reply and this one go out together, now
          uncorkReplies();
          phase = 'handed';
          socket.removeListener('data', onData);
          socket.removeListener('end', onEnd);
          const rest = buf;
          buf = Buffer.alloc(0);
          if (rest.length > 0) socket.unshift(rest);
          return socket;
        },
        reject(errorOrReplyCode: unknown): void {
          if (settled || phase !== 'connecting') return;
          settled = true;
          const code = typeof errorOrReplyCode === 'number' ? errorOrReplyCode : socks5ReplyFor(errorOrReplyCode);
          const err =
            typeof errorOrReplyCode === 'number'
              ? new BrookError(ErrorCodes.TUNNEL_FAILED, `rejected with reply 0x${code.toString(16).padStart(2, '0')}`)
              : errorOrReplyCode;
          finish(buildReply(code), err, false);
        },
      };
      try {
        const ret = opts.onConnect(req);
        if (ret && typeof (ret as Promise<void>).catch === 'function') {
          (ret as Promise<void>).catch((e: unknown) => req.reject(e));
        }
      } catch (e) {
        req.reject(e);
      }
    }

    function startUdp(request: Socks5Request): void {
      if (!udpEnabled || !relay.bound || !announced) {
        finish(
          buildReply(Socks5Reply.COMMAND_NOT_SUPPORTED),
          new BrookError(ErrorCodes.SOCKS_COMMAND, 'UDP ASSOCIATE disabled'),
        );
        return;
      }
      const made = relay.associate(socket, id, request, from);
      if (made instanceof BrookError) {
        finish(buildReply(Socks5Reply.GENERAL_FAILURE), made);
        return;
      }
      assoc = made;
      phase = 'udp';
      buf = Buffer.alloc(0);
      socket.write(buildReply(Socks5Reply.SUCCEEDED, announced));
    }

    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', (e) => {
      lastError = e;
    });
    socket.on('close', () => teardown(lastError ?? undefined));
  }

  function credentialsMatch(user: Buffer, pass: Buffer): boolean {
    if (!authUser || !authPass) return false;
    const u = user.length === authUser.length && timingSafeEqual(user, authUser);
    const p = pass.length === authPass.length && timingSafeEqual(pass, authPass);
    return u && p;
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
        announced = makeAddress(opts.announceIP ?? a.address, u.port);
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
    for (const t of [...sessions]) t();
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
