/**
 * The users file codec (src/users/file.ts, file-edit.ts, units.ts, userset.ts; protocol/users.md):
 * what parses, every refusal with its reason, line and BROOK_ERR_USERS_FILE code, the value syntaxes
 * (units, instants), the line writer read back, line edits that keep the operator's bytes, duplicate
 * passwords across password files, and the reload diff.
 */
import { describe, expect, it } from 'vitest';
import { BrookError, ErrorCodes } from '../src/errors.js';
import { appendLine, formatUserLine, formatValue, removeLine } from '../src/users/file-edit.js';
import { MAX_USERS, parseUsers, UsersFileError, type UsersProblemReason } from '../src/users/file.js';
import { formatBytes, formatInstant, MAX_DEVICES, parseByteSize, parseDevices, parseInstant } from '../src/users/units.js';
import { diffUsers, indexMap, passwordHash, resolveUsers, type User, withExtraUser } from '../src/users/userset.js';

const EXAMPLE = [
  '# brook-ts users',
  '',
  'alice   password=correct-horse   quota=10GiB   expires=2027-01-31T00:00:00Z   devices=3',
  'bob     passwordFile=bob.pass    # his own file',
  '\tcarol password="two words \\"quoted\\"" disabled',
  'dave password=p#not-a-comment quota=1.5GB expires=2027-01-31T08:00:00+08:00',
  '   # indented comment',
].join('\n');

function problemsOf(text: string): { line: number; reason: UsersProblemReason }[] {
  try {
    parseUsers(text, 'users.txt');
  } catch (e) {
    expect(e).toBeInstanceOf(UsersFileError);
    expect((e as BrookError).code).toBe(ErrorCodes.USERS_FILE);
    return (e as UsersFileError).problems.map((p) => ({ line: p.line, reason: p.reason }));
  }
  throw new Error('parsed');
}

function refusal(text: string): UsersFileError {
  try {
    parseUsers(text, 'users.txt');
  } catch (e) {
    return e as UsersFileError;
  }
  throw new Error('parsed');
}

