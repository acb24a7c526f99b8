/**
 * The accounting state file (protocol/users.md#the-state-file): bytes relayed per user, both directions,
 * TCP and UDP, kept across restarts. JSON, one user a line (readable, diffable), written whole and atomically:
 *
 *   {"version":1,"saved":"2026-12-01T10:00:00Z","users":{
 *   "alice":{"tcpUp":1200,"tcpDown":98000,"udpUp":0,"udpDown":0},
 *   "bob":{"tcpUp":0,"tcpDown":0,"udpUp":512,"udpDown":4096}
 *   }}
 *
 * A missing file is a first start (load() says so: the caller logs it); anything else that cannot be read
 * or does not check out is BROOK_ERR_USERS_STATE, never an empty state. Counts of a name that is no longer
 * in the users file are kept (a user removed and added again keeps its usage). One writer: the server
 * (with --workers, its primary); `users list` only reads.
 */
import * as nodeFs from 'node:fs';
import { BrookError, ErrorCodes } from '../errors.js';
import { type AtomicFs, writeFileAtomic } from './atomic.js';
import { MAX_NAME_LENGTH, NAME_RE } from './file.js';
import { formatInstant } from './units.js';

export const STATE_VERSION = 1;
/** Larger state files are refused (about 80 bytes a user). */
export const MAX_STATE_FILE_BYTES = 64 * 1024 * 1024;
/** Default interval of the store's saves. */
export const DEFAULT_SAVE_INTERVAL_MS = 60_000;

export const USAGE_FIELDS = ['tcpUp', 'tcpDown', 'udpUp', 'udpDown'] as const;
export type UsageField = (typeof USAGE_FIELDS)[number];
/** Payload bytes: up = client to destination, down = destination to client. */
export type Usage = Record<UsageField, number>;

export function emptyUsage(): Usage {
  return { tcpUp: 0, tcpDown: 0, udpUp: 0, udpDown: 0 };
}

/** What a quota is compared with: every direction and network together. */
export function totalBytes(u: Usage): number {
  return u.tcpUp + u.tcpDown + u.udpUp + u.udpDown;
}

function stateError(source: string, why: string, cause?: unknown): BrookError {
  return new BrookError(ErrorCodes.USERS_STATE, `${source}: ${why}`, cause === undefined ? undefined : { cause });
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function parseUsage(source: string, name: string, v: unknown): Usage {
  if (!isObject(v)) throw stateError(source, `user ${JSON.stringify(name)}: expected an object of byte counts`);
  const u = emptyUsage();
  for (const k of Object.keys(v)) {
    if (!(USAGE_FIELDS as readonly string[]).includes(k)) throw stateError(source, `user ${JSON.stringify(name)}: unknown count ${JSON.stringify(k)}`);
  }
  for (const f of USAGE_FIELDS) {
    const n = v[f];
    if (!Number.isSafeInteger(n) || (n as number) < 0) {
      throw stateError(source, `user ${JSON.stringify(name)}: ${f} must be a whole number of bytes >= 0, got ${JSON.stringify(n)}`);
    }
    u[f] = n as number;
  }
  return u;
}

/** The state file's text to counts per user name. Throws USERS_STATE. */
export function parseState(text: string, source = 'state file'): Map<string, Usage> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    const why = text.trim() === '' ? 'empty' : `not valid JSON (cut short or edited?): ${(e as Error).message}`;
    throw stateError(source, why, e);
  }
  if (!isObject(doc)) throw stateError(source, 'expected a JSON object');
  if (doc['version'] !== STATE_VERSION) {
    throw stateError(source, `version ${JSON.stringify(doc['version'])} is not one this brook-ts reads (${STATE_VERSION})`);
  }
  const users = doc['users'];
  if (!isObject(users)) throw stateError(source, 'no "users" object');
  const out = new Map<string, Usage>();
  for (const [name, v] of Object.entries(users)) {
    if (name.length > MAX_NAME_LENGTH || !NAME_RE.test(name)) throw stateError(source, `bad user name ${JSON.stringify(name)}`);
    out.set(name, parseUsage(source, name, v));
  }
  return out;
}

