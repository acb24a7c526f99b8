#!/usr/bin/env node
/**
 * The prebuilt addon shipped in the npm tarball (package.json prepack / postpack).
 *
 *   node native/prebuild.mjs          compile native/src in a scratch copy (native/build is left alone, so
 *                                     processes using it are not disturbed), check it loads and seals like
 *                                     node:crypto, and put it at prebuilds/<platform>-<arch>/node.napi[.<libc>].node,
 *                                     the layout and tags node-gyp-build resolves at run time.
 *                                     Exits 1 on any failure: a tarball without its prebuilt must not be made.
 *   node native/prebuild.mjs --clean  remove prebuilds/ (after packing: binaries never stay in the tree)
 *
 * One N-API build (NAPI_VERSION in binding.gyp) serves every Node version the package supports.
 * The libc tag (linux only: glibc or musl, as node-gyp-build detects it) keeps a glibc build off musl.
 */
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NATIVE_DIR, ROOT, compile, probe } from './gyp.mjs';

const PREBUILDS = join(ROOT, 'prebuilds');
const args = process.argv.slice(2);

if (args.includes('--clean')) {
  rmSync(PREBUILDS, { recursive: true, force: true });
  process.exit(0);
}

const tags = ['node', 'napi'];
if (process.platform === 'linux') tags.push(process.env.LIBC || (existsSync('/etc/alpine-release') ? 'musl' : 'glibc'));
const dest = join(PREBUILDS, `${process.platform}-${process.arch}`, `${tags.join('.')}.node`);

/** Returns null on success, else why it failed. */
function prebuild(scratch) {
  copyFileSync(join(NATIVE_DIR, 'binding.gyp'), join(scratch, 'binding.gyp'));
  cpSync(join(NATIVE_DIR, 'src'), join(scratch, 'src'), { recursive: true });
  const r = compile(scratch, args);
  if (!r.ok) {
    process.stderr.write(r.output);
    return r.why;
  }
  const p = probe(r.addon);
  if (p.load !== null) return `built but does not load in this node: ${p.load}`;
  if (p.aead !== null) return `built, but its AES-256-GCM self-test failed: ${p.aead}`;
  rmSync(PREBUILDS, { recursive: true, force: true });
  mkdirSync(join(dest, '..'), { recursive: true });
  copyFileSync(r.addon, dest);
  return null;
}

const scratch = mkdtempSync(join(tmpdir(), 'brook-ts-prebuild-'));
let why;
try {
  why = prebuild(scratch);
} catch (e) {
  why = e instanceof Error ? e.message : String(e);
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
if (why !== null) {
  console.error(`brook-ts: prebuild failed: ${why}`);
  process.exit(1);
}
console.log(`brook-ts: prebuilt AES-256-GCM addon: ${dest.slice(ROOT.length + 1)}`);
