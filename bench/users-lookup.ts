/**
 * The users file's key lookup (protocol/users.md#key-lookup): what finding a Brook connection's user
 * costs with 1, 100, 1,000 and 10,000 users, native findKey (PCLMULQDQ GHASH and the portable one)
 * against the node:crypto fallback; median of RUNS rounds of plain timing loops, each call on a real
 * first 30 bytes from our client codec. Times are CPU time of the process (process.cpuUsage, user +
 * system), which a shared machine inflates less than wall time; wall time is printed beside it.
 *
 *   cold      the right key last in the order: every user tried (a first connect from a new address)
 *   warm      UserLookup after the user connected from that address: its key first
 *   garbage   random bytes through UserLookup without a budget: CPU time (process.cpuUsage) per connection
 *
 *   npx tsx bench/users-lookup.ts                (build the addon first: node native/build.mjs)
 *   npx tsx bench/users-lookup.ts --users=1,1000 --runs=7
 */
import { randomBytes } from 'node:crypto';
import { makeAddress } from '../src/protocol/address.js';
import { DEFAULT_HKDF_INFO } from '../src/protocol/cipher.js';
import { createClientCodec } from '../src/protocol/session.js';
import { NONCE_SIZE, SEALED_LENGTH_SIZE } from '../src/protocol/sizes.js';
import { type FindKeyFn, findKeyJs } from '../src/users/lookup-js.js';
import { UserLookup } from '../src/users/lookup.js';
import { forcePortableGhash, nativeFindKey } from '../src/users/native.js';
import { passwordHash } from '../src/users/userset.js';

const DEFAULT_USERS = [1, 100, 1000, 10_000];
const DEFAULT_RUNS = 5;
/** Users tried per timed round (calls = this / users, at least MIN_CALLS). */
const TRIALS_PER_ROUND = 200_000;
const JS_TRIALS_PER_ROUND = 20_000;
const MIN_CALLS = 3;
const WARM_CALLS = 20_000;
const GARBAGE_USERS = 10_000;
const GARBAGE_CALLS = 20;
/** Distinct hellos cycled through (each call opens real bytes, not one cached input). */
const HELLOS = 16;

function arg(name: string): string | undefined {
  return process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}
const USERS = arg('users')?.split(',').map(Number) ?? DEFAULT_USERS;
const RUNS = Number(arg('runs') ?? DEFAULT_RUNS);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

interface Set_ {
  passwords: string[];
  buf: Buffer;
  offsets: Uint32Array;
  order: Uint32Array;
}

function makeSet(n: number): Set_ {
  const passwords = Array.from({ length: n }, (_, i) => `user-${i}-${randomBytes(8).toString('hex')}`);
  const bufs = passwords.map((p) => Buffer.from(p));
  const offsets = new Uint32Array(n + 1);
  bufs.forEach((b, i) => (offsets[i + 1] = offsets[i]! + b.length));
  return { passwords, buf: Buffer.concat(bufs), offsets, order: Uint32Array.from({ length: n }, (_, i) => i) };
}

function hellos(password: string): { nonce: Buffer; sealed: Buffer }[] {
  return Array.from({ length: HELLOS }, () => {
    const h = createClientCodec({ password, network: 'tcp', destination: makeAddress('10.0.0.1', 443) }).hello();
    return { nonce: h.subarray(0, NONCE_SIZE), sealed: h.subarray(NONCE_SIZE, NONCE_SIZE + SEALED_LENGTH_SIZE) };
  });
}

interface Timing {
  /** CPU µs per call. */
  cpu: number;
  /** Wall µs per call. */
  wall: number;
}

/** Median CPU and wall µs per call of `round(calls)` over RUNS rounds, after a warm-up. */
function time(round: (calls: number) => void, calls: number): Timing {
  round(MIN_CALLS);
  const cpu: number[] = [];
  const wall: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    round(calls);
    wall.push(Number(process.hrtime.bigint() - t0) / 1000 / calls);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / calls);
  }
  return { cpu: median(cpu), wall: median(wall) };
}

