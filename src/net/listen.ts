/** Listen addresses as upstream writes them: ":9999", "0.0.0.0:9999", "127.0.0.1:1080", "[::1]:1080". */
import { BrookError, ErrorCodes } from '../errors.js';
import { formatAddress, makeAddress } from '../protocol/address.js';

export interface ListenAddress {
  /** undefined = all interfaces (":port"). */
  host: string | undefined;
  port: number;
}

export function parseListen(s: string): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(s.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new BrookError(ErrorCodes.CONFIG, `invalid listen address ${JSON.stringify(s)} (expected host:port or :port)`);
  }
  const host = m[1] ?? (m[2] || undefined);
  return { host, port };
}

/** "127.0.0.1:1080", "[::1]:1080": a bound or peer address as log lines show it. */
export function formatBound(a: { address: string; port: number }): string {
  return formatAddress(makeAddress(a.address, a.port));
}
