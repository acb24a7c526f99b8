/**
 * The users file (protocol/users.md#the-users-file): one user a line, `#` comments, blank lines.
 *
 *   # who                 how they log in                   limits
 *   alice   password=correct-horse-battery   quota=10GiB   expires=2027-01-31T00:00:00Z   devices=3
 *   bob     passwordFile=/etc/brook/bob.pass                             # relative: to this file's folder
 *   carol   password="two words"   disabled
 *
 *   line   = NAME *( WS ( KEY "=" VALUE | "disabled" ) ) [ WS "#" comment ]
 *   NAME   = [A-Za-z0-9_] [A-Za-z0-9_.@+-]{0,63}
 *   VALUE  = bare (no whitespace, no '"') | a JSON string ("...", with \" \\ \n \t \uXXXX escapes)
 *   KEY    = password | passwordFile (exactly one of the two) | quota | expires | devices
 *
 * A `#` starts a comment only where a token would start. A codec: text in, entries out, or one
 * UsersFileError (BROOK_ERR_USERS_FILE) listing every problem with its line. Duplicate passwords
 * are found once password files are read (resolveUsers in src/users/userset.ts).
 */
import { BrookError, ErrorCodes } from '../errors.js';
import { parseByteSize, parseDevices, parseInstant } from './units.js';

/** Larger users files are refused (about 100 bytes a user: room for well over MAX_USERS). */
export const MAX_USERS_FILE_BYTES = 16 * 1024 * 1024;
/** Most users one file may hold: bounds the key table, the try order and the metrics' label set. */
export const MAX_USERS = 100_000;
export const MAX_NAME_LENGTH = 64;
/** Problems kept in one UsersFileError (the message names the first and counts the rest). */
export const MAX_REPORTED_PROBLEMS = 50;
/** Lines named in the message after the first problem. */
const MESSAGE_MORE_LINES = 5;
export const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.@+-]*$/;
/** The one key without a value. */
export const DISABLED_FLAG = 'disabled';
export const USER_KEYS = ['password', 'passwordFile', 'quota', 'expires', 'devices'] as const;
export type UserKey = (typeof USER_KEYS)[number];

export type UsersProblemReason =
  | 'syntax'
  | 'name'
  | 'duplicate-name'
  | 'duplicate-password'
  | 'unknown-key'
  | 'duplicate-key'
  | 'password'
  | 'quota'
  | 'expires'
  | 'devices'
  | 'too-large';

export interface UsersProblem {
  /** 1-based; 0 for the file as a whole. */
  line: number;
  reason: UsersProblemReason;
  message: string;
}

/** Every problem of a users file; the message names the first with its line. */
export class UsersFileError extends BrookError {
  readonly problems: readonly UsersProblem[];

  constructor(source: string, problems: readonly UsersProblem[]) {
    const first = problems[0]!;
    const rest = problems.slice(1);
    const named = rest.slice(0, MESSAGE_MORE_LINES).map((p) => `line ${p.line}`);
    const more = rest.length === 0 ? '' : ` (and ${rest.length} more: ${named.join(', ')}${rest.length > named.length ? ', ...' : ''})`;
    super(ErrorCodes.USERS_FILE, `${source}: ${first.line > 0 ? `line ${first.line}: ` : ''}${first.message}${more}`);
    this.problems = problems;
  }
}

/** One user as written in the file (password files not read yet). */
export interface UserEntry {
  readonly name: string;
  /** 1-based line of the user in the file. */
  readonly line: number;
  readonly password?: string;
  readonly passwordFile?: string;
  /** Bytes, up and down together; absent: no quota. */
  readonly quota?: number;
  /** The quota as written (10GiB), for listings. */
  readonly quotaText?: string;
  /** Milliseconds since the epoch; absent: never expires. */
  readonly expires?: number;
  /** Most client IPs at once; absent: no limit. */
  readonly devices?: number;
  readonly disabled: boolean;
}

interface Token {
  key: string | null;
  /** The value (unquoted); for a token without "=", its text. */
  value: string;
}

class Problems {
  readonly list: UsersProblem[] = [];
  add(line: number, reason: UsersProblemReason, message: string): void {
    if (this.list.length < MAX_REPORTED_PROBLEMS) this.list.push({ line, reason, message });
  }
}

const isSpace = (c: string | undefined): boolean => c === ' ' || c === '\t';
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u0008\u000a-\u001f\u007f]/;

/** A quoted value starting at `open` (a '"'): [value, index after the closing quote]. Throws a message string. */
function readQuoted(line: string, open: number): [string, number] {
  let j = open + 1;
  while (j < line.length && line[j] !== '"') j += line[j] === '\\' ? 2 : 1;
  if (j >= line.length) throw 'unterminated quoted value (a closing " is missing)';
  let value: unknown;
  try {
    value = JSON.parse(line.slice(open, j + 1));
  } catch {
    throw 'bad escape in a quoted value (allowed: \\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX)';
  }
  if (j + 1 < line.length && !isSpace(line[j + 1])) throw 'text right after a closing quote (put a space before the next key)';
  return [value as string, j + 1];
}

