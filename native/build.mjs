#!/usr/bin/env node
/**
 * Build the optional native addon (native/build/Release/brook_native.node): AES-256-GCM for the
 * data path and the splice(2) relay; without it brook-ts uses node:crypto and relays in JS.
 *
 *   node native/build.mjs                    never fails: on any problem prints one line and exits 0
 *                                            (brook-ts then uses node:crypto)
 *   node native/build.mjs --prefer-prebuilt  the package's install script: when a prebuilt addon in
 *                                            prebuilds/ (shipped in the npm tarball, see native/prebuild.mjs)
 *                                            loads in this node, do nothing; else build as above
 *   node native/build.mjs --strict           always build; exits 1 when the addon cannot be built or loaded (CI)
 *
 * Environment: BROOK_TS_SKIP_NATIVE=1 skips the build. npm_config_nodedir / --nodedir=DIR
 * choose the Node headers; by default the headers installed next to the running node
 * (<prefix>/include/node, which carry openssl/*.h) are used, so no download is needed.
 * node-gyp is the copy bundled with npm (no npm dependency).
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { ADDON_FILE, NATIVE_DIR, compile, findPrebuilt, probe } from './gyp.mjs';

const args = process.argv.slice(2);
const strict = args.includes('--strict');
const preferPrebuilt = args.includes('--prefer-prebuilt') && !strict;
const ADDON = join(NATIVE_DIR, 'build', 'Release', ADDON_FILE);

function done(ok, msg) {
  if (ok) {
    console.log(`brook-ts: native AES-256-GCM addon built: ${ADDON}`);
    process.exit(0);
  }
  console.log(`brook-ts: native AES-256-GCM addon not built (${msg}); node:crypto will be used`);
  process.exit(strict ? 1 : 0);
}

if (preferPrebuilt) {
  const prebuilt = findPrebuilt();
  if (prebuilt) {
    const p = probe(prebuilt);
    const bad = p.load ?? p.aead;
    if (bad === null) {
      console.log(`brook-ts: using the prebuilt AES-256-GCM addon ${prebuilt} (no compiler needed)`);
      process.exit(0);
    }
    console.log(`brook-ts: the prebuilt addon ${prebuilt} does not load in this node (${bad}); building from source`);
  }
}

if (process.env.BROOK_TS_SKIP_NATIVE === '1') done(false, 'BROOK_TS_SKIP_NATIVE=1');

const r = compile(NATIVE_DIR, args);
if (!r.ok) {
  if (strict) process.stderr.write(r.output);
  done(false, r.why);
}
const p = probe(ADDON);
if (p.load !== null) {
  rmSync(ADDON, { force: true });
  done(false, `built but does not load in this node: ${p.load}`);
}
if (p.aead !== null) {
  // kept: the splice relay in the same file does not depend on the AES half
  console.log(`brook-ts: native addon built: ${ADDON}, but its AES-256-GCM self-test failed (${p.aead}); node:crypto will be used`);
  process.exit(strict ? 1 : 0);
}
done(true);
