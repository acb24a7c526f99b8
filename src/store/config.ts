/**
 * Where the fleet's store is: a redis:// or rediss:// URL, its password and its CA.
 * Spec: protocol/fleet.md#connection
 *
 *   redis://[user@]host[:port][/db]       plain TCP (a private network or loopback)
 *   rediss://[user@]host[:port][/db]      TLS; the server's certificate checked against
 *                                         the system's CAs, or only the --redisCA file's
 *
 * The password follows the rule of --passwordFile (src/password.ts): never on the
 * command line, where every local user reads it in `ps`. So a URL that came from argv
 * may not carry one (a CONFIG error says to use a file); the password comes from a
 * file (--redisPasswordFile, the same one-line format as --passwordFile), or the URL
 * comes from somewhere private (the environment variable REDIS_URL_ENV, a config file,
 * the API) and may carry it. Both at once is an error, as --password with --passwordFile.
 *
 * The URL is parsed here, not by the client library: ioredis would take any query
 * parameter as a client option (enableOfflineQueue=true would undo the bounds of
 * src/store/store.ts), so a query string is refused.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { formatHostPort } from '../protocol/address.js';
import { BrookError, ErrorCodes } from '../errors.js';
import { readPasswordFile } from '../password.js';

/** Environment variable the CLI may read the URL from (it may carry a password there). */
export const REDIS_URL_ENV = 'BROOK_TS_REDIS_URL';
/** Redis's own default port. */
export const DEFAULT_REDIS_PORT = 6379;
/** Highest database index accepted in the URL's path (Redis's default is 16 databases). */
const MAX_DB_INDEX = 1_000_000;
/** A CA file larger than this is refused (a bundle of a few hundred certificates fits). */
const MAX_CA_FILE_BYTES = 1 << 20;

/** Where the URL came from: only 'argv' forbids a password in it. */
export type UrlSource = 'argv' | 'env' | 'file' | 'api';

export interface StoreConfigInput {
  /** redis:// or rediss:// (--redis URL). */
  url: string;
  /** Default 'argv' (the strictest). */
  urlFrom?: UrlSource;
  /** A file holding the password on one line (--redisPasswordFile), read with readPasswordFile. */
  passwordFile?: string;
  /** PEM file of the CA(s) that may sign the store's certificate (--redisCA); rediss:// only. */
  caFile?: string;
  /** Name of the URL option in messages (default "--redis"). */
  what?: string;
}

/** A parsed endpoint: what src/store/store.ts hands the client library. */
export interface StoreEndpoint {
  host: string;
  port: number;
  db: number;
  /** ACL user (Redis 6+); undefined: AUTH with the password alone (requirepass). */
  username: string | undefined;
  password: string | undefined;
  /** rediss://: TLS options for tls.connect; undefined: plain TCP. */
  tls: { ca?: Buffer; servername?: string } | undefined;
  /** The URL with no password, for log lines and errors. */
  display: string;
}

function configError(msg: string): BrookError {
  return new BrookError(ErrorCodes.CONFIG, msg);
}

function readCa(path: string): Buffer {
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw configError(`cannot read --redisCA ${path}: ${err.code === 'ENOENT' ? 'no such file' : (err.message.split('\n')[0] ?? '')}`);
  }
  if (pem.length > MAX_CA_FILE_BYTES) throw configError(`--redisCA ${path} is larger than ${MAX_CA_FILE_BYTES} bytes`);
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw configError(`--redisCA ${path} holds no PEM certificate`);
  return pem;
}

function parseDb(pathname: string, what: string): number {
  if (pathname === '' || pathname === '/') return 0;
  const s = pathname.slice(1);
  if (!/^\d{1,7}$/.test(s) || Number(s) > MAX_DB_INDEX) throw configError(`${what}: the path must be a database number (/0, /1, ...), got ${pathname}`);
  return Number(s);
}

/** Parse and check a store URL and its password / CA sources (reads the files). */
export function resolveStoreEndpoint(i: StoreConfigInput): StoreEndpoint {
  const what = i.what ?? '--redis';
  let u: URL;
  try {
    u = new URL(i.url);
  } catch {
    throw configError(`${what}: not a URL: expected redis://host:port or rediss://host:port`);
  }
  const secure = u.protocol === 'rediss:';
  if (!secure && u.protocol !== 'redis:') throw configError(`${what}: scheme ${u.protocol} is not redis:// or rediss://`);
  if (u.hostname === '') throw configError(`${what}: no host`);
  if (u.search !== '' || u.hash !== '') throw configError(`${what}: query strings and fragments are not accepted (the client's options are fixed by brook-ts)`);
  const urlPassword = u.password === '' ? undefined : decodeURIComponent(u.password);
  if (urlPassword !== undefined && (i.urlFrom ?? 'argv') === 'argv') {
    throw configError(`${what}: a password in the URL would be visible to every local user (ps): put it alone in a file and give --redisPasswordFile FILE`);
  }
  if (urlPassword !== undefined && i.passwordFile !== undefined) throw configError(`${what} has a password and --redisPasswordFile is given: use one of them`);
  if (i.caFile !== undefined && !secure) throw configError(`--redisCA needs a rediss:// URL (TLS); ${what} is redis://`);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = u.port === '' ? DEFAULT_REDIS_PORT : Number(u.port);
  if (port === 0) throw configError(`${what}: port 0`);
  const db = parseDb(u.pathname, what);
  const username = u.username === '' ? undefined : decodeURIComponent(u.username);
  const password = i.passwordFile !== undefined ? readPasswordFile(i.passwordFile, '--redisPasswordFile') : urlPassword;
  let tls: StoreEndpoint['tls'];
  if (secure) {
    tls = {};
    if (i.caFile !== undefined) tls.ca = readCa(i.caFile);
    if (isIP(host) === 0) tls.servername = host;
  }
  const display = `${u.protocol}//${username !== undefined ? `${encodeURIComponent(username)}@` : ''}${formatHostPort(host, port)}${db !== 0 ? `/${db}` : ''}`;
  return { host, port, db, username, password, tls, display };
}
