/**
 * Zero-copy relay for plain TCP-to-TCP tunnels (withoutBrookProtocol after its header, and the
 * direct SOCKS5 pass-through): the native addon's splice(2) relay (native/src/splice_relay.c),
 * so the bytes never enter JS, as upstream's Go relay does (TCPConn.ReadFrom). Everything else,
 * and every case below that cannot be spliced, goes through the JS Relay (src/net/relay.ts).
 *
 *   startRelay(plain, tunnel, transform, { splice: true, ... })
 *     -> SpliceRelay when: the addon is loaded and says splice is supported (Linux), splicing is
 *        not turned off (BROOK_TS_SPLICE=0, setSpliceEnabled(false)), both sides are plain TCP
 *        net.Sockets with a descriptor (never TLS: wss is never spliced), neither has ended,
 *        neither has a socket timeout, and no keepalive is asked for (Brook mode only anyway);
 *     -> else the JS Relay, exactly as before.
 *   `splice: true` is the caller's promise that the transform is the identity (PLAIN_TRANSFORM,
 *   withoutBrookProtocol TCP): Brook mode never asks.
 *
 * Hand-off (JS still owns both sockets until the native side has them):
 *   1. stop libuv's reads on both (handle.readStop()),
 *   2. take what Node already read into each stream's buffer and write it to the other side
 *      (with the caller's initial bytes: initialPlain, initialTunnel),
 *   3. wait until both write queues are empty (the last write's callback: libuv has handed
 *      every byte to the kernel),
 *   4. spliceStart(fdPlain, fdTunnel). A refusal (no descriptors for the pipes, too many
 *      relays, ...) resumes the same sockets with the JS Relay.
 * While native code owns them, JS never closes the sockets: close()/abort() (shutdown, the idle
 * timeout) only ask the worker to stop (spliceCancel), and a destroy() from anyone else (e.g.
 * the SOCKS5 server closing) is held back until the worker has let go (each socket's _destroy
 * is wrapped for that time). The worker reports every end through one callback: both
 * directions done (FIN both ways, shut with shutdown(SHUT_WR) as each ended), an abort with its
 * errno (ECONNRESET ...: both sockets are then reset, protocol/resets.md), cancelled (closed or
 * reset as close()/abort() asked), or refused before it began (the JS Relay takes over); only
 * then are the sockets closed, by JS. The idle timeout (--tcpTimeout) is one unref'd JS timer
 * per relay that asks the worker when bytes last moved (re-armed only when it fires).
 *
 * Files: this one (startRelay, SpliceRelay: the relay's life); splice-handoff.ts (the socket
 * steps: which sockets qualify, stopping reads, holding a socket); splice-addon.ts (loading the
 * addon, the on/off switch, the pipe limits, routing the worker's reports, its errors).
 */
import type net from 'node:net';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { Relay, type RelayOptions, type RelaySide, type RelayStats, type TunnelTransform } from './relay.js';
import { resetSocket } from './reset.js';
import {
  KIND_ABORT,
  KIND_CANCELLED,
  KIND_DONE,
  KIND_REFUSED,
  liveRelays as live,
  loadSpliceAddon,
  nativeError,
  SPLICE_INFO_LENGTH,
  spliceEnabled,
  type SpliceAddon,
} from './splice-addon.js';
import { holdSocket, resumeReading, spliceableFd, stopReading } from './splice-handoff.js';

export {
  SPLICE_ENV,
  SPLICE_PIPE_GROW_BUDGET_DEFAULT,
  SPLICE_PIPE_GROW_MAX_DEFAULT,
  setSpliceEnabled,
  setSplicePipeLimits,
  spliceAvailability,
  splicedRelays,
  type SplicePipeLimits,
} from './splice-addon.js';

/** What every relay (JS or spliced) offers its owner. */
export interface RelayLike {
  readonly stats: RelayStats;
  /** Tear down now with a FIN on both sides (shutdown, idle timeout). */
  close(err?: BrookError | null): void;
  /** Tear down now with an RST on both sides. */
  abort(err?: BrookError | null): void;
}

export interface StartRelayOptions extends RelayOptions {
  /** The transform is the identity: the relay may be spliced (see the top of this file). */
  splice?: boolean;
}

/** A relay: spliced when it can be (see the top of this file), else the JS Relay. */
export function startRelay(plain: RelaySide, tunnel: RelaySide, t: TunnelTransform, opts: StartRelayOptions = {}): RelayLike {
  const { splice, ...relayOpts } = opts;
  if (!splice || !spliceEnabled() || (opts.keepaliveMs ?? 0) > 0) return new Relay(plain, tunnel, t, relayOpts);
  const fa = spliceableFd(plain);
  const fb = fa < 0 ? -1 : spliceableFd(tunnel);
  if (fb < 0 || fa === fb) return new Relay(plain, tunnel, t, relayOpts);
  const { addon } = loadSpliceAddon();
  if (!addon) return new Relay(plain, tunnel, t, relayOpts);
  return new SpliceRelay(plain as net.Socket, tunnel as net.Socket, fa, fb, t, relayOpts, addon);
}

