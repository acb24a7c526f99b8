/**
 * The one relay used by every tunnel, both ends: a plain side (the local SOCKS5
 * client, or the destination) and a tunnel side (the upgraded connection) whose
 * bytes go through a transform (Brook fragments or withoutBrookProtocol).
 *
 *   plain --data--> [coalesce within one event-loop turn] --seal--> tunnel
 *   plain <--emit-- [open] <--data-- tunnel
 *
 * - Backpressure: a side whose peer's write() returned false is paused until 'drain'.
 * - Half-close: 'end' on one side ends the other side's writable after pending
 *   data; the relay is done when both sockets have closed.
 * - Fill fragments: each read is sealed at once into full fragments (a read
 *   holds everything the socket had, up to 64 KiB); reads already buffered
 *   behind it are gathered into the same seal; nothing waits for a timer.
 * - One teardown path: finish(err, how) closes both sockets and reports once.
 * - Resets travel (protocol/resets.md): a clean end (FIN) on one side is passed
 *   on as a FIN after the pending data; an abort closes both sides with an RST.
 *   An abort is: an error on either side (ECONNRESET, EPIPE, ...), an 'end'
 *   that was really an RST (endWasReset), a tunnel stream that cannot be
 *   opened (bad tag, bad length, ends inside a fragment), or a side that closed
 *   before both of its directions ended. An idle timeout and close() (the
 *   owner's decision, e.g. shutdown) close with a FIN, as upstream does.
 * - Keepalive (keepaliveMs, off by default): when nothing has been written to the
 *   tunnel for keepaliveMs, the transform's keepalive() (an empty Brook fragment)
 *   is written. One timer per relay, armed for the time the tunnel falls due and
 *   re-armed only when it fires (a write just stores the time: no per-chunk timer
 *   work); never after our FIN, never behind unsent bytes (backpressure), gone at
 *   teardown. Without keepaliveMs there is no timer, and a write costs one null check.
 *   Spec: protocol/brook-stream.md#empty-fragments-keepalive
 */
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { encodedSize, releaseOpened } from '../protocol/fragment.js';
import { MAX_TCP_PAYLOAD } from '../protocol/sizes.js';
import { endWasReset, resetByPeer, resetSocket } from './reset.js';

export interface TunnelTransform {
  /** Tunnel bytes to plain payloads. */
  open(chunk: Buffer, emit: (payload: Buffer) => void): void;
  /** Plain bytes to tunnel bytes. */
  seal(data: Buffer): Buffer;
  /** Optional: seal into `out`, returning the bytes written or -1 (then seal() is used). */
  sealInto?: ((data: Buffer, out: Buffer) => number) | undefined;
  /** The tunnel side ended: throw if it ended inside a unit. */
  end(): void;
  /** Optional: tunnel bytes that carry nothing (an empty Brook fragment); null or absent = none possible. */
  keepalive?: (() => Buffer | null) | undefined;
}

export interface RelayOptions {
  /** Close after this long with no traffic on either side (0 = never). */
  idleTimeoutMs?: number;
  /** Plain payloads already decoded from the tunnel (written to plain first). */
  initialPlain?: Buffer[];
  /** Tunnel bytes already read (e.g. with the 101 head), opened first. */
  initialTunnel?: Buffer;
  /**
   * Write the transform's keepalive to the tunnel after this long without writing
   * to it (0 = never, the default). Ignored when the transform has no keepalive.
   */
  keepaliveMs?: number;
  /** Clock for the keepalive (ms, monotonic); default performance.now. */
  now?: () => number;
  onClose?: (err: BrookError | null, stats: RelayStats) => void;
  /**
   * Called once, right after the first payload from the tunnel was written to the plain side
   * (the client's pool refills then: src/client/pool.ts). Costs a null check per write after.
   */
  onFirstDown?: () => void;
}

export interface RelayStats {
  /** Bytes of plain data read from the plain side (sent into the tunnel). */
  up: number;
  /** Bytes of plain data written to the plain side (received through the tunnel). */
  down: number;
  /** The relay ended in an abort: both sides were reset (RST), not ended (FIN). */
  aborted: boolean;
}

/** How finish() closes the two sockets. */
type Close = 'abort' | 'close';

/** Either side of a relay: a socket, or any Duplex (e.g. a tunnel seen as a stream). */
export type RelaySide = Duplex & { setTimeout?: Socket['setTimeout'] };

/** No transform: a plain pipe both ways (the direct SOCKS5 baseline, the HTTP proxy). */
export const PLAIN_TRANSFORM: TunnelTransform = {
  open: (chunk, emit) => emit(chunk),
  seal: (data) => data,
  end: () => {},
};

