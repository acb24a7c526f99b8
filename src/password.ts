/**
 * Where a command's password comes from: --password (visible to every local user in
 * `ps` and /proc/PID/cmdline), --passwordFile FILE, or the file named by
 * $BROOK_TS_PASSWORD_FILE. Only the file's name is ever on the command line.
 *
 * The file holds the password on one line. One trailing "\n" (or "\r\n") is dropped;
 * anything else is kept byte for byte (spaces included). A second line, an empty
 * password, a file above MAX_PASSWORD_FILE_BYTES, or a file that cannot be read is a
 * CONFIG error (one line, non-zero exit from the CLI).
 *
 * Precedence (resolvePassword):
 *   --password and --passwordFile together      error
 *   --passwordFile                               the file (with --link: replaces the link's password)
 *   --password                                   as given (with --link: the link's password wins, as before)
 *   $BROOK_TS_PASSWORD_FILE                      the file, only when no flag gave a password and there is
 *                                                no --link (a link carries its own password); empty = unset
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { BrookError, ErrorCodes } from './errors.js';

/** Environment variable naming a password file (the default of --passwordFile). */
export const PASSWORD_FILE_ENV = 'BROOK_TS_PASSWORD_FILE';
/** Larger password files are refused (a password is a line, not a document). */
export const MAX_PASSWORD_FILE_BYTES = 4096;

function configError(msg: string): BrookError {
  return new BrookError(ErrorCodes.CONFIG, msg);
}

/** Read at most max + 1 bytes (so "too large" can be told); works for pipes such as <(...) too. */
function readBounded(path: string, max: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    if (fstatSync(fd).isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    const buf = Buffer.alloc(max + 1);
    let n = 0;
    for (;;) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0) break;
      n += got;
      if (n === buf.length) break;
    }
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** The password in a file; `what` names its source in errors ("--passwordFile" or the variable). */
export function readPasswordFile(path: string, what = '--passwordFile'): string {
  if (path === '') throw configError(`${what} is empty: expected the name of a file holding the password`);
  let raw: Buffer;
  try {
    raw = readBounded(path, MAX_PASSWORD_FILE_BYTES);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const why = err.code === 'ENOENT' ? 'no such file' : err.code === 'EACCES' ? 'permission denied' : err.code === 'EISDIR' ? 'is a directory' : err.message.split('\n')[0];
    throw configError(`cannot read password file ${path} (${what}): ${why}`);
  }
  if (raw.length > MAX_PASSWORD_FILE_BYTES) throw configError(`password file ${path} (${what}) is larger than ${MAX_PASSWORD_FILE_BYTES} bytes`);
  let text = raw.toString('utf8');
  if (text.endsWith('\r\n')) text = text.slice(0, -2);
  else if (text.endsWith('\n')) text = text.slice(0, -1);
  if (/[\r\n]/.test(text)) throw configError(`password file ${path} (${what}) has more than one line: put the password alone on the first line`);
  if (text.length === 0) throw configError(`password file ${path} (${what}) is empty`);
  return text;
}

export interface PasswordFlags {
  password?: string | undefined;
  passwordFile?: string | undefined;
  /** A --link is given (it carries a password). */
  link?: boolean;
}

export interface ResolvedPassword {
  /** undefined when no source gave one. */
  password: string | undefined;
  /** Where it came from. */
  source: 'flag' | 'file' | 'env' | null;
}

/** Apply the precedence above; reads the file when one is named. */
export function resolvePassword(f: PasswordFlags, env: NodeJS.ProcessEnv = process.env): ResolvedPassword {
  if (f.password !== undefined && f.passwordFile !== undefined) {
    throw configError('--password and --passwordFile both given: use one of them');
  }
  if (f.passwordFile !== undefined) return { password: readPasswordFile(f.passwordFile), source: 'file' };
  if (f.password !== undefined) return { password: f.password, source: 'flag' };
  const fromEnv = env[PASSWORD_FILE_ENV];
  if (fromEnv !== undefined && fromEnv !== '' && !f.link) return { password: readPasswordFile(fromEnv, `$${PASSWORD_FILE_ENV}`), source: 'env' };
  return { password: undefined, source: null };
}
