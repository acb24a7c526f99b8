/**
 * Rows of `make attack` on real tunnels: a recorded tunnel replayed, and a destination that dies
 * or resets mid-download.
 */
import net from 'node:net';
import {
  connectTcp, echoServer, freePort, listenTcp, now, PASSWORD, readUntil, sleep, socksConnect, startBrook, startProcess, stopChild, stopPair,
  tunnelRoundTrip, waitPort, WS_PATH,
} from '../hostile.js';
import { pair, type Row, s1 } from './shared.js';

const REPLAYS = 20;
const REPLAY_WINDOW_MS = 2000;
const DOWNLOAD_KILL_AFTER = 1024 * 1024;
const RESET_WATCH_MS = 10_000;

/** One real tunnel recorded on the wire, replayed 20 times within 2 s. */
async function replayWith(workers: number): Promise<string> {
  const dst = await echoServer();
  const p = await pair({ noClient: true, serverArgs: workers > 1 ? ['--workers', String(workers)] : [] });
  const recorded: Buffer[][] = [];
  const { srv: proxy, port: proxyPort } = await listenTcp((c) => {
    const rec: Buffer[] = [];
    recorded.push(rec);
    const up = net.connect({ host: '127.0.0.1', port: p.serverPort });
    c.on('data', (d: Buffer) => {
      rec.push(Buffer.from(d));
      up.write(d);
    });
    up.on('data', (d: Buffer) => c.write(d));
    c.on('end', () => up.end());
    up.on('end', () => c.end());
    c.on('error', () => up.destroy());
    up.on('error', () => c.destroy());
    c.on('close', () => up.destroy());
  });
  const socksPort = await freePort();
  const client = startBrook('wsclient', ['wsclient', '--wsserver', `ws://127.0.0.1:${proxyPort}${WS_PATH}`, '--password', PASSWORD, '--socks5', `127.0.0.1:${socksPort}`]);
  await waitPort(socksPort, client);
  const ok = await tunnelRoundTrip(socksPort, dst.port);
  await sleep(300);
  await stopChild(client);
  const streams = recorded.map((r) => Buffer.concat(r)).sort((a, b) => b.length - a.length);
  const stream = streams[0] ?? Buffer.alloc(0);
  const headEnd = stream.indexOf('\r\n\r\n') + 4;
  const base = dst.connections();
  const t0 = now();
  await Promise.all(
    Array.from({ length: REPLAYS }, async (_, i) => {
      await sleep((i * REPLAY_WINDOW_MS) / REPLAYS);
      const s = await connectTcp(p.serverPort);
      s.on('error', () => {});
      s.write(stream.subarray(0, headEnd));
      await readUntil(s, (b) => b.includes('\r\n\r\n'), 2000);
      s.write(stream.subarray(headEnd));
      await readUntil(s, () => false, 1000);
      s.destroy();
    }),
  );
  const spanMs = now() - t0;
  await sleep(500);
  const replayed = dst.connections() - base;
  proxy.close();
  dst.close();
  await stopPair(p);
  return `workers ${workers}: original tunnel ${ok ? 'ok' : 'FAILED'} (${base} destination connection), ${REPLAYS} replays in ${s1(spanMs)} -> ${replayed} more destination connections`;
}

export async function replay(): Promise<Row> {
  return {
    tried: `one real tunnel (wsclient, Brook mode) recorded on the wire, replayed ${REPLAYS} times within ${REPLAY_WINDOW_MS / 1000} s, with --workers 1 and 2`,
    measured: `${await replayWith(1)}; ${await replayWith(2)}`,
    upstream: 'same: 20 more connections (no replay cache)',
  };
}

const DESTINATION_SCRIPT = `
const net = require('node:net');
const chunk = Buffer.alloc(64 * 1024, 0x61);
const srv = net.createServer({ pauseOnConnect: true }, (c) => {
  // never reads: what the client sent stays unread, so the kernel answers a kill with an RST
  c.on('error', () => {});
  const pump = () => { while (c.write(chunk)) {} };
  c.on('drain', pump);
  pump();
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
`;

/** A destination that dies or resets mid-download: what the SOCKS5 client sees. */
export async function reset(): Promise<Row> {
  const p = await pair();
  const download = async (dstPort: number, cut: () => void): Promise<string> => {
    const s = await socksConnect(p.socksPort, dstPort);
    s.write(Buffer.alloc(1000, 0x62));
    let got = 0;
    let cutDone = false;
    let t0 = now();
    const end = new Promise<string>((resolve) => {
      const t = setTimeout(() => resolve('nothing (hangs)'), RESET_WATCH_MS);
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (!cutDone && got >= DOWNLOAD_KILL_AFTER) {
          cutDone = true;
          t0 = now();
          cut();
        }
      });
      s.on('end', () => (clearTimeout(t), resolve('clean FIN')));
      s.on('error', (e: NodeJS.ErrnoException) => (clearTimeout(t), resolve(`reset (${e.code})`)));
    });
    const way = await end;
    s.destroy();
    return `${way} after ${(got / 1024 / 1024).toFixed(1)} MiB (${s1(now() - t0)} after the cut)`;
  };
  const dest = startProcess('destination', process.execPath, ['-e', DESTINATION_SCRIPT]);
  while (!dest.lines.length && !dest.exited) await sleep(50);
  const killed = await download(Number(dest.lines[0]), () => process.kill(dest.pid, 'SIGKILL'));
  const { srv: rstSrv, port: rstPort } = await listenTcp((c) => {
    c.on('error', () => {});
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let sent = 0;
    const pump = () => {
      while (sent < 2 * DOWNLOAD_KILL_AFTER) {
        sent += chunk.length;
        if (!c.write(chunk)) return void c.once('drain', pump);
      }
      c.resetAndDestroy();
    };
    pump();
  });
  const rst = await download(rstPort, () => {});
  rstSrv.close();
  const { srv: finSrv, port: finPort } = await listenTcp((c) => {
    c.on('error', () => {});
    c.end(Buffer.alloc(2 * DOWNLOAD_KILL_AFTER, 0x61));
  });
  const fin = await download(finPort, () => {});
  finSrv.close();
  await stopPair(p);
  return {
    tried: 'a download through wsclient -> wsserver; the destination is killed (kill -9, unread data, so its kernel sends an RST) or resets (explicit RST) mid-download; control: a clean FIN',
    measured: `kill -9: ${killed}; RST: ${rst}; clean FIN: ${fin}`,
    upstream: 'hangs (brook-ts before: clean FIN, truncation looks like success)',
  };
}
