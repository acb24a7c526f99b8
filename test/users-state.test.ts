/**
 * The accounting state file (src/users/state.ts, atomic.ts; protocol/users.md#the-state-file): the
 * format read back, every corrupt or cut-short file a BROOK_ERR_USERS_STATE (never an empty state),
 * a missing file a first start, saves that leave the old file whole when any step fails, the interval
 * and the last save, and counts of users no longer in the users file kept.
 */
import * as fs from 'node:fs';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BrookError, ErrorCodes } from '../src/errors.js';
import { type AtomicFs, writeFileAtomic } from '../src/users/atomic.js';
import { emptyUsage, encodeState, parseState, readStateFile, totalBytes, type Usage, UsageStore } from '../src/users/state.js';
import { brookCode } from './helpers/errors.js';

const T0 = Date.UTC(2026, 11, 1, 10, 0, 0);
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'brook-users-state-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function usage(tcpUp: number, tcpDown: number, udpUp = 0, udpDown = 0): Usage {
  return { tcpUp, tcpDown, udpUp, udpDown };
}

describe('state format', () => {
  it('encodes one user a line and reads back the same counts', () => {
    const m = new Map([
      ['alice', usage(1200, 98000)],
      ['bob', usage(0, 0, 512, 4096)],
    ]);
    const text = encodeState(m, T0);
    expect(text).toBe(
      '{"version":1,"saved":"2026-12-01T10:00:00Z","users":{\n' +
        '"alice":{"tcpUp":1200,"tcpDown":98000,"udpUp":0,"udpDown":0},\n' +
        '"bob":{"tcpUp":0,"tcpDown":0,"udpUp":512,"udpDown":4096}\n' +
        '}}\n',
    );
    expect(parseState(text)).toEqual(m);
    expect(parseState(encodeState(new Map(), T0))).toEqual(new Map());
    expect(totalBytes(usage(1, 2, 3, 4))).toBe(10);
  });

  it('counts up to 2^53 - 1 bytes survive', () => {
    const m = new Map([['big', usage(Number.MAX_SAFE_INTEGER, 0)]]);
    expect(parseState(encodeState(m, T0))).toEqual(m);
  });

  it('a file cut short at any byte is an error, never fewer users', () => {
    const text = encodeState(
      new Map([
        ['alice', usage(1, 2, 3, 4)],
        ['bob', usage(5, 6, 7, 8)],
      ]),
      T0,
    );
    const end = text.lastIndexOf('}') + 1; // the trailing line end may go
    for (let n = 0; n < end; n++) expect(brookCode(() => parseState(text.slice(0, n)))).toBe(ErrorCodes.USERS_STATE);
  });

  it.each<[string, string, RegExp]>([
    ['empty', '', /empty/],
    ['not JSON', 'hello', /not valid JSON/],
    ['an array', '[]', /expected a JSON object/],
    ['another version', '{"version":2,"users":{}}', /version 2 is not one/],
    ['no version', '{"users":{}}', /version undefined/],
    ['no users', '{"version":1}', /no "users"/],
    ['a negative count', '{"version":1,"users":{"a":{"tcpUp":-1,"tcpDown":0,"udpUp":0,"udpDown":0}}}', /tcpUp must be a whole number/],
    ['a fraction', '{"version":1,"users":{"a":{"tcpUp":1.5,"tcpDown":0,"udpUp":0,"udpDown":0}}}', /tcpUp/],
    ['a string count', '{"version":1,"users":{"a":{"tcpUp":"1","tcpDown":0,"udpUp":0,"udpDown":0}}}', /tcpUp/],
    ['a missing count', '{"version":1,"users":{"a":{"tcpUp":1,"tcpDown":0,"udpUp":0}}}', /udpDown/],
    ['an unknown count', '{"version":1,"users":{"a":{"tcpUp":1,"tcpDown":0,"udpUp":0,"udpDown":0,"x":1}}}', /unknown count "x"/],
    ['a bad name', '{"version":1,"users":{"a b":{"tcpUp":1,"tcpDown":0,"udpUp":0,"udpDown":0}}}', /bad user name/],
    ['a user that is not an object', '{"version":1,"users":{"a":5}}', /expected an object/],
  ])('refuses %s', (_what, text, why) => {
    expect(() => parseState(text, 'state.json')).toThrow(why);
    expect(brookCode(() => parseState(text))).toBe(ErrorCodes.USERS_STATE);
  });
});

describe('readStateFile', () => {
  it('missing: null (a first start); a folder or an unreadable file: USERS_STATE', () => {
    expect(readStateFile(join(dir, 'none.json'))).toBeNull();
    expect(brookCode(() => readStateFile(dir))).toBe(ErrorCodes.USERS_STATE);
    const p = join(dir, 'bad.json');
    writeFileSync(p, '{"version":1,"users":{');
    expect(() => readStateFile(p)).toThrow(new RegExp(`^${p}: not valid JSON`));
  });
});

