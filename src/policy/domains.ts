/**
 * --blockDomainList: domains matched by suffix on label boundaries.
 *
 * `example.com` blocks `example.com` and `a.example.com`, not
 * `badexample.com`. Case-insensitive (entries and destinations are
 * lower-cased), one trailing dot ignored on both.
 *
 * Lookup: a hash set of entries, probed with the destination and then each
 * suffix that starts after a dot: at most one probe per label (≤ 127), each
 * O(1). No cache is needed (upstream keeps an unbounded per-domain cache).
 *
 * Upstream differences: upstream lower-cases only the destination, so an
 * entry with capitals never matches there; it keeps a trailing dot, so
 * `example.com.` escapes an `example.com` entry; and it accepts any line. Here
 * a line that cannot be a domain is an error naming the line.
 */
import { BrookError, ErrorCodes } from '../errors.js';
import { invalidLine, type ListLine } from './lists.js';

/** RFC 1035: a name is at most 253 characters in text form, a label 63. */
export const MAX_DOMAIN_TEXT = 253;
export const MAX_LABEL_LENGTH = 63;

/** Letters, digits, '-' and '_' (service labels), and any non-ASCII (IDN in U-label form). */
const LABEL_RE = /^[a-z0-9_\u0080-\uffff-]+$/;

/** Lower-case and drop one trailing dot. */
export function normalizeDomain(host: string): string {
  const h = host.toLowerCase();
  return h.endsWith('.') ? h.slice(0, -1) : h;
}

/** Why `entry` (already normalized) is not a domain, or null if it is one. */
export function domainEntryProblem(entry: string): string | null {
  if (entry.startsWith('*.') || entry.startsWith('.')) {
    return `not a domain (entries match by suffix: write ${JSON.stringify(entry.replace(/^\*?\./, ''))})`;
  }
  if (entry.length === 0 || entry.length > MAX_DOMAIN_TEXT) return 'not a domain (length)';
  for (const label of entry.split('.')) {
    if (label.length === 0) return 'not a domain (empty label)';
    if (label.length > MAX_LABEL_LENGTH) return `not a domain (label longer than ${MAX_LABEL_LENGTH})`;
    if (!LABEL_RE.test(label)) return 'not a domain (character not allowed)';
  }
  return null;
}

export class DomainSet {
  private readonly set: Set<string>;

  private constructor(set: Set<string>) {
    this.set = set;
  }

  /** Build from list lines; the first bad line throws LIST_INVALID. */
  static fromLines(source: string, lines: readonly ListLine[]): DomainSet {
    const set = new Set<string>();
    for (const l of lines) {
      const entry = normalizeDomain(l.text);
      const problem = domainEntryProblem(entry);
      if (problem) throw invalidLine(source, l, problem);
      set.add(entry);
    }
    return new DomainSet(set);
  }

  /** For tests and benchmarks: entries given directly. */
  static of(entries: Iterable<string>): DomainSet {
    const set = new Set<string>();
    for (const e of entries) {
      const entry = normalizeDomain(e);
      const problem = domainEntryProblem(entry);
      if (problem) throw new BrookError(ErrorCodes.LIST_INVALID, `${problem}: ${JSON.stringify(e)}`);
      set.add(entry);
    }
    return new DomainSet(set);
  }

  get size(): number {
    return this.set.size;
  }

  /** The entry that blocks `host` (most specific first), or null. */
  match(host: string): string | null {
    if (this.set.size === 0) return null;
    let h = normalizeDomain(host);
    for (;;) {
      if (this.set.has(h)) return h;
      const dot = h.indexOf('.');
      if (dot < 0) return null;
      h = h.slice(dot + 1);
    }
  }
}
