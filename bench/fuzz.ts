/**
 * `make fuzz` = `npx tsx bench/fuzz.ts`: hostile input, seeded (the seed is printed; --seed sets it).
 *
 * 1. Decoders, in process: at least 1,000,000 inputs spread over every decoder of src/protocol,
 *    src/socks5/codec.ts and src/httpproxy/codec.ts (bench/fuzz-targets.ts), each input random
 *    bytes, a mutated valid encoding or an untouched one, fed split at random points. Only a
 *    BrookError may come out (anything else is a crash); an untouched encoding must decode.
 * 2. Live: 100,000 connections of random or mutated bytes at a CLI wsserver (raw HTTP, and after
 *    a valid upgrade) and at a CLI wsclient's SOCKS5 and HTTP proxy ports, at bounded concurrency,
 *    each hung up with a FIN or an RST. Zero crashes (no child may exit). Both processes sampled
 *    (bench/fuzz-memory.ts: descriptors, RSS, and heap after full GCs) before, after each quarter,
 *    and settled (every connection gone) after the first quarter (the warm-up) and after the last:
 *    descriptors back to before, held memory flat between the two settled samples.
 *
 *   npx tsx bench/fuzz.ts [--seed N] [--inputs N] [--connections N] [--concurrency N] [--settle S]
 *                         [--only TEXT] [--index I] [--no-live] [--no-decoders] [--quick] [--out FILE]
 *                         [--node-args 'FLAGS'] [--snapshots DIR] [--hold S]
 *     --only/--index  rerun the decoders whose name contains TEXT (with --index: that one input, printed)
 *     --quick         50,000 inputs, 3,000 connections, no results file
 *     --out           where the summary goes (default bench/results/fuzz.txt; --quick: none)
 *     --settle        the longest wait, after the warm-up and after the last quarter, for every connection to be gone
 *   For a memory question (bench/fuzz-memory.ts):
 *     --node-args     node flags for both children, e.g. '--max-old-space-size=48' (a leak then ends in a crash)
 *     --snapshots     a heap snapshot of each child at each sample, into DIR (slow; RSS figures then include the snapshots' own)
 *     --hold          keep both children running S s after the last sample, pids printed (e.g. to attach gdb)
 */
import { writeFileSync } from 'node:fs';
import type net from 'node:net';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { BrookError } from '../src/errors.js';
import { nodeCryptoBackend } from '../src/protocol/cipher.js';
import { nativeLoadResult } from '../src/crypto/native.js';
import { parseProxyRequest } from '../src/httpproxy/codec.js';
import { parseGreeting, parseRequest } from '../src/socks5/codec.js';
import { type Decoded, Mismatch, targets } from './fuzz-targets.js';
import { MemoryProbe, resourceReport, type Sample, type Samples, settleDescriptors } from './fuzz-memory.js';
import {
  boolFlag, brookHello, connectTcp, echoServer, flag, hangUp, ipv4Address, mutate, now, numFlag, PASSWORD, type Pair,
  pool, RESULTS, Rng, sleep, split, startPair, stopPair, table, udpEcho, upgrade, upgradeRequest,
} from './hostile.js';

const quick = boolFlag('quick');
const SEED = numFlag('seed', Date.now() % 0x7fff_ffff) >>> 0;
const INPUTS = numFlag('inputs', quick ? 50_000 : 1_000_000);
const CONNECTIONS = numFlag('connections', quick ? 3_000 : 100_000);
const CONCURRENCY = numFlag('concurrency', 64);
/** At most this for every connection to be gone: the server's probe deadline (30 s) and some. */
const SETTLE_S = numFlag('settle', 40);
const HOLD_S = numFlag('hold', 0);
/** Share of inputs that are pure random bytes / untouched valid encodings (the rest are mutated). */
const RANDOM_SHARE = 0.25;
const VALID_SHARE = 0.1;
/** The longest a live connection lingers before it hangs up, and waits for the server after a FIN. */
const MAX_LINGER_MS = 40;
const AFTER_FIN_WAIT_MS = 200;
/** The live run goes in this many parts, sampled after each; the first is the warm-up. */
const LIVE_PARTS = 4;
const MAX_CRASH_REPORTS = 10;
/** Descriptors may differ by a few from the start (lazily opened files). */
const FD_TOLERANCE = 4;
const out = flag('out') ?? (quick ? undefined : join(RESULTS, 'fuzz.txt'));

