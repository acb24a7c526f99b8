/**
 * The `users` command's logic (src/users/command.ts; protocol/users.md#the-users-command): add and
 * remove by atomic replace touching only the user's line (comments, order, line ends and mode kept),
 * every refusal with its code and the file unchanged, an edit raced by another writer, list with the
 * state file's counts and each state, link = `brook-ts link` for that password, and a QR code that
 * decodes back to the link.
 */
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeQR } from 'qr/decode.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCodes, type ErrorCode } from '../src/errors.js';
import { buildLink } from '../src/link.js';
import { addUser, formatUserList, linkQr, listUsers, NEW_FILE_HEADER, removeUser, userLink, userState } from '../src/users/command.js';
import { loadUsersFile } from '../src/users/load.js';
import { encodeState } from '../src/users/state.js';
import { runCli } from './helpers/cli.js';
import { brookCode } from './helpers/errors.js';

let dir: string;
let file: string;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'brook-users-cmd-'));
  file = join(dir, 'users.txt');
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const OPERATOR_FILE = '# our customers\r\n\r\nalice password=a-pw quota=10GiB   # paid till January\r\n# bob is a friend\r\nbob password=b-pw\r\n';

describe('users add', () => {
  it('makes a missing file (mode 0600, a header line) and appends users', () => {
    addUser({ file, name: 'alice', password: 'a-pw', quota: '10GiB', expires: '2027-01-31T00:00:00Z', devices: 3 });
    addUser({ file, name: 'bob', password: 'two words' });
    expect(readFileSync(file, 'utf8')).toBe(
      `${NEW_FILE_HEADER}\nalice password=a-pw quota=10GiB expires=2027-01-31T00:00:00Z devices=3\nbob password="two words"\n`,
    );
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(loadUsersFile(file).map((u) => [u.name, u.password, u.quota, u.devices])).toEqual([
      ['alice', 'a-pw', 10 * 2 ** 30, 3],
      ['bob', 'two words', null, null],
    ]);
  });

  it('keeps the operator\'s comments, blank lines, order, CRLF and mode', () => {
    writeFileSync(file, OPERATOR_FILE);
    chmodSync(file, 0o640);
    addUser({ file, name: 'carol', password: 'c-pw', disabled: true });
    expect(readFileSync(file, 'utf8')).toBe(`${OPERATOR_FILE}carol password=c-pw disabled\r\n`);
    expect(statSync(file).mode & 0o777).toBe(0o640);
    expect(readdirSync(dir)).toEqual(['users.txt']);
  });

  it('writes a password file as an absolute path and checks it now', () => {
    writeFileSync(join(dir, 'd.pass'), 'd-pw\n');
    addUser({ file, name: 'dave', passwordFile: 'd.pass', cwd: dir });
    expect(readFileSync(file, 'utf8')).toContain(`dave passwordFile=${join(dir, 'd.pass')}\n`);
    expect(loadUsersFile(file)[0]!.password).toBe('d-pw');
    expect(brookCode(() => addUser({ file, name: 'eve', passwordFile: 'missing.pass', cwd: dir }))).toBe(ErrorCodes.CONFIG);
  });

  it.each<[string, Parameters<typeof addUser>[0] extends infer O ? Partial<O> : never, ErrorCode, RegExp]>([
    ['an existing name', { name: 'alice', password: 'new' }, ErrorCodes.USER_EXISTS, /already has a user named alice/],
    ['another user\'s password', { name: 'carol', password: 'b-pw' }, ErrorCodes.USERS_FILE, /same password as user bob \(line 5\)/],
    ['a bare G', { name: 'carol', password: 'c', quota: '10G' }, ErrorCodes.CONFIG, /10GB .* or 10GiB/],
    ['an expiry without a zone', { name: 'carol', password: 'c', expires: '2027-01-31' }, ErrorCodes.CONFIG, /has no zone/],
    ['zero devices', { name: 'carol', password: 'c', devices: 0 }, ErrorCodes.CONFIG, /devices "0"/],
    ['no password', { name: 'carol' }, ErrorCodes.CONFIG, /--password or --passwordFile is required/],
    ['both passwords', { name: 'carol', password: 'c', passwordFile: 'x' }, ErrorCodes.CONFIG, /both given/],
    ['an empty password', { name: 'carol', password: '' }, ErrorCodes.CONFIG, /empty/],
    ['a bad name', { name: 'car ol', password: 'c' }, ErrorCodes.CONFIG, /bad user name/],
  ])('refuses %s, leaving the file as it was', (_what, o, want, why) => {
    writeFileSync(file, OPERATOR_FILE);
    expect(brookCode(() => addUser({ file, name: 'x', ...o }))).toBe(want);
    expect(() => addUser({ file, name: 'x', ...o })).toThrow(why);
    expect(readFileSync(file, 'utf8')).toBe(OPERATOR_FILE);
  });

  it('refuses to edit a file that does not parse (fix it first)', () => {
    writeFileSync(file, 'alice password=a qouta=1GB\n');
    expect(() => addUser({ file, name: 'bob', password: 'b' })).toThrow(/line 1: unknown key "qouta"/);
    expect(readFileSync(file, 'utf8')).toBe('alice password=a qouta=1GB\n');
  });

  it('starts again from the new file when another writer changed it meanwhile; gives up after 3 tries', () => {
    writeFileSync(file, 'alice password=a\n');
    addUser({
      file,
      name: 'bob',
      password: 'b',
      afterRead: (attempt) => {
        if (attempt === 1) writeFileSync(file, 'alice password=a\ncarol password=c-from-the-other-editor\n');
      },
    });
    expect(readFileSync(file, 'utf8')).toBe('alice password=a\ncarol password=c-from-the-other-editor\nbob password=b\n');
    let n = 0;
    const always = (): void => writeFileSync(file, `alice password=a\n# edit ${++n}\n`);
    expect(() => addUser({ file, name: 'dave', password: 'd', afterRead: always })).toThrow(/changed by someone else .* \(3 tries\)/);
    expect(readFileSync(file, 'utf8')).not.toContain('dave');
  });
});

