/**
 * CertManager: a certificate for one domain from an ACME CA (Let's Encrypt by
 * default) over HTTP-01, cached on disk and renewed in place.
 * See protocol/wss-certificates.md for the cache layout, the renewal rule and
 * the retry policy.
 *
 *   start() --cache valid?--> current --every checkIntervalMs--> renew when
 *        \                                     remaining < renewBefore
 *         `--no--> order (acme-client auto, HTTP-01) --fail--> 'error' (ACME_FAILED),
 *                                                   retry with exponential backoff
 *
 * The CA conversation itself (account, order, the agent and its errors) is src/tls/acme-order.ts;
 * this file keeps the cache, the renewal schedule and the HTTP-01 answers.
 */

import { EventEmitter } from 'node:events';
import type http from 'node:http';
import { constants as fsConstants } from 'node:fs';
import { access, chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import * as acme from 'acme-client';
import { AcmeOrderer, createAccountKey } from './acme-order.js';
import { BrookError, ErrorCodes } from '../errors.js';
import { checkKeyPair, readCertInfo } from './certfiles.js';
import { ACME_CHALLENGE_PREFIX } from './constants.js';

export const LETSENCRYPT_PRODUCTION: string = acme.directory.letsencrypt.production;
export const LETSENCRYPT_STAGING: string = acme.directory.letsencrypt.staging;
/** Upstream Brook's cache directory, relative to the working directory. */
export const DEFAULT_CACHE_DIR = '.letsencrypt';
export const DAY_MS = 24 * 60 * 60 * 1000;
export const DEFAULT_RENEW_BEFORE_MS = 30 * DAY_MS;
/** For certificates shorter than 90 days: renew when less than 1/RENEW_LIFETIME_DIVISOR of the lifetime remains. */
export const RENEW_LIFETIME_DIVISOR = 3;
export const DEFAULT_CHECK_INTERVAL_MS = 12 * 60 * 60 * 1000;
export const DEFAULT_RETRY = { initialMs: 60 * 1000, maxMs: 60 * 60 * 1000 } as const;
/** Per-HTTP-request timeout towards the ACME server. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30 * 1000;
/** acme-client's own default first poll delay. */
export const DEFAULT_POLL_INTERVAL_MS = 5 * 1000;
export { ACME_CHALLENGE_PREFIX };
export const CACHE_FILE_MODE = 0o600;
export const CACHE_DIR_MODE = 0o700;
export const ACCOUNT_KEY_FILE = 'account.key.pem';

/** setTimeout's largest delay (2^31 - 1 ms, about 24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

function formatDelay(ms: number): string {
  return ms < 10_000 ? `${ms} ms` : `${Math.round(ms / 1000)} s`;
}

/** Accepts 'production', 'staging' or a directory URL; undefined means production. */
export function resolveDirectoryUrl(v?: string): string {
  if (v === undefined || v === '' || v === 'production') return LETSENCRYPT_PRODUCTION;
  if (v === 'staging') return LETSENCRYPT_STAGING;
  return v;
}

/** How long before notAfter to renew: the override if given, else min(30 days, lifetime / 3). */
export function renewBeforeMsFor(notBefore: Date, notAfter: Date, override?: number): number {
  if (override !== undefined) return override;
  const lifetime = notAfter.getTime() - notBefore.getTime();
  return Math.min(DEFAULT_RENEW_BEFORE_MS, Math.max(0, lifetime / RENEW_LIFETIME_DIVISOR));
}

export interface AcmeLogEntry {
  level: 'info' | 'warn' | 'error';
  msg: string;
  domain: string;
  code?: string;
}

export interface AcmeOptions {
  domain: string;
  /** ACME directory URL, or 'production' / 'staging' (Let's Encrypt). Default production. */
  directoryUrl?: string;
  email?: string;
  /** Default '.letsencrypt', resolved against the working directory at construction. */
  cacheDir?: string;
  /** PEM CA(s) trusted for the ACME server itself (this manager's requests only). */
  caBundle?: string | Buffer;
  renewBeforeMs?: number;
  checkIntervalMs?: number;
  retry?: { initialMs: number; maxMs: number };
  /** Skip acme-client's own pre-check of the HTTP-01 token (tests: the system resolver does not know the name). Default false. */
  skipChallengeVerification?: boolean;
  requestTimeoutMs?: number;
  /** First delay when polling an order/challenge for a status change (acme-client backoff minimum). Default 5 s. */
  pollIntervalMs?: number;
  now?: () => number;
  log?: (entry: AcmeLogEntry) => void;
}

export interface CurrentCert {
  cert: string;
  key: string;
  notAfter: Date;
  notBefore: Date;
  serialNumber: string;
}

const DOMAIN_RE = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/;

interface Waiter {
  resolve: (c: CurrentCert) => void;
  reject: (e: Error) => void;
}

export class CertManager extends EventEmitter {
  readonly domain: string;
  readonly directoryUrl: string;
  readonly cacheDir: string;
  private readonly opts: AcmeOptions;
  private readonly now: () => number;
  /** The CA conversation (src/tls/acme-order.ts); it fills `tokens` while an order is pending. */
  private readonly orderer: AcmeOrderer;
  private readonly tokens = new Map<string, string>();
  private cur: CurrentCert | null = null;
  private timer: NodeJS.Timeout | null = null;
  private failures = 0;
  private lastError: BrookError | null = null;
  private started = false;
  private stopped = false;
  private busy = false;
  private waiters = new Set<Waiter>();

  constructor(opts: AcmeOptions) {
    super();
    const domain = opts.domain.toLowerCase().replace(/\.$/, '');
    if (!DOMAIN_RE.test(domain)) {
      throw new BrookError(ErrorCodes.CONFIG, `ACME needs a DNS name, got ${JSON.stringify(opts.domain)}`);
    }
    this.domain = domain;
    this.opts = opts;
    this.directoryUrl = resolveDirectoryUrl(opts.directoryUrl);
    this.cacheDir = resolve(opts.cacheDir ?? DEFAULT_CACHE_DIR);
    this.now = opts.now ?? Date.now;
    this.orderer = new AcmeOrderer(
      {
        domain,
        directoryUrl: this.directoryUrl,
        email: opts.email,
        caBundle: opts.caBundle,
        requestTimeoutMs: opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
        pollIntervalMs: opts.pollIntervalMs ?? DEFAULT_POLL_INTERVAL_MS,
        skipChallengeVerification: opts.skipChallengeVerification ?? false,
        log: (msg) => this.log('info', msg),
      },
      this.tokens,
    );
  }

  /** Serves GET/HEAD /.well-known/acme-challenge/<token> while an order is pending; 404 otherwise. */
  challengeHandler(): (req: http.IncomingMessage, res: http.ServerResponse) => void {
    return (req, res) => {
      const path = (req.url ?? '').split('?')[0]!;
      const keyAuth =
        (req.method === 'GET' || req.method === 'HEAD') && path.startsWith(ACME_CHALLENGE_PREFIX)
          ? this.tokens.get(path.slice(ACME_CHALLENGE_PREFIX.length))
          : undefined;
      if (keyAuth === undefined) {
        res.writeHead(404, { 'Content-Length': '0' });
        res.end();
        return;
      }
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(keyAuth) });
      res.end(req.method === 'HEAD' ? undefined : keyAuth);
    };
  }

  /** True if `path` is an ACME challenge path (for callers routing requests). */
  static isChallengePath(path: string | undefined): boolean {
    return (path ?? '').startsWith(ACME_CHALLENGE_PREFIX);
  }

  current(): CurrentCert | null {
    return this.cur;
  }

  /** Uses a valid cached certificate or obtains one; resolves once a certificate exists (retrying meanwhile). */
  async start(): Promise<CurrentCert> {
    if (this.stopped) throw new BrookError(ErrorCodes.CLOSED, 'CertManager stopped');
    if (!this.started) {
      this.started = true;
      await this.checkCacheDir();
      const cached = await this.loadCache();
      if (this.stopped) throw new BrookError(ErrorCodes.CLOSED, 'CertManager stopped');
      if (cached) {
        this.log('info', `using cached certificate for ${this.domain} (serial ${cached.serialNumber}, notAfter ${cached.notAfter.toISOString()})`);
        this.install(cached);
        this.schedule(this.needsRenewal() ? 0 : this.nextCheckDelay());
      } else {
        this.schedule(0);
      }
    }
    return this.waitForCertificate();
  }

  /**
   * The cache directory must exist (it is made, mode 0700) and be writable, or start() fails at once with a
   * one-line CONFIG error: retrying could never help, and a server that retries without listening looks alive.
   */
  private async checkCacheDir(): Promise<void> {
    try {
      await mkdir(this.cacheDir, { recursive: true, mode: CACHE_DIR_MODE });
      await access(this.cacheDir, fsConstants.W_OK);
    } catch (e) {
      const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      throw new BrookError(ErrorCodes.CONFIG, `--cacheDir ${this.cacheDir} is not a writable directory (${why})`, { cause: e });
    }
  }

  /** Resolves with the current certificate, or once one exists; rejects with TIMEOUT after timeoutMs, CLOSED on stop(). */
  waitForCertificate(timeoutMs?: number): Promise<CurrentCert> {
    if (this.cur) return Promise.resolve(this.cur);
    if (this.stopped) return Promise.reject(new BrookError(ErrorCodes.CLOSED, 'CertManager stopped'));
    return new Promise<CurrentCert>((res, rej) => {
      let t: NodeJS.Timeout | undefined;
      const w: Waiter = {
        resolve: (c) => {
          if (t) clearTimeout(t);
          res(c);
        },
        reject: (e) => {
          if (t) clearTimeout(t);
          rej(e);
        },
      };
      this.waiters.add(w);
      if (timeoutMs !== undefined) {
        t = setTimeout(() => {
          this.waiters.delete(w);
          const last = this.lastError ? `; last error: ${this.lastError.message}` : '';
          rej(new BrookError(ErrorCodes.TIMEOUT, `no certificate for ${this.domain} after ${timeoutMs} ms${last}`, { cause: this.lastError ?? undefined }));
        }, timeoutMs);
      }
    });
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.orderer.close();
    const err = new BrookError(ErrorCodes.CLOSED, 'CertManager stopped');
    for (const w of this.waiters) w.reject(err);
    this.waiters.clear();
  }

  // ---- internals ----

  private certFile(): string {
    return join(this.cacheDir, `${this.domain}.crt.pem`);
  }

  private keyFile(): string {
    return join(this.cacheDir, `${this.domain}.key.pem`);
  }

  private renewAt(c: CurrentCert): number {
    return c.notAfter.getTime() - renewBeforeMsFor(c.notBefore, c.notAfter, this.opts.renewBeforeMs);
  }

  private needsRenewal(): boolean {
    return this.cur === null || this.now() >= this.renewAt(this.cur);
  }

  private nextCheckDelay(): number {
    const interval = this.opts.checkIntervalMs ?? DEFAULT_CHECK_INTERVAL_MS;
    if (!this.cur) return interval;
    const untilRenew = this.renewAt(this.cur) - this.now();
    return untilRenew > 0 ? Math.min(interval, untilRenew) : interval;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.tick(), Math.min(Math.max(0, delayMs), MAX_TIMER_MS));
    // While no certificate exists the timer keeps the process alive (start() is pending on it).
    if (this.cur) this.timer.unref();
  }

  private async tick(): Promise<void> {
    this.timer = null;
    if (this.stopped || this.busy) return;
    if (!this.needsRenewal()) {
      this.schedule(this.nextCheckDelay());
      return;
    }
    this.busy = true;
    const renewal = this.cur !== null;
    try {
      const fresh = await this.obtain();
      if (this.stopped) return;
      this.failures = 0;
      this.lastError = null;
      this.install(fresh);
      this.emit('order', renewal ? 'renewed' : 'issued');
      this.log('info', `obtained certificate for ${this.domain} (serial ${fresh.serialNumber}, notAfter ${fresh.notAfter.toISOString()})`);
      this.schedule(this.nextCheckDelay());
    } catch (e) {
      if (this.stopped) return;
      this.orderer.forgetAccount(); // look the account up again next time (it may be gone, e.g. another CA)
      this.failures++;
      const retry = this.opts.retry ?? DEFAULT_RETRY;
      const delay = Math.min(retry.maxMs, retry.initialMs * 2 ** Math.min(this.failures - 1, 30));
      const cause = (e as Error)?.message ?? String(e);
      const err = new BrookError(
        ErrorCodes.ACME_FAILED,
        `ACME order for ${this.domain} at ${this.directoryUrl} failed (attempt ${this.failures}): ${cause}; retrying in ${formatDelay(delay)}`,
        { cause: e },
      );
      this.lastError = err;
      this.log('error', err.message, err.code);
      this.emit('order', 'failed');
      if (this.listenerCount('error') > 0) this.emit('error', err);
      this.schedule(delay);
    } finally {
      this.busy = false;
    }
  }

  private install(c: CurrentCert): void {
    this.cur = c;
    try {
      this.emit('certificate', c);
    } catch (e) {
      // A failing listener must not turn a good certificate into a failed order.
      this.log('error', `'certificate' listener threw: ${(e as Error)?.message ?? String(e)}`);
    }
    for (const w of this.waiters) w.resolve(c);
    this.waiters.clear();
  }

  /** Validates a cert/key pair for this domain; returns null (with a log line) if unusable. */
  private validate(cert: string, key: string, source: string): CurrentCert | null {
    try {
      const info = readCertInfo(cert, source);
      checkKeyPair(info, key, source);
      if (!info.names.includes(this.domain)) {
        this.log('warn', `${source}: certificate is for ${info.names.join(', ')}, not ${this.domain}`);
        return null;
      }
      if (info.notAfter.getTime() <= this.now()) {
        this.log('warn', `${source}: certificate expired on ${info.notAfter.toISOString()}`);
        return null;
      }
      return { cert, key, notAfter: info.notAfter, notBefore: info.notBefore, serialNumber: info.serialNumber };
    } catch (e) {
      this.log('warn', `${source}: ${(e as Error).message}`);
      return null;
    }
  }

  private async loadCache(): Promise<CurrentCert | null> {
    let cert: string;
    let key: string;
    try {
      [cert, key] = await Promise.all([readFile(this.certFile(), 'utf8'), readFile(this.keyFile(), 'utf8')]);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') this.log('warn', `cache ${this.cacheDir}: ${(e as Error).message}`);
      return null;
    }
    return this.validate(cert, key, `cache ${this.certFile()}`);
  }

  private async writePrivate(file: string, data: string): Promise<void> {
    const tmp = `${file}.${process.pid}.tmp`;
    await writeFile(tmp, data, { mode: CACHE_FILE_MODE });
    await chmod(tmp, CACHE_FILE_MODE);
    await rename(tmp, file);
  }

  private async accountKey(): Promise<Buffer> {
    const file = join(this.cacheDir, ACCOUNT_KEY_FILE);
    try {
      return await readFile(file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const key = await createAccountKey();
    await this.writePrivate(file, key.toString());
    this.log('info', `created ACME account key ${file}`);
    return key;
  }

  private async obtain(): Promise<CurrentCert> {
    await mkdir(this.cacheDir, { recursive: true, mode: CACHE_DIR_MODE });
    const got = await this.orderer.order(await this.accountKey());
    const fresh = this.validate(got.cert, got.key, `ACME certificate from ${this.directoryUrl}`);
    if (!fresh) throw new Error('the CA returned a certificate that does not fit this domain and key');
    // key first: a crash between the two writes leaves a mismatching pair, which the cache rejects.
    await this.writePrivate(this.keyFile(), fresh.key);
    await this.writePrivate(this.certFile(), fresh.cert);
    return fresh;
  }

  private log(level: AcmeLogEntry['level'], msg: string, code?: string): void {
    this.opts.log?.({ level, msg, domain: this.domain, ...(code ? { code } : {}) });
  }
}
