/**
 * The npm package for real, shared by test/package.test.ts and test/api-package.test.ts:
 * `npm pack` of a copy of this tree (prepack: tsc + native/prebuild.mjs), child processes
 * with bounded time and an npm environment that only keeps where the cache and registry are.
 */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, readdirSync, symlinkSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';

export const REPO = resolve('.');
/** What `npm pack` needs from the tree (package.json "files" + the sources prepack compiles). */
export const COPY = ['package.json', 'package-lock.json', 'tsconfig.json', 'README.md', 'src', 'cmd', 'protocol', 'native/binding.gyp', 'native/src', 'native/build.mjs', 'native/gyp.mjs', 'native/prebuild.mjs'];
export const PACK_TIMEOUT_MS = 60_000;
export const INSTALL_TIMEOUT_MS = 60_000;

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export function run(cmd: string, args: string[], o: { cwd: string; env: NodeJS.ProcessEnv; timeoutMs: number }): Promise<Run> {
  const t0 = Date.now();
  return new Promise((res) => {
    execFile(cmd, args, { cwd: o.cwd, env: o.env, timeout: o.timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (e, stdout, stderr) => {
      const code = e ? (typeof (e as { code?: unknown }).code === 'number' ? (e as { code: number }).code : -1) : 0;
      res({ code, stdout: String(stdout), stderr: String(stderr), ms: Date.now() - t0 });
    });
  });
}

export function which(name: string, path: string): string | null {
  for (const dir of path.split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

/** npm settings passed on to the child npm (where the cache and registry are); the rest of npm_* is dropped. */
const KEEP_NPM_CONFIG = /^npm_config_(cache|userconfig|globalconfig|registry|proxy|https_proxy|noproxy|cafile|ca|strict_ssl)$/i;

/** The environment without npm's per-run variables (npm_config_prefix and friends would steer the child npm). */
export function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) || KEEP_NPM_CONFIG.test(k)) env[k] = v;
  env['npm_config_update_notifier'] = 'false';
  env['npm_config_fund'] = 'false';
  env['npm_config_audit'] = 'false';
  return env;
}

/**
 * Copy the tree to `work`/src (sharing node_modules: tsc and node-gyp-build come from it),
 * `npm pack` it into `work`, and return the tarball's path and how long packing took.
 * The copy keeps the working tree untouched.
 */
export async function packCopy(work: string): Promise<{ tarball: string; ms: number }> {
  const src = join(work, 'src');
  for (const p of COPY) cpSync(join(REPO, p), join(src, p), { recursive: true });
  symlinkSync(join(REPO, 'node_modules'), join(src, 'node_modules'), 'dir');
  // the packing machine has a compiler: the normal PATH
  const pack = await run('npm', ['pack', '--pack-destination', work], { cwd: src, env: baseEnv(), timeoutMs: PACK_TIMEOUT_MS });
  if (pack.code !== 0) throw new Error(`npm pack failed (${pack.code}):\n${pack.stdout}\n${pack.stderr}`);
  const tgz = readdirSync(work).find((f) => f.endsWith('.tgz'));
  if (!tgz) throw new Error(`npm pack made no tarball:\n${pack.stdout}`);
  return { tarball: join(work, tgz), ms: pack.ms };
}
