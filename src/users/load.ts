/**
 * Reading the users file from disk (protocol/users.md#the-users-file): the text (bounded), the entries
 * (src/users/file.ts), each passwordFile= read by the rules of --passwordFile (src/password.ts), a
 * relative path taken from the users file's folder.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { readPasswordFile } from '../password.js';
import { MAX_USERS_FILE_BYTES, parseUsers, UsersFileError } from './file.js';
import { resolveUsers, type User } from './userset.js';

/** How a passwordFile= is named in messages. */
const PASSWORD_FILE_WHAT = 'passwordFile=';

/** The file's text; USERS_FILE when it cannot be read or is over MAX_USERS_FILE_BYTES. */
export function readUsersText(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (code ?? (e as Error).message);
    throw new UsersFileError(path, [{ line: 0, reason: 'syntax', message: `cannot read: ${why}` }]);
  }
  try {
    if (fstatSync(fd).isDirectory()) throw new UsersFileError(path, [{ line: 0, reason: 'syntax', message: 'is a folder' }]);
    const buf = Buffer.allocUnsafe(MAX_USERS_FILE_BYTES + 1);
    let n = 0;
    for (let got = -1; got !== 0 && n < buf.length; n += got) got = readSync(fd, buf, n, buf.length - n, null);
    if (n > MAX_USERS_FILE_BYTES) throw new UsersFileError(path, [{ line: 0, reason: 'too-large', message: `larger than ${MAX_USERS_FILE_BYTES} bytes` }]);
    return buf.toString('utf8', 0, n);
  } finally {
    closeSync(fd);
  }
}

/** A passwordFile= path as the server opens it: relative to the users file's folder. */
export function passwordFilePath(usersFile: string, p: string): string {
  return isAbsolute(p) ? p : resolve(dirname(usersFile), p);
}

/** The users of a text read from `path` (password files read relative to it). Throws UsersFileError. */
export function usersFromText(text: string, path: string): User[] {
  return resolveUsers(parseUsers(text, path), (p) => readPasswordFile(passwordFilePath(path, p), PASSWORD_FILE_WHAT), path);
}

/** Read and check a users file. Throws UsersFileError (BROOK_ERR_USERS_FILE). */
export function loadUsersFile(path: string): User[] {
  return usersFromText(readUsersText(path), path);
}