describe('parseUsers', () => {
  it('reads the documented example: names, lines, values, comments, quotes', () => {
    const users = parseUsers(EXAMPLE);
    expect(users.map((u) => [u.name, u.line])).toEqual([
      ['alice', 3],
      ['bob', 4],
      ['carol', 5],
      ['dave', 6],
    ]);
    expect(users[0]).toMatchObject({ password: 'correct-horse', quota: 10 * 2 ** 30, quotaText: '10GiB', devices: 3, disabled: false });
    expect(users[0]!.expires).toBe(Date.UTC(2027, 0, 31));
    expect(users[1]).toMatchObject({ passwordFile: 'bob.pass', disabled: false });
    expect(users[1]!.quota).toBeUndefined();
    expect(users[2]).toMatchObject({ password: 'two words "quoted"', disabled: true });
    expect(users[3]).toMatchObject({ password: 'p#not-a-comment', quota: 1.5e9 });
    expect(users[3]!.expires).toBe(Date.UTC(2027, 0, 31)); // 08:00 at +08:00
  });

  it('takes CRLF line ends, a BOM, a file without a final line end, an empty file', () => {
    expect(parseUsers('\ufeffa password=x\r\nb password=y').map((u) => [u.name, u.password, u.line])).toEqual([
      ['a', 'x', 1],
      ['b', 'y', 2],
    ]);
    expect(parseUsers('')).toEqual([]);
    expect(parseUsers('# only comments\n\n')).toEqual([]);
  });

  it('a bare value may hold = and non-ASCII; a quoted one any escape', () => {
    const [u] = parseUsers('u password=a=b=密码');
    expect(u!.password).toBe('a=b=密码');
    const [q] = parseUsers('q password="tab\\there\\u00e9\\\\"');
    expect(q!.password).toBe('tab\there\u00e9\\');
  });

  it.each<[string, string, UsersProblemReason]>([
    ['empty value', 'a password=', 'password'],
    ['no password', 'a quota=1GB', 'password'],
    ['both password and passwordFile', 'a password=x passwordFile=f', 'password'],
    ['empty passwordFile', 'a passwordFile=', 'password'],
    ['unknown key (a typo)', 'a password=x qouta=1GB', 'unknown-key'],
    ['unknown flag', 'a password=x enabled', 'unknown-key'],
    ['key twice', 'a password=x quota=1GB quota=2GB', 'duplicate-key'],
    ['disabled with a value', 'a password=x disabled=true', 'syntax'],
    ['a key without =', 'a password=x quota', 'syntax'],
    ['line starting with key=value (empty name)', 'password=x', 'name'],
    ['bad name characters', 'al/ice password=x', 'name'],
    ['name starting with -', '-a password=x', 'name'],
    ['name too long', `${'n'.repeat(65)} password=x`, 'name'],
    ['bad unit', 'a password=x quota=10G', 'quota'],
    ['unknown unit', 'a password=x quota=10XB', 'quota'],
    ['zero quota', 'a password=x quota=0', 'quota'],
    ['negative quota', 'a password=x quota=-1GB', 'quota'],
    ['date without a zone', 'a password=x expires=2027-01-31T00:00:00', 'expires'],
    ['date alone', 'a password=x expires=2027-01-31', 'expires'],
    ['no such day', 'a password=x expires=2027-02-29T00:00:00Z', 'expires'],
    ['no such hour', 'a password=x expires=2027-01-31T24:00:00Z', 'expires'],
    ['no such zone', 'a password=x expires=2027-01-31T00:00:00+24:00', 'expires'],
    ['year before 1970', 'a password=x expires=0099-01-31T00:00:00Z', 'expires'],
    ['zero devices', 'a password=x devices=0', 'devices'],
    ['fractional devices', 'a password=x devices=1.5', 'devices'],
    ['too many devices', `a password=x devices=${MAX_DEVICES + 1}`, 'devices'],
    ['unterminated quote', 'a password="abc', 'syntax'],
    ['bad escape', 'a password="\\q"', 'syntax'],
    ['text after a closing quote', 'a password="abc"def', 'syntax'],
    ['a quote inside a bare value', 'a password=ab"c"', 'syntax'],
    ['a quoted name', '"a" password=x', 'syntax'],
    ['a control character', 'a password=x\u0001', 'syntax'],
  ])('refuses %s', (_what, line, reason) => {
    expect(problemsOf(`# header\n${line}\n`)).toEqual([{ line: 2, reason }]);
  });

  it('names every problem with its line; the message starts with the source and the first line', () => {
    const e = refusal('a password=x\nb password=y qouta=1\n\nc\nd password=z devices=0\n');
    expect(e.problems.map((p) => [p.line, p.reason])).toEqual([
      [2, 'unknown-key'],
      [4, 'password'],
      [5, 'devices'],
    ]);
    expect(e.message).toMatch(/^users\.txt: line 2: unknown key "qouta" .* \(and 2 more: line 4, line 5\)$/);
  });

  it('refuses duplicate names, naming the first line', () => {
    const e = refusal('alice password=a\nbob password=b\nalice password=c\n');
    expect(e.problems).toEqual([{ line: 3, reason: 'duplicate-name', message: 'user alice is already on line 1' }]);
  });

  it('refuses more than MAX_USERS users', () => {
    const text = Array.from({ length: MAX_USERS + 1 }, (_, i) => `u${i} password=p${i}`).join('\n');
    expect(problemsOf(text)).toEqual([{ line: MAX_USERS + 1, reason: 'too-large' }]);
  });

  it('never puts a password in a message', () => {
    const e = refusal('alice password=s3cret-value quota=1Q\n');
    expect(e.message).not.toContain('s3cret-value');
  });
});

