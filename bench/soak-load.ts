/**
 * The mixed load of `make soak` (bench/soak.ts): tunnels, bulk transfers, UDP, bad probes and
 * slowloris, all at once until told to stop, counted in a Counters record the sampler reads.
 */
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import {
  brookHello, hangUp, ipv4Address, listenTcp, type Pair, readUntil, refusedUpgrade, sleep, slowlorisConnection, socksAssociate, socksConnect,
  tunnelRoundTrip, upgrade, upgradeRequest,
} from './hostile.js';

const CHURN_WORKERS = 4;
const CHURN_PAUSE_MS = 20;
export const BULK_MIB = 16;
/** Between bulk transfers: a mixed load, not a throughput benchmark hogging the 2 cores. */
const BULK_PAUSE_MS = 500;
const UDP_BURST = 20;
const UDP_SIZE = 1000;
const UDP_TIMEOUT_MS = 1000;
const PROBE_EVERY_MS = 100;
const SLOWLORIS = 50;
const SLOW_INTERVAL_MS = 2000;
const SLOW_RECONNECT_MS = 500;
const MIB = 1024 * 1024;

export interface Counters {
  tunnelsOk: number;
  tunnelsFailed: number;
  bulkOk: number;
  bulkFailed: number;
  bulkMiB: number;
  udpSent: number;
  udpEchoed: number;
  probes: number;
  slowlorisClosed: number;
}
export const zero = (): Counters => ({ tunnelsOk: 0, tunnelsFailed: 0, bulkOk: 0, bulkFailed: 0, bulkMiB: 0, udpSent: 0, udpEchoed: 0, probes: 0, slowlorisClosed: 0 });

const pattern = randomBytes(MIB);
const patternDigest = (() => {
  const h = createHash('sha256');
  for (let i = 0; i < BULK_MIB; i++) h.update(pattern);
  return h.digest();
})();

/** 'u': read BULK_MIB MiB, answer their SHA-256; 'd': send BULK_MIB MiB and end. */
export async function bulkServer(): Promise<{ srv: net.Server; port: number }> {
  return listenTcp((c) => {
    c.on('error', () => c.destroy());
    c.once('data', (first: Buffer) => {
      if (first[0] === 0x75) {
        const h = createHash('sha256');
        let got = first.length - 1;
        h.update(first.subarray(1));
        c.on('data', (d: Buffer) => {
          h.update(d);
          got += d.length;
          if (got >= BULK_MIB * MIB) c.end(h.digest());
        });
      } else {
        let i = 0;
        const pump = () => {
          while (i < BULK_MIB) {
            i++;
            if (!c.write(pattern)) return void c.once('drain', pump);
          }
          c.end();
        };
        pump();
      }
    });
  });
}

async function writeAll(s: net.Socket, mibCount: number): Promise<void> {
  for (let i = 0; i < mibCount; i++) {
    if (!s.write(pattern)) await new Promise<void>((r, j) => (s.once('drain', r), s.once('close', () => j(new Error('closed')))));
  }
}

async function bulkOnce(socksPort: number, dstPort: number, up: boolean): Promise<boolean> {
  let s: net.Socket | undefined;
  try {
    s = await socksConnect(socksPort, dstPort);
    if (up) {
      s.write('u');
      await writeAll(s, BULK_MIB);
      const r = await readUntil(s, (b) => b.length >= 32, 60_000);
      return r.data.subarray(0, 32).equals(patternDigest);
    }
    s.write('d');
    const h = createHash('sha256');
    let got = 0;
    await new Promise<void>((resolveDone) => {
      s!.on('data', (d: Buffer) => {
        h.update(d);
        got += d.length;
      });
      s!.on('end', resolveDone);
      s!.on('close', resolveDone);
    });
    return got === BULK_MIB * MIB && h.digest().equals(patternDigest);
  } catch {
    return false;
  } finally {
    s?.destroy();
  }
}

