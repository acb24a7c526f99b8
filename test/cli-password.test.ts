/**
 * --passwordFile / $BROOK_TS_PASSWORD_FILE (src/password.ts): the file's rules in
 * process, then over the built CLI: a server reading its password from a file
 * serves a client that passes it with --password (and the reverse), the password
 * is not in /proc/PID/cmdline, a link's password stays unless --passwordFile is
 * given, and every bad case is one line on stderr with a non-zero exit.
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { MAX_PASSWORD_FILE_BYTES, PASSWORD_FILE_ENV, readPasswordFile, resolvePassword } from '../src/password.js';
import { CLI, LOOPBACK, runCli, startCli, stopAllClis, tempDir } from './helpers/cli.js';
import { exchangeThroughSocks, startExchangeServer, type ExchangeServer } from './helpers/net.js';

const SECRET = 'pw-6f1c2e9a-in-a-file';
const tmp = tempDir('brook-pwfile-');
const file = (name: string, content: string | Buffer): string => {
  const p = join(tmp.dir, name);
  writeFileSync(p, content);
  return p;
};

afterAll(() => tmp.remove());

describe('readPasswordFile', () => {
  it('drops one trailing newline (\\n or \\r\\n) and keeps everything else', () => {
    expect(readPasswordFile(file('a', 'hello\n'))).toBe('hello');
    expect(readPasswordFile(file('b', 'hello\r\n'))).toBe('hello');
    expect(readPasswordFile(file('c', 'hello'))).toBe('hello');
    expect(readPasswordFile(file('d', ' he llo \t\n'))).toBe(' he llo \t');
    expect(readPasswordFile(file('e', 'pässwörd\n'))).toBe('pässwörd');
  });

  it.each([
    ['missing', () => join(tmp.dir, 'nope'), /cannot read password file .*nope.*no such file/],
    ['a directory', () => tmp.dir, /is a directory/],
    ['under a file (unreadable path)', () => join(file('plain', 'x'), 'child'), /cannot read password file .*ENOTDIR/],
    ['empty', () => file('empty', ''), /is empty/],
    ['only a newline', () => file('nl', '\n'), /is empty/],
    ['two lines', () => file('two', 'a\nb\n'), /more than one line/],
    ['a blank second line', () => file('two-nl', 'a\n\n'), /more than one line/],
    ['too large', () => file('big', 'x'.repeat(MAX_PASSWORD_FILE_BYTES + 1)), /larger than 4096 bytes/],
    ['an empty name', () => '', /--passwordFile is empty/],
  ])('%s is a CONFIG error', (_label, path, re) => {
    let err: unknown;
    try {
      readPasswordFile(path());
    } catch (e) {
      err = e;
    }
    expect((err as { code?: string }).code).toBe(ErrorCodes.CONFIG);
    expect(String((err as Error).message)).toMatch(re);
    expect(String((err as Error).message)).not.toContain('\n');
  });

  it('exactly MAX_PASSWORD_FILE_BYTES (newline included) is accepted', () => {
    expect(readPasswordFile(file('max', 'y'.repeat(MAX_PASSWORD_FILE_BYTES - 1) + '\n'))).toHaveLength(MAX_PASSWORD_FILE_BYTES - 1);
  });
});

describe('resolvePassword precedence', () => {
  const pw = file('pw', `${SECRET}\n`);
  const other = file('other', 'from-env\n');
  const env = { [PASSWORD_FILE_ENV]: other };

  it('flag, file, environment, nothing', () => {
    expect(resolvePassword({ password: 'x' }, env)).toEqual({ password: 'x', source: 'flag' });
    expect(resolvePassword({ passwordFile: pw }, env)).toEqual({ password: SECRET, source: 'file' });
    expect(resolvePassword({}, env)).toEqual({ password: 'from-env', source: 'env' });
    expect(resolvePassword({}, { [PASSWORD_FILE_ENV]: '' })).toEqual({ password: undefined, source: null });
    expect(resolvePassword({}, {})).toEqual({ password: undefined, source: null });
  });

  it('with a link the environment is not read (the link carries the password); --passwordFile is', () => {
    expect(resolvePassword({ link: true }, { [PASSWORD_FILE_ENV]: join(tmp.dir, 'nope') })).toEqual({ password: undefined, source: null });
    expect(resolvePassword({ link: true, passwordFile: pw }, {})).toEqual({ password: SECRET, source: 'file' });
  });

  it('--password and --passwordFile together are refused', () => {
    expect(() => resolvePassword({ password: 'x', passwordFile: pw }, {})).toThrow(/both given/);
  });
});

describe('over the CLI', () => {
  let dst: ExchangeServer;
  const pw = file('server-pw', `${SECRET}\n`);

  beforeAll(async () => {
    dst = await startExchangeServer({ downBytes: 32 * 1024 });
  });
  afterAll(async () => {
    await stopAllClis();
    await dst.close();
  });

  async function exchange(socksPort: number): Promise<void> {
    const r = await exchangeThroughSocks(socksPort, { type: 'ipv4', host: LOOPBACK, port: dst.port }, 16 * 1024);
    expect(r.received.bytes).toBe(32 * 1024);
    expect(r.received.gotEnd).toBe(true);
  }

  it('a server started with --passwordFile serves a client using --password; the password is not in its /proc cmdline', async () => {
    const server = await startCli(['wsserver', '--listen', `${LOOPBACK}:0`, '--passwordFile', pw]);
    const cmdline = readFileSync(`/proc/${server.pid}/cmdline`, 'utf8');
    expect(cmdline).toContain(pw);
    expect(cmdline).not.toContain(SECRET);
    const client = await startCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:${server.port('listen')}`, '--password', SECRET, '--socks5', `${LOOPBACK}:0`]);
    await exchange(client.port('socks5'));
    // and a client reading the same file
    const client2 = await startCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:${server.port('listen')}`, '--passwordFile', pw, '--socks5', `${LOOPBACK}:0`]);
    expect(readFileSync(`/proc/${client2.pid}/cmdline`, 'utf8')).not.toContain(SECRET);
    await exchange(client2.port('socks5'));
  });

  it(`$${PASSWORD_FILE_ENV} names the file when no flag does`, async () => {
    const child = spawn(process.execPath, [CLI, 'wsserver', '--listen', `${LOOPBACK}:0`], {
      env: { ...process.env, [PASSWORD_FILE_ENV]: pw },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const line = await new Promise<Record<string, unknown>>((res, rej) => {
        let buf = '';
        const t = setTimeout(() => rej(new Error('no listening line')), 10_000);
        child.stdout.on('data', (d: Buffer) => {
          buf += d.toString();
          const first = buf.split('\n').find((l) => l.includes('"listening"'));
          if (first) {
            clearTimeout(t);
            res(JSON.parse(first) as Record<string, unknown>);
          }
        });
        child.once('exit', (code) => rej(new Error(`exited ${code}`)));
      });
      const port = Number(/:(\d+)$/.exec(String(line['listen']))![1]);
      const client = await startCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:${port}`, '--password', SECRET, '--socks5', `${LOOPBACK}:0`]);
      await exchange(client.port('socks5'));
    } finally {
      child.kill('SIGKILL');
    }
  });

  it('link --passwordFile puts the file password in the link; connect --link keeps the link password unless --passwordFile is given', async () => {
    const server = await startCli(['wsserver', '--listen', `${LOOPBACK}:0`, '--passwordFile', pw, '--probeTimeout', '1']);
    const url = `ws://${LOOPBACK}:${server.port('listen')}`;
    const good = await runCli(['link', '--server', url, '--passwordFile', pw]);
    expect(good.code).toBe(0);
    expect(good.stdout).toContain(`password=${SECRET}`);
    const wrong = (await runCli(['link', '--server', url, '--password', 'not-it'])).stdout.trim();

    const a = await startCli(['connect', '--link', good.stdout.trim(), '--socks5', `${LOOPBACK}:0`]);
    await exchange(a.port('socks5'));
    // the link's (wrong) password replaced by the file's
    const b = await startCli(['connect', '--link', wrong, '--passwordFile', pw, '--socks5', `${LOOPBACK}:0`]);
    await exchange(b.port('socks5'));
    // without --passwordFile the link's password is used: refused (the server drains it for --probeTimeout 1 s)
    const c = await startCli(['connect', '--link', wrong, '--socks5', `${LOOPBACK}:0`]);
    const refused = await exchangeThroughSocks(c.port('socks5'), { type: 'ipv4', host: LOOPBACK, port: dst.port }, 1024).then(
      (r) => r.received.bytes,
      () => -1,
    );
    expect(refused).not.toBe(32 * 1024);
  });

  const badFile = join(tmp.dir, 'missing-pw');
  const emptyFile = file('empty-pw', '');
  const twoLines = file('two-pw', 'a\nb\n');
  const server = ['wsserver', '--listen', `${LOOPBACK}:0`];
  const client = ['wsclient', '--wsserver', 'ws://127.0.0.1:9', '--socks5', `${LOOPBACK}:0`];
  it.each([
    ['server: missing file', [...server, '--passwordFile', badFile], /cannot read password file .*missing-pw.*no such file/],
    ['server: empty file', [...server, '--passwordFile', emptyFile], /is empty/],
    ['server: two lines', [...server, '--passwordFile', twoLines], /more than one line/],
    ['server: both flags', [...server, '--password', 'x', '--passwordFile', pw], /--password and --passwordFile both given/],
    ['server: neither', server, /--password or --passwordFile .* is required/],
    ['wssserver: missing file', ['wssserver', '--domainaddress', 'a.test:443', '--passwordFile', badFile], /cannot read password file/],
    ['client: missing file', [...client, '--passwordFile', badFile], /cannot read password file/],
    ['client: both flags', [...client, '--password', 'x', '--passwordFile', pw], /both given/],
    ['connect: missing file', ['connect', '--link', 'brook://wsserver?password=x&wsserver=ws%3A%2F%2F127.0.0.1%3A9', '--passwordFile', badFile], /cannot read password file/],
    ['link: missing file', ['link', '--server', 'ws://1.2.3.4:9999', '--passwordFile', badFile], /cannot read password file/],
    ['link: both flags', ['link', '--server', 'ws://1.2.3.4:9999', '--password', 'x', '--passwordFile', pw], /both given/],
  ])('%s: one line, non-zero exit', async (_label, args, re) => {
    const r = await runCli(args as string[]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(/^brook-ts: [^\n]+\n$/);
    expect(r.stderr).toMatch(re);
  });

  it(`a missing $${PASSWORD_FILE_ENV} file: one line, non-zero exit`, async () => {
    const r = await new Promise<{ code: number | null; stderr: string }>((res) => {
      const c = spawn(process.execPath, [CLI, ...server], { env: { ...process.env, [PASSWORD_FILE_ENV]: badFile }, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
      c.once('close', (code) => {
        clearTimeout(t);
        res({ code, stderr });
      });
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(new RegExp(`^brook-ts: cannot read password file .*\\(\\$${PASSWORD_FILE_ENV}\\): no such file\\n$`));
  });
});

