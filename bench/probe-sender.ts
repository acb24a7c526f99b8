/**
 * The uploading side of bench/probe.ts 'tcp --dir up' in a worker_thread: N connections through
 * the SOCKS5 proxy, each sends 'u' and M MiB of the pattern and reads back the target's 32-byte
 * SHA-256 of what it received. The main thread of the probe runs the target (receives and
 * hashes), so sending and receiving + hashing are two threads, as in '--dir down' (where the
 * target, which sends, is the worker).
 *
 *   const s = await startSenderThread({ socks, port, mib, conns });   // before the clock
 *   const digests = await s.run();                                     // the timed part
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { DIGEST_SIZE, MODE_UP, writePattern } from './probe-pattern.js';
import { CMD_CONNECT, readN, socksRequest } from './probe-socks.js';

interface SenderData {
  role: 'probe-tcp-sender';
  socks: string;
  port: number;
  mib: number;
  conns: number;
}

type FromSender = { ready: true } | { digests: string[] } | { error: string };

export interface Sender {
  /** Run the uploads; resolves with each connection's digest (hex) as the target answered it. */
  run(): Promise<string[]>;
}

async function upload(d: SenderData): Promise<string> {
  const { s } = await socksRequest(d.socks, CMD_CONNECT, '127.0.0.1', d.port);
  s.on('error', () => {});
  s.write(Buffer.from([MODE_UP]));
  await writePattern(s, d.mib);
  const digest = await readN(s, DIGEST_SIZE);
  s.destroy();
  return digest.toString('hex');
}

export function startSenderThread(o: Omit<SenderData, 'role'>): Promise<Sender> {
  const data: SenderData = { role: 'probe-tcp-sender', ...o };
  // the probe runs under `node --import tsx`, whose hooks a worker does not get by itself: the
  // worker registers them (tsx's API) before it loads this file
  const tsx = import.meta.resolve('tsx/esm/api');
  const boot = `import(${JSON.stringify(tsx)}).then((m) => { m.register(); return import(${JSON.stringify(import.meta.url)}); })`;
  const w = new Worker(boot, { eval: true, workerData: data });
  return new Promise((resolve, reject) => {
    w.once('error', reject);
    w.once('message', () => {
      resolve({
        run: () =>
          new Promise<string[]>((res, rej) => {
            w.once('error', rej);
            w.once('message', (m: FromSender) => {
              void w.terminate();
              if ('digests' in m) res(m.digests);
              else rej(new Error('error' in m ? m.error : 'sender: unexpected message'));
            });
            w.postMessage('go');
          }),
      });
    });
  });
}

if (!isMainThread && (workerData as SenderData | undefined)?.role === 'probe-tcp-sender') {
  const d = workerData as SenderData;
  const port = parentPort!;
  port.once('message', () => {
    Promise.all(Array.from({ length: d.conns }, () => upload(d))).then(
      (digests) => port.postMessage({ digests } satisfies FromSender),
      (e: unknown) => port.postMessage({ error: e instanceof Error ? e.message : String(e) } satisfies FromSender),
    );
  });
  port.postMessage({ ready: true } satisfies FromSender);
}