/** The tokens of one line (comment dropped). Throws a message string on a syntax error. */
function tokenize(line: string): Token[] {
  if (CONTROL_RE.test(line)) throw 'control character in the line (quote it with an escape, e.g. "\\n")';
  const tokens: Token[] = [];
  let i = 0;
  for (;;) {
    while (isSpace(line[i])) i++;
    if (i >= line.length || line[i] === '#') return tokens;
    const start = i;
    while (i < line.length && !isSpace(line[i]) && line[i] !== '"') i++;
    const text = line.slice(start, i);
    const eq = text.indexOf('=');
    if (line[i] === '"') {
      if (eq < 0 || eq !== text.length - 1) throw `a quote may only open a value, right after key= (near ${JSON.stringify(text)})`;
      const [value, next] = readQuoted(line, i);
      tokens.push({ key: text.slice(0, eq), value });
      i = next;
    } else {
      tokens.push(eq < 0 ? { key: null, value: text } : { key: text.slice(0, eq), value: text.slice(eq + 1) });
    }
  }
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

/** One key=value into the entry; returns a problem or null. */
function applyKey(e: Mutable<UserEntry>, key: UserKey, value: string): [UsersProblemReason, string] | null {
  try {
    switch (key) {
      case 'password':
      case 'passwordFile':
        if (value === '') return ['password', `${key} is empty`];
        e[key] = value;
        return null;
      case 'quota':
        e.quota = parseByteSize(value);
        e.quotaText = value;
        return null;
      case 'expires':
        e.expires = parseInstant(value);
        return null;
      case 'devices':
        e.devices = parseDevices(value);
        return null;
    }
  } catch (err) {
    return [key === 'passwordFile' ? 'password' : key, (err as Error).message];
  }
}

/** Why a user name is refused, or null when it is fine. */
export function checkName(name: string): string | null {
  if (name.length > MAX_NAME_LENGTH) return `user name longer than ${MAX_NAME_LENGTH} characters`;
  if (!NAME_RE.test(name)) {
    return `bad user name ${JSON.stringify(name)}: letters, digits and _ . @ + - (not first: . @ + -), e.g. alice or bob@example.com`;
  }
  return null;
}

/** One user line into an entry; problems go to `p`. Returns null when the line has none. */
function parseLine(tokens: Token[], line: number, p: Problems): UserEntry | null {
  const head = tokens[0]!;
  const before = p.list.length;
  if (head.key !== null) {
    p.add(line, 'name', `a line starts with the user's name, then key=value pairs (got ${JSON.stringify(`${head.key}=...`)} first)`);
    return null;
  }
  const bad = checkName(head.value);
  if (bad) p.add(line, 'name', bad);
  const e: Mutable<UserEntry> = { name: head.value, line, disabled: false };
  const seen = new Set<string>();
  for (const t of tokens.slice(1)) {
    const key = t.key ?? t.value;
    if (seen.has(key)) {
      p.add(line, 'duplicate-key', `${key} given twice`);
      continue;
    }
    seen.add(key);
    if (key === DISABLED_FLAG) {
      if (t.key !== null) p.add(line, 'syntax', `${DISABLED_FLAG} takes no value: write it alone`);
      else e.disabled = true;
      continue;
    }
    if (!(USER_KEYS as readonly string[]).includes(key)) {
      p.add(line, 'unknown-key', `unknown key ${JSON.stringify(key)} (known: ${USER_KEYS.join(', ')}, ${DISABLED_FLAG})`);
      continue;
    }
    if (t.key === null) {
      p.add(line, 'syntax', `${key} needs a value: ${key}=...`);
      continue;
    }
    const problem = applyKey(e, key as UserKey, t.value);
    if (problem) p.add(line, problem[0], problem[1]);
  }
  if (seen.has('password') && seen.has('passwordFile')) p.add(line, 'password', 'both password and passwordFile: give one');
  else if (!seen.has('password') && !seen.has('passwordFile')) p.add(line, 'password', `user ${head.value} has no password= or passwordFile=`);
  return p.list.length === before ? e : null;
}

/** The lines of a text, without their line ends (\n or \r\n). */
export function splitLines(text: string): string[] {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  return lines.map((l) => (l.endsWith('\r') ? l.slice(0, -1) : l));
}

/** Parse a users file. `source` names it in messages (its path). Throws UsersFileError. */
export function parseUsers(text: string, source = 'users file'): UserEntry[] {
  const p = new Problems();
  if (Buffer.byteLength(text, 'utf8') > MAX_USERS_FILE_BYTES) {
    p.add(0, 'too-large', `larger than ${MAX_USERS_FILE_BYTES} bytes`);
    throw new UsersFileError(source, p.list);
  }
  const entries: UserEntry[] = [];
  const firstLine = new Map<string, number>();
  const lines = splitLines(text.startsWith('\ufeff') ? text.slice(1) : text);
  for (let n = 0; n < lines.length; n++) {
    const line = n + 1;
    let tokens: Token[];
    try {
      tokens = tokenize(lines[n]!);
    } catch (msg) {
      p.add(line, 'syntax', String(msg));
      continue;
    }
    if (tokens.length === 0) continue;
    const name = tokens[0]!.key === null ? tokens[0]!.value : null;
    if (name !== null) {
      const dup = firstLine.get(name);
      if (dup !== undefined) p.add(line, 'duplicate-name', `user ${name} is already on line ${dup}`);
      else firstLine.set(name, line);
    }
    const e = parseLine(tokens, line, p);
    if (e) entries.push(e);
    if (firstLine.size > MAX_USERS) {
      p.add(line, 'too-large', `more than ${MAX_USERS} users`);
      break;
    }
  }
  if (p.list.length > 0) throw new UsersFileError(source, p.list);
  return entries;
}
