/**
 * What every command family shares: the flags of the process around a command (timeouts,
 * --keepalive, --crypto, --shutdownGrace, --workers), --example, the password sources
 * (--password / --passwordFile / $BROOK_TS_PASSWORD_FILE, src/password.ts), PEM files
 * named by flags, and the start line's crypto fields.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { backendName, type BackendPreference, NATIVE_BACKEND_NAME, nativeStatus, parseBackendPreference } from '../crypto/index.js';
import { DEFAULT_WORKERS, parseWorkers } from '../cluster.js';
import { BrookError, ErrorCodes } from '../errors.js';
import { PASSWORD_FILE_ENV, resolvePassword } from '../password.js';
import { flag, seconds, toggle } from './flags.js';

/** Seconds open tunnels get to finish after SIGINT/SIGTERM. */
export const DEFAULT_SHUTDOWN_GRACE_SECONDS = 10;

const KEEPALIVE_HELP =
  'after this many seconds without sending on a TCP tunnel, send an empty Brook fragment (keeps proxies and CDNs with an idle cut-off from closing it; upstream peers read it as nothing); 0 = off; Brook protocol only';
const WORKERS_HELP = 'processes sharing the listening socket, or "auto" (one per core)';
const PASSWORD_FILE_READ = 'read the password from this file (one line; a trailing newline is dropped), so it is not on the command line';
export const PASSWORD_FILE_HELP = `${PASSWORD_FILE_READ}; default: $${PASSWORD_FILE_ENV} when no --password is given`;
/** connect: it has no --password, and with a link the variable is not read. */
export const LINK_PASSWORD_FILE_HELP = `${PASSWORD_FILE_READ}; it replaces the link's password ($${PASSWORD_FILE_ENV} is not read: a link carries its own)`;
export const WITHOUT_BROOK_PROTOCOL_HELP = 'the data will not be encrypted with brook protocol';

/** --example: main() answers it before commander checks required flags. */
export const EXAMPLE_FLAGS = { example: toggle('--example', 'print an example and exit') };

/** Idle timeouts and --keepalive (servers and clients). */
export const TIMEOUT_FLAGS = {
  tcpTimeout: flag('--tcpTimeout <seconds>', 'connection idle timeout (s), 0 = none', { parse: seconds, default: 0 }),
  udpTimeout: flag('--udpTimeout <seconds>', 'UDP flow idle timeout (s)', { parse: seconds, default: 60 }),
  keepalive: flag('--keepalive <seconds>', KEEPALIVE_HELP, { parse: seconds, default: 0 }),
};

/** The process: AES-GCM backend, shutdown grace, worker count (workersHelp: extra words for clients). */
export function processFlags(workersHelp = '') {
  return {
    crypto: flag<BackendPreference>('--crypto <backend>', 'AES-GCM backend: auto, native, node', { parse: parseBackendPreference, default: 'auto' }),
    shutdownGrace: flag('--shutdownGrace <seconds>', 'time open tunnels get to finish on SIGINT/SIGTERM', { parse: seconds, default: DEFAULT_SHUTDOWN_GRACE_SECONDS }),
    workers: flag('--workers <n>', WORKERS_HELP + workersHelp, { parse: parseWorkers, default: DEFAULT_WORKERS }),
  };
}

/** What the password sources leave in a command's flags (see withPasswordSources). */
export interface PasswordValues {
  password?: string | undefined;
  passwordFile?: string | undefined;
  link?: string | undefined;
  /** With --link: the --passwordFile password, which replaces the link's. */
  linkPassword?: string | undefined;
}

/**
 * --password / --passwordFile / $BROOK_TS_PASSWORD_FILE (src/password.ts), resolved before the
 * command runs (in the --workers primary too, before it forks): the password becomes the
 * command's --password value, so nothing below reads the file. A client with --link keeps the
 * link's password unless --passwordFile is given. A server without any of them is refused here,
 * naming the three sources (only the CLI knows them).
 */
export function withPasswordSources(cmd: Command, role: 'server' | 'client' | 'link'): Command {
  return cmd.hook('preAction', (_self, action) => {
    const o = action.opts<PasswordValues>();
    const link = role === 'client' && o.link !== undefined;
    const r = resolvePassword({ password: o.password, passwordFile: o.passwordFile, link });
    if (link) {
      if (r.source === 'file') action.setOptionValue('linkPassword', r.password);
    } else if (r.password !== undefined) {
      action.setOptionValue('password', r.password);
    } else if (role === 'server') {
      throw new BrookError(ErrorCodes.CONFIG, `--password or --passwordFile (or $${PASSWORD_FILE_ENV}) is required`);
    }
  });
}

/** A PEM file named by a flag, as text; `what` names it in the error ("CA file"). */
export function readPem(path: string, what: string): string {
  return readFlagFile(path, what).toString('utf8');
}

/** A file named by a flag; unreadable: CONFIG "cannot read <what> <path>: <why>". */
export function readFlagFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new BrookError(ErrorCodes.CONFIG, `cannot read ${what} ${path}: ${(e as Error).message}`);
  }
}

/** The start line's "crypto", and with --crypto auto on node:crypto why the addon is not used. */
export function cryptoFields(pref: string): Record<string, string> {
  const name = backendName();
  const why = name !== NATIVE_BACKEND_NAME && pref === 'auto' ? nativeStatus().reason : null;
  return why ? { crypto: name, cryptoReason: why } : { crypto: name };
}
