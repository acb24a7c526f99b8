/**
 * Flag tables: each command family declares its flags once, as an object whose keys are
 * commander's attribute names and whose values say how the flag is written, its help, its
 * parser and its default. The table gives both the commander options (addFlags, in the
 * table's order: the order of --help) and the type of what `.opts()` returns (FlagValues),
 * so adding a flag is one entry here plus one line in its family's mapping to the library's
 * options.
 *
 *   const F = { path: flag('--path <path>', 'URL path', { default: '/ws' }) };
 *   addFlags(cmd, F);
 *   const f = cmd.opts<FlagValues<typeof F>>();   // f.path: string
 */
import { type Command, InvalidArgumentError, Option } from 'commander';

/** One flag of a table; `value` carries its type only (what commander's opts() holds for it). */
export interface Flag<T> {
  make(): Option;
  readonly value?: T;
}

interface FlagSettings<T> {
  /** Turns the text into the value (commander's argParser); throw InvalidArgumentError or a BrookError. */
  parse?: (v: string, previous: T) => T;
  /** Accepted, not shown in --help. */
  hidden?: boolean;
}

/** A flag with a default: always a value. */
export function flag<T = string>(spec: string, help: string, o: FlagSettings<T> & { default: T }): Flag<T>;
/** A flag commander requires: always a value. */
export function flag<T = string>(spec: string, help: string, o: FlagSettings<T> & { required: true }): Flag<T>;
/** A flag without a default: undefined when absent. */
export function flag<T = string>(spec: string, help?: string, o?: FlagSettings<T>): Flag<T | undefined>;
export function flag<T>(spec: string, help = '', o: FlagSettings<T> & { default?: T; required?: boolean } = {}): Flag<T> {
  return {
    make: () => {
      const option = new Option(spec, help);
      if ('default' in o) option.default(o.default);
      if (o.parse) option.argParser(o.parse);
      if (o.required) option.makeOptionMandatory();
      if (o.hidden) option.hideHelp();
      return option;
    },
  };
}

/** A flag without a value (--insecure): false by default when `byDefault` is given, else undefined when absent. */
export function toggle(spec: string, help: string, byDefault: false): Flag<boolean>;
export function toggle(spec: string, help: string): Flag<boolean | undefined>;
export function toggle(spec: string, help: string, byDefault?: false): Flag<boolean | undefined> {
  return byDefault === undefined ? flag<boolean>(spec, help) : flag<boolean>(spec, help, { default: byDefault });
}

export type FlagTable = Record<string, Flag<unknown>>;

/** What commander's opts() returns for a table. */
export type FlagValues<T extends FlagTable> = { [K in keyof T]: T[K] extends Flag<infer V> ? V : never };

/** Add a table's flags to a command, in the table's order; a key that is not the flag's attribute name is a bug. */
export function addFlags(cmd: Command, table: FlagTable): Command {
  for (const [key, f] of Object.entries(table)) {
    const option = f.make();
    if (option.attributeName() !== key) throw new Error(`flag table: "${key}" names ${option.flags} (attribute ${option.attributeName()})`);
    cmd.addOption(option);
  }
  return cmd;
}

// ---- parsers (commander's InvalidArgumentError: "option '--x <v>' argument 'v' is invalid. <why>")

export function seconds(v: string): number {
  if (!/^\d+$/.test(v)) throw new InvalidArgumentError('expected a whole number of seconds');
  return Number(v);
}

export function positiveInt(v: string): number {
  if (!/^[1-9]\d*$/.test(v)) throw new InvalidArgumentError('expected a positive whole number');
  return Number(v);
}

/** "host:port", ":port", "[v6]:port" (checked again by the library when it listens). */
export function listenAddress(v: string): string {
  if (!/^(\[[^\]]+\]|[^:[\]]*):\d{1,5}$/.test(v)) throw new InvalidArgumentError('expected host:port or :port');
  return v;
}

/** A repeatable flag's values, in order. */
export const collect = (v: string, prev: string[]): string[] => [...prev, v];
