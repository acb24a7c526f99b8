/**
 * A row of `make attack` on the client side: a burst of local connections at the wsclient's
 * descriptor limit (the application side is trusted, but a browser opening hundreds of
 * connections at once is ordinary).
 */
import type net from 'node:net';
import {
  echoServer, freePort, httpConnectSocket, logEntries, numFlag, PASSWORD, readUntil, sleep, socksConnect, startBrook, stopChild, stopPair,
  tunnelRoundTrip, waitPort, WS_PATH,
} from '../hostile.js';
import { pair, quick, type Row, summarize } from './shared.js';

const CLIENT_NOFILE = numFlag('clientNofile', 256);
const BURST = numFlag('burst', quick ? 300 : 400);
const BURST_TIMEOUT_MS = 10_000;
/** After a burst the descriptors are given back before the next part. */
const SETTLE_MS = 3000;

type Way = 'socks5' | 'http';

/** One tunnel through the wsclient (SOCKS5 or HTTP CONNECT), held open: its socket once a byte went through it and came back, else null. */
async function heldTunnel(port: number, way: Way, echoPort: number): Promise<net.Socket | null> {
  let s: net.Socket | undefined;
  try {
    if (way === 'socks5') s = await socksConnect(port, echoPort, BURST_TIMEOUT_MS);
    else {
      const r = await httpConnectSocket(port, echoPort, BURST_TIMEOUT_MS);
      s = r.s;
      if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
    }
    s.write('x');
    const r = await readUntil(s, (b) => b.length >= 1, BURST_TIMEOUT_MS);
    if (r.data.length >= 1) return s;
  } catch {
    /* counted as not working */
  }
  s?.destroy();
  return null;
}

/** Working tunnels held at once: BURST opened together, or one after another until one fails. */
async function hold(port: number, way: Way, echoPort: number, how: 'burst' | 'one by one'): Promise<net.Socket[]> {
  if (how === 'burst') {
    const all = await Promise.all(Array.from({ length: BURST }, () => heldTunnel(port, way, echoPort)));
    return all.filter((s): s is net.Socket => s !== null);
  }
  const held: net.Socket[] = [];
  for (let i = 0; i < BURST; i++) {
    const s = await heldTunnel(port, way, echoPort);
    if (!s) break;
    held.push(s);
  }
  return held;
}

/** BURST SOCKS5 CONNECTs at once through a wsclient at ulimit -n CLIENT_NOFILE, then as many HTTP CONNECTs, then one by one. */
export async function clientburst(): Promise<Row> {
  const echo = await echoServer();
  const p = await pair({ noClient: true });
  const socksPort = await freePort();
  const httpPort = await freePort();
  const client = startBrook('wsclient', [
    'wsclient', '--wsserver', `ws://127.0.0.1:${p.serverPort}${WS_PATH}`, '--password', PASSWORD, '--socks5', `127.0.0.1:${socksPort}`, '--http', `127.0.0.1:${httpPort}`,
  ], { nofile: CLIENT_NOFILE });
  await waitPort(socksPort, client);
  await waitPort(httpPort, client);
  await sleep(1000);
  const from = client.lines.length;
  const results: string[] = [];
  const parts = [['socks5', 'burst'], ['http', 'burst'], ['socks5', 'one by one']] as const;
  for (const [way, how] of parts) {
    const held = await hold(way === 'socks5' ? socksPort : httpPort, way, echo.port, how);
    // every tunnel that started still works
    const alive = (await Promise.all(held.map(async (s) => {
      s.write('y');
      return (await readUntil(s, (b) => b.length >= 1, BURST_TIMEOUT_MS)).data.length >= 1;
    }))).filter(Boolean).length;
    for (const s of held) s.destroy();
    results.push(`${way} ${how}: ${held.length} working tunnels (${alive} still working at the end)`);
    await sleep(SETTLE_MS);
  }
  const after = await tunnelRoundTrip(socksPort, echo.port);
  const logged = summarize(logEntries(client, from), () => true);
  const alive = !client.exited;
  await stopChild(client);
  await stopPair(p);
  echo.close();
  return {
    tried: `${BURST} SOCKS5 CONNECTs at once through a wsclient at ulimit -n ${CLIENT_NOFILE}, each held once a byte came back; ${BURST} HTTP CONNECTs (--http) at once; SOCKS5 one after another until one fails`,
    measured: `${results.join('; ')}; afterwards ${alive ? 'alive' : 'DEAD'}, new tunnel ${after ? 'ok' : 'FAILED'}; wsclient logged: ${logged}`,
    upstream: '- (brook-ts before: 4 working tunnels at once, 116 one by one)',
  };
}
