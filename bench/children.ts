/**
 * The benchmark's child processes (bench/run.ts): start one with its output tail kept for the log,
 * stop one with its cluster workers, wait for a port, and kill whatever is left when the run exits.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cpuSeconds, rssKiB, tree } from './proc.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const READY_TIMEOUT_MS = 15_000;

export const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** utime + stime of the tree, seconds (0 without a process). */
export const cpuSecondsOf = (pid: number | undefined): number => (pid === undefined ? 0 : cpuSeconds(pid));
/** VmRSS of the tree, KiB (0 without a process). */
export const rssKiBOf = (pid: number | undefined): number => (pid === undefined ? 0 : rssKiB(pid));

const started = new Set<ChildProcess>();

/** Count a child spawned elsewhere as ours: killed at exit unless it has exited. */
export function track(cp: ChildProcess): void {
  started.add(cp);
  cp.on('exit', () => started.delete(cp));
}

export function start(name: string, cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  const cp = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT, env });
  started.add(cp);
  let tail = '';
  const keep = (d: Buffer) => {
    tail = (tail + d.toString()).slice(-2000);
  };
  cp.stdout!.on('data', keep);
  cp.stderr!.on('data', keep);
  cp.on('exit', (code, sig) => {
    started.delete(cp);
    if (!stopping.has(cp)) log(`${name} exited (${code ?? sig}); last output:\n${tail}`);
  });
  return cp;
}

const stopping = new Set<ChildProcess>();
export async function stop(cp: ChildProcess | undefined): Promise<void> {
  if (!cp || cp.exitCode !== null || cp.signalCode !== null) return;
  stopping.add(cp);
  const gone = new Promise<void>((r) => cp.once('exit', () => r()));
  const pids = cp.pid ? tree(cp.pid) : [];
  // the process and its cluster workers (ours: only pids this run started)
  for (const p of pids.reverse()) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await Promise.race([gone, sleep(5000)]);
  await sleep(200);
}

function cleanupSync(): void {
  for (const cp of started) {
    try {
      cp.kill('SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** Kill every child still running when this process exits (on SIGINT/SIGTERM too). */
export function killChildrenOnExit(): void {
  process.on('exit', cleanupSync);
  for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => process.exit(130));
}

export async function waitPort(port: number, cp: ChildProcess): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < READY_TIMEOUT_MS) {
    if (cp.exitCode !== null) throw new Error(`process exited before listening on ${port}`);
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        r(true);
      });
      s.once('error', () => r(false));
    });
    if (ok) return;
    await sleep(100);
  }
  throw new Error(`nothing listening on ${port} after ${READY_TIMEOUT_MS} ms`);
}
