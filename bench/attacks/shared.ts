/**
 * What the rows of `make attack` (bench/attack.ts) share: the flags every row reads, the row
 * itself, a fresh wsserver + wsclient pair under the descriptor limit, and the report's helpers.
 */
import { boolFlag, flag, numFlag, type Pair, startPair } from '../hostile.js';

export const quick = boolFlag('quick');
export const NOFILE = numFlag('nofile', 1024);
export const SERVER_ARGS = (flag('serverArgs') ?? '').split(' ').filter(Boolean);
/** How long a row waits for the server to close (the close-time row; the probes row's log to settle). */
export const CLOSE_CAP_S = numFlag('closeCap', quick ? 35 : 45);

export const s1 = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export interface Row {
  tried: string;
  measured: string;
  upstream: string;
}

/** A fresh pair at ulimit -n NOFILE with the --serverArgs flags (and the row's own after them). */
export async function pair(o: Parameters<typeof startPair>[0] = {}): Promise<Pair> {
  return startPair({ nofile: NOFILE, ...o, serverArgs: [...SERVER_ARGS, ...(o.serverArgs ?? [])] });
}

/** The server's log entries, counted by message and code ("(EMFILE)" when they mention it). */
export function summarize(entries: Array<Record<string, unknown>>, keep: (e: Record<string, unknown>) => boolean): string {
  const by = new Map<string, number>();
  for (const e of entries.filter(keep)) {
    const what = [e['msg'], e['code']].filter(Boolean).join(' ') || '?';
    const k = `${what}${/EMFILE|ENFILE/.test(JSON.stringify(e)) ? ' (EMFILE)' : ''}`;
    by.set(k, (by.get(k) ?? 0) + 1);
  }
  return [...by].map(([k, n]) => `${k} x${n}`).join(', ') || 'nothing';
}
