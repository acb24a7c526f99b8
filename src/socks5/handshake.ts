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
 * Each connection is a Socks5Connection in one Phase (below) carrying only that phase's state;
 * per connection one object, its five listeners and a small object per phase (timers take the
 * connection as their argument, no closure each).
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

/**
 * A connection's phase and the state that phase owns.
 *   greeting -> auth -> request (RFC 1929 auth only when configured): reading, the deadline runs;
 *   connecting: a CONNECT is with the handler (socket paused; bytes still read are kept for accept());
 *   handed: accept() gave the socket away; teardown only counts, aborts the signal and destroys;
 *   udp: UDP ASSOCIATE granted, the association lives as long as this connection;
 *   closing: a final reply went out (FIN after it), input drained, destroyed after lingerMs;
 *   closed: after teardown.
 */
type Phase =
  | { name: 'greeting' | 'auth' | 'request'; buf: Buffer; deadline: NodeJS.Timeout }
  | { name: 'connecting'; dst: string; buf: Buffer; abort: AbortController }
  | { name: 'handed'; abort: AbortController }
  | { name: 'udp'; dst: string; assoc: AssocState }
  | { name: 'closing'; dst: string; abort: AbortController | null; linger: NodeJS.Timeout | null }
  | { name: 'closed' };

type ReadingPhase = Extract<Phase, { name: 'greeting' | 'auth' | 'request' }>;

const EMPTY = Buffer.alloc(0);
const CLOSED: Phase = { name: 'closed' };

function isReading(p: Phase): p is ReadingPhase {
  return p.name === 'greeting' || p.name === 'auth' || p.name === 'request';
}

/** The destination (formatted) of the request, '' before it was read. */
function dstOf(p: Phase): string {
  return p.name === 'connecting' || p.name === 'udp' || p.name === 'closing' ? p.dst : '';
}

function abortOf(p: Phase): AbortController | null {
  return p.name === 'connecting' || p.name === 'handed' || p.name === 'closing' ? p.abort : null;
}

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

const handshakeTimedOut = (c: Socks5Connection): void => c.timedOut();
const lingerEnded = (c: Socks5Connection): void => c.teardown();

/** The ConnectRequest the handler gets: its accept()/reject() go to the connection (no closure each). */
class PendingConnect implements ConnectRequest {
  constructor(
    private readonly conn: Socks5Connection,
    readonly id: number,
    readonly destination: Address,
    readonly source: { address: string; port: number },
    readonly signal: AbortSignal,
  ) {}

  accept(bound?: Address): net.Socket {
    return this.conn.accept(bound);
  }

  reject(errorOrReplyCode: unknown): void {
    this.conn.reject(errorOrReplyCode);
  }
}

/** One accepted socket, from greeting to hand-off or close. */
class Socks5Connection {
  private phase: Phase;
  private readonly id: number;
  private readonly from: string;
  /** onData() corked the socket for its replies and has not uncorked it yet. */
  private corked = false;
  private lastError: unknown = null;

  constructor(
    private readonly socket: net.Socket,
    private readonly ctx: HandshakeContext,
  ) {
    ctx.stats.tcpAccepted++;
    ctx.stats.tcpActive++;
    this.id = ctx.nextId++;
    this.from = peerOf(socket);
    this.phase = { name: 'greeting', buf: EMPTY, deadline: setTimeout(handshakeTimedOut, ctx.handshakeTimeoutMs, this) };
    ctx.sessions.add(this.stop);
    socket.on('data', this.onData);
    socket.on('end', this.onEnd);
    socket.on('error', this.onError);
    socket.on('close', this.onClose);
  }

  /** The one teardown path: every exit (error, close, timeout, server close) ends here. */
  teardown(err?: unknown): void {
    const p = this.phase;
    if (p.name === 'closed') return;
    this.phase = CLOSED;
    const { stats, log, relay, sessions } = this.ctx;
    if (isReading(p)) clearTimeout(p.deadline);
    else if (p.name === 'closing' && p.linger) clearTimeout(p.linger);
    sessions.delete(this.stop);
    stats.tcpActive--;
    if (err && p.name !== 'handed') log(this.from, dstOf(p), p.name === 'udp' ? 'udp' : 'tcp', err);
    if (p.name === 'udp') relay.release(p.assoc);
    abortOf(p)?.abort(err ?? new BrookError(ErrorCodes.CLOSED, 'client connection closed'));
    this.socket.removeListener('data', this.onData);
    this.socket.removeListener('end', this.onEnd);
    if (!this.socket.destroyed) this.socket.destroy();
  }

