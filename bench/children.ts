/**
 * The benchmark's child processes (bench/run.ts): start one with its output tail kept for the log,
 * stop one with its cluster workers, wait for a port, and kill whatever is left when the run exits.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { ROOT, sleep, waitListening } from './hostile/base.js';
import { cpuSeconds, rssKiB, tree } from './proc.js';

export { ROOT, sleep };

export const log = (msg: string) => process.stderr.write(`[bench] ${msg}\n`);

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

export function waitPort(port: number, cp: ChildProcess): Promise<void> {
  return waitListening(port, 'process', () => (cp.exitCode !== null ? '' : null));
}
