/**
 * Rows of `make attack` on floods that aim at real clients rather than at the server: a flood of
 * pending connections (cheap partial requests) while a real client 100 ms away opens tunnels.
 */
import { join } from 'node:path';
import { type DelayRelay, startDelayRelay } from '../delay.js';
import { STARTED_AFTER_MS } from '../hostile/flood.js';
import {
  type Child, echoServer, freePort, logEntries, now, numFlag, PASSWORD, ROOT, sleep, startBrook, startProcess, stopChild, stopPair,
  tunnelRoundTrip, waitPort, WS_PATH,
} from '../hostile.js';
import { NOFILE, pair, quick, type Row, s1, summarize } from './shared.js';

const FLOOD_RATE = numFlag('floodRate', 1000);
const FLOOD_SECONDS = numFlag('floodSeconds', quick ? 8 : 20);
/** The many-source flood: this many /24s (one address each). */
const FLOOD_SPREAD = numFlag('floodSpread', 256);
/** The real clients' link: 50 ms each way, a 100 ms round trip. */
const REAL_ONE_WAY_MS = 50;
/**
 * Where the real clients' connections come from, each its own /24 (not the one-source flood's 127.0.0.1,
 * nor the spread flood's 127.1+.x.1): one that has tunnels before the floods (known), one whose first
 * tunnels are tried during the one-source flood, one whose first are tried during the many-source flood.
 */
const REAL_SOURCES = { known: '127.0.9.1', newInOne: '127.0.10.1', newInMany: '127.0.11.1' } as const;
type Who = keyof typeof REAL_SOURCES;
const REAL_TUNNEL_EVERY_MS = 500;
const REAL_TUNNEL_TIMEOUT_MS = 3000;
const CALM_TRIES = quick ? 4 : 10;
/** The wsclients' pools fill before anything is measured. */
const POOL_FILL_MS = 1500;
const FLOOD_SCRIPT = join(ROOT, 'bench', 'hostile', 'flood.ts');


interface Tries {
  ok: number;
  n: number;
}
const fmt = (t: Tries | undefined) => (t ? `${t.ok}/${t.n}` : '-');

/** One real tunnel through each of `socksPorts` every REAL_TUNNEL_EVERY_MS for `ms` (at least `min` rounds). */
async function tryTunnels(socksPorts: number[], echoPort: number, ms: number, min = 1): Promise<Tries[]> {
  const pending: Array<Array<Promise<boolean>>> = socksPorts.map(() => []);
  const t0 = now();
  while (now() - t0 < ms || pending[0]!.length < min) {
    socksPorts.forEach((port, i) => pending[i]!.push(tunnelRoundTrip(port, echoPort, REAL_TUNNEL_TIMEOUT_MS)));
    await sleep(REAL_TUNNEL_EVERY_MS);
  }
  return Promise.all(pending.map(async (ps) => {
    const r = await Promise.all(ps);
    return { ok: r.filter(Boolean).length, n: r.length };
  }));
}

/**
 * A flood in its own process (bench/hostile/flood.ts): `started` once it has been flooding for a second
 * (its start-up is not counted: the real clients' tries begin then), `done` with its report.
 */
function startFlood(port: number, spread: number): { started: Promise<void>; done: Promise<Record<string, number>> } {
  let onStarted!: () => void;
  const started = new Promise<void>((r) => (onStarted = r));
  const child = startProcess('flood', process.execPath, [
    '--import', 'tsx', FLOOD_SCRIPT, '--port', String(port), '--rate', String(FLOOD_RATE), '--seconds', String(FLOOD_SECONDS),
    ...(spread > 0 ? ['--spread', String(spread)] : []),
  ], { onLine: (l) => l.includes('"flooding"') && onStarted() });
  const done = new Promise<Record<string, number>>((resolve) => {
    child.cp.once('exit', () => {
      onStarted();
      try {
        resolve(JSON.parse(child.lines.at(-1) ?? '{}') as Record<string, number>);
      } catch {
        resolve({});
      }
    });
  });
  return { started, done };
}

