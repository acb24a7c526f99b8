/**
 * The users a server knows: the users file's entries with their passwords read
 * (protocol/users.md), and the difference between two such sets for a hot reload.
 *
 * Two users with one password cannot be told apart (Brook derives the key from the password alone;
 * withoutBrookProtocol sends SHA-256 of it), so a set never has two passwords with one SHA-256.
 * Pure: password files are read through the reader passed in.
 */
import { createHash } from 'node:crypto';
import { BrookError, ErrorCodes } from '../errors.js';
import { type UserEntry, UsersFileError, type UsersProblem } from './file.js';

export interface User {
  readonly name: string;
  /** Its line in the users file (0: not from the file, e.g. the server's --password). */
  readonly line: number;
  readonly password: string;
  /** SHA-256 of the password's UTF-8 bytes: the withoutBrookProtocol credential and the user's identity. */
  readonly passwordHash: Buffer;
  /** The passwordFile= path as written, when the password came from one. */
  readonly passwordFile: string | null;
  /** Bytes up and down together; null: no quota. */
  readonly quota: number | null;
  readonly quotaText: string | null;
  /** Milliseconds since the epoch; null: never. */
  readonly expires: number | null;
  /** Most client IPs at once; null: no limit. */
  readonly devices: number | null;
  readonly disabled: boolean;
}

/** Reads a passwordFile= path (relative paths already resolved by the caller's reader); throws on failure. */
export type PasswordFileReader = (path: string) => string;

export function passwordHash(password: string): Buffer {
  return createHash('sha256').update(password, 'utf8').digest();
}

function makeUser(e: UserEntry, password: string): User {
  return {
    name: e.name,
    line: e.line,
    password,
    passwordHash: passwordHash(password),
    passwordFile: e.passwordFile ?? null,
    quota: e.quota ?? null,
    quotaText: e.quotaText ?? null,
    expires: e.expires ?? null,
    devices: e.devices ?? null,
    disabled: e.disabled,
  };
}

/** Problems for every user whose password another user already has (named by the first one's line). */
export function duplicatePasswords(users: readonly User[]): UsersProblem[] {
  const first = new Map<string, User>();
  const problems: UsersProblem[] = [];
  for (const u of users) {
    const key = u.passwordHash.toString('hex');
    const other = first.get(key);
    if (!other) first.set(key, u);
    else {
      const where = other.line > 0 ? `user ${other.name} (line ${other.line})` : `user ${other.name}`;
      problems.push({
        line: u.line,
        reason: 'duplicate-password',
        message: `user ${u.name} has the same password as ${where}: two users with one password cannot be told apart`,
      });
    }
  }
  return problems;
}

/** Entries with their passwords read; UsersFileError for an unreadable password file or a duplicate password. */
export function resolveUsers(entries: readonly UserEntry[], read: PasswordFileReader, source = 'users file'): User[] {
  const users: User[] = [];
  const problems: UsersProblem[] = [];
  for (const e of entries) {
    if (e.password !== undefined) {
      users.push(makeUser(e, e.password));
      continue;
    }
    try {
      users.push(makeUser(e, read(e.passwordFile!)));
    } catch (err) {
      const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
      problems.push({ line: e.line, reason: 'password', message: `user ${e.name}: ${msg}` });
    }
  }
  problems.push(...duplicatePasswords(users));
  problems.sort((a, b) => a.line - b.line);
  if (problems.length > 0) throw new UsersFileError(source, problems);
  return users;
}

/**
 * The set with one more user that is not in the file (the server's --password, named by --tag or
 * "default"): USERS_FILE when the file has that name or that password.
 */
export function withExtraUser(users: readonly User[], name: string, password: string, source = 'users file'): User[] {
  if (users.some((u) => u.name === name)) {
    throw new BrookError(ErrorCodes.USERS_FILE, `${source}: has a user named ${name}, the name of the --password user: rename one of them`);
  }
  const extra: User = makeUser({ name, line: 0, disabled: false }, password);
  const all = [...users, extra];
  const dup = duplicatePasswords(all);
  if (dup.length > 0) throw new BrookError(ErrorCodes.USERS_FILE, `${source}: ${dup[0]!.message}`);
  return all;
}

export interface UsersDiff {
  /** New names, and users whose password changed (their new self). */
  added: User[];
  /** Names gone, and users whose password changed (their old self): their tunnels close. */
  removed: User[];
  /** Same name and password, other limits (quota, expiry, devices, disabled). */
  changed: { before: User; after: User }[];
  unchanged: User[];
}

function sameLimits(a: User, b: User): boolean {
  return a.quota === b.quota && a.expires === b.expires && a.devices === b.devices && a.disabled === b.disabled;
}

/** What a reload from `before` to `after` changes, by name; a password change is a removal and an addition. */
export function diffUsers(before: readonly User[], after: readonly User[]): UsersDiff {
  const old = new Map(before.map((u) => [u.name, u]));
  const d: UsersDiff = { added: [], removed: [], changed: [], unchanged: [] };
  for (const a of after) {
    const b = old.get(a.name);
    old.delete(a.name);
    if (!b) d.added.push(a);
    else if (!b.passwordHash.equals(a.passwordHash)) {
      d.removed.push(b);
      d.added.push(a);
    } else if (!sameLimits(a, b)) d.changed.push({ before: b, after: a });
    else d.unchanged.push(a);
  }
  d.removed.push(...old.values());
  return d;
}

/**
 * For TryOrder.remap after a reload: map[i] is the index in `after` of before[i] (same name, same
 * password), or -1 when that user is gone or has another password now.
 */
export function indexMap(before: readonly User[], after: readonly User[]): Int32Array {
  const now = new Map(after.map((u, i) => [u.name, i]));
  return Int32Array.from(before, (u) => {
    const i = now.get(u.name);
    return i !== undefined && after[i]!.passwordHash.equals(u.passwordHash) ? i : -1;
  });
}
