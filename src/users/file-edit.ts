/**
 * Writing the users file (protocol/users.md#the-users-file): a user as one line, and line edits that
 * leave every other byte of the file as the operator wrote it (comments, order, spacing, line ends).
 * Pure: text in, text out; src/users/command.ts reads and replaces the file.
 */
import { DISABLED_FLAG } from './file.js';

/** What `users add` writes for a user. */
export interface UserLine {
  name: string;
  password?: string;
  passwordFile?: string;
  /** As the operator gave it (10GiB); written as is, after the caller checked it. */
  quota?: string;
  /** As the operator gave it (RFC 3339), after the caller checked it. */
  expires?: string;
  devices?: number;
  disabled?: boolean;
}

// eslint-disable-next-line no-control-regex
const NEEDS_QUOTES_RE = /[\s"\u0000-\u001f\u007f]/u;

/** A value as the parser reads it back: bare when it can be, else a JSON string. */
export function formatValue(v: string): string {
  return v === '' || NEEDS_QUOTES_RE.test(v) ? JSON.stringify(v) : v;
}

/** One user line (no line end). */
export function formatUserLine(u: UserLine): string {
  const parts = [u.name];
  if (u.password !== undefined) parts.push(`password=${formatValue(u.password)}`);
  if (u.passwordFile !== undefined) parts.push(`passwordFile=${formatValue(u.passwordFile)}`);
  if (u.quota !== undefined) parts.push(`quota=${formatValue(u.quota)}`);
  if (u.expires !== undefined) parts.push(`expires=${formatValue(u.expires)}`);
  if (u.devices !== undefined) parts.push(`devices=${u.devices}`);
  if (u.disabled) parts.push(DISABLED_FLAG);
  return parts.join(' ');
}

/** The line end the text uses ("\r\n" when its first line end is one, else "\n"). */
function lineEnd(text: string): string {
  const i = text.indexOf('\n');
  return i > 0 && text[i - 1] === '\r' ? '\r\n' : '\n';
}

/** `line` added as the file's last line (a missing final line end is added first). */
export function appendLine(text: string, line: string): string {
  const eol = lineEnd(text);
  const sep = text === '' || text.endsWith('\n') ? '' : eol;
  return `${text}${sep}${line}${eol}`;
}

/** The text without its line `lineNumber` (1-based); other bytes unchanged. */
export function removeLine(text: string, lineNumber: number): string {
  let start = 0;
  for (let n = 1; n < lineNumber; n++) {
    const next = text.indexOf('\n', start);
    if (next < 0) throw new RangeError(`removeLine: no line ${lineNumber}`);
    start = next + 1;
  }
  const end = text.indexOf('\n', start);
  if (start >= text.length) throw new RangeError(`removeLine: no line ${lineNumber}`);
  return end < 0 ? text.slice(0, start) : text.slice(0, start) + text.slice(end + 1);
}
