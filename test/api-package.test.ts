/**
 * The library API as a user gets it: `npm pack` (test/helpers/pack.ts), the tarball
 * installed into a fresh project (--prefer-offline), and from there:
 *
 * - `import ... from 'brook-ts'` resolves through package.json "exports";
 * - the README's examples (examples/*.mjs, each also verbatim in the README) run
 *   against each other on loopback: an Express app with Brook attached serves its
 *   page and tunnels; dial() fetches that page through it; a WsClient's SOCKS5
 *   port reaches it too; each stops cleanly on SIGTERM;
 * - the types: `tsc --noEmit` of a small .ts program importing the package, with
 *   moduleResolution node16 and bundler, no skipLibCheck; a wrong option is an error.
 *
 * Bounded: every child has a timeout; all stopped at the end.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { baseEnv, INSTALL_TIMEOUT_MS, PACK_TIMEOUT_MS, packCopy, REPO, run } from './helpers/pack.js';
import { LOOPBACK, readAll, socksConnect, withTimeout } from './helpers/net.js';

const EXAMPLES = join(REPO, 'examples');
const PASSWORD = 'api-package-test';
const APP_PAGE = 'hello from the app';
const START_TIMEOUT_MS = 10_000;
const STOP_TIMEOUT_MS = 5_000;
const TSC = join(REPO, 'node_modules', 'typescript', 'bin', 'tsc');
/** A hang guard for one tsc run (see the types test). */
const TSC_TIMEOUT_MS = 120_000;

interface Started {
  child: ChildProcess;
  line: string;
  out: () => string;
}

const children = new Set<ChildProcess>();