  timedOut(): void {
    this.ctx.stats.handshakeFailures++;
    this.teardown(new BrookError(ErrorCodes.TIMEOUT, `SOCKS5 handshake not done within ${this.ctx.handshakeTimeoutMs} ms`));
  }

  /** The handler's accept(): success reply, then the paused socket is theirs (pipelined bytes unshifted). */
  accept(bound?: Address): net.Socket {
    const p = this.phase;
    const socket = this.socket;
    if (p.name !== 'connecting') return socket;
    socket.write(buildReply(Socks5Reply.SUCCEEDED, bound));
    // accepted at once (a pooled tunnel): the method reply and this one go out together, now
    this.uncorkReplies();
    this.phase = { name: 'handed', abort: p.abort };
    socket.removeListener('data', this.onData);
    socket.removeListener('end', this.onEnd);
    if (p.buf.length > 0) socket.unshift(p.buf);
    return socket;
  }

  /** The handler's reject(): the reply for the error (or the given code), then close. */
  reject(errorOrReplyCode: unknown): void {
    const p = this.phase;
    if (p.name !== 'connecting') return;
    const code = typeof errorOrReplyCode === 'number' ? errorOrReplyCode : socks5ReplyFor(errorOrReplyCode);
    const err =
      typeof errorOrReplyCode === 'number'
        ? new BrookError(ErrorCodes.TUNNEL_FAILED, `rejected with reply 0x${code.toString(16).padStart(2, '0')}`)
        : errorOrReplyCode;
    this.finish(buildReply(code), err, p.dst, false);
  }

  /** For server.close(): tear down without an error. */
  private readonly stop = (): void => this.teardown();

  private readonly onError = (e: Error): void => {
    this.lastError = e;
  };

  private readonly onClose = (): void => this.teardown(this.lastError ?? undefined);

  private readonly onEnd = (): void => {
    // Client half-closed before the handshake finished (or its UDP control connection).
    const name = this.phase.name;
    if (name === 'closing') this.teardown();
    else this.teardown(name === 'udp' ? undefined : new BrookError(ErrorCodes.CLOSED, 'client closed during handshake'));
  };

  private readonly onData = (chunk: Buffer): void => {
    const p = this.phase;
    if (p.name === 'connecting') {
      p.buf = p.buf.length === 0 ? chunk : Buffer.concat([p.buf, chunk]);
      return;
    }
    if (!isReading(p)) return; // udp control / closing: discard
    p.buf = p.buf.length === 0 ? chunk : Buffer.concat([p.buf, chunk]);
    // the replies this chunk makes (a method reply, and a success given at once) leave in one write
    this.socket.cork();
    this.corked = true;
    try {
      this.step();
    } catch (e) {
      this.onHandshakeError(e);
    }
    this.uncorkReplies();
  };

  /** Send what onData() held back (see there); once. */
  private uncorkReplies(): void {
    if (!this.corked) return;
    this.corked = false;
    this.socket.uncork();
  }

  /**
   * Send a final reply, then close: FIN after the bytes, drain input, destroy after linger
   * (no reply: at once). Only from reading or connecting; `dst` is the request's, if read.
   */
  private finish(reply: Buffer | null, err: unknown, dst: string, handshakeFailure = true): void {
    const p = this.phase;
    if (!isReading(p) && p.name !== 'connecting') return;
    const closing: Phase = { name: 'closing', dst, abort: abortOf(p), linger: null };
    this.phase = closing;
    if (handshakeFailure) this.ctx.stats.handshakeFailures++;
    if (isReading(p)) clearTimeout(p.deadline);
    if (err) this.ctx.log(this.from, dst, 'tcp', err);
    if (reply === null) {
      this.teardown();
      return;
    }
    this.socket.end(reply);
    this.socket.resume();
    if (this.phase === closing) closing.linger = setTimeout(lingerEnded, this.ctx.lingerMs, this);
  }

  private onHandshakeError(e: unknown): void {
    const err = toBrookError(e);
    const name = this.phase.name;
    if (name === 'greeting') {
      this.finish(null, err, ''); // wrong version in the greeting: close, no reply
    } else if (name === 'auth') {
      this.finish(buildUserPassReply(false), err, '');
    } else {
      this.finish(buildReply(socks5ReplyFor(err)), err, dstOf(this.phase));
    }
  }

