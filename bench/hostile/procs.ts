/**
 * The CLI child processes of the hostile tools: started, watched (their JSON log lines),
 * stopped with their whole tree, and killed when the tool exits.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import net from 'node:net';
import { tree } from '../proc.js';
import { BROOK, freePort, PASSWORD, ROOT, sleep, waitListening, WS_PATH } from './base.js';


export interface Child {
  name: string;
  cp: ChildProcess;
  pid: number;
  /** Lines the process wrote to stdout (the JSON log), all of them. */
  lines: string[];
  /** Lines written to stdout so far (counted even when not kept). */
  lineCount: number;
  stderr: string;
  exited: { code: number | null; signal: NodeJS.Signals | null } | null;
}

const children = new Set<Child>();

/** How a child is started beyond its arguments: node's own flags before the CLI, extra environment. */
export interface NodeRun {
  nodeArgs?: string[];
  env?: Record<string, string>;
}

/**
 * Start a brook-ts command. With `nofile` it runs under `ulimit -n nofile`
 * (bash execs node, so the pid is node's).
 */
export function startBrook(
  name: string,
  args: string[],
  o: { nofile?: number; keepLines?: boolean; onLine?: (line: string) => void } & NodeRun = {},
): Child {
  const cmd = o.nofile ? 'bash' : process.execPath;
  const node = [...(o.nodeArgs ?? []), BROOK, ...args];
  const argv = o.nofile ? ['-c', `ulimit -n ${o.nofile} && exec "$0" "$@"`, process.execPath, ...node] : node;
  return startProcess(name, cmd, argv, o);
}

/** Any child process (a destination, a helper); its stdout lines kept (unless keepLines is false) and passed to onLine. */
export function startProcess(
  name: string,
  cmd: string,
  args: string[],
  o: { keepLines?: boolean; onLine?: (line: string) => void; env?: Record<string, string> } = {},
): Child {
  const cp = spawn(cmd, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: o.env ? { ...process.env, ...o.env } : process.env });
  const c: Child = { name, cp, pid: cp.pid!, lines: [], lineCount: 0, stderr: '', exited: null };
  children.add(c);
  let partial = '';
  cp.stdout!.on('data', (d: Buffer) => {
    partial += d.toString();
    const parts = partial.split('\n');
    partial = parts.pop()!;
    c.lineCount += parts.length;
    if (o.keepLines !== false) for (const l of parts) c.lines.push(l);
    if (o.onLine) for (const l of parts) o.onLine(l);
  });
  cp.stderr!.on('data', (d: Buffer) => {
    c.stderr = (c.stderr + d.toString()).slice(-8000);
  });
  cp.on('exit', (code, signal) => {
    c.exited = { code, signal };
    children.delete(c);
  });
  return c;
}

/** SIGTERM, then SIGKILL of the tree after `graceMs` (only processes this run started). */
export async function stopChild(c: Child | undefined, graceMs = 2000): Promise<void> {
  if (!c || c.exited) return;
  const gone = new Promise<void>((r) => c.cp.once('exit', () => r()));
  const pids = tree(c.pid);
  try {
    process.kill(c.pid, 'SIGTERM');
  } catch {
    /* gone */
  }
  await Promise.race([gone, sleep(graceMs)]);
  for (const p of pids.reverse()) {
    try {
      process.kill(p, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await Promise.race([gone, sleep(3000)]);
}

process.on('exit', () => {
  for (const c of children) {
    for (const p of tree(c.pid).reverse()) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
  }
});
for (const s of ['SIGINT', 'SIGTERM'] as const) process.on(s, () => process.exit(130));


export function waitPort(port: number, c: Child): Promise<void> {
  return waitListening(port, c.name, () => (c.exited ? `: ${c.stderr.slice(-500)}` : null));
}

export interface Pair {
  server: Child;
  client?: Child;
  serverPort: number;
  socksPort: number;
  /** Set when the client was started with an HTTP proxy port. */
  httpPort?: number;
}

/** A CLI wsserver (optionally under a descriptor limit) and, unless `noClient`, a wsclient in front of it. */
export async function startPair(o: {
  nofile?: number;
  serverArgs?: string[];
  clientArgs?: string[];
  noClient?: boolean;
  http?: boolean;
  password?: string;
  keepLines?: boolean;
  onServerLine?: (line: string) => void;
  onClientLine?: (line: string) => void;
  /** Node flags and environment of each child. */
  serverRun?: NodeRun;
  clientRun?: NodeRun;
}): Promise<Pair> {
  const serverPort = await freePort();
  const server = startBrook('wsserver', ['wsserver', '--listen', `127.0.0.1:${serverPort}`, '--password', PASSWORD, ...(o.serverArgs ?? [])], {
    nofile: o.nofile,
    keepLines: o.keepLines,
    onLine: o.onServerLine,
    ...o.serverRun,
  });
  await waitPort(serverPort, server);
  const socksPort = await freePort();
  if (o.noClient) return { server, serverPort, socksPort };
  const httpPort = o.http ? await freePort() : undefined;
  const client = startBrook('wsclient', [
    'wsclient', '--wsserver', `ws://127.0.0.1:${serverPort}${WS_PATH}`, '--password', o.password ?? PASSWORD,
    '--socks5', `127.0.0.1:${socksPort}`, ...(httpPort ? ['--http', `127.0.0.1:${httpPort}`] : []), ...(o.clientArgs ?? []),
  ], { keepLines: o.keepLines, onLine: o.onClientLine, ...o.clientRun });
  await waitPort(socksPort, client);
  if (httpPort) await waitPort(httpPort, client);
  return { server, client, serverPort, socksPort, httpPort };
}

export async function stopPair(p: Pair | undefined): Promise<void> {
  if (!p) return;
  await stopChild(p.client);
  await stopChild(p.server);
}

/** Parsed JSON log lines of a child (lines that are not JSON are skipped). */
export function logEntries(c: Child, from = 0): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const l of c.lines.slice(from)) {
    try {
      out.push(JSON.parse(l) as Record<string, unknown>);
    } catch {
      /* not JSON */
    }
  }
  return out;
}