/** handoff: JS owns the sockets, writing out what it held; native: the worker owns them; released: the worker let go, closing now. */
type Phase = 'handoff' | 'native' | 'released' | 'js' | 'done';
const EMPTY = Buffer.alloc(0);

export class SpliceRelay implements RelayLike {
  private phase: Phase = 'handoff';
  private slot = -1;
  private inner: Relay | null = null;
  /** Bytes moved in JS during the hand-off; the worker's counts are added to them. */
  private readonly base: RelayStats = { up: 0, down: 0, aborted: false };
  private final: RelayStats | null = null;
  private cancel: { how: 'close' | 'abort'; err: BrookError } | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  private readonly info = new Float64Array(SPLICE_INFO_LENGTH);
  /** destroy() calls from others, held while the worker owns the sockets. */
  private held: Array<() => void> = [];
  private readonly restore: Array<() => void> = [];
  private readonly onError = (e: Error) => this.finish(toBrookError(e), 'abort');
  private readonly onEarlyClose = () => this.finish(new BrookError(ErrorCodes.CLOSED, 'closed before both directions ended'), 'abort');

  constructor(
    private readonly plain: net.Socket,
    private readonly tunnel: net.Socket,
    private readonly fdPlain: number,
    private readonly fdTunnel: number,
    private readonly t: TunnelTransform,
    private readonly opts: RelayOptions,
    private readonly addon: SpliceAddon,
  ) {
    for (const s of [plain, tunnel]) {
      s.on('error', this.onError);
      s.on('close', this.onEarlyClose);
    }
    const a = stopReading(plain);
    const b = stopReading(tunnel);
    if (!a.ok || !b.ok) {
      this.toJs(a.chunks, b.chunks);
      return;
    }
    const fromPlain = a.chunks;
    const fromTunnel = b.chunks;
    try {
      for (const p of opts.initialPlain ?? []) this.writePlain(p);
      if (opts.initialTunnel && opts.initialTunnel.length > 0) t.open(opts.initialTunnel, (p) => this.writePlain(p));
      for (const c of fromTunnel) t.open(c, (p) => this.writePlain(p));
      for (const c of fromPlain) {
        this.base.up += c.length;
        tunnel.write(t.seal(c));
      }
    } catch (e) {
      this.finish(toBrookError(e), 'abort');
      return;
    }
    let waiting = 2;
    const drained = (err?: Error | null) => {
      if (err) {
        this.finish(toBrookError(err), 'abort');
        return;
      }
      if (--waiting === 0) this.handOver();
    };
    for (const s of [plain, tunnel]) {
      if (s.writableLength === 0) drained();
      else s.write(EMPTY, drained); // called after every earlier write has reached the kernel
    }
  }

  get stats(): RelayStats {
    if (this.final) return this.final;
    if (this.inner) return this.inner.stats;
    if (this.phase === 'native' && this.addon.spliceInfo(this.slot, this.info) === 0) {
      return { up: this.base.up + this.info[0]!, down: this.base.down + this.info[1]!, aborted: false };
    }
    return { ...this.base };
  }

  /** The worker moves the bytes (false: hand-off still running, or the JS Relay took over). */
  get spliced(): boolean {
    return this.phase === 'native';
  }

  /** The capacity in bytes of each direction's pipe while the worker owns the relay, else null. */
  get pipeCapacity(): { up: number; down: number } | null {
    if (this.phase !== 'native' || this.addon.spliceInfo(this.slot, this.info) !== 0) return null;
    return { up: this.info[3]!, down: this.info[4]! };
  }

  close(err: BrookError | null = null): void {
    this.stop('close', err ?? new BrookError(ErrorCodes.CLOSED, 'closed'));
  }

  abort(err: BrookError | null = null): void {
    this.stop('abort', err ?? new BrookError(ErrorCodes.CLOSED, 'aborted'));
  }

  private stop(how: 'close' | 'abort', err: BrookError): void {
    if (this.inner) {
      if (how === 'close') this.inner.close(err);
      else this.inner.abort(err);
      return;
    }
    if (this.phase === 'handoff') {
      this.finish(err, how);
      return;
    }
    if (this.phase !== 'native') return;
    // the worker still owns the descriptors: ask it to let go, close when it reports
    if (this.cancel) {
      if (how === 'abort') this.cancel.how = 'abort';
      return;
    }
    this.cancel = { how, err };
    if (this.addon.spliceCancel(this.slot) < 0) {
      // cannot happen while the slot is live (its report has not come); nothing to wait for
      live.delete(this.slot);
      this.release();
      this.finish(err, how);
    }
  }

