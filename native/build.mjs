#!/usr/bin/env node
/**
 * Build the optional native AES-256-GCM addon (native/build/Release/brook_aead.node).
 *
 *   node native/build.mjs            never fails: on any problem prints one line and exits 0
 *                                    (brook-ts then uses node:crypto)
 *   node native/build.mjs --strict   exits 1 when the addon cannot be built or loaded (CI)
 *
 * Environment: BROOK_TS_SKIP_NATIVE=1 skips the build. npm_config_nodedir / --nodedir=DIR
 * choose the Node headers; by default the headers installed next to the running node
 * (<prefix>/include/node, which carry openssl/*.h) are used, so no download is needed.
 * node-gyp is the copy bundled with npm (no npm dependency).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const strict = args.includes('--strict');
const ADDON = join(here, 'build', 'Release', 'brook_aead.node');
const BUILD_TIMEOUT_MS = 5 * 60 * 1000;

function done(ok, msg) {
  if (ok) {
    console.log(`brook-ts: native AES-256-GCM addon built: ${ADDON}`);
    process.exit(0);
  }
  console.log(`brook-ts: native AES-256-GCM addon not built (${msg}); node:crypto will be used`);
  process.exit(strict ? 1 : 0);
}

function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_execpath) {
    candidates.push(resolve(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  }
  const prefix = resolve(dirname(process.execPath), '..');
  candidates.push(join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push(join(prefix, 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')); // Windows layout
  try {
    candidates.push(createRequire(import.meta.url).resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    /* not installed locally */
  }
  return candidates.find((p) => existsSync(p)) ?? null;
}

function findNodeDir() {
  const flag = args.find((a) => a.startsWith('--nodedir='));
  if (flag) return flag.slice('--nodedir='.length);
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = resolve(dirname(process.execPath), '..');
  const inc = join(prefix, 'include', 'node');
  if (existsSync(join(inc, 'node_api.h')) && existsSync(join(inc, 'openssl', 'evp.h'))) return prefix;
  return null; // node-gyp will try to download headers
}

if (process.env.BROOK_TS_SKIP_NATIVE === '1') done(false, 'BROOK_TS_SKIP_NATIVE=1');

const gyp = findNodeGyp();
if (!gyp) done(false, 'node-gyp not found (it ships with npm)');

const nodedir = findNodeDir();
const gypArgs = [gyp, 'rebuild', `--directory=${here}`, ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
const r = spawnSync(process.execPath, gypArgs, { encoding: 'utf8', timeout: BUILD_TIMEOUT_MS });
if (r.error || r.status !== 0) {
  const out = `${r.stdout ?? ''}${r.stderr ?? ''}`
    .split('\n')
    .filter((l) => /error|not found|No such file/i.test(l) && !/^gyp info/.test(l))
    .slice(0, 3)
    .join(' | ');
  if (strict) process.stderr.write(`${r.stdout ?? ''}${r.stderr ?? ''}`);
  done(false, r.error ? String(r.error.message) : `node-gyp exited ${r.status}${out ? `: ${out}` : ''}`);
}
if (!existsSync(ADDON)) done(false, `node-gyp succeeded but ${ADDON} is missing`);

// The addon resolves OpenSSL symbols from the node binary at load time: check that now.
const probe = spawnSync(
  process.execPath,
  ['-e', `const a = require(${JSON.stringify(ADDON)}); a.create(new Uint8Array(32));`],
  { encoding: 'utf8', timeout: 30_000 },
);
if (probe.status !== 0) {
  const why = (probe.stderr || '').split('\n').find((l) => l.trim().length > 0) ?? `exit ${probe.status}`;
  rmSync(ADDON, { force: true });
  done(false, `built but does not load in this node: ${why}`);
}
done(true);
