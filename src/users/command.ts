/**
 * The `users` command's logic (protocol/users.md#the-users-command), for the CLI to call:
 *
 *   users add NAME --file F (--password P | --passwordFile PF) [--quota 10GiB] [--expires 2027-01-31T00:00:00Z] [--devices N]
 *   users remove NAME --file F
 *   users list --file F [--state S]          name, used bytes, quota, expiry, devices, state
 *   users link NAME --file F --server ws://host:port/path [--qr]
 *
 * Edits replace the file atomically and touch only the user's line: the operator's comments, order and
 * spacing stay. The new text is checked whole (as the server would read it) before it replaces the old;
 * if the file changed on disk meanwhile the edit starts again from the new file (MAX_EDIT_ATTEMPTS).
 * A running server picks the change up by its reload. Mistakes are BrookErrors: CONFIG (a bad flag),
 * USERS_FILE, USER_EXISTS, USER_UNKNOWN, USERS_STATE.
 */
import { chownSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { encodeQR } from 'qr';
import { BrookError, ErrorCodes } from '../errors.js';
import { buildLink, linkKindForServer, type LinkOptions } from '../link.js';
import { readPasswordFile } from '../password.js';
import { type AtomicFs, PRIVATE_FILE_MODE, writeFileAtomic } from './atomic.js';
import { appendLine, formatUserLine, removeLine, type UserLine } from './file-edit.js';
import { checkName, parseUsers, type UserEntry } from './file.js';
import { passwordFilePath, readUsersText, usersFromText } from './load.js';
import { emptyUsage, readStateFile, totalBytes } from './state.js';
import { formatBytes, formatInstant, parseByteSize, parseDevices, parseInstant } from './units.js';

/** Tries of one edit when the file keeps changing under it. */
export const MAX_EDIT_ATTEMPTS = 3;
/** The first line of a users file that `users add` creates. */
export const NEW_FILE_HEADER = '# brook-ts users file: NAME password=... [quota=10GiB] [expires=2027-01-31T00:00:00Z] [devices=N] [disabled] (protocol/users.md)';
/** Permission bits kept from the old file. */
const MODE_BITS = 0o7777;

function configError(msg: string): BrookError {
  return new BrookError(ErrorCodes.CONFIG, msg);
}

interface FileId {
  ino: number;
  mtimeMs: number;
  size: number;
  mode: number;
  uid: number;
  gid: number;
}

function fileId(path: string): FileId | null {
  try {
    const s = statSync(path);
    return { ino: s.ino, mtimeMs: s.mtimeMs, size: s.size, mode: s.mode & MODE_BITS, uid: s.uid, gid: s.gid };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}

const sameFile = (a: FileId | null, b: FileId | null): boolean =>
  a === b || (a !== null && b !== null && a.ino === b.ino && a.mtimeMs === b.mtimeMs && a.size === b.size);

export interface EditOptions {
  /** Injected by tests. */
  fs?: AtomicFs;
  /** Tests: called once the file is read, before it is replaced (another editor's chance to race). */
  afterRead?: (attempt: number) => void;
}

/**
 * Replace the users file with edit(text, entries): the new text must parse (and, with `full`, read as
 * the server reads it: password files, duplicate passwords). `create`: a missing file starts empty.
 */
function editUsersFile(
  file: string,
  o: EditOptions & { create: boolean; full: boolean },
  edit: (text: string, entries: UserEntry[]) => string,
): void {
  for (let attempt = 1; attempt <= MAX_EDIT_ATTEMPTS; attempt++) {
    const before = fileId(file);
    if (before === null && !o.create) readUsersText(file); // throws: no such file
    const text = before === null ? '' : readUsersText(file);
    const next = edit(text, parseUsers(text, file));
    if (o.full) usersFromText(next, file);
    else parseUsers(next, file);
    o.afterRead?.(attempt);
    if (!sameFile(before, fileId(file))) continue;
    writeFileAtomic(file, next, { mode: before?.mode ?? PRIVATE_FILE_MODE, ...(o.fs ? { fs: o.fs } : {}) });
    if (before !== null && process.getuid?.() === 0) chownSync(file, before.uid, before.gid);
    return;
  }
  throw new BrookError(ErrorCodes.USERS_FILE, `${file}: changed by someone else while it was being edited (${MAX_EDIT_ATTEMPTS} tries); try again`);
}

export interface AddUserOptions extends EditOptions {
  file: string;
  name: string;
  password?: string;
  /** Written as an absolute path (relative ones are taken from cwd). */
  passwordFile?: string;
  quota?: string;
  expires?: string;
  devices?: string | number;
  disabled?: boolean;
  /** Where a relative --passwordFile is (default process.cwd()). */
  cwd?: string;
}

/** The line `users add` writes, from its flags (checked: CONFIG on a bad one). */
export function userLineFromFlags(o: AddUserOptions): UserLine {
  const bad = checkName(o.name);
  if (bad) throw configError(bad);
  if (o.password !== undefined && o.passwordFile !== undefined) throw configError('--password and --passwordFile both given: use one of them');
  if (o.password === undefined && o.passwordFile === undefined) throw configError(`users add ${o.name}: --password or --passwordFile is required`);
  if (o.password === '') throw configError('--password is empty');
  const line: UserLine = { name: o.name };
  if (o.password !== undefined) line.password = o.password;
  if (o.passwordFile !== undefined) {
    line.passwordFile = resolve(o.cwd ?? process.cwd(), o.passwordFile);
    readPasswordFile(line.passwordFile); // a clear CONFIG error now rather than a USERS_FILE one below
  }
  if (o.quota !== undefined) {
    parseByteSize(o.quota);
    line.quota = o.quota;
  }
  if (o.expires !== undefined) {
    parseInstant(o.expires);
    line.expires = o.expires;
  }
  if (o.devices !== undefined) line.devices = parseDevices(String(o.devices));
  if (o.disabled) line.disabled = true;
  return line;
}

/** users add: one more line at the end of the file (made, mode 0600, when missing). */
export function addUser(o: AddUserOptions): void {
  const line = formatUserLine(userLineFromFlags(o));
  editUsersFile(o.file, { ...o, create: true, full: true }, (text, entries) => {
    if (entries.some((e) => e.name === o.name)) throw new BrookError(ErrorCodes.USER_EXISTS, `${o.file}: already has a user named ${o.name}`);
    return appendLine(text === '' ? `${NEW_FILE_HEADER}\n` : text, line);
  });
}

function findEntry(file: string, entries: readonly UserEntry[], name: string): UserEntry {
  const e = entries.find((u) => u.name === name);
  if (!e) throw new BrookError(ErrorCodes.USER_UNKNOWN, `${file}: no user named ${name}`);
  return e;
}

/** users remove: the user's line goes; the rest of the file is left as it is. */
export function removeUser(o: EditOptions & { file: string; name: string }): void {
  editUsersFile(o.file, { ...o, create: false, full: false }, (text, entries) => removeLine(text, findEntry(o.file, entries, o.name).line));
}

export type UserState = 'active' | 'disabled' | 'expired' | 'over quota';

/** A user's state at `now` with `used` bytes: disabled, then expired (at the instant), then over quota. */
export function userState(u: { disabled: boolean; expires?: number | null; quota?: number | null }, used: number, now: number): UserState {
  if (u.disabled) return 'disabled';
  if (u.expires != null && now >= u.expires) return 'expired';
  if (u.quota != null && used >= u.quota) return 'over quota';
  return 'active';
}

export interface UserRow {
  name: string;
  /** Bytes counted (the state file), up and down, TCP and UDP. */
  used: number;
  quota: number | null;
  quotaText: string | null;
  expires: number | null;
  devices: number | null;
  state: UserState;
}

/** users list: every user of the file in its order, with the counts of the state file (when given and present). */
export function listUsers(o: { file: string; stateFile?: string; now?: number }): UserRow[] {
  const entries = parseUsers(readUsersText(o.file), o.file);
  const counts = o.stateFile === undefined ? null : readStateFile(o.stateFile);
  const now = o.now ?? Date.now();
  return entries.map((e) => {
    const used = totalBytes(counts?.get(e.name) ?? emptyUsage());
    return {
      name: e.name,
      used,
      quota: e.quota ?? null,
      quotaText: e.quotaText ?? null,
      expires: e.expires ?? null,
      devices: e.devices ?? null,
      state: userState(e, used, now),
    };
  });
}

const LIST_HEADER = ['NAME', 'USED', 'QUOTA', 'EXPIRES', 'DEVICES', 'STATE'];
const NO_LIMIT = '-';

/** The rows as an aligned table, one user a line (for a terminal). */
export function formatUserList(rows: readonly UserRow[]): string {
  const cells = rows.map((r) => [
    r.name,
    formatBytes(r.used),
    r.quota === null ? NO_LIMIT : `${r.quotaText} (${formatBytes(r.quota)})`,
    r.expires === null ? NO_LIMIT : formatInstant(r.expires),
    r.devices === null ? NO_LIMIT : String(r.devices),
    r.state,
  ]);
  const all = [LIST_HEADER, ...cells];
  const widths = LIST_HEADER.map((_, c) => Math.max(...all.map((row) => row[c]!.length)));
  return all.map((row) => row.map((v, c) => (c === row.length - 1 ? v : v.padEnd(widths[c]!))).join('  ')).join('\n') + '\n';
}

/** users link: the user's brook:// link, the string `brook-ts link --server SERVER --password P` gives (plus `options`). */
export function userLink(o: { file: string; name: string; server: string; options?: LinkOptions }): string {
  const kind = linkKindForServer(o.server);
  const entry = findEntry(o.file, parseUsers(readUsersText(o.file), o.file), o.name);
  const password = entry.password ?? readPasswordFile(passwordFilePath(o.file, entry.passwordFile!), 'passwordFile=');
  return buildLink(kind, o.server, password, o.options ?? {});
}

/**
 * A link as a QR code for a terminal: two rows of modules a line in half-block characters (light
 * modules drawn, so it reads on a dark terminal as on a phone screen), with the quiet zone.
 */
export function linkQr(link: string): string {
  return encodeQR(link, 'ascii');
}
