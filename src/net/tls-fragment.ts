/**
 * The TCP side of `fragment=` (src/tls/fragment-spec.ts, protocol/tls-client.md):
 * a Duplex over the TCP socket to a wssserver, given to tls.connect as its
 * transport, that sends the first TLS record (the ClientHello) as separate
 * writes of random length with a random pause (microseconds) between two, and
 * everything after it unchanged.
 *
 *   phases: 'record' (buffering the first record: at most its 5-byte header
 *   plus 65 535 bytes) -> 'splitting' (one piece written, its callback awaited,
 *   the pause, the next) -> 'through' (writes go straight to the socket)
 *
 * Each piece waits for the previous one's write callback (the kernel took it)
 * and the socket has TCP_NODELAY, so each leaves in its own segment, as
 * upstream's TLSFragmentConn does with one Write per piece. A TLS session being
 * resumed changes nothing: whatever the first record holds is split.
 *
 * One teardown path: destroying the wrapper (TLSSocket.destroy() does) cancels a
 * pending pause and destroys the TCP socket; the socket's error or close
 * destroys the wrapper. An RST that Node reports as an 'end' (src/net/reset.ts)
 * is passed up as ECONNRESET, since the TLS socket above cannot see the TCP one.
 */
import { randomInt } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { firstRecordLength } from '../tls/clienthello.js';
import { planPieces, type RangeRandom, type TlsFragmentSpec } from '../tls/fragment-spec.js';
import { endWasReset } from './reset.js';

/** Wait `us` microseconds, then call `done`; returns a cancel. */
export type PauseFn = (us: number, done: () => void) => () => void;

export interface FragmentOptions {
  spec: TlsFragmentSpec;
  /** Default: crypto.randomInt, as upstream's crypto/rand draws. */
  random?: RangeRandom;
  /** Default: pauseMicros. */
  pause?: PauseFn;
}

/** [min, max) from crypto.randomInt; max not above min gives min (upstream's x.CryptoRandom). */
export const cryptoRange: RangeRandom = (min, max) => (max <= min ? min : randomInt(min, max));

const NS_PER_US = 1000n;
const US_PER_MS = 1000;

/**
 * A pause of `us` microseconds, at least: whole milliseconds on a timer, the
 * rest by turns of the event loop (each polls I/O, so other connections go on)
 * until the monotonic clock has passed. Node's timers count whole milliseconds;
 * this keeps upstream's sub-millisecond pauses near their length on the wire
 * instead of stretching each to a millisecond or more.
 */
export const pauseMicros: PauseFn = (us, done) => {
  const until = process.hrtime.bigint() + BigInt(Math.ceil(us)) * NS_PER_US;
  let timer: NodeJS.Timeout | null = null;
  let turn: NodeJS.Immediate | null = null;
  const spin = () => {
    timer = null;
    if (process.hrtime.bigint() >= until) {
      turn = null;
      done();
    } else {
      turn = setImmediate(spin);
    }
  };
  const wholeMs = Math.floor(us / US_PER_MS);
  if (wholeMs >= 1) timer = setTimeout(spin, wholeMs);
  else turn = setImmediate(spin);
  return () => {
    if (timer) clearTimeout(timer);
    if (turn) clearImmediate(turn);
    timer = null;
    turn = null;
  };
};

type Phase = 'record' | 'splitting' | 'through';

function connReset(): NodeJS.ErrnoException {
  return Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', errno: -104, syscall: 'read' });
}

export class FirstRecordSplitter extends Duplex {
  private phase: Phase = 'record';
  private held: Buffer = Buffer.alloc(0);
  private cancelPause: (() => void) | null = null;
  private readonly random: RangeRandom;
  private readonly wait: PauseFn;

  constructor(
    /** The TCP socket (connected or connecting); owned from now on. */
    readonly tcp: Socket,
    private readonly o: FragmentOptions,
  ) {
    super({ allowHalfOpen: true });
    this.random = o.random ?? cryptoRange;
    this.wait = o.pause ?? pauseMicros;
    tcp.setNoDelay(true);
    tcp.on('data', (d: Buffer) => {
      if (!this.push(d)) tcp.pause();
    });
    tcp.on('end', () => (endWasReset(tcp) ? this.destroy(connReset()) : this.push(null)));
    tcp.on('error', (e) => this.destroy(e));
    tcp.on('close', () => this.destroy());
  }

  override _read(): void {
    this.tcp.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (e?: Error | null) => void): void {
    if (this.phase === 'through') {
      this.forward(chunk, cb);
      return;
    }
    this.held = this.held.length === 0 ? chunk : Buffer.concat([this.held, chunk]);
    const record = firstRecordLength(this.held);
    if (record === null || this.held.length < record) {
      cb();
      return;
    }
    this.phase = 'splitting';
    const all = this.held;
    this.held = Buffer.alloc(0);
    this.sendPieces(all, planPieces(record, this.o.spec, this.random), cb);
  }

  override _final(cb: (e?: Error | null) => void): void {
    this.tcp.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    this.cancelPause?.();
    this.cancelPause = null;
    this.tcp.destroy();
    cb(err);
  }

  /** Through: the socket's own backpressure (done once it has room). */
  private forward(chunk: Buffer, cb: (e?: Error | null) => void): void {
    if (this.tcp.write(chunk)) cb();
    else this.tcp.once('drain', () => cb());
  }

  /** Piece i, its write callback, the pause, piece i + 1; then the bytes after the record. */
  private sendPieces(all: Buffer, pieces: number[], cb: (e?: Error | null) => void): void {
    let at = 0;
    let i = 0;
    const next = () => {
      this.cancelPause = null;
      if (this.destroyed) return;
      const len = pieces[i++]!;
      const piece = all.subarray(at, at + len);
      at += len;
      this.tcp.write(piece, (err) => {
        if (err || this.destroyed) return; // the socket's 'error' tears down
        if (i < pieces.length) {
          this.cancelPause = this.wait(this.random(this.o.spec.minDelay, this.o.spec.maxDelay), next);
          return;
        }
        this.phase = 'through';
        if (at < all.length) this.forward(all.subarray(at), cb);
        else cb();
      });
    };
    next();
  }
}

/**
 * The transport for tls.connect when `spec` is set: the given TCP socket, or a
 * new connection to host:port, wrapped in a FirstRecordSplitter.
 */
export function fragmentingTransport(to: { host: string; port: number } | { socket: Socket }, o: FragmentOptions): { socket: Duplex } {
  const tcp = 'socket' in to ? to.socket : netConnect({ host: to.host, port: to.port, allowHalfOpen: true, noDelay: true });
  return { socket: new FirstRecordSplitter(tcp, o) };
}