/** Counts per user to the state file's text (names in the map's order). */
export function encodeState(users: ReadonlyMap<string, Usage>, savedAt: number): string {
  const lines: string[] = [];
  for (const [name, u] of users) {
    lines.push(`${JSON.stringify(name)}:{${USAGE_FIELDS.map((f) => `"${f}":${u[f]}`).join(',')}}`);
  }
  const head = `{"version":${STATE_VERSION},"saved":${JSON.stringify(formatInstant(savedAt))},"users":{`;
  return lines.length === 0 ? `${head}}}\n` : `${head}\n${lines.join(',\n')}\n}}\n`;
}

/** Read a state file: its counts, or null when it does not exist. Throws USERS_STATE. */
export function readStateFile(path: string, fs: Pick<typeof nodeFs, 'readFileSync'> = nodeFs): Map<string, Usage> | null {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    throw stateError(path, `cannot read: ${code ?? (e as Error).message}`, e);
  }
  if (buf.length > MAX_STATE_FILE_BYTES) throw stateError(path, `larger than ${MAX_STATE_FILE_BYTES} bytes`);
  return parseState(buf.toString('utf8'), path);
}

export interface UsageStoreOptions {
  path: string;
  /** Milliseconds; default Date.now (the "saved" field). */
  now?: () => number;
  fs?: AtomicFs & Pick<typeof nodeFs, 'readFileSync'>;
  setInterval?: (fn: () => void, ms: number) => unknown;
  clearInterval?: (t: unknown) => void;
}

/**
 * The counts in memory and their file. The relay holds a user's Usage object (usage(name)) and adds to
 * its fields; save() writes them all. load() before anything else.
 */
export class UsageStore {
  readonly path: string;
  private readonly users = new Map<string, Usage>();
  private readonly now: () => number;
  private readonly fs: AtomicFs & Pick<typeof nodeFs, 'readFileSync'>;
  private readonly setTimer: (fn: () => void, ms: number) => unknown;
  private readonly clearTimer: (t: unknown) => void;
  private timer: unknown = null;

  constructor(o: UsageStoreOptions) {
    this.path = o.path;
    this.now = o.now ?? Date.now;
    this.fs = o.fs ?? (nodeFs as unknown as AtomicFs & Pick<typeof nodeFs, 'readFileSync'>);
    this.setTimer = o.setInterval ?? ((fn, ms) => setInterval(fn, ms).unref());
    this.clearTimer = o.clearInterval ?? ((t) => clearInterval(t as NodeJS.Timeout));
  }

  /** Read the file. fresh: there was none (a first start). Throws USERS_STATE (the store is left empty). */
  load(): { fresh: boolean; users: number } {
    const read = readStateFile(this.path, this.fs);
    this.users.clear();
    for (const [name, u] of read ?? []) this.users.set(name, u);
    return { fresh: read === null, users: this.users.size };
  }

  /** The live counts of a user (made at zero the first time). */
  usage(name: string): Usage {
    let u = this.users.get(name);
    if (!u) {
      u = emptyUsage();
      this.users.set(name, u);
    }
    return u;
  }

  /** The counts of a user, without making an entry. */
  peek(name: string): Usage | undefined {
    return this.users.get(name);
  }

  /** Write every count now (atomically). Throws USERS_STATE; the old file is then untouched. */
  save(): void {
    try {
      writeFileAtomic(this.path, encodeState(this.users, this.now()), { fs: this.fs });
    } catch (e) {
      throw stateError(this.path, `cannot write: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, e);
    }
  }

  /** save() every intervalMs; a failed save goes to onError (the next interval tries again). */
  startAutosave(intervalMs: number = DEFAULT_SAVE_INTERVAL_MS, onError: (e: BrookError) => void = () => {}): void {
    this.stopAutosave();
    this.timer = this.setTimer(() => {
      try {
        this.save();
      } catch (e) {
        onError(e as BrookError);
      }
    }, intervalMs);
  }

  stopAutosave(): void {
    if (this.timer !== null) this.clearTimer(this.timer);
    this.timer = null;
  }

  /** Stop the interval and save a last time (shutdown, SIGTERM). Throws USERS_STATE. */
  close(): void {
    this.stopAutosave();
    this.save();
  }
}