async function udpOnce(socksPort: number, echoPort: number, c: Counters): Promise<void> {
  const sock = dgram.createSocket('udp4');
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  let ctl: net.Socket | undefined;
  try {
    const a = await socksAssociate(socksPort);
    ctl = a.s;
    const hdr = Buffer.concat([Buffer.from([0, 0, 0]), ipv4Address('127.0.0.1', echoPort)]);
    for (let i = 0; i < UDP_BURST; i++) {
      const payload = randomBytes(UDP_SIZE);
      c.udpSent++;
      const ok = await new Promise<boolean>((r) => {
        const t = setTimeout(() => (sock.removeAllListeners('message'), r(false)), UDP_TIMEOUT_MS);
        sock.on('message', (m) => {
          if (m.subarray(hdr.length).equals(payload)) {
            clearTimeout(t);
            sock.removeAllListeners('message');
            r(true);
          }
        });
        sock.send(Buffer.concat([hdr, payload]), a.relayPort, '127.0.0.1');
      });
      if (ok) c.udpEchoed++;
    }
  } catch {
    /* counted as not echoed */
  } finally {
    ctl?.destroy();
    sock.close();
  }
}

/** One bad probe at the server, chosen by `i`. */
async function probeOnce(serverPort: number, i: number): Promise<void> {
  try {
    switch (i % 3) {
      case 0: {
        const u = await upgrade(serverPort);
        u.s.write(brookHello('wrong-password', ipv4Address('127.0.0.1', 9)));
        await sleep(50);
        hangUp(u.s, i % 2 === 0);
        return;
      }
      case 1: {
        const u = await upgrade(serverPort);
        u.s.write(randomBytes(1 + (i % 100)));
        await sleep(50);
        hangUp(u.s, i % 2 === 0);
        return;
      }
      default: {
        const variants = [{ path: '/other' }, { method: 'OPTIONS' }, { version: '12' }];
        await refusedUpgrade(serverPort, upgradeRequest(serverPort, variants[i % variants.length]), {
          answerTimeoutMs: 2000,
          trailing: 'trailing bytes\r\n',
          trailingDelayMs: 100,
          hangUpDelayMs: 20,
          rst: i % 2 === 0,
        });
      }
    }
  } catch {
    /* a refused probe is fine */
  }
}

function slowlorisLoop(serverPort: number, running: () => boolean, c: Counters): Set<net.Socket> {
  const open = new Set<net.Socket>();
  const one = () => {
    if (!running()) return;
    slowlorisConnection(serverPort, SLOW_INTERVAL_MS, {
      opened: (s) => open.add(s),
      closed: (s) => {
        open.delete(s);
        c.slowlorisClosed++;
        setTimeout(one, SLOW_RECONNECT_MS);
      },
    });
  };
  for (let i = 0; i < SLOWLORIS; i++) one();
  return open;
}

/** All the load at once until `running()` says stop: the loops to wait for, and the slowloris connections still open. */
export function startLoad(
  pair: Pair,
  ports: { echo: number; bulk: number; udpEcho: number },
  running: () => boolean,
  c: Counters,
): { loops: Array<Promise<void>>; slow: Set<net.Socket> } {
  const loops: Array<Promise<void>> = [];
  for (let w = 0; w < CHURN_WORKERS; w++) {
    loops.push(
      (async () => {
        while (running()) {
          if (await tunnelRoundTrip(pair.socksPort, ports.echo)) c.tunnelsOk++;
          else c.tunnelsFailed++;
          await sleep(CHURN_PAUSE_MS);
        }
      })(),
    );
  }
  loops.push(
    (async () => {
      for (let i = 0; running(); i++) {
        if (await bulkOnce(pair.socksPort, ports.bulk, i % 2 === 0)) {
          c.bulkOk++;
          c.bulkMiB += BULK_MIB;
        } else c.bulkFailed++;
        await sleep(BULK_PAUSE_MS);
      }
    })(),
  );
  loops.push(
    (async () => {
      while (running()) await udpOnce(pair.socksPort, ports.udpEcho, c);
    })(),
  );
  loops.push(
    (async () => {
      for (let i = 0; running(); i++) {
        void probeOnce(pair.serverPort, i);
        c.probes++;
        await sleep(PROBE_EVERY_MS);
      }
    })(),
  );
  return { loops, slow: slowlorisLoop(pair.serverPort, running, c) };
}