describe('values', () => {
  it.each<[string, number]>([
    ['1', 1],
    ['1048576', 1048576],
    ['500MB', 500e6],
    ['500mb', 500e6],
    ['10GiB', 10 * 2 ** 30],
    ['10gib', 10 * 2 ** 30],
    ['1.5TB', 1.5e12],
    ['2KiB', 2048],
    ['1kB', 1000],
    ['1PiB', 2 ** 50],
    ['3B', 3],
    ['1.5B', 1],
  ])('quota %s = %d bytes', (text, bytes) => {
    expect(parseByteSize(text)).toBe(bytes);
  });

  it('a bare K/M/G/T/P is refused with both spellings offered', () => {
    expect(() => parseByteSize('10G')).toThrow(/10GB \(powers of 1000\) or 10GiB \(powers of 1024\)/);
    expect(() => parseByteSize('10G')).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
    expect(() => parseByteSize('10PiB')).toThrow(/larger than/);
  });

  it('formatBytes uses IEC units', () => {
    expect([0, 512, 2048, 1.5 * 2 ** 20, 10 * 2 ** 30, 10e9].map(formatBytes)).toEqual(['0 B', '512 B', '2 KiB', '1.5 MiB', '10 GiB', '9.31 GiB']);
  });

  it('instants: zones, fractions, lower-case t and z; formatInstant is UTC', () => {
    expect(parseInstant('2027-01-31T00:00:00Z')).toBe(Date.UTC(2027, 0, 31));
    expect(parseInstant('2027-01-31t00:00z')).toBe(Date.UTC(2027, 0, 31));
    expect(parseInstant('2027-01-30T19:00:00-05:00')).toBe(Date.UTC(2027, 0, 31));
    expect(parseInstant('2027-01-31T00:00:00.250Z')).toBe(Date.UTC(2027, 0, 31) + 250);
    expect(parseInstant('2028-02-29T00:00:00Z')).toBe(Date.UTC(2028, 1, 29));
    expect(formatInstant(Date.UTC(2027, 0, 31))).toBe('2027-01-31T00:00:00Z');
    expect(formatInstant(Date.UTC(2027, 0, 31) + 250)).toBe('2027-01-31T00:00:00.250Z');
  });

  it('devices', () => {
    expect(parseDevices('1')).toBe(1);
    expect(parseDevices(String(MAX_DEVICES))).toBe(MAX_DEVICES);
    for (const bad of ['', '0', '-1', '1e3', ' 2', 'x']) expect(() => parseDevices(bad)).toThrow(BrookError);
  });
});

describe('writing lines', () => {
  it('formatUserLine is read back as written, for awkward passwords too', () => {
    const passwords = ['plain', 'two words', 'quote"inside', 'tab\tand\nnewline', '#hash-first', '"', '\\', 'ünï 密码', ' lead', 'trail '];
    passwords.forEach((password, i) => {
      const line = formatUserLine({ name: `u${i}`, password, quota: '10GiB', expires: '2027-01-31T00:00:00+08:00', devices: 2, disabled: i % 2 === 0 });
      const [e] = parseUsers(line);
      expect(e).toMatchObject({ name: `u${i}`, password, quotaText: '10GiB', devices: 2, disabled: i % 2 === 0 });
    });
    expect(formatValue('plain')).toBe('plain');
    expect(formatValue('two words')).toBe('"two words"');
    expect(formatUserLine({ name: 'b', passwordFile: '/etc/brook/b.pass' })).toBe('b passwordFile=/etc/brook/b.pass');
  });

  it('appendLine keeps the text and its line ends; removeLine takes exactly one line', () => {
    expect(appendLine('', 'a password=x')).toBe('a password=x\n');
    expect(appendLine('# c\n', 'a password=x')).toBe('# c\na password=x\n');
    expect(appendLine('# c', 'a password=x')).toBe('# c\na password=x\n');
    expect(appendLine('# c\r\nb password=y\r\n', 'a password=x')).toBe('# c\r\nb password=y\r\na password=x\r\n');
    const text = '# head\nalice password=a  # hers\n# about bob\nbob password=b\n';
    expect(removeLine(text, 2)).toBe('# head\n# about bob\nbob password=b\n');
    expect(removeLine(text, 4)).toBe('# head\nalice password=a  # hers\n# about bob\n');
    expect(removeLine('a password=x\r\nb password=y', 2)).toBe('a password=x\r\n');
    expect(() => removeLine(text, 9)).toThrow(RangeError);
  });
});

