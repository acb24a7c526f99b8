/**
 * Where log lines go (upstream's global --log and --tag):
 *   --log console       one JSON object a line on stdout (the default)
 *   --log FILE          appended to FILE; SIGUSR1 reopens it, so logrotate can move it away
 *   --tag key:value     added to every line (repeatable)
 * Upstream truncates FILE at start and on SIGUSR1; we append, so a restart or a
 * rotation that copies never loses lines.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { BrookError, ErrorCodes } from '../errors.js';
import { createLogger, type Logger } from '../log.js';

export const LOG_CONSOLE = 'console';
/** File mode of a log file we create (rw-r-----: lines name clients and destinations). */
export const LOG_FILE_MODE = 0o640;
/** Signal that reopens the log file. */
export const REOPEN_SIGNAL = 'SIGUSR1';

export type Tags = Record<string, string>;

/** "key:value" (the value may hold further colons); a missing key or colon is a CONFIG error. */
export function parseTag(s: string): [string, string] {
  const i = s.indexOf(':');
  if (i <= 0) throw new BrookError(ErrorCodes.CONFIG, `invalid --tag ${JSON.stringify(s)} (expected key:value)`);
  return [s.slice(0, i), s.slice(i + 1)];
}

export function parseTags(list: readonly string[]): Tags {
  const tags: Tags = {};
  for (const s of list) {
    const [k, v] = parseTag(s);
    tags[k] = v;
  }
  return tags;
}

export interface LogDestination {
  log: Logger;
  /** Reopen the file (what SIGUSR1 does); a no-op on the console. */
  reopen(): Promise<void>;
  /** Flush and close; stop listening for the signal. */
  close(): Promise<void>;
}

/** Open a file for appending; resolves once it is open, rejects with a CONFIG error naming the file. */
function openAppend(path: string): Promise<WriteStream> {
  return new Promise((resolve, reject) => {
    const s = createWriteStream(path, { flags: 'a', mode: LOG_FILE_MODE });
    s.once('open', () => {
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => reject(new BrookError(ErrorCodes.CONFIG, `cannot open log file ${path}: ${e.message}`, { cause: e })));
  });
}

function endStream(s: WriteStream): Promise<void> {
  return new Promise((r) => s.end(() => r()));
}

/**
 * Lines to stdout. When its reader goes away (a closed pipe: EPIPE) the lines are
 * dropped and the server goes on serving; an unhandled 'error' on process.stdout
 * would end the process, so a log reader that exits could take the server down.
 */
function consoleWriter(): (line: string) => void {
  let gone = false;
  process.stdout.on('error', () => {
    gone = true;
  });
  return (line) => {
    if (!gone) process.stdout.write(line);
  };
}

/**
 * Open the destination named by --log (console when undefined). For a file: the
 * first open fails at start with a one-line error; a failed reopen keeps writing to
 * the old file and reports why on stderr.
 */
export async function openLogDestination(
  where: string | undefined,
  tags: Tags = {},
  o: { stdout?: (line: string) => void; onSignal?: boolean } = {},
): Promise<LogDestination> {
  const tagged = (write: (line: string) => void): Logger => {
    const base = createLogger(write);
    return Object.keys(tags).length === 0 ? base : (e) => base({ ...e, ...tags });
  };
  if (where === undefined || where === LOG_CONSOLE) {
    const stdout = o.stdout ?? consoleWriter();
    return { log: tagged(stdout), reopen: async () => {}, close: async () => {} };
  }
  const path = where;
  let stream = await openAppend(path);
  const onError = (e: Error) => process.stderr.write(`brook-ts: log file ${path}: ${e.message}\n`);
  stream.on('error', onError);
  const reopen = async () => {
    let next: WriteStream;
    try {
      next = await openAppend(path);
    } catch (e) {
      onError(e as Error);
      return;
    }
    next.on('error', onError);
    const old = stream;
    stream = next;
    await endStream(old);
  };
  const onSignal = () => void reopen();
  if (o.onSignal ?? true) process.on(REOPEN_SIGNAL, onSignal);
  return {
    log: tagged((line) => void stream.write(line)),
    reopen,
    close: async () => {
      process.removeListener(REOPEN_SIGNAL, onSignal);
      await endStream(stream);
    },
  };
}
