/**
 * The per-connection side of the SOCKS5 server (RFC 1928, RFC 1929
 * username/password): one accepted TCP socket, from greeting to hand-off or
 * close. The listener, its options and stats are in server.ts; the UDP relay
 * in udp.ts.
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
 */
import type net from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { BrookError, ErrorCodes, socks5ReplyFor, Socks5Reply, toBrookError } from '../errors.js';
import { formatAddress, formatHostPort, type Address } from '../protocol/address.js';
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
import type { AssocState, UdpRelay, UdpRelayLog } from './udp.js';

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

/** The TCP counters of Socks5ServerStats (connections update the server's stats object). */
export interface HandshakeStats {
  tcpAccepted: number;
  tcpActive: number;
  connectRequests: number;
  handshakeFailures: number;
}

/**
 * What every connection of one server shares: made once by createSocks5Server,
 * never per connection. `announced` is set by listen(); `nextId` is the id the
 * next connection takes.
 */
export interface HandshakeContext {
  handshakeTimeoutMs: number;
  lingerMs: number;
  udpEnabled: boolean;
  /** Configured credentials (utf8); null when no auth is required. */
  authUser: Buffer | null;
  authPass: Buffer | null;
  stats: HandshakeStats;
  log: UdpRelayLog;
  relay: UdpRelay;
  /** Address announced in the UDP ASSOCIATE reply; null until listening with UDP. */
  announced: Address | null;
  nextId: number;
  /** Teardown of every live connection, for close(). */
  sessions: Set<() => void>;
  onConnect: (req: ConnectRequest) => void | Promise<void>;
}

type Phase = 'greeting' | 'auth' | 'request' | 'connecting' | 'handed' | 'udp' | 'closing' | 'closed';

function peerOf(socket: net.Socket): string {
  return formatHostPort(socket.remoteAddress ?? '?', socket.remotePort);
}

function credentialsMatch(ctx: HandshakeContext, user: Buffer, pass: Buffer): boolean {
  const { authUser, authPass } = ctx;
  if (!authUser || !authPass) return false;
  const u = user.length === authUser.length && timingSafeEqual(user, authUser);
  const p = pass.length === authPass.length && timingSafeEqual(pass, authPass);
  return u && p;
}

/** Run the SOCKS5 handshake on an accepted socket (the server's 'connection' listener). */
export function handleConnection(socket: net.Socket, ctx: HandshakeContext): void {
  const { stats, log, relay, sessions } = ctx;
  stats.tcpAccepted++;
  stats.tcpActive++;
  const id = ctx.nextId++;
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
    teardown(new BrookError(ErrorCodes.TIMEOUT, `SOCKS5 handshake not done within ${ctx.handshakeTimeoutMs} ms`));
  }, ctx.handshakeTimeoutMs);
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
    lingerTimer = setTimeout(() => teardown(), ctx.lingerMs);
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
        const method = chooseMethod(g.value.methods, ctx.authUser !== null);
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
        if (!credentialsMatch(ctx, a.value.username, a.value.password)) {
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
      const ret = ctx.onConnect(req);
      if (ret && typeof (ret as Promise<void>).catch === 'function') {
        (ret as Promise<void>).catch((e: unknown) => req.reject(e));
      }
    } catch (e) {
      req.reject(e);
    }
  }

  function startUdp(request: Socks5Request): void {
    const announced = ctx.announced;
    if (!ctx.udpEnabled || !relay.bound || !announced) {
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
