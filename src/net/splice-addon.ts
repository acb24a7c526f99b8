/**
 * The native side of the zero-copy relay, seen from JS: the addon's splice relay
 * (native/src/splice_relay.c; the file comes from the one addon loader, src/native/addon.ts,
 * with its own check here: the AES self-test plays no part), the switch that turns splicing off, the pipe limits, the one
 * report callback that routes each report to its relay, and the errors the worker reports.
 * The relay itself and the hand-off: src/net/splice.ts.
 */
import { getSystemErrorName } from 'node:util';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { loadAddon, type AddonCheck, type AddonLoad, type AddonLoadOptions } from '../native/addon.js';
import { resetByPeer } from './reset.js';

/** Environment switch: BROOK_TS_SPLICE=0 relays every tunnel in JS. */
export const SPLICE_ENV = 'BROOK_TS_SPLICE';

/** Report kinds (mirror native/src/splice_internal.h). */
export const KIND_DONE = 0;
export const KIND_ABORT = 1;
export const KIND_CANCELLED = 2;
export const KIND_REFUSED = 3;

/** Pipe growth limits (mirror native/src/splice_internal.h). */
export const SPLICE_PIPE_GROW_MAX_DEFAULT = 1 << 20;
export const SPLICE_PIPE_GROW_BUDGET_DEFAULT = 64 * (1 << 20);
export const SPLICE_PIPE_GROW_MAX_LIMIT = 16 * (1 << 20);
export const SPLICE_PIPE_GROW_BUDGET_LIMIT = 2 ** 40;

/** Length of the spliceInfo array: bytes up, bytes down, ms idle, pipe capacity up, down. */
export const SPLICE_INFO_LENGTH = 5;

export interface SpliceAddon {
  spliceSupported: boolean;
  spliceInit(cb: (slot: number, kind: number, errno: number, up: number, down: number) => void): number;
  spliceStart(fdA: number, fdB: number): number;
  spliceCancel(slot: number): number;
  spliceInfo(slot: number, out: Float64Array): number;
  spliceLive(): number;
  spliceLimits?(growMax: number, growBudget: number): number;
}

/** What receives a relay's report (SpliceRelay). */
export interface ReportSink {
  onReport(kind: number, errno: number, up: number, down: number): void;
}

let enabled = process.env[SPLICE_ENV] !== '0';
let addonState: { addon: SpliceAddon | null; reason: string | null } | undefined;
/** Relays the worker owns, by slot. */
export const liveRelays = new Map<number, ReportSink>();

/** Turn splicing on or off for relays started from now on (tests, the benchmark's JS baseline). */
export function setSpliceEnabled(on: boolean): void {
  enabled = on;
}

export function spliceEnabled(): boolean {
  return enabled;
}

function onReport(slot: number, kind: number, errno: number, up: number, down: number): void {
  const r = liveRelays.get(slot);
  if (!r) return;
  liveRelays.delete(slot);
  r.onReport(kind, errno, up, down);
}

/** The splice feature's check of a loaded addon file: the relay is there and this platform has splice(2). */
const spliceCheck: AddonCheck<SpliceAddon> = (exports) => {
  const a = exports as Partial<SpliceAddon>;
  if (a.spliceSupported === true && typeof a.spliceInit === 'function') return { ok: true, value: a as SpliceAddon };
  return { ok: false, reason: a.spliceSupported === false ? 'splice(2) is not available on this platform' : 'the addon has no splice relay (rebuild it)' };
};

/** The file the splice relay would come from (default: the package's addon), without starting it. */
export function findSpliceAddon(opts: AddonLoadOptions = {}): AddonLoad<SpliceAddon> {
  return loadAddon(spliceCheck, opts);
}

export function loadSpliceAddon(): { addon: SpliceAddon | null; reason: string | null } {
  if (addonState) return addonState;
  const n = findSpliceAddon();
  if (n.value === null) {
    addonState = { addon: null, reason: n.loaded ? n.reason : `native addon not loaded: ${n.reason ?? 'unknown'}` };
    return addonState;
  }
  try {
    const st = n.value.spliceInit(onReport);
    addonState = st < 0 ? { addon: null, reason: `splice relay did not start: ${errnoName(st)}` } : { addon: n.value, reason: null };
  } catch (e) {
    addonState = { addon: null, reason: `cannot load the splice relay: ${e instanceof Error ? e.message : String(e)}` };
  }
  return addonState;
}

/** Whether relays can be spliced in this process (and why not). */
export function spliceAvailability(): { available: boolean; enabled: boolean; reason: string | null } {
  const s = loadSpliceAddon();
  return { available: s.addon !== null, enabled, reason: s.reason };
}

/** Relays the native worker owns right now (tests: none may be left). */
export function splicedRelays(): number {
  return liveRelays.size;
}

export interface SplicePipeLimits {
  /** Bytes a busy direction's pipe may grow to (0: pipes keep the kernel's default size). */
  growMaxBytes: number;
  /** Bytes of growth all pipes of the process may use together. */
  growBudgetBytes: number;
}

/**
 * Change the pipe growth of relays spliced from now on (defaults: SPLICE_PIPE_GROW_*_DEFAULT).
 * Throws a BrookError (CONFIG) for a value that is not a whole number in range, or when the
 * splice relay is not available.
 */
export function setSplicePipeLimits(l: SplicePipeLimits): void {
  const check = (name: string, v: number, max: number) => {
    if (!Number.isSafeInteger(v) || v < 0 || v > max) throw new BrookError(ErrorCodes.CONFIG, `splice pipe limits: ${name} must be a whole number from 0 to ${max}, got ${String(v)}`);
  };
  check('growMaxBytes', l.growMaxBytes, SPLICE_PIPE_GROW_MAX_LIMIT);
  check('growBudgetBytes', l.growBudgetBytes, SPLICE_PIPE_GROW_BUDGET_LIMIT);
  const { addon, reason } = loadSpliceAddon();
  if (!addon || typeof addon.spliceLimits !== 'function') throw new BrookError(ErrorCodes.CONFIG, `splice pipe limits: ${reason ?? 'the addon has no spliceLimits (rebuild it)'}`);
  const r = addon.spliceLimits(l.growMaxBytes, l.growBudgetBytes);
  if (r < 0) throw new BrookError(ErrorCodes.CONFIG, `splice pipe limits refused: ${errnoName(r)}`);
}

export function errnoName(negOrPos: number): string {
  const e = -Math.abs(negOrPos);
  try {
    return getSystemErrorName(e);
  } catch {
    return `errno ${-e}`;
  }
}

/** The error of a relay the worker aborted (errno from splice, shutdown or SO_ERROR). */
export function nativeError(errno: number): BrookError {
  const name = errnoName(errno);
  if (name === 'ECONNRESET' || name === 'EPIPE' || name === 'ENOTCONN') return resetByPeer(`spliced relay (${name})`);
  const e = Object.assign(new Error(`spliced relay: ${name}`), { code: name, errno: -Math.abs(errno) });
  return toBrookError(e);
}