/** Per cold lookup (right key last). */
function cold(find: FindKeyFn, s: Set_, trialsPerRound: number): Timing {
  const hs = hellos(s.passwords[s.passwords.length - 1]!);
  const calls = Math.max(MIN_CALLS, Math.floor(trialsPerRound / s.passwords.length));
  const round = (k: number): void => {
    for (let i = 0; i < k; i++) {
      const h = hs[i % HELLOS]!;
      if (find(h.nonce, h.sealed, s.buf, s.offsets, DEFAULT_HKDF_INFO, s.order) !== s.passwords.length - 1) throw new Error('lookup failed');
    }
  };
  return time(round, calls);
}

/** Per warm lookup through UserLookup (the user connected from this address before). */
function warm(n: number): Timing {
  const s = makeSet(n);
  const users = s.passwords.map((password) => ({ password, passwordHash: passwordHash(password) }));
  const l = new UserLookup(users, { budget: null });
  const target = Math.floor(n / 2);
  const hs = hellos(s.passwords[target]!);
  if (l.brook('192.0.2.1', hs[0]!.nonce, hs[0]!.sealed).index !== target) throw new Error('lookup failed');
  return time((k) => {
    for (let i = 0; i < k; i++) {
      const h = hs[i % HELLOS]!;
      if (l.brook('192.0.2.1', h.nonce, h.sealed).tries !== 1) throw new Error('not warm');
    }
  }, WARM_CALLS);
}

/** CPU ms (user + system) per garbage connection at GARBAGE_USERS users, no budget. */
function garbage(): number {
  const s = makeSet(GARBAGE_USERS);
  const l = new UserLookup(
    s.passwords.map((password) => ({ password, passwordHash: passwordHash(password) })),
    { budget: null },
  );
  const inputs = Array.from({ length: GARBAGE_CALLS }, () => [randomBytes(NONCE_SIZE), randomBytes(SEALED_LENGTH_SIZE)] as const);
  const per: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    const c0 = process.cpuUsage();
    for (const [n, sealed] of inputs) if (l.brook(`198.51.100.${r}`, n, sealed).index !== -1) throw new Error('garbage opened');
    const c = process.cpuUsage(c0);
    per.push((c.user + c.system) / 1000 / GARBAGE_CALLS);
  }
  return median(per);
}

const native = nativeFindKey();
const fmt = (us: number): string => (us >= 1000 ? `${(us / 1000).toFixed(2)} ms` : `${us.toFixed(1)} µs`);
/** "CPU per call (per user) / wall" */
const cell = (t: Timing, n: number): string => `${fmt(t.cpu)} (${((t.cpu * 1000) / n).toFixed(0)} ns) / ${fmt(t.wall)}`;
const rows: string[][] = [];
for (const n of USERS) {
  const s = makeSet(n);
  const row = [String(n)];
  if (native) {
    forcePortableGhash(false);
    row.push(cell(cold(native, s, TRIALS_PER_ROUND), n));
    forcePortableGhash(true);
    row.push(cell(cold(native, s, TRIALS_PER_ROUND), n));
    forcePortableGhash(false);
  } else row.push('-', '-');
  row.push(cell(cold(findKeyJs, s, JS_TRIALS_PER_ROUND), n));
  const w = warm(n);
  row.push(`${fmt(w.cpu)} / ${fmt(w.wall)}`);
  rows.push(row);
}
console.log('cold: CPU per lookup (per user tried) / wall per lookup; warm: CPU / wall\n');
const head = ['users', 'native cold', 'native cold, portable GHASH', 'node:crypto cold', `warm (${native ? 'native' : 'node:crypto'})`];
console.log(`| ${head.join(' | ')} |`);
console.log(`|${head.map(() => '---').join('|')}|`);
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
console.log(`\ngarbage connection at ${GARBAGE_USERS} users (${native ? 'native' : 'node:crypto'}, no budget): ${garbage().toFixed(2)} ms CPU each`);
console.log(`load average at the end: ${(await import('node:os')).loadavg().map((x) => x.toFixed(2)).join(' ')} (2 cores, shared)`);