  private writePlain(p: Buffer): void {
    this.base.down += p.length;
    this.plain.write(p);
  }

  /** Both write queues are empty: give the descriptors to the worker. */
  private handOver(): void {
    if (this.phase !== 'handoff') return;
    const slot = this.addon.spliceStart(this.fdPlain, this.fdTunnel);
    if (slot < 0) {
      this.toJs([], []);
      return;
    }
    this.phase = 'native';
    this.slot = slot;
    live.set(slot, this);
    for (const s of [this.plain, this.tunnel]) this.hold(s);
    const idle = this.opts.idleTimeoutMs ?? 0;
    if (idle > 0) this.armIdle(idle, idle);
  }

  /** While the worker owns the descriptor (splice-handoff.ts: holdSocket). */
  private hold(s: net.Socket): void {
    const restore = holdSocket(s, (run) => {
      this.held.push(run);
      // as in the JS Relay: a side closed before both of its directions ended aborts the other
      this.abort(new BrookError(ErrorCodes.CLOSED, 'closed before both directions ended'));
    });
    this.restore.push(restore);
  }

  /** The worker has let go of the descriptors: the sockets are JS's again. */
  private release(): void {
    this.phase = 'released';
    for (const r of this.restore.splice(0)) r();
    for (const h of this.held.splice(0)) h();
  }

  /** Look after `delay` ms whether bytes moved within the last `ms` (the idle timeout). */
  private armIdle(ms: number, delay: number): void {
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null;
      if (this.phase !== 'native' || this.cancel) return;
      const idleFor = this.addon.spliceInfo(this.slot, this.info) === 0 ? this.info[2]! : ms;
      // (timers may fire up to a millisecond early)
      if (idleFor + 1 >= ms) this.close(new BrookError(ErrorCodes.TIMEOUT, `idle for ${ms} ms`));
      else this.armIdle(ms, ms - idleFor);
    }, delay);
    this.idleTimer.unref(); // the worker's reference keeps the process alive while relays run
  }

  /** The worker's report (see the top of this file). */
  onReport(kind: number, errno: number, up: number, down: number): void {
    if (this.phase !== 'native') return;
    this.base.up += up;
    this.base.down += down;
    this.release();
    if (kind === KIND_REFUSED) {
      // nothing was moved: the JS Relay takes over (unless someone closed it meanwhile)
      if (this.cancel) this.finish(this.cancel.err, this.cancel.how);
      else if (this.plain.destroyed || this.tunnel.destroyed) this.finish(new BrookError(ErrorCodes.CLOSED, 'socket destroyed'), 'abort');
      else this.toJs([], []);
      return;
    }
    if (kind === KIND_DONE) this.finish(null, 'close');
    else if (kind === KIND_ABORT) this.finish(nativeError(errno), 'abort');
    else if (kind === KIND_CANCELLED && this.cancel) this.finish(this.cancel.err, this.cancel.how);
    else this.finish(new BrookError(ErrorCodes.INTERNAL, `spliced relay: unexpected report ${kind}`), 'abort');
  }

  /** Relay in JS from here on (the chunks taken out of the streams go back first). */
  private toJs(fromPlain: Buffer[], fromTunnel: Buffer[]): void {
    if (this.phase === 'done') return;
    this.phase = 'js';
    for (const s of [this.plain, this.tunnel]) {
      s.removeListener('error', this.onError);
      s.removeListener('close', this.onEarlyClose);
    }
    for (const c of fromPlain.reverse()) this.plain.unshift(c);
    for (const c of fromTunnel.reverse()) this.tunnel.unshift(c);
    for (const s of [this.plain, this.tunnel]) resumeReading(s);
    const base = { ...this.base };
    const onClose = this.opts.onClose;
    this.inner = new Relay(this.plain, this.tunnel, this.t, {
      idleTimeoutMs: this.opts.idleTimeoutMs,
      onClose: (err, stats) => {
        this.phase = 'done';
        this.final = { up: base.up + stats.up, down: base.down + stats.down, aborted: stats.aborted };
        this.inner = null;
        onClose?.(err, this.final);
      },
    });
  }

  private finish(err: BrookError | null, how: 'close' | 'abort'): void {
    // never while the worker owns the descriptors (stop() asks it to let go first)
    if (this.phase !== 'handoff' && this.phase !== 'released') return;
    this.phase = 'done';
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    for (const s of [this.plain, this.tunnel]) {
      s.removeListener('error', this.onError);
      s.removeListener('close', this.onEarlyClose);
    }
    const aborted = how === 'abort';
    if (aborted) {
      resetSocket(this.plain);
      resetSocket(this.tunnel);
    } else {
      this.plain.destroy();
      this.tunnel.destroy();
    }
    this.final = { up: this.base.up, down: this.base.down, aborted };
    this.opts.onClose?.(err, this.final);
  }
}