  /** Advance the handshake as far as the buffered bytes allow. */
  private step(): void {
    for (let p = this.phase; isReading(p); p = this.phase) {
      if (p.name === 'request') {
        this.request(p);
        return;
      }
      if (!(p.name === 'greeting' ? this.greeting(p) : this.auth(p))) return;
    }
  }

  /** The method choice; true when the next step may run on what is left. */
  private greeting(p: ReadingPhase): boolean {
    const g = parseGreeting(p.buf);
    if (!g) return false;
    const method = chooseMethod(g.value.methods, this.ctx.authUser !== null);
    if (method === Socks5Method.NO_ACCEPTABLE) {
      const err = new BrookError(ErrorCodes.SOCKS_NO_METHOD, `no acceptable method in [${g.value.methods.join(',')}]`);
      this.finish(buildMethodReply(Socks5Method.NO_ACCEPTABLE), err, '');
      return false;
    }
    this.socket.write(buildMethodReply(method));
    const next = method === Socks5Method.USERNAME_PASSWORD ? 'auth' : 'request';
    this.phase = { name: next, buf: p.buf.subarray(g.bytesRead), deadline: p.deadline };
    return true;
  }

  /** RFC 1929 username/password; true when the request may be read. */
  private auth(p: ReadingPhase): boolean {
    const a = parseUserPassAuth(p.buf);
    if (!a) return false;
    if (!credentialsMatch(this.ctx, a.value.username, a.value.password)) {
      this.finish(buildUserPassReply(false), new BrookError(ErrorCodes.SOCKS_AUTH, 'bad username or password'), '');
      return false;
    }
    this.socket.write(buildUserPassReply(true));
    this.phase = { name: 'request', buf: p.buf.subarray(a.bytesRead), deadline: p.deadline };
    return true;
  }

  private request(p: ReadingPhase): void {
    const r = parseRequest(p.buf);
    if (!r) return;
    const dst = formatAddress(r.value.destination);
    clearTimeout(p.deadline);
    switch (r.value.command) {
      case Socks5Command.CONNECT:
        this.startConnect(r.value, dst, p.buf.subarray(r.bytesRead));
        return;
      case Socks5Command.UDP_ASSOCIATE:
        this.startUdp(r.value, dst);
        return;
      default: {
        const err = new BrookError(ErrorCodes.SOCKS_COMMAND, `command 0x0${r.value.command} not supported`);
        this.finish(buildReply(Socks5Reply.COMMAND_NOT_SUPPORTED), err, dst);
      }
    }
  }

  private startConnect(request: Socks5Request, dst: string, pipelined: Buffer): void {
    const socket = this.socket;
    const abort = new AbortController();
    this.phase = { name: 'connecting', dst, buf: pipelined, abort };
    socket.pause();
    this.ctx.stats.connectRequests++;
    const source = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
    const req = new PendingConnect(this, this.id, request.destination, source, abort.signal);
    try {
      const ret = this.ctx.onConnect(req);
      if (ret && typeof (ret as Promise<void>).catch === 'function') {
        (ret as Promise<void>).catch((e: unknown) => req.reject(e));
      }
    } catch (e) {
      req.reject(e);
    }
  }

  private startUdp(request: Socks5Request, dst: string): void {
    const { ctx, socket } = this;
    const announced = ctx.announced;
    if (!ctx.udpEnabled || !ctx.relay.bound || !announced) {
      const err = new BrookError(ErrorCodes.SOCKS_COMMAND, 'UDP ASSOCIATE disabled');
      this.finish(buildReply(Socks5Reply.COMMAND_NOT_SUPPORTED), err, dst);
      return;
    }
    const made = ctx.relay.associate(socket, this.id, request, this.from);
    if (made instanceof BrookError) {
      this.finish(buildReply(Socks5Reply.GENERAL_FAILURE), made, dst);
      return;
    }
    this.phase = { name: 'udp', dst, assoc: made };
    socket.write(buildReply(Socks5Reply.SUCCEEDED, announced));
  }
}

/** Run the SOCKS5 handshake on an accepted socket (the server's 'connection' listener). */
export function handleConnection(socket: net.Socket, ctx: HandshakeContext): void {
  new Socks5Connection(socket, ctx);
}
