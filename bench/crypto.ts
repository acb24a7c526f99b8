/**
 * AES-256-GCM cost per Brook TCP fragment (seal(u16 len) + seal(2014-byte payload) = 2048 bytes
 * on the wire), node:crypto vs the native addon (single calls and batch), median of 5 runs.
 *
 *   npx tsx bench/crypto.ts            (build the addon first: node native/build.mjs)
 *   npx tsx bench/crypto.ts --frags=N  fragments per run (default 20000)
 */
import { randomBytes } from 'node:crypto';
import { loadNativeBackend } from '../src/crypto/native.js';
import { incrementNonce, nodeCryptoBackend, type AeadEngine } from '../src/protocol/cipher.js';
import { KEY_SIZE, LENGTH_SIZE, MAX_TCP_FRAGMENT, MAX_TCP_PAYLOAD, NONCE_SIZE, SEALED_LENGTH_SIZE, TAG_SIZE } from '../src/protocol/sizes.js';

const RUNS = 5;
const DEFAULT_FRAGMENTS = 20_000;
/** Fragments handed to one batch call (one 64 KB-ish socket read/write). */
const BATCH_FRAGMENTS = 32;

const fragArg = process.argv.find((a) => a.startsWith('--frags='));
const FRAGMENTS = fragArg ? Math.max(BATCH_FRAGMENTS, Number(fragArg.slice('--frags='.length))) : DEFAULT_FRAGMENTS;

const key = randomBytes(KEY_SIZE);
const payload = randomBytes(MAX_TCP_PAYLOAD);
const batchData = randomBytes(MAX_TCP_PAYLOAD * BATCH_FRAGMENTS);
const out = Buffer.alloc(MAX_TCP_FRAGMENT * BATCH_FRAGMENTS);
const lenBuf = Buffer.from([MAX_TCP_PAYLOAD >> 8, MAX_TCP_PAYLOAD & 0xff]);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Time `run(fragments)`; returns µs per fragment (median of RUNS, after one warm-up). */
function measure(run: (fragments: number) => void): number {
  run(Math.min(FRAGMENTS, 2000));
  const per: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = process.hrtime.bigint();
    run(FRAGMENTS);
    per.push(Number(process.hrtime.bigint() - t0) / 1000 / FRAGMENTS);
  }
  return median(per);
}

function singleSeal(engine: AeadEngine): (n: number) => void {
  const nonce = new Uint8Array(NONCE_SIZE);
  return (n) => {
    for (let i = 0; i < n; i++) {
      engine.seal(nonce, lenBuf, out, 0);
      incrementNonce(nonce);
      engine.seal(nonce, payload, out, SEALED_LENGTH_SIZE);
      incrementNonce(nonce);
    }
  };
}

function singleOpen(engine: AeadEngine): (n: number) => void {
  const nonce = new Uint8Array(NONCE_SIZE);
  // one pre-sealed fragment per nonce pair would need n fragments; instead seal a ring of 64 and reopen them
  const RING = 64;
  const wire: Buffer[] = [];
  const sn = new Uint8Array(NONCE_SIZE);
  for (let i = 0; i < RING; i++) {
    const f = Buffer.alloc(MAX_TCP_FRAGMENT);
    engine.seal(sn, lenBuf, f, 0);
    incrementNonce(sn);
    engine.seal(sn, payload, f, SEALED_LENGTH_SIZE);
    incrementNonce(sn);
    wire.push(f);
  }
  const plain = Buffer.alloc(MAX_TCP_PAYLOAD);
  const len = Buffer.alloc(LENGTH_SIZE);
  return (n) => {
    for (let i = 0; i < n; i++) {
      if (i % RING === 0) nonce.fill(0);
      const f = wire[i % RING]!;
      engine.open(nonce, f.subarray(0, SEALED_LENGTH_SIZE), len, 0);
      incrementNonce(nonce);
      engine.open(nonce, f.subarray(SEALED_LENGTH_SIZE, SEALED_LENGTH_SIZE + MAX_TCP_PAYLOAD + TAG_SIZE), plain, 0);
      incrementNonce(nonce);
    }
  };
}

function batchSeal(engine: AeadEngine): (n: number) => void {
  const nonce = new Uint8Array(NONCE_SIZE);
  return (n) => {
    for (let i = 0; i < n; i += BATCH_FRAGMENTS) engine.sealFragments!(nonce, batchData, MAX_TCP_PAYLOAD, out, 0);
  };
}

function batchOpen(engine: AeadEngine): (n: number) => void {
  const sn = new Uint8Array(NONCE_SIZE);
  const wire = Buffer.alloc(MAX_TCP_FRAGMENT * BATCH_FRAGMENTS);
  engine.sealFragments!(sn, batchData, MAX_TCP_PAYLOAD, wire, 0);
  const plain = Buffer.alloc(batchData.length);
  const nonce = new Uint8Array(NONCE_SIZE);
  return (n) => {
    for (let i = 0; i < n; i += BATCH_FRAGMENTS) {
      nonce.fill(0);
      engine.openFragments!(nonce, wire, MAX_TCP_PAYLOAD, plain, 0);
    }
  };
}

const rows: { name: string; seal: number; open: number }[] = [];
const nodeEngine = nodeCryptoBackend.createEngine(key);
rows.push({ name: 'node:crypto (single)', seal: measure(singleSeal(nodeEngine)), open: measure(singleOpen(nodeEngine)) });

const nat = loadNativeBackend();
if (nat.native) {
  const e = nat.backend.createEngine(key);
  rows.push({ name: 'native (single)', seal: measure(singleSeal(e)), open: measure(singleOpen(e)) });
  rows.push({ name: `native (batch x${BATCH_FRAGMENTS})`, seal: measure(batchSeal(e)), open: measure(batchOpen(e)) });
}

const mbps = (us: number): string => ((MAX_TCP_PAYLOAD / us) * 1e6 / 1e6).toFixed(0);
const base = rows[0]!.seal;
console.log(`AES-256-GCM per 2048-byte Brook fragment (len seal + ${MAX_TCP_PAYLOAD}-byte payload seal), median of ${RUNS} runs x ${FRAGMENTS} fragments`);
console.log(`node ${process.version}, OpenSSL ${process.versions.openssl}${nat.native ? `, addon built against ${nat.opensslHeaders}` : ''}`);
console.log('');
console.log('backend                 seal µs/frag   seal MB/s   open µs/frag   open MB/s   seal speedup');
for (const r of rows) {
  console.log(
    `${r.name.padEnd(22)}  ${r.seal.toFixed(2).padStart(12)}  ${mbps(r.seal).padStart(10)}  ${r.open.toFixed(2).padStart(13)}  ${mbps(r.open).padStart(10)}  ${(base / r.seal).toFixed(1).padStart(12)}x`,
  );
}
if (!nat.native) console.log(`\nnative backend unavailable: ${nat.reason}`);