describe('users remove', () => {
  it('takes the user\'s line only', () => {
    writeFileSync(file, OPERATOR_FILE);
    removeUser({ file, name: 'alice' });
    expect(readFileSync(file, 'utf8')).toBe('# our customers\r\n\r\n# bob is a friend\r\nbob password=b-pw\r\n');
  });

  it('an unknown name, a missing file', () => {
    writeFileSync(file, OPERATOR_FILE);
    expect(brookCode(() => removeUser({ file, name: 'zed' }))).toBe(ErrorCodes.USER_UNKNOWN);
    expect(readFileSync(file, 'utf8')).toBe(OPERATOR_FILE);
    expect(() => removeUser({ file: join(dir, 'none.txt'), name: 'a' })).toThrow(/none\.txt: cannot read: no such file/);
  });

  it('works while another user\'s password file is unreadable (the server would refuse it, the operator can still fix it)', () => {
    writeFileSync(file, 'alice password=a\nbob passwordFile=/nonexistent/b.pass\n');
    removeUser({ file, name: 'alice' });
    expect(readFileSync(file, 'utf8')).toBe('bob passwordFile=/nonexistent/b.pass\n');
  });
});

describe('users list', () => {
  const NOW = Date.UTC(2027, 0, 1);

  it('each user with its counts and state', () => {
    writeFileSync(
      file,
      [
        'active password=1 quota=1KiB expires=2027-06-01T00:00:00Z devices=2',
        'over password=2 quota=1KB',
        'expired password=3 expires=2027-01-01T00:00:00Z',
        'off password=4 disabled expires=2020-01-01T00:00:00Z',
        'fresh password=5',
      ].join('\n'),
    );
    const state = join(dir, 'state.json');
    writeFileSync(
      state,
      encodeState(
        new Map([
          ['active', { tcpUp: 100, tcpDown: 200, udpUp: 300, udpDown: 400 }],
          ['over', { tcpUp: 0, tcpDown: 1000, udpUp: 0, udpDown: 0 }],
          ['gone', { tcpUp: 5, tcpDown: 5, udpUp: 0, udpDown: 0 }],
        ]),
        NOW,
      ),
    );
    const rows = listUsers({ file, stateFile: state, now: NOW });
    expect(rows.map((r) => [r.name, r.used, r.state])).toEqual([
      ['active', 1000, 'active'],
      ['over', 1000, 'over quota'],
      ['expired', 0, 'expired'],
      ['off', 0, 'disabled'],
      ['fresh', 0, 'active'],
    ]);
    expect(formatUserList(rows)).toBe(
      [
        'NAME     USED    QUOTA         EXPIRES               DEVICES  STATE',
        'active   1000 B  1KiB (1 KiB)  2027-06-01T00:00:00Z  2        active',
        'over     1000 B  1KB (1000 B)  -                     -        over quota',
        'expired  0 B     -             2027-01-01T00:00:00Z  -        expired',
        'off      0 B     -             2020-01-01T00:00:00Z  -        disabled',
        'fresh    0 B     -             -                     -        active',
        '',
      ].join('\n'),
    );
    // no state file yet: zero used; a corrupt one: an error
    expect(listUsers({ file, stateFile: join(dir, 'none.json'), now: NOW }).map((r) => r.used)).toEqual([0, 0, 0, 0, 0]);
    writeFileSync(state, '{"version":1,');
    expect(brookCode(() => listUsers({ file, stateFile: state }))).toBe(ErrorCodes.USERS_STATE);
  });

  it('userState: disabled before expired before over quota; expiry at its instant', () => {
    expect(userState({ disabled: true, expires: 0, quota: 1 }, 5, 10)).toBe('disabled');
    expect(userState({ disabled: false, expires: 10, quota: 1 }, 5, 10)).toBe('expired');
    expect(userState({ disabled: false, expires: 10, quota: 1 }, 5, 9)).toBe('over quota');
    expect(userState({ disabled: false, expires: 10, quota: 6 }, 5, 9)).toBe('active');
  });
});

