/**
 * protocol/errors.md lists every code of src/errors.ts, once, with what it means, where it
 * arises and what the user sees; no document names a code that does not exist.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { BrookError, ErrorCodes, socks5ReplyFor, type ErrorCode } from '../src/errors.js';

const ROOT = join(import.meta.dirname, '..');
const PAGE = join('protocol', 'errors.md');
const CODE = /BROOK_ERR_[A-Z_]*[A-Z]/g;
const codes = new Set<string>(Object.values(ErrorCodes));
const page = readFileSync(join(ROOT, PAGE), 'utf8');

/** The page's rows of a code table: | `CODE` | meaning | where it arises | what the user sees |. */
function rows(text: string): Map<string, string[][]> {
  const out = new Map<string, string[][]>();
  for (const line of text.split('\n')) {
    const m = /^\| `(BROOK_ERR_[A-Z_]+)` \|(.*)\|$/.exec(line);
    if (!m) continue;
    const cells = m[2]!.split(' | ').map((c) => c.trim());
    if (cells.length !== 3) continue; // the socks5ReplyFor table has two columns
    out.set(m[1]!, [...(out.get(m[1]!) ?? []), cells]);
  }
  return out;
}

describe(`${PAGE}`, () => {
  const table = rows(page);

  it('has one row for every code of src/errors.ts, each with its three columns filled', () => {
    const missing = [...codes].filter((c) => !table.has(c));
    expect(missing, `codes missing from ${PAGE}`).toEqual([]);
    for (const [code, r] of table) {
      expect(r, `${code}: one row`).toHaveLength(1);
      expect(r[0]!.every((cell) => cell.length > 0), `${code}: empty cell`).toBe(true);
    }
  });

  it('names no code that does not exist', () => {
    const unknown = [...new Set(page.match(CODE) ?? [])].filter((c) => !codes.has(c));
    expect(unknown, `codes in ${PAGE} that src/errors.ts does not define`).toEqual([]);
  });

  it('is linked from README.md and protocol/README.md', () => {
    expect(readFileSync(join(ROOT, 'README.md'), 'utf8')).toContain('(protocol/errors.md)');
    expect(readFileSync(join(ROOT, 'protocol', 'README.md'), 'utf8')).toContain('(errors.md)');
  });

  it("its socks5ReplyFor table says what socks5ReplyFor returns", () => {
    const part = page.slice(page.indexOf('`socks5ReplyFor` (the one map'), page.indexOf('A system error'));
    let checked = 0;
    for (const m of part.matchAll(/^\| (`BROOK_ERR_.*`) \| 0x([0-9a-f]{2}) /gm)) {
      for (const code of m[1]!.match(CODE)!) {
        expect(socks5ReplyFor(new BrookError(code as ErrorCode, 'x')), code).toBe(parseInt(m[2]!, 16));
        checked++;
      }
    }
    expect(checked).toBe(8);
    expect(part).toContain('| every other code | 0x01 general failure |');
    expect(socks5ReplyFor(new BrookError(ErrorCodes.CONFIG, 'x'))).toBe(0x01);
  });
});

describe('the other documents', () => {
  it('name only codes that exist (README.md, protocol/*.md)', () => {
    const docs = ['README.md', ...readdirSync(join(ROOT, 'protocol')).filter((f) => f.endsWith('.md')).map((f) => join('protocol', f))];
    const unknown: string[] = [];
    for (const d of docs) {
      for (const c of new Set(readFileSync(join(ROOT, d), 'utf8').match(CODE) ?? [])) if (!codes.has(c)) unknown.push(`${d}: ${c}`);
    }
    expect(unknown).toEqual([]);
  });
});