/** Run an example with `env`; resolves with its first stdout line that matches `ready`. */
function startExample(cwd: string, file: string, env: NodeJS.ProcessEnv, ready: RegExp): Promise<Started> {
  const child = spawn(process.execPath, [file], { cwd, env: { ...baseEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let out = '';
  let err = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${file}: not ready within ${START_TIMEOUT_MS} ms\n${out}\n${err}`)), START_TIMEOUT_MS);
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const line = out.split('\n').find((l) => ready.test(l));
      if (line) {
        clearTimeout(t);
        resolve({ child, line, out: () => out + err });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`${file} exited ${code} before it was ready\n${out}\n${err}`));
    });
  });
}

/** SIGTERM; resolves with the exit code (the examples close themselves on it). */
function stop(s: Started): Promise<number | null> {
  if (s.child.exitCode !== null) return Promise.resolve(s.child.exitCode);
  const exited = new Promise<number | null>((r) => s.child.once('exit', (code) => r(code)));
  s.child.kill('SIGTERM');
  return withTimeout(exited, STOP_TIMEOUT_MS, 'example exit after SIGTERM');
}

describe('the installed package: exports, the README examples, the types', () => {
  const work = mkdtempSync(join(tmpdir(), 'brook-ts-api-'));
  const proj = join(work, 'project');
  const timings: Record<string, number> = {};
  const examples = readdirSync(EXAMPLES).filter((f) => f.endsWith('.mjs'));

  beforeAll(async () => {
    const pack = await packCopy(work);
    timings['pack'] = pack.ms;
    mkdirSync(proj);
    writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'p', private: true, type: 'module', allowScripts: { 'brook-ts': true } }));
    const r = await run('npm', ['install', '--prefer-offline', pack.tarball], { cwd: proj, env: baseEnv(), timeoutMs: INSTALL_TIMEOUT_MS });
    timings['install'] = r.ms;
    if (r.code !== 0) throw new Error(`npm install failed (${r.code}):\n${r.stdout}\n${r.stderr}`);
    for (const f of examples) copyFileSync(join(EXAMPLES, f), join(proj, f));
  }, PACK_TIMEOUT_MS + INSTALL_TIMEOUT_MS);

  afterAll(() => {
    for (const c of children) c.kill('SIGKILL');
    rmSync(work, { recursive: true, force: true });
    console.log(`api-package.test timings (ms): ${JSON.stringify(timings)}`);
  });

  it('each example is in the README verbatim', () => {
    const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
    expect(examples.sort()).toEqual(['attach-express.mjs', 'dial.mjs', 'wsclient.mjs']);
    for (const f of examples) expect(readme, f).toContain(readFileSync(join(EXAMPLES, f), 'utf8'));
  });

  it("'brook-ts' resolves through \"exports\" to the API; internals stay private", async () => {
    const r = await run(
      process.execPath,
      ['--input-type=module', '-e', "const m = await import('brook-ts'); console.log(Object.keys(m).sort().join(' ')); await import('brook-ts/dist/src/cli.js').catch((e) => console.log(e.code));"],
      { cwd: proj, env: baseEnv(), timeoutMs: 10_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    const [names, internal] = r.stdout.trim().split('\n');
    for (const n of ['attachBrook', 'createBrookEndpoint', 'dial', 'resolveServer', 'WsServer', 'WsClient', 'parseLink', 'buildLink', 'BrookError', 'ErrorCodes', 'selectBackend']) {
      expect(names!.split(' ')).toContain(n);
    }
    expect(internal).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');
  });

  it('the examples against each other: the app page directly, through dial(), through the WsClient SOCKS5 port; each stops on SIGTERM', async () => {
    const t0 = Date.now();
    const server = await startExample(proj, 'attach-express.mjs', { PORT: '0', PASSWORD }, /^app on http:\/\/127\.0\.0\.1:\d+\//);
    const port = Number(/:(\d+)\//.exec(server.line)![1]);
    const page = await fetch(`http://${LOOPBACK}:${port}/`);
    expect(await page.text()).toContain(APP_PAGE);

    const env = { SERVER: `ws://${LOOPBACK}:${port}/ws`, PASSWORD, URL: `http://${LOOPBACK}:${port}/` };
    const fetched = await run(process.execPath, ['dial.mjs'], { cwd: proj, env: { ...baseEnv(), ...env }, timeoutMs: 10_000 });
    expect(fetched.code, fetched.stderr).toBe(0);
    expect(fetched.stdout).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(fetched.stdout).toContain(APP_PAGE);
    // a refused destination: a clear line and a non-zero exit
    const refused = await run(process.execPath, ['dial.mjs'], { cwd: proj, env: { ...baseEnv(), ...env, URL: `http://${LOOPBACK}:1/` }, timeoutMs: 10_000 });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/^tunnel failed: /m);

    const client = await startExample(proj, 'wsclient.mjs', { ...env, SOCKS5: `${LOOPBACK}:0` }, /^SOCKS5 on 127\.0\.0\.1:\d+/);
    const socksPort = Number(/:(\d+),/.exec(client.line)![1]);
    const s = await socksConnect(socksPort, { type: 'ipv4', host: LOOPBACK, port });
    s.end(`GET / HTTP/1.1\r\nHost: ${LOOPBACK}:${port}\r\nConnection: close\r\n\r\n`);
    expect((await withTimeout(readAll(s), 5000, 'page through SOCKS5')).toString()).toContain(APP_PAGE);

    expect(await stop(client)).toBe(0);
    expect(await stop(server)).toBe(0);
    timings['examples'] = Date.now() - t0;
  }, 40_000);

  it('the types: a program using the API type-checks (node16 and bundler resolution, no skipLibCheck); a wrong option does not', async () => {
    const good = `import { createServer } from 'node:http';
import { attachBrook, dial, parseLink, buildLink, resolveServer, WsClient, WsServer, BrookError, ErrorCodes, type BrookSocket, type WsServerOptions } from 'brook-ts';
const server = createServer((_req, res) => res.end('page'));
const brook = attachBrook(server, { path: '/ws', password: 'p', probeTimeoutMs: 1000 });
const n: number = brook.openTunnels;
const o: WsServerOptions = { listen: '127.0.0.1:0', password: 'p', fallback: 'http://127.0.0.1:8080' };
const ws = new WsServer(o);
const client = new WsClient({ ...resolveServer(buildLink('wsserver', 'ws://127.0.0.1:1/ws', 'p')), socks5: '127.0.0.1:0' });
async function main(): Promise<void> {
  const s: BrookSocket = await dial({ server: 'ws://127.0.0.1:1/ws', password: 'p', destination: 'example.com:80' });
  s.end('x');
  s.resetAndDestroy();
  const kind: 'wsserver' | 'wssserver' = parseLink('brook://wsserver?wsserver=ws%3A%2F%2F1.2.3.4%3A1&password=p').kind;
  const e = new BrookError(ErrorCodes.CONFIG, 'x');
  console.log(n, kind, e.code, await ws.listen(), client.stats.tunnels);
}
void main();
`;
    const bad = `import { attachBrook } from 'brook-ts';
import { createServer } from 'node:http';
attachBrook(createServer(), { pasword: 'typo' });
`;
    const typeRoots = [join(REPO, 'node_modules', '@types')];
    const tsconfig = (module: string, resolution: string, files: readonly string[]) =>
      JSON.stringify({ compilerOptions: { module, moduleResolution: resolution, target: 'ES2022', strict: true, noEmit: true, skipLibCheck: false, types: ['node'], typeRoots }, files });
    writeFileSync(join(proj, 'good.ts'), good);
    writeFileSync(join(proj, 'bad.ts'), bad);
    const t0 = Date.now();
    // two tsc runs, one after the other (each checks @types/node whole: ~5 s of CPU on a quiet machine):
    // node16 resolution over both files (the only errors must be bad.ts's), bundler over the good one.
    // The bound is a hang guard, not a speed check: under load (load average 12-15 on 2 cores) three
    // runs at once took 30.4 s and one alone 24 s.
    const checks = [
      ['node16', 'node16', ['good.ts', 'bad.ts']],
      ['esnext', 'bundler', ['good.ts']],
    ] as const;
    const results: Awaited<ReturnType<typeof run>>[] = [];
    for (const [i, [m, r, files]] of checks.entries()) {
      writeFileSync(join(proj, `tsconfig.${i}.json`), tsconfig(m, r, files));
      results.push(await run(process.execPath, [TSC, '-p', `tsconfig.${i}.json`], { cwd: proj, env: baseEnv(), timeoutMs: TSC_TIMEOUT_MS }));
    }
    timings['tsc x2'] = Date.now() - t0;
    const errors = results[0]!.stdout.split('\n').filter((l) => /error TS/.test(l));
    expect(results[0]!.code).not.toBe(0);
    expect(errors.length, results[0]!.stdout).toBe(1);
    expect(errors[0]).toMatch(/^bad\.ts\(3,.*'pasword' does not exist/);
    expect(results[1]!.code, results[1]!.stdout).toBe(0);
  }, 2 * TSC_TIMEOUT_MS + 10_000);
});
