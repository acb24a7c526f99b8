/**
 * A link with real latency for the benchmark: a user-space TCP relay that
 * holds every chunk for a fixed time in each direction (10 ms each way = a
 * 20 ms round trip), in order, with FIN and reset passed on after the same
 * delay.
 *
 * The TCP handshake is simulated too: the kernel accepts at once, so the
 * relay delivers nothing a connection's client sent before one round trip
 * after the accept (a connect over a real link returns after one round trip;
 * the first bytes then need one more one-way trip). Connect + first byte
 * therefore costs what it would on the real link.
 *
 *   import { startDelayRelay } from './delay.js'
 *   const r = await startDelayRelay({ target: { host, port }, oneWayMs: 10 }); ... r.port ... await r.close()
 *
 * `localAddress`: the address the relay dials the target from (e.g. 127.0.9.1: all of 127/8 is loopback
 * on Linux), so a server can tell the delayed client from others on the same machine.
 *
 * Memory: at most MAX_QUEUED bytes wait per direction; above it the source is paused.
 */
import net from 'node:net';

/** Bytes held per direction before the sender is paused. */
const MAX_QUEUED = 4 * 1024 * 1024;

export interface DelayRelay {
  port: number;
  close(): Promise<void>;
}

type Item = { at: number; data: Buffer } | { at: number; end: true } | { at: number; reset: true };

/** One direction: chunks from `src` reach `dst` `oneWayMs` later (and not before `notBefore`). */
function pipeDelayed(src: net.Socket, dst: net.Socket, oneWayMs: number, notBefore: number): void {
  const queue: Item[] = [];
  let queued = 0;
  let timer: NodeJS.Timeout | null = null;
  const schedule = () => {
    if (timer || queue.length === 0) return;
    timer = setTimeout(deliver, Math.max(0, queue[0]!.at - performance.now()));
  };
  const deliver = () => {
    timer = null;
    const now = performance.now();
    while (queue.length > 0 && queue[0]!.at <= now + 0.5) {
      const it = queue.shift()!;
      if ('data' in it) {
        queued -= it.data.length;
        if (!dst.destroyed) dst.write(it.data);
      } else if ('end' in it) {
        if (!dst.destroyed) dst.end();
      } else {
        if (!dst.destroyed) dst.resetAndDestroy();
      }
    }
    if (queued < MAX_QUEUED && src.isPaused()) src.resume();
    schedule();
  };
  const at = () => Math.max(performance.now(), notBefore) + oneWayMs;
  src.on('data', (d: Buffer) => {
    queue.push({ at: at(), data: d });
    queued += d.length;
    if (queued >= MAX_QUEUED) src.pause();
    schedule();
  });
  src.on('end', () => {
    queue.push({ at: at(), end: true });
    schedule();
  });
  src.on('error', () => {
    queue.push({ at: at(), reset: true });
    schedule();
  });
  src.on('close', () => {
    // a close without end or error (destroyed by us): pass it on after the delay
    if (!src.readableEnded) {
      queue.push({ at: at(), reset: true });
      schedule();
    }
  });
}

export async function startDelayRelay(o: { target: { host: string; port: number }; oneWayMs: number; host?: string; localAddress?: string }): Promise<DelayRelay> {
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  };
  const srv = net.createServer({ allowHalfOpen: true, noDelay: true }, (c) => {
    const notBefore = performance.now() + 2 * o.oneWayMs;
    const t = net.connect({ host: o.target.host, port: o.target.port, allowHalfOpen: true, noDelay: true, ...(o.localAddress ? { localAddress: o.localAddress } : {}) });
    track(c);
    track(t);
    pipeDelayed(c, t, o.oneWayMs, notBefore);
    pipeDelayed(t, c, o.oneWayMs, 0);
  });
  await new Promise<void>((r) => srv.listen({ host: o.host ?? '127.0.0.1', port: 0, backlog: 1024 }, () => r()));
  return {
    port: (srv.address() as net.AddressInfo).port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}
