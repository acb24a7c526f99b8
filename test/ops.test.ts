/** --log / --tag / --pid building blocks (src/ops): files appended and reopened, tags on every line, pid file life. */
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { openLogDestination, parseTag, parseTags } from '../src/ops/logdest.js';
import { writePidFile } from '../src/ops/pidfile.js';

const dir = mkdtempSync(join(tmpdir(), 'brook-ops-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const lines = (p: string) => readFileSync(p, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

describe('--tag', () => {
  it('parses key:value (the value may hold colons) and refuses the rest with a CONFIG error', () => {
    expect(parseTag('region:eu')).toEqual(['region', 'eu']);
    expect(parseTag('url:http://x:1')).toEqual(['url', 'http://x:1']);
    expect(parseTags(['a:1', 'b:', 'a:2'])).toEqual({ a: '2', b: '' });
    for (const bad of ['nocolon', ':value', '']) expect(() => parseTag(bad)).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
  });
});

describe('--log', () => {
  it('console: one JSON line per entry with the tags', async () => {
    const out: string[] = [];
    const d = await openLogDestination('console', { host: 'vps1' }, { stdout: (l) => out.push(l) });
    d.log({ from: '1.2.3.4:5', error: 'x' });
    expect(JSON.parse(out[0]!)).toMatchObject({ from: '1.2.3.4:5', error: 'x', host: 'vps1' });
    expect(out[0]!.endsWith('\n')).toBe(true);
  });

  it('FILE: appends (never truncates), and reopen after the file was moved writes a new file', async () => {
    const p = join(dir, 'brook.log');
    writeFileSync(p, JSON.stringify({ earlier: true }) + '\n');
    const d = await openLogDestination(p, { t: '1' }, { onSignal: false });
    d.log({ n: 1 });
    await new Promise((r) => setTimeout(r, 50));
    renameSync(p, p + '.1');
    d.log({ n: 2 }); // still the moved file (as logrotate expects until it signals)
    await d.reopen();
    d.log({ n: 3 });
    await d.close();
    expect(lines(p + '.1').map((l) => l['n'] ?? 'earlier')).toEqual(['earlier', 1, 2]);
    expect(lines(p)).toEqual([expect.objectContaining({ n: 3, t: '1' })]);
  });

  it('a file that cannot be opened is a one-line CONFIG error at start', async () => {
    await expect(openLogDestination(join(dir, 'no', 'such', 'dir.log'))).rejects.toMatchObject({ code: ErrorCodes.CONFIG });
  });
});

describe('--pid', () => {
  it('writes the pid and removes the file', () => {
    const p = join(dir, 'brook.pid');
    const remove = writePidFile(p, 4242);
    expect(readFileSync(p, 'utf8')).toBe('4242\n');
    remove();
    expect(existsSync(p)).toBe(false);
    remove();
  });

  it('an unwritable path is a CONFIG error', () => {
    expect(() => writePidFile(join(dir, 'missing', 'x.pid'))).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG }));
  });
});
