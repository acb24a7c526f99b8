/**
 * The README's flag tables and the CLI's --help agree, as a new user would check them: every
 * flag in a table is accepted by the commands the table (or the row) names, and every flag
 * --help lists is in a table. The tables are those under a `###` heading whose first column
 * is `flag`; the heading names the commands (Global options: the program's own), and a
 * `commands` column, where a table has one, narrows a row to the commands it lists. Flags
 * come from the backticked parts of the flag cell, `-x` and `--name` alike.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HELP_TARGETS, runAll } from './helpers/cli-run.js';

const COMMANDS = HELP_TARGETS.filter((c) => c !== '');
const PROGRAM = '(program)';

/** In every --help, documented once in the README's prose ("Each command has --help and --example"). */
const EVERYWHERE = new Set(['-h', '--help', '--example']);
/** The program's own (commander's --version), in the prose too. */
const PROGRAM_ONLY = new Set(['-V', '--version']);
/**
 * Hidden from --help (and so not in the tables), with why: accepted, but not for users to reach for.
 */
const HIDDEN: Record<string, string> = {
  '--pprof': "upstream's Go profiler endpoint: recognised only to refuse it with a reason",
  '--updateListInterval': "upstream's old per-command name of --blockListUpdateInterval, kept so old command lines work",
  '--acmeSkipChallengeVerification': 'testing only (pebble); named in the README prose with that warning',
};

/** Each command's flags in the README: command -> flag -> the heading it came from. */
function readmeFlags(md: string): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const lines = md.split('\n');
  let heading = '';
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.startsWith('#')) heading = line;
    if (!/^\|\s*flag\s*\|/.test(line)) continue;
    const columns = line.split('|').map((c) => c.trim());
    const commandsColumn = columns.indexOf('commands');
    const named = /Global options/.test(heading) ? [PROGRAM] : COMMANDS.filter((c) => new RegExp(`\\b${c}\\b`).test(heading));
    for (i += 2; i < lines.length && lines[i]!.startsWith('|'); i++) {
      const cells = lines[i]!.split('|').map((c) => c.trim());
      const narrowed = commandsColumn > 0 && cells[commandsColumn] ? COMMANDS.filter((c) => new RegExp(`\\b${c}\\b`).test(cells[commandsColumn]!)) : named;
      for (const code of cells[1]!.matchAll(/`([^`]+)`/g)) {
        for (const m of code[1]!.matchAll(/(?<![\w-])(--?[A-Za-z][A-Za-z0-9]*)/g)) {
          for (const c of narrowed) {
            if (!out.has(c)) out.set(c, new Set());
            out.get(c)!.add(m[1]!);
          }
        }
      }
    }
  }
  return out;
}

/** The flags an --help lists (the lines of its Options: section). */
function helpFlags(help: string): Set<string> {
  const out = new Set<string>();
  const options = help.slice(help.indexOf('Options:'), help.indexOf('Commands:') >= 0 ? help.indexOf('Commands:') : undefined);
  for (const m of options.matchAll(/^ {2}((?:-\w, )?--\w+)/gm)) for (const f of m[1]!.split(', ')) out.add(f);
  return out;
}

describe('README flag tables and --help', () => {
  it('every flag in one is in the other, per command', async () => {
    const readme = readmeFlags(readFileSync('README.md', 'utf8'));
    const targets = ['', ...COMMANDS];
    const helps = await runAll(targets.map((c) => (c ? [c, '--help'] : ['--help'])));
    const drift: string[] = [];
    targets.forEach((c, i) => {
      const name = c || PROGRAM;
      const inHelp = helpFlags(helps[i]!.stdout);
      const inReadme = readme.get(name) ?? new Set<string>();
      for (const f of inHelp) {
        if (!inReadme.has(f) && !EVERYWHERE.has(f) && !(name === PROGRAM && PROGRAM_ONLY.has(f))) drift.push(`${name}: ${f} is in --help, not in the README's tables`);
      }
      for (const f of inReadme) if (!inHelp.has(f)) drift.push(`${name}: ${f} is in the README's tables, not in --help${HIDDEN[f] ? ' (it is hidden)' : ''}`);
    });
    expect(drift).toEqual([]);
  });

  it('the hidden flags stay hidden and are still accepted', async () => {
    const cases = [
      ['--pprof', ':6060', 'wsserver', '--listen', '127.0.0.1:0', '--password', 'x'],
      ['wsserver', '--listen', '127.0.0.1:0', '--password', 'x', '--updateListInterval', 'x'],
      ['wssserver', '--domainaddress', 'a.test:443', '--acmeSkipChallengeVerification', '--certkey', 'k'],
    ];
    const results = await runAll([...cases, ['--help'], ['wsserver', '--help'], ['wssserver', '--help']]);
    // each is refused for a reason of its own, not as an unknown option
    expect(results[0]!.stderr).toContain('--pprof is Go');
    expect(results[1]!.stderr).toContain('--blockListUpdateInterval expects whole seconds, got "x"');
    expect(results[2]!.stderr).toMatch(/--password or --passwordFile/);
    for (const r of results.slice(cases.length)) for (const f of Object.keys(HIDDEN)) expect(r.stdout).not.toContain(f);
  });
});