const lines: string[] = [];
const say = (s: string) => {
  lines.push(s);
  process.stdout.write(s + '\n');
};

/** Per input a fresh generator, so (seed, decoder, index) reproduces one input and its splits. */
function inputRng(target: number, index: number): Rng {
  return new Rng((SEED ^ Math.imul(target + 1, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0);
}

interface DecoderStats {
  name: string;
  inputs: number;
  random: number;
  mutated: number;
  valid: number;
  brookErrors: number;
  crashes: number;
  validRefused: number;
  ms: number;
}

const crashReports: string[] = [];

function fuzzDecoders(): DecoderStats[] {
  const native = nativeLoadResult();
  const backends = [{ label: 'node', backend: nodeCryptoBackend }];
  if (native.native) backends.push({ label: 'native', backend: native.backend });
  else say(`(native AES-GCM addon not loaded: ${native.reason}; fuzzing node:crypto only)`);
  const all = targets(backends);
  const only = flag('only');
  const chosen = all.map((t, i) => ({ t, i })).filter(({ t }) => !only || t.name.includes(only));
  const perTarget = Math.ceil(INPUTS / chosen.length);
  const indexFlag = flag('index');
  const stats: DecoderStats[] = [];
  for (const { t, i: ti } of chosen) {
    const st: DecoderStats = { name: t.name, inputs: 0, random: 0, mutated: 0, valid: 0, brookErrors: 0, crashes: 0, validRefused: 0, ms: 0 };
    const t0 = now();
    const from = indexFlag === undefined ? 0 : Number(indexFlag);
    const to = indexFlag === undefined ? perTarget : from + 1;
    for (let i = from; i < to; i++) {
      const rng = inputRng(ti, i);
      const r = rng.u32() / 0x1_0000_0000;
      const kind = r < RANDOM_SHARE ? 'random' : r < RANDOM_SHARE + VALID_SHARE ? 'valid' : 'mutated';
      let input: Buffer;
      let check: ((o: Decoded) => void) | null = null;
      if (kind === 'random') input = rng.bytes(rng.length(4096));
      else {
        const v = t.valid(rng);
        input = kind === 'valid' ? v.input : mutate(rng, v.input);
        if (kind === 'valid') check = v.check;
      }
      if (indexFlag !== undefined) say(`${t.name} #${i} (${kind}): ${input.toString('hex')}`);
      st.inputs++;
      st[kind]++;
      try {
        const o = t.decode(input, rng, check !== null);
        check?.(o);
      } catch (e) {
        if (e instanceof BrookError && !check) st.brookErrors++;
        else if (e instanceof BrookError || e instanceof Mismatch) {
          st.validRefused++;
          if (crashReports.length < MAX_CRASH_REPORTS) crashReports.push(report('valid input refused', t.name, i, kind, input, e));
        } else {
          st.crashes++;
          if (crashReports.length < MAX_CRASH_REPORTS) crashReports.push(report('CRASH', t.name, i, kind, input, e));
        }
      }
    }
    st.ms = now() - t0;
    stats.push(st);
    process.stderr.write(`[fuzz] ${t.name}: ${st.inputs} inputs in ${(st.ms / 1000).toFixed(1)} s\n`);
  }
  return stats;
}

function report(what: string, target: string, index: number, kind: string, input: Buffer, e: unknown): string {
  const err = e as Error;
  return (
    `${what}: ${target} input #${index} (${kind}, ${input.length} bytes): ${err?.name}: ${err?.message}\n` +
    `  ${String(err?.stack ?? '').split('\n').slice(1, 4).join('\n  ')}\n` +
    `  reproduce: npx tsx bench/fuzz.ts --seed ${SEED} --only '${target}' --index ${index} --no-live`
  );
}

// ---------------------------------------------------------------- live

type LiveKind = 'server: raw HTTP' | 'server: after upgrade' | 'client: SOCKS5' | 'client: HTTP proxy';
const LIVE_KINDS: Array<[LiveKind, number]> = [
  ['server: raw HTTP', 0.3],
  ['server: after upgrade', 0.3],
  ['client: SOCKS5', 0.3],
  ['client: HTTP proxy', 0.1],
];

interface LiveStats {
  connections: number;
  connectErrors: number;
  upgradeRefused: number;
  serverClosedFirst: number;
}

async function fuzzLive(): Promise<{ kinds: Map<LiveKind, LiveStats>; samples: Samples; codes: Map<string, number>; exits: string[]; seconds: number }> {
  const echo = await echoServer();
  const uecho = await udpEcho();
  const codes = new Map<string, number>();
  const count = (line: string) => {
    const m = /"code":"([A-Z_]+)"/.exec(line);
    const k = m ? m[1]! : /"msg":"([^"]+)"/.exec(line)?.[1] ?? 'other';
    codes.set(k, (codes.get(k) ?? 0) + 1);
  };
  const probe = new MemoryProbe({ snapshots: flag('snapshots'), nodeArgs: flag('node-args')?.split(' ').filter(Boolean) });
  const pair: Pair = await startPair({
    http: true, keepLines: false, onServerLine: count, onClientLine: count, serverRun: probe.run('wsserver'), clientRun: probe.run('wsclient'),
  });
  const exits: string[] = [];
  let stopping = false;
  for (const c of [pair.server, pair.client!]) {
    c.cp.on('exit', (code, sig) => {
      if (!stopping) exits.push(`${c.name} exited (${code ?? sig}): ${c.stderr.slice(-1500)}`);
    });
  }
  const sample = async (): Promise<{ server: Sample; client: Sample }> => ({ server: await probe.sample(pair.server), client: await probe.sample(pair.client!) });
  await sleep(1000);
  const samples: Samples = { before: await sample() };
  const settle = () => settleDescriptors([pair.server, pair.client!], samples['before']!, FD_TOLERANCE, SETTLE_S);
  const kinds = new Map<LiveKind, LiveStats>(LIVE_KINDS.map(([k]) => [k, { connections: 0, connectErrors: 0, upgradeRefused: 0, serverClosedFirst: 0 }]));
  const rngLive = new Rng(SEED ^ 0x5bd1e995);
  const pickKind = (rng: Rng): LiveKind => {
    let r = rng.u32() / 0x1_0000_0000;
    for (const [k, w] of LIVE_KINDS) if ((r -= w) < 0) return k;
    return LIVE_KINDS[0]![0];
  };

  const one = async (i: number) => {
    const rng = new Rng((rngLive.u32() ^ i) >>> 0);
    const kind = pickKind(rng);
    const st = kinds.get(kind)!;
    st.connections++;
    let s: net.Socket;
    let bytes: Buffer;
    try {
      if (kind === 'server: after upgrade') {
        const u = await upgrade(pair.serverPort);
        s = u.s;
        if (u.status !== 101) st.upgradeRefused++;
        bytes = liveBytes(rng, kind, echo.port, uecho.port, pair.serverPort);
      } else {
        s = await connectTcp(kind.startsWith('server') ? pair.serverPort : kind === 'client: SOCKS5' ? pair.socksPort : pair.httpPort!);
        bytes = liveBytes(rng, kind, echo.port, uecho.port, pair.serverPort);
      }
    } catch {
      st.connectErrors++;
      return;
    }
    let closed = false;
    const gone = new Promise<void>((r) => {
      s.on('error', () => {});
      s.on('data', () => {});
      s.on('close', () => {
        closed = true;
        r();
      });
      s.on('end', () => r());
    });
    for (const piece of split(rng, bytes)) {
      if (closed) break;
      s.write(piece);
      if (rng.chance(0.3)) await sleep(rng.int(3));
    }
    await Promise.race([gone, sleep(rng.int(MAX_LINGER_MS))]);
    if (closed) st.serverClosedFirst++;
    const rst = rng.chance(0.5);
    hangUp(s, rst);
    if (!rst) await Promise.race([gone, sleep(AFTER_FIN_WAIT_MS)]);
    s.destroy();
  };

  const t0 = now();
  let done = 0;
  const progress = setInterval(() => process.stderr.write(`[fuzz] live: ${done} of ${CONNECTIONS} connections\n`), 10_000);
  // in quarters, sampled after each (the first quarter is the warm-up)
  for (let q = 1; q <= LIVE_PARTS; q++) {
    const from = Math.floor((CONNECTIONS * (q - 1)) / LIVE_PARTS);
    const to = Math.floor((CONNECTIONS * q) / LIVE_PARTS);
    await pool(to - from, CONCURRENCY, async (i) => {
      if (exits.length) return;
      await one(from + i);
      done++;
    });
    await sleep(1000);
    samples[q === 1 ? 'after warm-up' : `after ${q}/${LIVE_PARTS}`] = await sample();
    if (q === 1) samples[`warm-up settled (${await settle()})`] = await sample();
  }
  clearInterval(progress);
  const seconds = (now() - t0) / 1000;
  samples[`end settled (${await settle()})`] = await sample();
  if (HOLD_S > 0) {
    process.stderr.write(`[fuzz] live: holding the pair ${HOLD_S} s (wsserver pid ${pair.server.pid}, wsclient pid ${pair.client!.pid})\n`);
    await sleep(HOLD_S * 1000);
  }
  stopping = true;
  await stopPair(pair);
  probe.close();
  echo.close();
  uecho.sock.close();
  return { kinds, samples, codes, exits, seconds };
}