/** Most plain bytes gathered into one seal: 32 full TCP fragments. */
export const COALESCE_LIMIT = 64 * 1024;

/**
 * Sealed-output buffers shared by every relay of the process: taken for a write and
 * given back when the socket is done with it (write callback). Reusing them instead of
 * allocating ~66 KB per chunk keeps V8's external-memory pressure (which triggers
 * full mark-compact GCs) flat: measured, a server that had held 1,000 tunnels ran
 * 26 mark-compacts during a 512 MiB transfer with fresh buffers and half the
 * throughput. Idle tunnels hold none.
 */
export const SEAL_BUFFER_SIZE = encodedSize(COALESCE_LIMIT, MAX_TCP_PAYLOAD);
/** Free buffers kept (the rest are left to the GC): 4 MiB. */
export const SEAL_POOL_MAX = 64;
const sealPool: Buffer[] = [];

export class Relay {
  readonly stats: RelayStats = { up: 0, down: 0, aborted: false };
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private flushScheduled = false;
  private done = false;
  private closed = 0;
  /** Keepalive: the timer (null when off or stopped) and when the tunnel was last written to. */
  private keepaliveTimer: NodeJS.Timeout | null = null;
  private lastTunnelWrite = 0;
  /** Keepalives written so far. */
  keepalivesSent = 0;
  private onFirstDown: (() => void) | null;

  constructor(
    private readonly plain: RelaySide,
    private readonly tunnel: RelaySide,
    private readonly t: TunnelTransform,
    private readonly opts: RelayOptions = {},
  ) {
    this.onFirstDown = opts.onFirstDown ?? null;
    for (const p of opts.initialPlain ?? []) this.writePlain(p);
    if (opts.initialTunnel && opts.initialTunnel.length > 0) this.onTunnelData(opts.initialTunnel);

    plain.on('data', (d: Buffer) => this.onPlainData(d));
    plain.on('end', () => this.onPlainEnd());
    tunnel.on('data', (d: Buffer) => this.onTunnelData(d));
    tunnel.on('end', () => this.onTunnelEnd());
    for (const s of [plain, tunnel]) {
      s.on('error', (e) => this.finish(toBrookError(e), 'abort'));
      s.on('close', () => {
        // a side that closed before both of its halves were done was cut off: abort the other
        if (!(s.readableEnded && s.writableFinished)) this.finish(new BrookError(ErrorCodes.CLOSED, 'closed before both directions ended'), 'abort');
        else if (++this.closed === 2) this.finish(null, 'close');
      });
      if (opts.idleTimeoutMs && opts.idleTimeoutMs > 0 && s.setTimeout) {
        s.setTimeout(opts.idleTimeoutMs, () => this.finish(new BrookError(ErrorCodes.TIMEOUT, `idle for ${opts.idleTimeoutMs} ms`), 'close'));
      }
    }
    if (opts.keepaliveMs && opts.keepaliveMs > 0 && t.keepalive) {
      this.lastTunnelWrite = this.now();
      this.armKeepalive(opts.keepaliveMs);
    }
    // a side may have ended before the relay began (e.g. FIN right after a CONNECT head)
    if (plain.readableEnded) this.onPlainEnd();
    if (tunnel.readableEnded) this.onTunnelEnd();
    plain.resume();
    tunnel.resume();
  }

