/**
 * One CA conversation for one domain (used by CertManager, src/tls/acme.ts): the account
 * (looked up by its key, created when there is none), an order over HTTP-01 whose tokens are
 * published in the manager's `tokens` map while it is pending, and the key and certificate it
 * yields. Every request to the CA goes through this orderer's own agent (its CA bundle, its
 * timeout), and a request that got no response is reported with the socket's own error.
 */
import https from 'node:https';
import * as acme from 'acme-client';
import { BrookError, ErrorCodes } from '../errors.js';

type HttpRequestFn = (url: string, method: string, opts?: Record<string, unknown>) => Promise<unknown>;

export interface OrderOptions {
  domain: string;
  directoryUrl: string;
  email?: string;
  /** PEM CA(s) trusted for the ACME server itself (this orderer's requests only). */
  caBundle?: string | Buffer;
  requestTimeoutMs: number;
  /** acme-client's backoff minimum when polling an order or challenge. */
  pollIntervalMs: number;
  skipChallengeVerification: boolean;
  log: (msg: string) => void;
}

/** A new ACME account key (PEM). */
export async function createAccountKey(): Promise<Buffer> {
  return acme.crypto.createPrivateEcdsaKey();
}

export class AcmeOrderer {
  private readonly agent: https.Agent;
  /** Last socket error on this orderer's agent: acme-client 5.4 loses it once retries are exhausted. */
  private lastNetError: Error | null = null;
  /** Account URL at the directory, once known (memory only). */
  private accountUrl: string | null = null;

  constructor(
    private readonly o: OrderOptions,
    private readonly tokens: Map<string, string>,
  ) {
    // One agent per orderer: the CA bundle (if any) applies to these ACME requests only;
    // without it Node's default root store is used.
    this.agent = new https.Agent({ keepAlive: false, ...(o.caBundle !== undefined ? { ca: o.caBundle } : {}) });
    const createConnection = this.agent.createConnection.bind(this.agent) as (...a: unknown[]) => NodeJS.EventEmitter;
    (this.agent as unknown as { createConnection: unknown }).createConnection = (...a: unknown[]) => {
      const socket = createConnection(...a);
      socket.once('error', (e: Error) => (this.lastNetError = e));
      return socket;
    };
  }

  /** Look the account up again on the next order (after a failure: it may be gone). */
  forgetAccount(): void {
    this.accountUrl = null;
  }

  close(): void {
    this.agent.destroy();
  }

  /** Orders a certificate for the domain with the account of `accountKey`; the caller checks what it gets. */
  async order(accountKey: Buffer): Promise<{ cert: string; key: string }> {
    const client = this.client(accountKey);
    if (!this.accountUrl) {
      // Look the key's account up first: acme-client's auto() would "update" an existing
      // account with {termsOfServiceAgreed}, which pebble (RFC 8555 strictly) refuses.
      try {
        await client.createAccount({ onlyReturnExisting: true });
      } catch {
        await client.createAccount({
          termsOfServiceAgreed: true,
          ...(this.o.email ? { contact: [`mailto:${this.o.email}`] } : {}),
        });
      }
      this.accountUrl = client.getAccountUrl();
    }
    const [key, csr] = await acme.crypto.createCsr(
      { commonName: this.o.domain, altNames: [this.o.domain] },
      await acme.crypto.createPrivateEcdsaKey(),
    );
    this.o.log(`ordering certificate for ${this.o.domain} from ${this.o.directoryUrl}`);
    const cert = await client.auto({
      csr,
      challengePriority: ['http-01'],
      skipChallengeVerification: this.o.skipChallengeVerification,
      challengeCreateFn: async (_authz, challenge, keyAuthorization) => {
        if (challenge.type === 'http-01') this.tokens.set(challenge.token, keyAuthorization);
      },
      challengeRemoveFn: async (_authz, challenge) => {
        if (challenge.type === 'http-01') this.tokens.delete(challenge.token);
      },
    });
    return { cert, key: key.toString() };
  }

  private client(accountKey: Buffer): acme.Client {
    const client = new acme.Client({
      directoryUrl: this.o.directoryUrl,
      accountKey,
      accountUrl: this.accountUrl ?? undefined,
      backoffMin: this.o.pollIntervalMs,
    });
    // acme-client 5.4 sends every ACME request through client.http.request() on the
    // process-wide acme.axios instance; wrap it on this client only so the CA bundle
    // and the timeout never touch acme.axios defaults.
    const httpClient = (client as unknown as { http?: { request?: HttpRequestFn } }).http;
    if (!httpClient || typeof httpClient.request !== 'function') {
      throw new BrookError(ErrorCodes.INTERNAL, 'acme-client internals changed: Client.http.request not found');
    }
    const original = httpClient.request.bind(httpClient);
    const timeout = this.o.requestTimeoutMs;
    httpClient.request = async (url, method, o = {}) => {
      this.lastNetError = null;
      try {
        return await original(url, method, Object.assign(o, { timeout, httpsAgent: this.agent }));
      } catch (e) {
        // When acme-client gives up on a request that got no response (refused, reset,
        // timeout) its interceptor throws a TypeError instead of the network error.
        if ((e as { isAxiosError?: boolean })?.isAxiosError && (e as { response?: unknown }).response) throw e;
        const net = this.lastNetError as NodeJS.ErrnoException | null;
        const why = net ? net.message : (e as { code?: string })?.code === 'ECONNABORTED' || e instanceof TypeError
          ? `no response (network error or timeout after ${timeout} ms)`
          : (e as Error)?.message ?? String(e);
        throw new Error(`${method.toUpperCase()} ${url}: ${why}`, { cause: net ?? e });
      }
    };
    return client;
  }
}