/** A wsclient whose connections reach the server through a 100 ms link from `source`. */
async function delayedClient(serverPort: number, source: string): Promise<{ socksPort: number; client: Child; relay: DelayRelay }> {
  const relay = await startDelayRelay({ target: { host: '127.0.0.1', port: serverPort }, oneWayMs: REAL_ONE_WAY_MS, localAddress: source });
  const socksPort = await freePort();
  const client = startBrook(`wsclient ${source}`, ['wsclient', '--wsserver', `ws://127.0.0.1:${relay.port}${WS_PATH}`, '--password', PASSWORD, '--socks5', `127.0.0.1:${socksPort}`]);
  await waitPort(socksPort, client);
  return { socksPort, client, relay };
}

/**
 * 1,000 partial requests a second from one address (then from FLOOD_SPREAD /24s) against a wsserver at
 * its default --maxPending, while wsclients 100 ms away (other addresses) open a tunnel every 500 ms.
 */
export async function pendingflood(): Promise<Row> {
  const echo = await echoServer();
  const p = await pair({ noClient: true });
  const clients = {} as Record<Who, Awaited<ReturnType<typeof delayedClient>>>;
  for (const who of Object.keys(REAL_SOURCES) as Who[]) clients[who] = await delayedClient(p.serverPort, REAL_SOURCES[who]);
  await sleep(POOL_FILL_MS);
  const from = p.server.lines.length;
  const ports = (...who: Who[]) => who.map((w) => clients[w].socksPort);
  const calm = (...who: Who[]) => tryTunnels(ports(...who), echo.port, 0, CALM_TRIES);
  const during = async (spread: number, who: Who[]) => {
    const f = startFlood(p.serverPort, spread);
    await f.started;
    const t = await tryTunnels(ports(...who), echo.port, FLOOD_SECONDS * 1000 - STARTED_AFTER_MS - REAL_TUNNEL_TIMEOUT_MS);
    return { t, report: await f.done };
  };
  const [before] = await calm('known');
  const one = await during(0, ['known', 'newInOne']);
  const [between] = await calm('known');
  const many = await during(FLOOD_SPREAD, ['known', 'newInMany']);
  const after = await calm('known', 'newInOne', 'newInMany');
  const logged = summarize(logEntries(p.server, from), (e) => e["msg"] !== "listening");
  const alive = !p.server.exited;
  for (const c of Object.values(clients)) {
    await stopChild(c.client);
    await c.relay.close();
  }
  await stopPair(p);
  echo.close();
  const flooded = (r: Record<string, number>) =>
    `${r['opened'] ?? '?'} flood connections (${Math.round((r['opened'] ?? 0) / FLOOD_SECONDS)}/s), ${r['closedByServer'] ?? '?'} closed by the server`;
  return {
    tried: `${FLOOD_RATE} partial requests/s for ${s1(FLOOD_SECONDS * 1000)} from one address (127.0.0.1), then from ${FLOOD_SPREAD} /24s, wsserver at ulimit -n ${NOFILE} (default --maxPending); wsclients 100 ms away, each from its own /24, open a tunnel every ${REAL_TUNNEL_EVERY_MS} ms: one with tunnels before the floods (known), one new in each flood`,
    measured:
      `real tunnels ok: before ${fmt(before)}; one-source flood: known ${fmt(one.t[0])}, new ${fmt(one.t[1])} (${flooded(one.report)}); between ${fmt(between)}; ` +
      `${FLOOD_SPREAD}-source flood: known ${fmt(many.t[0])}, new ${fmt(many.t[1])} (${flooded(many.report)}); after ${after.map(fmt).join(', ')}; ` +
      `server ${alive ? 'alive' : 'DEAD'}, logged: ${logged}`,
    upstream: 'no cap (brook-ts before: 0/20 and 0/40 during a one-source flood)',
  };
}