  private onPlainData(d: Buffer): void {
    this.stats.up += d.length;
    if (this.done) return;
    // Fill fragments without waiting: a socket read already holds everything the
    // socket had. Only when more reads are buffered behind this one (a paused
    // socket resuming emits them back to back in this same tick) are they
    // gathered and sealed together; a lone write is sealed at once.
    this.pending.push(d);
    this.pendingBytes += d.length;
    if (this.plain.readableLength > 0 && this.pendingBytes < COALESCE_LIMIT) {
      if (!this.flushScheduled) {
        this.flushScheduled = true;
        setImmediate(() => this.flush());
      }
      return;
    }
    this.flush();
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.pendingBytes === 0 || this.done) return;
    const data = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    this.pending = [];
    this.pendingBytes = 0;
    let out: Buffer;
    let pooled: Buffer | null = null;
    try {
      if (this.t.sealInto && data.length <= COALESCE_LIMIT) {
        pooled = sealPool.pop() ?? Buffer.allocUnsafeSlow(SEAL_BUFFER_SIZE);
        const n = this.t.sealInto(data, pooled);
        if (n < 0) {
          sealPool.push(pooled);
          pooled = null;
          out = this.t.seal(data);
        } else {
          out = pooled.subarray(0, n);
        }
      } else {
        out = this.t.seal(data);
      }
    } catch (e) {
      this.finish(toBrookError(e), 'abort');
      return;
    }
    const ok = pooled
      ? this.tunnel.write(out, () => {
          if (sealPool.length < SEAL_POOL_MAX) sealPool.push(pooled!);
        })
      : this.tunnel.write(out);
    if (this.keepaliveTimer) this.lastTunnelWrite = this.now();
    if (!ok && !this.plain.isPaused()) {
      this.plain.pause();
      this.tunnel.once('drain', () => this.plain.resume());
    }
  }

  private onPlainEnd(): void {
    if (endWasReset(this.plain)) {
      this.finish(resetByPeer('plain side'), 'abort');
      return;
    }
    this.flush();
    this.stopKeepalive(); // after our FIN nothing more may be sent
    this.tunnel.end();
  }

  private now(): number {
    return this.opts.now ? this.opts.now() : performance.now();
  }

  private armKeepalive(ms: number): void {
    this.keepaliveTimer = setTimeout(() => this.onKeepaliveDue(), ms);
    // the sockets keep the process alive, not this timer
    this.keepaliveTimer.unref();
  }

  private stopKeepalive(): void {
    if (this.keepaliveTimer) clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = null;
  }

  /** The timer fired: send a keepalive if the tunnel is still idle, then re-arm for the next due time. */
  private onKeepaliveDue(): void {
    this.keepaliveTimer = null;
    const every = this.opts.keepaliveMs!;
    if (this.done || this.tunnel.writableEnded || this.tunnel.destroyed) return;
    const now = this.now();
    const idle = now - this.lastTunnelWrite;
    // (timers may fire up to a millisecond early)
    if (idle + 1 < every) {
      this.armKeepalive(every - idle);
      return;
    }
    // bytes still queued (a full socket, or a flush due this turn): the tunnel is not idle, and a
    // keepalive queued behind them would only add to the backlog; look again a period later
    if (this.tunnel.writableLength === 0 && this.pendingBytes === 0) {
      let ka: Buffer | null;
      try {
        ka = this.t.keepalive!();
      } catch (e) {
        this.finish(toBrookError(e), 'abort');
        return;
      }
      if (!ka) return; // nothing can carry one (e.g. a UDP tunnel): stop for good
      this.tunnel.write(ka);
      this.keepalivesSent++;
    }
    this.lastTunnelWrite = now;
    this.armKeepalive(every);
  }

  private writePlain(p: Buffer): boolean {
    this.stats.down += p.length;
    // a batch-opened payload goes back to the decoder's pool once written
    const ok = this.plain.write(p, () => releaseOpened(p));
    if (this.onFirstDown) {
      const f = this.onFirstDown;
      this.onFirstDown = null;
      f();
    }
    return ok;
  }

  private onTunnelData(d: Buffer): void {
    let full = false;
    try {
      this.t.open(d, (p) => {
        if (!this.writePlain(p)) full = true;
      });
    } catch (e) {
      // a stream that fails to open mid-way (bad tag, oversized length) is an abort
      this.finish(toBrookError(e), 'abort');
      return;
    }
    if (full && !this.tunnel.isPaused()) {
      this.tunnel.pause();
      this.plain.once('drain', () => this.tunnel.resume());
    }
  }

  private onTunnelEnd(): void {
    if (endWasReset(this.tunnel)) {
      this.finish(resetByPeer('tunnel'), 'abort');
      return;
    }
    try {
      this.t.end();
    } catch (e) {
      // the tunnel ended inside a fragment: truncated, so an abort
      this.finish(toBrookError(e), 'abort');
      return;
    }
    this.plain.end();
  }

  /** Tear down now (e.g. server shutdown): both sides closed, with a FIN. */
  close(err: BrookError | null = null): void {
    this.finish(err ?? new BrookError(ErrorCodes.CLOSED, 'closed'), 'close');
  }

  /** Tear down now with an RST on both sides. */
  abort(err: BrookError | null = null): void {
    this.finish(err ?? new BrookError(ErrorCodes.CLOSED, 'aborted'), 'abort');
  }

  private finish(err: BrookError | null, how: Close): void {
    if (this.done) return;
    this.done = true;
    this.stopKeepalive();
    if (how === 'abort') {
      this.stats.aborted = true;
      resetSocket(this.plain);
      resetSocket(this.tunnel);
    } else {
      this.plain.destroy();
      this.tunnel.destroy();
    }
    this.opts.onClose?.(err, this.stats);
  }
}