describe('users link', () => {
  it('is buildLink for the user\'s password, from the file or a password file', () => {
    writeFileSync(join(dir, 'b.pass'), 'bob pw/+&=\n');
    writeFileSync(file, `alice password=a-pw\nbob passwordFile=b.pass\n`);
    expect(userLink({ file, name: 'alice', server: 'ws://1.2.3.4:9999/ws' })).toBe(buildLink('wsserver', 'ws://1.2.3.4:9999/ws', 'a-pw'));
    expect(userLink({ file, name: 'bob', server: 'wss://d.example:443/p', options: { name: 'bob' } })).toBe(
      buildLink('wssserver', 'wss://d.example:443/p', 'bob pw/+&=', { name: 'bob' }),
    );
    expect(brookCode(() => userLink({ file, name: 'zed', server: 'ws://1.2.3.4:9999' }))).toBe(ErrorCodes.USER_UNKNOWN);
    expect(brookCode(() => userLink({ file, name: 'alice', server: 'socks5://1.2.3.4:1080' }))).toBe(ErrorCodes.LINK_KIND);
    expect(brookCode(() => userLink({ file, name: 'alice', server: 'ws://nohost' }))).toBe(ErrorCodes.LINK_INVALID);
  });

  it('is the string `brook-ts link` prints for that password', async () => {
    writeFileSync(file, `carol password="p w&=?#é"\n`);
    const cli = await runCli(['link', '--server', 'ws://1.2.3.4:9999/ws', '--password', 'p w&=?#é']);
    expect(cli.code).toBe(0);
    expect(`${userLink({ file, name: 'carol', server: 'ws://1.2.3.4:9999/ws' })}\n`).toBe(cli.stdout);
  });

  it('the QR code printed decodes back to the link', () => {
    writeFileSync(file, 'alice password=correct-horse-battery-staple\n');
    const link = userLink({ file, name: 'alice', server: 'wss://brook.example.com:443/ws' });
    const qr = linkQr(link);
    // half blocks: two module rows a line, light modules drawn ('█' both, '▀' top, '▄' bottom, ' ' none)
    const lines = qr.split('\n').filter((l) => l.length > 0);
    const width = [...lines[0]!].length;
    const rows: boolean[][] = [];
    for (const l of lines) {
      const chars = [...l];
      rows.push(chars.map((c) => c === '█' || c === '▀'));
      rows.push(chars.map((c) => c === '█' || c === '▄'));
    }
    const scale = 4;
    const border = 4;
    const w = (width + 2 * border) * scale;
    const h = (rows.length + 2 * border) * scale;
    const data = new Uint8Array(w * h * 3).fill(255);
    rows.forEach((row, y) =>
      row.forEach((light, x) => {
        if (light) return;
        for (let dy = 0; dy < scale; dy++)
          for (let dx = 0; dx < scale; dx++) data.fill(0, (((y + border) * scale + dy) * w + (x + border) * scale + dx) * 3, (((y + border) * scale + dy) * w + (x + border) * scale + dx) * 3 + 3);
      }),
    );
    expect(decodeQR({ width: w, height: h, data })).toBe(link);
  });
});