const UPGRADE_VARIANTS = (port: number): Buffer[] => [
  upgradeRequest(port),
  upgradeRequest(port, { path: '/other' }),
  upgradeRequest(port, { method: 'OPTIONS' }),
  upgradeRequest(port, { version: '12' }),
  upgradeRequest(port, { key: 'short' }),
  Buffer.from(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`),
  Buffer.from(`POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello`),
  Buffer.from(`GET /ws HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`),
];

/** The bytes a live connection sends: random, or a mutated (sometimes untouched) valid opening. */
function liveBytes(rng: Rng, kind: LiveKind, echoPort: number, udpPort: number, serverPort: number): Buffer {
  if (rng.chance(RANDOM_SHARE)) return rng.bytes(rng.length(4096));
  const dst = ipv4Address('127.0.0.1', echoPort);
  let valid: Buffer;
  switch (kind) {
    case 'server: raw HTTP':
      valid = Buffer.concat([rng.pick(UPGRADE_VARIANTS(serverPort)), rng.bytes(rng.int(32))]);
      break;
    case 'server: after upgrade':
      valid = rng.chance(0.8)
        ? brookHello(rng.chance(0.8) ? PASSWORD : 'wrong', dst, { data: rng.bytes(rng.length(3000)) })
        : brookHello(PASSWORD, ipv4Address('127.0.0.1', udpPort), { udp: true, data: rng.bytes(64) });
      break;
    case 'client: SOCKS5':
      valid = rng.chance(0.8)
        ? Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0]), dst, rng.bytes(rng.length(2000))])
        : Buffer.concat([Buffer.from([5, 1, 0, 5, 3, 0]), ipv4Address('0.0.0.0', 0)]);
      break;
    default:
      valid = rng.chance(0.7)
        ? Buffer.concat([Buffer.from(`CONNECT 127.0.0.1:${echoPort} HTTP/1.1\r\nHost: 127.0.0.1:${echoPort}\r\n\r\n`), rng.bytes(rng.length(500))])
        : Buffer.from(`GET http://127.0.0.1:${echoPort}/x HTTP/1.1\r\nHost: 127.0.0.1:${echoPort}\r\n\r\n`);
  }
  if (rng.chance(VALID_SHARE)) return valid;
  const m = mutate(rng, valid, 20_000);
  return kind.startsWith('client') && !loopbackOnly(kind, m) ? valid : m;
}

