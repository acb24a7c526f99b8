/**
 * The npm package, for real: `npm pack` (prepack: tsc + native/prebuild.mjs) of a copy of
 * this tree, then installs of the tarball with a PATH that holds node, npm, npx and sh only
 * (no cc, gcc, g++, make), from the local npm cache (--prefer-offline):
 *
 *   - `npm install -g --prefix P` (npm's defaults: its install script may be blocked, the
 *     loader finds the prebuilt at run time): P/bin/brook-ts wsserver says "crypto":"native";
 *     with prebuilds/ (and any build) removed it says node:crypto and why;
 *   - a project install with the install script allowed: the script uses the prebuilt,
 *     compiles nothing, and is quick;
 *   - no prebuilt fits (LIBC=musl makes node-gyp-build skip the glibc one): the install
 *     script's build fails without a compiler, the install still succeeds, and the start
 *     line says node:crypto and why.
 *
 * The copy keeps the working tree untouched (no prebuilds/ or rebuilt native/build/ appears under
 * processes running from it). Bounded: every child has a timeout; all stopped at the end.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNativeBackend } from '../src/crypto/native.js';
import { NATIVE_ADDON_RELATIVE_PATH } from '../src/native/addon.js';
import { nodeCryptoBackend } from '../src/protocol/cipher.js';
import { baseEnv, INSTALL_TIMEOUT_MS, PACK_TIMEOUT_MS, packCopy, REPO, run, which } from './helpers/pack.js';

const TOOLS = ['node', 'npm', 'npx', 'sh'];
const COMPILERS = ['cc', 'gcc', 'g++', 'c++', 'clang', 'make'];
const START_TIMEOUT_MS = 10_000;
/** An install that only copies files and finds the prebuilt: far below this even on a loaded machine. */
const QUICK_INSTALL_MS = 30_000;
const PASSWORD = 'package-test';

const children = new Set<ChildProcess>();

/** Start an installed brook-ts bin, return its "listening" line, and stop it (SIGTERM, then SIGKILL). */
async function startLine(bin: string, env: NodeJS.ProcessEnv): Promise<Record<string, unknown>> {
  const child = spawn(bin, ['wsserver', '--listen', '127.0.0.1:0', '--password', PASSWORD], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    return await new Promise<Record<string, unknown>>((res, rej) => {
      let out = '';
      let err = '';
      const t = setTimeout(() => rej(new Error(`${bin}: no listening line within ${START_TIMEOUT_MS} ms\n${out}\n${err}`)), START_TIMEOUT_MS);
      child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const line = out.split('\n').find((l) => l.includes('"msg":"listening"'));
        if (line) {
          clearTimeout(t);
          res(JSON.parse(line) as Record<string, unknown>);
        }
      });
      child.once('exit', (code) => {
        clearTimeout(t);
        rej(new Error(`${bin} exited ${code} before listening\n${out}\n${err}`));
      });
    });
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const k = setTimeout(() => child.kill('SIGKILL'), 3_000);
    await exited;
    clearTimeout(k);
    children.delete(child);
  }
}

