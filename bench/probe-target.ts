/**
 * The target of bench/probe.ts 'tcp': a loopback server whose connections start with one byte,
 * 'u' (read M MiB, hash them, answer the 32-byte SHA-256) or 'd' (write M MiB, then end).
 *
 * By default it runs in a worker_thread of the probe (startTcpTargetThread), so the side that
 * sends and the side that receives and hashes are two threads: a single thread doing both
 * (send, receive, SHA-256 every byte) was the ceiling of the benchmark (about 800-900 MB/s on
 * its machine, whatever the contender). The same file is the worker's entry point.
 */
import { createHash } from 'node:crypto';
import net from 'node:net';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { MIB, MODE_UP, writePattern } from './probe-pattern.js';

export interface TcpTarget {
  port: number;
  close(): Promise<void>;
}

interface TargetData {
  role: 'probe-tcp-target';
  mib: number;
}

/** The target in this thread. */
export function startTcpTarget(mib: number): Promise<TcpTarget> {
  const total = mib * MIB;
  const socks = new Set<net.Socket>();
  const srv = net.createServer({ noDelay: true }, (c) => {
    socks.add(c);
    c.on('close', () => socks.delete(c));
    c.on('error', () => c.destroy());
    c.once('readable', function first() {
      const m = c.read(1) as Buffer | null;
      if (!m) {
        c.once('readable', first);
        return;
      }
      if (m[0] === MODE_UP) {
        const h = createHash('sha256');
        let got = 0;
        c.on('data', (d: Buffer) => {
          h.update(d);
          got += d.length;
          if (got >= total) c.end(h.digest());
        });
      } else {
        c.on('data', () => {});
        writePattern(c, mib).then(
          () => c.end(),
          () => c.destroy(),
        );
      }
    });
  });
  return new Promise<TcpTarget>((resolve) => {
    srv.listen({ host: '127.0.0.1', port: 0, backlog: 2048 }, () =>
      resolve({
        port: (srv.address() as net.AddressInfo).port,
        close: () =>
          new Promise<void>((r) => {
            for (const s of socks) s.destroy();
            srv.close(() => r());
          }),
      }),
    );
  });
}

/** The target in a worker_thread of this process (the probe's default). */
export function startTcpTargetThread(mib: number): Promise<TcpTarget> {
  const data: TargetData = { role: 'probe-tcp-target', mib };
  // the probe runs under `node --import tsx`, whose hooks a worker does not get by itself: the
  // worker registers them (tsx's API) before it loads this file
  const tsx = import.meta.resolve('tsx/esm/api');
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(import.meta.url)}); })`;
  const w = new Worker(boot, { eval: true, workerData: data });
  return new Promise((resolve, reject) => {
    w.once('error', reject);
    w.once('message', (m: { port: number }) => {
      w.off('error', reject);
      w.on('error', () => {});
      resolve({
        port: m.port,
        close: async () => {
          w.postMessage('stop');
          await new Promise<void>((r) => w.once('exit', () => r()));
        },
      });
    });
  });
}

if (!isMainThread && (workerData as TargetData | undefined)?.role === 'probe-tcp-target') {
  const port = parentPort!;
  void startTcpTarget((workerData as TargetData).mib).then((t) => {
    port.once('message', () => {
      void t.close().then(() => process.exit(0));
    });
    port.postMessage({ port: t.port });
  });
}
