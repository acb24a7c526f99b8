/**
 * The built CLI run as a new user runs it, for the contract tests (cli-contract, cli-readme):
 * no $BROOK_TS_PASSWORD_FILE in the environment, stdout a pipe (commander wraps --help at 80
 * columns then), a few processes at a time.
 */
import { spawn } from 'node:child_process';
import { CLI } from './cli.js';

/** The program ('') and every command, as --help targets. */
export const HELP_TARGETS = ['', 'wsserver', 'wssserver', 'wsclient', 'wssclient', 'connect', 'link'] as const;
/** At most this many CLI processes at once (the machine has 2 cores). */
const PARALLEL = 4;
/** A run still going after this long has started something: killed (and recorded so). */
export const RUN_TIMEOUT_MS = 15_000;

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export const cleanEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env };
  delete env['BROOK_TS_PASSWORD_FILE'];
  return env;
};

/** Run the CLI to its end; `onStdout` may stop it (e.g. SIGTERM once it listens). */
export function runOnce(args: string[], onStdout?: (all: string, stop: (signal: NodeJS.Signals) => void) => void): Promise<RunResult> {
  return new Promise((res) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => {
      stdout += d.toString();
      onStdout?.(stdout, (s) => child.kill(s));
    });
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
    child.once('close', (code, signal) => {
      clearTimeout(t);
      res({ code, signal, stdout, stderr });
    });
  });
}

/** Run each command line (PARALLEL at a time); results in the same order. */
export async function runAll(list: string[][]): Promise<RunResult[]> {
  const out: RunResult[] = new Array(list.length);
  let next = 0;
  const worker = async () => {
    while (next < list.length) {
      const i = next++;
      out[i] = await runOnce(list[i]!);
    }
  };
  await Promise.all(Array.from({ length: PARALLEL }, worker));
  return out;
}