const LOOPBACK = new Set(['127.0.0.1', '::1']);
const CONNECT = 1;

/**
 * Whether the wsclient would send these bytes' destination anywhere but loopback (a mutated
 * address could name any host on the internet, and this machine has a route out). Decided by
 * the project's own parsers, which are what the wsclient runs.
 */
function loopbackOnly(kind: LiveKind, b: Buffer): boolean {
  try {
    if (kind === 'client: HTTP proxy') {
      const r = parseProxyRequest(b);
      return r === null || LOOPBACK.has(r.request.destination.host);
    }
    const g = parseGreeting(b);
    if (g === null) return true;
    const r = parseRequest(b.subarray(g.bytesRead));
    return r === null || r.value.command !== CONNECT || LOOPBACK.has(r.value.destination.host);
  } catch {
    return true; // refused before any dial
  }
}

// ---------------------------------------------------------------- main

const loadText = () => `load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`;

async function main(): Promise<void> {
  const t0 = now();
  say(`brook-ts fuzz, seed ${SEED} (rerun with --seed ${SEED}); ${new Date().toISOString()}; ${loadText()}`);
  let crashes = 0;
  let validRefused = 0;
  if (!boolFlag('no-decoders')) {
    const st = fuzzDecoders();
    crashes += st.reduce((a, s) => a + s.crashes, 0);
    validRefused += st.reduce((a, s) => a + s.validRefused, 0);
    const sum = (k: keyof DecoderStats) => st.reduce((a, s) => a + (s[k] as number), 0);
    say('\nDecoders (random / mutated valid / untouched valid inputs, each split at random points)\n');
    say(
      table(
        ['decoder', 'inputs', 'random', 'mutated', 'valid', 'BrookError', 'crashes', 'valid refused', 'seconds'],
        [
          ...st.map((s) => [s.name, s.inputs, s.random, s.mutated, s.valid, s.brookErrors, s.crashes, s.validRefused, (s.ms / 1000).toFixed(1)]),
          ['total', sum('inputs'), sum('random'), sum('mutated'), sum('valid'), sum('brookErrors'), sum('crashes'), sum('validRefused'), (sum('ms') / 1000).toFixed(1)],
        ],
      ),
    );
  }
  let liveOk = true;
  if (!boolFlag('no-live') && flag('index') === undefined) {
    const r = await fuzzLive();
    say(`\nLive: ${CONNECTIONS} connections at concurrency ${CONCURRENCY} in ${r.seconds.toFixed(0)} s (CLI wsserver + wsclient)\n`);
    say(
      table(
        ['target', 'connections', 'connect errors', 'upgrade refused', 'closed by the peer before we hung up'],
        [...r.kinds].map(([k, s]) => [k, s.connections, s.connectErrors, s.upgradeRefused, s.serverClosedFirst]),
      ),
    );
    say('');
    const res = resourceReport(r.samples, CONNECTIONS - Math.floor(CONNECTIONS / LIVE_PARTS), { fdTolerance: FD_TOLERANCE, judgeRss: !flag('snapshots') });
    for (const l of res.lines.slice(0, -res.verdicts)) say(l);
    say(`\nlog lines by code: ${[...r.codes].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ') || 'none'}`);
    for (const l of res.lines.slice(-res.verdicts)) say(l);
    liveOk = res.ok;
    for (const e of r.exits) say(`CRASH: ${e}`);
    crashes += r.exits.length;
  }
  for (const c of crashReports) say('\n' + c);
  const secs = (now() - t0) / 1000;
  say(`\n${loadText()} at the end (${cpus().length} CPUs; the figures are noisy when others load the machine)`);
  say(`duration ${secs.toFixed(0)} s; crashes ${crashes}; valid inputs refused ${validRefused}; verdict: ${crashes === 0 && validRefused === 0 && liveOk ? 'PASS' : 'FAIL'} (seed ${SEED})`);
  if (out) {
    writeFileSync(out, lines.join('\n') + '\n');
    process.stderr.write(`[fuzz] summary written to ${out}\n`);
  }
  process.exitCode = crashes === 0 && validRefused === 0 && liveOk ? 0 : 1;
}

main().then(
  () => process.exit(),
  (e: unknown) => {
    process.stderr.write(`fuzz: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(2);
  },
);