/** node:fs with one call made to fail (as a full disk or a crash would). */
function failing(call: keyof AtomicFs, code = 'ENOSPC'): AtomicFs & typeof fs & { calls: string[] } {
  const calls: string[] = [];
  return new Proxy(fs as typeof fs & { calls: string[] }, {
    get(target, prop: string) {
      if (prop === 'calls') return calls;
      const real = (target as unknown as Record<string, unknown>)[prop];
      if (typeof real !== 'function') return real;
      return (...args: unknown[]) => {
        calls.push(prop);
        if (prop === call) throw Object.assign(new Error(`${prop} failed`), { code });
        return (real as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

describe('UsageStore', () => {
  it('a first start, counts kept live, saved and read back by a new store; mode 0600', () => {
    const path = join(dir, 'state.json');
    const a = new UsageStore({ path, now: () => T0 });
    expect(a.load()).toEqual({ fresh: true, users: 0 });
    const u = a.usage('alice');
    u.tcpUp += 100;
    u.tcpDown += 2000;
    a.usage('bob').udpDown += 7;
    expect(a.usage('alice')).toBe(u);
    expect(a.peek('carol')).toBeUndefined();
    a.save();
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const b = new UsageStore({ path });
    expect(b.load()).toEqual({ fresh: false, users: 2 });
    expect(b.usage('alice')).toEqual(usage(100, 2000));
    expect(b.usage('bob')).toEqual(usage(0, 0, 0, 7));
    expect(readdirSync(dir)).toEqual(['state.json']); // no temporary left
  });

  it('a corrupt file is an error at load, and the store stays empty rather than half read', () => {
    const path = join(dir, 'state.json');
    writeFileSync(path, '{"version":1,"users":{"a":{"tcpUp":1,"tcpDown":0,"udpUp":0,"udpDown":0},');
    const s = new UsageStore({ path });
    expect(brookCode(() => s.load())).toBe(ErrorCodes.USERS_STATE);
    expect(s.peek('a')).toBeUndefined();
  });

  it.each<keyof AtomicFs>(['openSync', 'writeSync', 'fsyncSync', 'renameSync'])('a failing %s leaves the old file whole and no temporary', (call) => {
    const path = join(dir, 'state.json');
    const good = new UsageStore({ path, now: () => T0 });
    good.load();
    good.usage('alice').tcpUp = 1;
    good.save();
    const before = readFileSync(path, 'utf8');
    const f = failing(call);
    const s = new UsageStore({ path, fs: f, now: () => T0 + 1000 });
    s.load();
    s.usage('alice').tcpUp = 999;
    expect(() => s.save()).toThrow(new RegExp(`^${path}: cannot write: ENOSPC`));
    expect(brookCode(() => s.save())).toBe(ErrorCodes.USERS_STATE);
    expect(readFileSync(path, 'utf8')).toBe(before);
    expect(readdirSync(dir)).toEqual(['state.json']);
  });

  it('writes through a temporary in the same folder, fsynced before the rename', () => {
    const path = join(dir, 'state.json');
    const f = failing('unlinkSync');
    writeFileAtomic(path, 'x', { fs: f });
    const order = f.calls.filter((c) => ['openSync', 'writeSync', 'fsyncSync', 'closeSync', 'renameSync'].includes(c));
    expect(order.slice(0, 5)).toEqual(['openSync', 'writeSync', 'fsyncSync', 'closeSync', 'renameSync']);
    expect(readFileSync(path, 'utf8')).toBe('x');
  });

  it('saves at the interval (a failure reported and retried next time), and once more on close', () => {
    const path = join(dir, 'state.json');
    let tick: (() => void) | null = null;
    let cleared = 0;
    const errors: BrookError[] = [];
    let now = T0;
    const s = new UsageStore({
      path,
      now: () => now,
      setInterval: (fn, ms) => {
        expect(ms).toBe(5000);
        tick = fn;
        return 1;
      },
      clearInterval: () => cleared++,
    });
    s.load();
    s.startAutosave(5000, (e) => errors.push(e));
    s.usage('a').tcpUp = 5;
    tick!();
    expect(parseState(readFileSync(path, 'utf8')).get('a')).toEqual(usage(5, 0));
    rmSync(dir, { recursive: true }); // the folder is gone: the next save fails
    tick!();
    expect(errors.map((e) => e.code)).toEqual([ErrorCodes.USERS_STATE]);
    fs.mkdirSync(dir);
    s.usage('a').tcpUp = 6;
    now += 60_000;
    s.close();
    expect(cleared).toBe(1);
    const text = readFileSync(path, 'utf8');
    expect(text).toContain('"saved":"2026-12-01T10:01:00Z"');
    expect(parseState(text).get('a')).toEqual(usage(6, 0));
  });

  it('keeps the counts of users that are no longer in the users file', () => {
    const path = join(dir, 'state.json');
    writeFileSync(path, encodeState(new Map([['removed', usage(10, 20)]]), T0));
    const s = new UsageStore({ path });
    s.load();
    s.usage('current').tcpUp = 1;
    s.save();
    const back = parseState(readFileSync(path, 'utf8'));
    expect([...back.keys()]).toEqual(['removed', 'current']);
    expect(back.get('removed')).toEqual(usage(10, 20));
    expect(emptyUsage()).toEqual(usage(0, 0));
  });
});