describe('npm package: prebuilt addon, install without a compiler', () => {
  const work = mkdtempSync(join(tmpdir(), 'brook-ts-package-'));
  const bin = join(work, 'bin');
  let tarball = '';
  let env: NodeJS.ProcessEnv = {};
  const timings: Record<string, number> = {};

  beforeAll(async () => {
    const t0 = Date.now();
    // a copy of the tree to pack (test/helpers/pack.ts)
    const pack = await packCopy(work);
    timings['pack'] = pack.ms;
    tarball = pack.tarball;

    // a PATH with node, npm, npx and sh only
    mkdirSync(bin);
    for (const t of TOOLS) {
      const p = which(t, process.env['PATH'] ?? '');
      if (!p) throw new Error(`${t} not found on PATH`);
      symlinkSync(p, join(bin, t));
    }
    env = { ...baseEnv(), PATH: bin };
    timings['setup'] = Date.now() - t0;
  }, PACK_TIMEOUT_MS + 30_000);

  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
    rmSync(work, { recursive: true, force: true });
    console.log(`package.test timings (ms): ${JSON.stringify(timings)}`);
  });

  it('the tarball carries the prebuilt addon for this platform, the sources to build it, and no build output', async () => {
    const list = await run('tar', ['-tzf', tarball], { cwd: work, env: baseEnv(), timeoutMs: 10_000 });
    expect(list.code).toBe(0);
    const files = list.stdout.split('\n').filter(Boolean);
    const tag = process.platform === 'linux' ? '.glibc' : '';
    expect(files).toContain(`package/prebuilds/${process.platform}-${process.arch}/node.napi${tag}.node`);
    for (const f of ['native/binding.gyp', 'native/src/brook_native.c', 'native/src/brook_aead.c', 'native/build.mjs', 'native/gyp.mjs', 'dist/cmd/brook-ts.js']) expect(files).toContain(`package/${f}`);
    expect(files.filter((f) => f.includes('native/build/'))).toEqual([]);
    // prepack bundles the CLI (package.json "bundle"): its lazily loaded parts (ACME, Prometheus) are chunks beside it
    const chunks = files.filter((f) => f.startsWith('package/dist/cmd/chunks/') && f.endsWith('.js'));
    expect(chunks.some((f) => /\/acme-[^/]+\.js$/.test(f)) && chunks.some((f) => /\/prometheus-[^/]+\.js$/.test(f)), chunks.join(' ')).toBe(true);
    // postpack removed the prebuilt from the packed tree
    expect(existsSync(join(work, 'src', 'prebuilds'))).toBe(false);
  });

  it('the test PATH reaches no C compiler or make', async () => {
    for (const c of COMPILERS) expect(which(c, env['PATH']!), c).toBeNull();
    const probe = await run('sh', ['-c', `command -v ${COMPILERS.join(' ')}`], { cwd: work, env, timeoutMs: 10_000 });
    expect(probe.stdout.trim()).toBe('');
    expect(probe.code).not.toBe(0);
  });

  it('npm install -g --prefix: brook-ts on the prefix bin runs on the prebuilt ("crypto":"native"); without it, node:crypto and why', async () => {
    const prefix = join(work, 'global');
    const r = await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', tarball], { cwd: work, env, timeoutMs: INSTALL_TIMEOUT_MS });
    timings['install -g'] = r.ms;
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    const brook = join(prefix, 'bin', 'brook-ts');
    expect(existsSync(brook)).toBe(true);
    const pkg = join(prefix, 'lib', 'node_modules', 'brook-ts');
    expect(existsSync(join(pkg, 'native', 'build'))).toBe(false); // nothing was compiled

    const line = await startLine(brook, env);
    expect(line['crypto']).toBe('native');
    expect(line['cryptoReason']).toBeUndefined();

    rmSync(join(pkg, 'prebuilds'), { recursive: true, force: true });
    rmSync(join(pkg, 'native', 'build'), { recursive: true, force: true });
    const fallback = await startLine(brook, env);
    expect(fallback['crypto']).toBe('node:crypto');
    expect(String(fallback['cryptoReason'])).toMatch(/native addon not found/);
  });

  it('a project install runs the install script, which takes the prebuilt and compiles nothing', async () => {
    const proj = join(work, 'project');
    mkdirSync(proj);
    // npm 11 blocks dependencies' install scripts unless allowed here
    writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'p', private: true, allowScripts: { 'brook-ts': true } }));
    const r = await run('npm', ['install', '--prefer-offline', '--foreground-scripts', tarball], { cwd: proj, env, timeoutMs: INSTALL_TIMEOUT_MS });
    timings['install (script allowed)'] = r.ms;
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/brook-ts: using the prebuilt AES-256-GCM addon .*prebuilds/);
    expect(r.ms).toBeLessThan(QUICK_INSTALL_MS);
    expect(existsSync(join(proj, 'node_modules', 'brook-ts', 'native', 'build'))).toBe(false);
    const line = await startLine(join(proj, 'node_modules', '.bin', 'brook-ts'), env);
    expect(line['crypto']).toBe('native');
  });

  it('no fitting prebuilt and no compiler: the install still succeeds and the start line says node:crypto and why', async () => {
    const proj = join(work, 'musl');
    mkdirSync(proj);
    writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'p', private: true, allowScripts: { 'brook-ts': true } }));
    const muslEnv = { ...env, LIBC: 'musl' }; // node-gyp-build: this machine's libc is musl, the glibc prebuilt does not fit
    const r = await run('npm', ['install', '--prefer-offline', '--foreground-scripts', tarball], { cwd: proj, env: muslEnv, timeoutMs: INSTALL_TIMEOUT_MS });
    timings['install (no prebuilt fits)'] = r.ms;
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/brook-ts: native AES-256-GCM addon not built \(.*\); node:crypto will be used/);
    const line = await startLine(join(proj, 'node_modules', '.bin', 'brook-ts'), muslEnv);
    expect(line['crypto']).toBe('node:crypto');
    expect(String(line['cryptoReason'])).toMatch(/native addon not found/);
  });
});

