/**
 * Shared by native/build.mjs (install, `make native`) and native/prebuild.mjs (npm pack):
 * find npm's node-gyp and Node's own headers, compile the addon (target brook_native) in a
 * directory, and check in a child process that a .node file loads in this node and that its
 * AES half seals like node:crypto (the splice half needs no such check).
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** native/ */
export const NATIVE_DIR = dirname(fileURLToPath(import.meta.url));
/** The package root (the folder holding package.json). */
export const ROOT = resolve(NATIVE_DIR, '..');
/** node-gyp's output name (target_name in binding.gyp; NATIVE_ADDON_FILE in src/native/addon.ts). */
export const ADDON_FILE = 'brook_native.node';
export const BUILD_TIMEOUT_MS = 5 * 60 * 1000;
const PROBE_TIMEOUT_MS = 30_000;
/** Lines of node-gyp's output quoted in a one-line failure. */
const QUOTED_ERROR_LINES = 3;

/** The node-gyp bundled with npm (no npm dependency), else a local one. */
export function findNodeGyp() {
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

/** --nodedir=DIR, npm_config_nodedir, else the headers installed next to the running node (they carry openssl/*.h). */
export function findNodeDir(args) {
  const flag = args.find((a) => a.startsWith('--nodedir='));
  if (flag) return flag.slice('--nodedir='.length);
  if (process.env.npm_config_nodedir) return process.env.npm_config_nodedir;
  const prefix = resolve(dirname(process.execPath), '..');
  const inc = join(prefix, 'include', 'node');
  if (existsSync(join(inc, 'node_api.h')) && existsSync(join(inc, 'openssl', 'evp.h'))) return prefix;
  return null; // node-gyp will try to download headers
}

/**
 * `node-gyp rebuild` in dir (which holds binding.gyp and src/).
 * Returns { ok: true, addon } or { ok: false, why, output }.
 */
export function compile(dir, args) {
  const gyp = findNodeGyp();
  if (!gyp) return { ok: false, why: 'node-gyp not found (it ships with npm)', output: '' };
  const nodedir = findNodeDir(args);
  const gypArgs = [gyp, 'rebuild', `--directory=${dir}`, ...(nodedir ? [`--nodedir=${nodedir}`] : [])];
  const r = spawnSync(process.execPath, gypArgs, { encoding: 'utf8', timeout: BUILD_TIMEOUT_MS });
  const output = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (r.error || r.status !== 0) {
    const quoted = output
      .split('\n')
      .filter((l) => /error|not found|No such file/i.test(l) && !/^gyp info/.test(l))
      .slice(0, QUOTED_ERROR_LINES)
      .join(' | ');
    return { ok: false, why: r.error ? String(r.error.message) : `node-gyp exited ${r.status}${quoted ? `: ${quoted}` : ''}`, output };
  }
  const addon = join(dir, 'build', 'Release', ADDON_FILE);
  if (!existsSync(addon)) return { ok: false, why: `node-gyp succeeded but ${addon} is missing`, output };
  return { ok: true, addon };
}

/**
 * Load the addon in a child node, then seal one message with it and with node:crypto.
 * The addon resolves OpenSSL symbols from the node binary at load time, so this is
 * the only real proof that a file fits this node. Returns { load, aead }: load is null
 * when the file loads (else why), aead null when its AES half seals like node:crypto
 * (else why; also set when the file does not load).
 */
export function probe(addon) {
  const code = `
    let a;
    try { a = require(${JSON.stringify(addon)}); } catch (e) { console.error(String(e.message).split('\\n')[0]); process.exit(2); }
    const c = require('node:crypto');
    const key = Buffer.alloc(32, 7), nonce = Buffer.alloc(12, 1), plain = Buffer.from('brook-ts probe');
    const ci = c.createCipheriv('aes-256-gcm', key, nonce);
    const ref = Buffer.concat([ci.update(plain), ci.final(), ci.getAuthTag()]);
    const out = new Uint8Array(ref.length);
    const n = a.seal(a.create(new Uint8Array(key)), new Uint8Array(nonce), new Uint8Array(plain), out, 0);
    if (n !== ref.length || !ref.equals(Buffer.from(out))) { console.error('self-test: seal differs from node:crypto'); process.exit(1); }`;
  const r = spawnSync(process.execPath, ['-e', code], { encoding: 'utf8', timeout: PROBE_TIMEOUT_MS });
  if (r.status === 0) return { load: null, aead: null };
  const why = (r.stderr || '').split('\n').find((l) => l.trim().length > 0 && !/^\s+at /.test(l)) ?? `exit ${r.status}`;
  // exit 1: loaded, the AES check failed (or threw); anything else (2, a signal, a timeout): it did not load
  return r.status === 1 ? { load: null, aead: why } : { load: why, aead: why };
}

/**
 * The prebuilt addon node-gyp-build would pick for this platform/arch/libc from
 * <root>/prebuilds (null when there is none or node-gyp-build is not installed).
 */
export function findPrebuilt(root = ROOT) {
  let ngb;
  try {
    ngb = createRequire(join(root, 'package.json'))('node-gyp-build');
  } catch {
    return null;
  }
  try {
    const p = ngb.path(root);
    return p.startsWith(join(root, 'prebuilds')) ? p : null;
  } catch {
    return null; // "No native build was found for ..."
  }
}