function users(text: string, files: Record<string, string> = {}): User[] {
  return resolveUsers(parseUsers(text), (p) => {
    if (!(p in files)) throw new BrookError(ErrorCodes.CONFIG, `cannot read password file ${p}: no such file`);
    return files[p]!;
  });
}

describe('resolveUsers', () => {
  it('reads password files through the reader, hashes every password', () => {
    const u = users('a password=x\nb passwordFile=b.pass\n', { 'b.pass': 'from-file' });
    expect(u.map((x) => [x.name, x.password, x.passwordFile])).toEqual([
      ['a', 'x', null],
      ['b', 'from-file', 'b.pass'],
    ]);
    expect(u[1]!.passwordHash).toEqual(passwordHash('from-file'));
  });

  it('refuses two users with one password, also when one comes from a file', () => {
    const e = (() => {
      try {
        users('a password=same\nb password=other\nc passwordFile=c.pass\n', { 'c.pass': 'same' });
      } catch (err) {
        return err as UsersFileError;
      }
      throw new Error('resolved');
    })();
    expect(e.code).toBe(ErrorCodes.USERS_FILE);
    expect(e.problems).toEqual([
      { line: 3, reason: 'duplicate-password', message: 'user c has the same password as user a (line 1): two users with one password cannot be told apart' },
    ]);
    expect(e.message).not.toContain('same:');
  });

  it('an unreadable password file is a problem on its user line', () => {
    expect(() => users('a password=x\nb passwordFile=missing\n')).toThrow(/line 2: user b: cannot read password file missing/);
  });

  it('withExtraUser adds the --password user unless its name or password is taken', () => {
    const u = users('a password=x\n');
    expect(withExtraUser(u, 'default', 'y').map((x) => [x.name, x.line])).toEqual([
      ['a', 1],
      ['default', 0],
    ]);
    expect(() => withExtraUser(u, 'a', 'y')).toThrow(expect.objectContaining({ code: ErrorCodes.USERS_FILE }));
    expect(() => withExtraUser(u, 'default', 'x')).toThrow(/same password as user a/);
  });
});

describe('diffUsers', () => {
  it('added, removed, changed, unchanged by name; a new password is a removal and an addition', () => {
    const before = users('keep password=k\nlimits password=l quota=1GB\nrepass password=old\ngone password=g\n');
    const after = users('# reordered, commented\nrepass password=new\nlimits password=l quota=2GB\nnew password=n\nkeep password=k\n');
    const d = diffUsers(before, after);
    expect(d.added.map((u) => u.name).sort()).toEqual(['new', 'repass']);
    expect(d.removed.map((u) => `${u.name}:${u.password}`).sort()).toEqual(['gone:g', 'repass:old']);
    expect(d.changed.map((c) => [c.before.quota, c.after.quota])).toEqual([[1e9, 2e9]]);
    expect(d.unchanged.map((u) => u.name)).toEqual(['keep']);
    expect(Array.from(indexMap(before, after))).toEqual([3, 1, -1, -1]);
  });

  it('the same file twice: all unchanged', () => {
    const a = users(EXAMPLE, { 'bob.pass': 'b' });
    const d = diffUsers(a, users(EXAMPLE, { 'bob.pass': 'b' }));
    expect([d.added.length, d.removed.length, d.changed.length, d.unchanged.length]).toEqual([0, 0, 0, 4]);
  });

  it('disabling is a change, not a removal (the server closes the tunnels by the new state)', () => {
    const d = diffUsers(users('a password=x\n'), users('a password=x disabled\n'));
    expect(d.changed).toHaveLength(1);
    expect(d.removed).toHaveLength(0);
  });
});
