/**
 * --host NAME (protocol/websocket-upgrade.md, "Behind a proxy"): tunnels only
 * for upgrades whose Host header names NAME; others get the answer of another
 * path, or the fallback.
 */
import { BrookError, ErrorCodes } from '../errors.js';

/** --host: a DNS name or IP, optionally with :port; lower-cased. */
export function checkHostFlag(h: string): string {
  if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+)(:\d{1,5})?$/.test(h)) throw new BrookError(ErrorCodes.CONFIG, `--host: not a host name: ${h}`);
  return h.toLowerCase();
}

/** The Host header names `want` (with its port when `want` has one; any port otherwise). */
export function hostMatches(want: string, header: string | undefined): boolean {
  if (!header) return false;
  const h = header.trim().toLowerCase();
  if (h === want) return true;
  if (/:\d+$/.test(want)) return false;
  const bare = h.replace(/:\d+$/, '');
  return bare === want;
}