describe('loader order: prebuilt, else source build, else node:crypto with the reasons', () => {
  const built = join(REPO, NATIVE_ADDON_RELATIVE_PATH);
  const top = mkdtempSync(join(tmpdir(), 'brook-ts-loader-'));
  const tag = process.platform === 'linux' ? '.glibc' : '';
  /**
   * A fresh package root per case (a loaded .node must never be overwritten: it is mapped),
   * with the prebuilt and the source build each a copy of the real addon, garbage, or absent.
   */
  let n = 0;
  function layout(pre: 'good' | 'bad' | null, src: 'good' | 'bad' | null): { root: string; prebuilt: string; source: string } {
    const root = join(top, String(n++));
    const prebuilt = join(root, 'prebuilds', `${process.platform}-${process.arch}`, `node.napi${tag}.node`);
    const source = join(root, NATIVE_ADDON_RELATIVE_PATH);
    mkdirSync(root);
    writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'brook-ts' }));
    for (const [to, what] of [[prebuilt, pre], [source, src]] as const) {
      if (what === null) continue;
      mkdirSync(join(to, '..'), { recursive: true });
      if (what === 'good') cpSync(built, to);
      else writeFileSync(to, 'not an ELF file');
    }
    return { root, prebuilt, source };
  }

  beforeAll(() => {
    if (!existsSync(built)) throw new Error(`${built} is missing: build it first (make native)`);
  });
  afterAll(() => rmSync(top, { recursive: true, force: true }));

  it('both present: the prebuilt wins', () => {
    const l = layout('good', 'bad');
    const r = loadNativeBackend({ root: l.root });
    expect([r.native, r.source, r.path]).toEqual([true, 'prebuilt', l.prebuilt]);
  });

  it('a prebuilt that does not load: the source build is used', () => {
    const l = layout('bad', 'good');
    const r = loadNativeBackend({ root: l.root });
    expect([r.native, r.source, r.path, r.reason]).toEqual([true, 'source', l.source, null]);
  });

  it('neither loads: node:crypto, with both reasons', () => {
    const l = layout('bad', 'bad');
    const r = loadNativeBackend({ root: l.root });
    expect(r.native).toBe(false);
    expect(r.backend).toBe(nodeCryptoBackend);
    expect(r.reason).toContain(`cannot load ${l.prebuilt}`);
    expect(r.reason).toContain(`cannot load ${l.source}`);
  });

  it('none there: node:crypto, saying so', () => {
    const l = layout(null, null);
    const r = loadNativeBackend({ root: l.root });
    expect([r.native, r.path, r.source]).toEqual([false, null, null]);
    expect(r.reason).toMatch(/native addon not found/);
  });
});
