/**
 * The value syntaxes of the users file and of the `users` command (protocol/users.md#values):
 *
 *   quota    NUMBER UNIT?   10GiB, 1.5TB, 500MB, 1048576   (no unit: bytes)
 *            UNIT           B | kB KB MB GB TB PB (powers of 1000) | KiB MiB GiB TiB PiB (powers of 1024),
 *                           case-insensitive; a bare K, M, G, T, P is refused (1000 or 1024?).
 *   expires  YYYY-MM-DDTHH:MM[:SS[.fraction]](Z | +HH:MM | -HH:MM)   RFC 3339 (ISO 8601 with a zone)
 *   devices  a whole number 1..MAX_DEVICES
 *
 * Pure: each parser returns the value or throws BrookError CONFIG with a one-line reason; the users
 * file's parser puts the line number in front (src/users/file.ts).
 */
import { BrookError, ErrorCodes } from '../errors.js';

/** Multipliers of the byte units; keys lower-case (units are matched case-insensitively). */
const BYTE_UNITS: ReadonlyMap<string, number> = new Map([
  ['b', 1],
  ['kb', 1e3],
  ['mb', 1e6],
  ['gb', 1e9],
  ['tb', 1e12],
  ['pb', 1e15],
  ['kib', 2 ** 10],
  ['mib', 2 ** 20],
  ['gib', 2 ** 30],
  ['tib', 2 ** 40],
  ['pib', 2 ** 50],
]);
/** IEC units for display, largest first. */
const IEC_DISPLAY: ReadonlyArray<readonly [string, number]> = [
  ['PiB', 2 ** 50],
  ['TiB', 2 ** 40],
  ['GiB', 2 ** 30],
  ['MiB', 2 ** 20],
  ['KiB', 2 ** 10],
];
/** Decimals shown by formatBytes. */
const DISPLAY_DECIMALS = 2;
/** Largest quota: the largest integer a JS number holds exactly (8 PiB). */
export const MAX_QUOTA_BYTES = Number.MAX_SAFE_INTEGER;
/** Largest device limit (concurrent client IPs of one user). */
export const MAX_DEVICES = 65535;

const SIZE_RE = /^(\d+(?:\.\d+)?)\s*([A-Za-z]*)$/;
const INSTANT_RE = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2})(?::(\d{2})(\.\d{1,9})?)?([Zz]|[+-]\d{2}:\d{2})$/;
const DATE_ONLY_RE = /^\d{4}-\d{2}-\d{2}$/;
const DEVICES_RE = /^\d{1,6}$/;
const MS_PER_MINUTE = 60_000;
const MINUTES_PER_HOUR = 60;
const MAX_HOUR = 23;
const MAX_MINUTE = 59;
const MAX_SECOND = 59;
const MAX_OFFSET_HOURS = 23;
/** Earliest year of an expiry (Date.UTC maps years 0..99 to 1900..1999; an expiry before the epoch means nothing). */
const MIN_YEAR = 1970;

function bad(msg: string): BrookError {
  return new BrookError(ErrorCodes.CONFIG, msg);
}

/** A byte size with an optional unit (see above), as a whole number of bytes (fractions round down); > 0. */
export function parseByteSize(text: string): number {
  const m = SIZE_RE.exec(text.trim());
  if (!m) throw bad(`quota ${JSON.stringify(text)}: expected a number and a unit, e.g. 10GiB or 500MB`);
  const unit = m[2]!.toLowerCase();
  const mult = unit === '' ? 1 : BYTE_UNITS.get(unit);
  if (mult === undefined) {
    const hint = /^[kmgtp]$/.test(unit) ? `: write ${m[1]}${m[2]!.toUpperCase()}B (powers of 1000) or ${m[1]}${m[2]!.toUpperCase()}iB (powers of 1024)` : '';
    throw bad(`quota ${JSON.stringify(text)}: unknown unit ${JSON.stringify(m[2])}${hint || ' (units: B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB)'}`);
  }
  const bytes = Math.floor(Number(m[1]) * mult);
  if (!(bytes >= 1)) throw bad(`quota ${JSON.stringify(text)}: must be at least 1 byte (leave the quota out for no limit)`);
  if (bytes > MAX_QUOTA_BYTES) throw bad(`quota ${JSON.stringify(text)}: larger than ${MAX_QUOTA_BYTES} bytes`);
  return bytes;
}

/** Bytes for people: IEC units with up to two decimals ("10 GiB", "1.5 MiB", "512 B"). */
export function formatBytes(n: number): string {
  for (const [unit, size] of IEC_DISPLAY) {
    if (n >= size) return `${Number((n / size).toFixed(DISPLAY_DECIMALS))} ${unit}`;
  }
  return `${n} B`;
}

function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/** An RFC 3339 instant with its zone (see above), as milliseconds since the epoch. */
export function parseInstant(text: string): number {
  const what = `expiry ${JSON.stringify(text)}`;
  if (DATE_ONLY_RE.test(text)) throw bad(`${what}: a date alone has no zone; write e.g. ${text}T00:00:00Z`);
  const m = INSTANT_RE.exec(text);
  if (!m) throw bad(`${what}: expected an ISO 8601 instant with a zone, e.g. 2027-01-31T00:00:00Z or 2027-01-31T08:00:00+08:00`);
  const [year, month, day, hour, minute] = [m[1], m[2], m[3], m[4], m[5]].map(Number) as [number, number, number, number, number];
  const second = m[6] === undefined ? 0 : Number(m[6]);
  if (year < MIN_YEAR) throw bad(`${what}: the year must be ${MIN_YEAR} or later`);
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) throw bad(`${what}: no such date`);
  if (hour > MAX_HOUR || minute > MAX_MINUTE || second > MAX_SECOND) throw bad(`${what}: no such time of day`);
  let offsetMinutes = 0;
  const zone = m[8]!;
  if (zone !== 'Z' && zone !== 'z') {
    const oh = Number(zone.slice(1, 3));
    const om = Number(zone.slice(4, 6));
    if (oh > MAX_OFFSET_HOURS || om > MAX_MINUTE) throw bad(`${what}: no such zone offset`);
    offsetMinutes = (zone[0] === '-' ? -1 : 1) * (oh * MINUTES_PER_HOUR + om);
  }
  const fraction = m[7] === undefined ? 0 : Math.floor(Number(m[7]) * 1000);
  return Date.UTC(year, month - 1, day, hour, minute, second, fraction) - offsetMinutes * MS_PER_MINUTE;
}

/** An instant as RFC 3339 in UTC, without milliseconds when they are zero. */
export function formatInstant(ms: number): string {
  const iso = new Date(ms).toISOString();
  return iso.endsWith('.000Z') ? `${iso.slice(0, -5)}Z` : iso;
}

/** A device limit: a whole number 1..MAX_DEVICES. */
export function parseDevices(text: string): number {
  const n = DEVICES_RE.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= MAX_DEVICES)) {
    throw bad(`devices ${JSON.stringify(text)}: expected a whole number from 1 to ${MAX_DEVICES} (leave it out for no limit)`);
  }
  return n;
}
