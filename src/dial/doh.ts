/**
 * DNS over HTTPS (RFC 8484), given as upstream writes it:
 *
 *   https://dns.google/dns-query?address=8.8.8.8%3A443
 *
 * `address` (IP:port) is where the TCP connection goes; the URL's host is the
 * TLS server name (SNI, certificate check) and the Host header; the request
 * goes to the URL without the `address` parameter. POST (as upstream) or GET
 * (`?dns=` base64url), both with application/dns-message.
 *
 * Connections are kept alive in a small pool (an http.Agent whose sockets we
 * open ourselves: TCP through the IpTransport, then TLS), so a busy server
 * does not pay a handshake per lookup. The reply body is bounded (a DNS
 * message is at most 65535 bytes) and the whole exchange times out.
 */
import { Agent, type ClientRequestArgs, request } from 'node:http';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import { rootCertificates, connect as tlsConnect } from 'node:tls';
import { BrookError, ErrorCodes, toBrookError } from '../errors.js';
import { MAX_DNS_MESSAGE } from './dns-message.js';
import type { IpTransport } from './types.js';

export const DNS_MESSAGE_MEDIA_TYPE = 'application/dns-message';
/** Kept-alive connections to the DoH server, at most. */
export const DOH_MAX_SOCKETS = 4;
/** An idle pooled connection is closed after this long. */
export const DOH_IDLE_MS = 30_000;
const HTTP_OK = 200;

export interface DohServer {
  /** The URL without `address`: what is requested, and whose host is SNI and Host. */
  url: URL;
  /** Where to connect (the `address` parameter): an IP literal and a port. */
  connectHost: string;
  connectPort: number;
}

export interface DohClientOptions {
  /** Extra trusted CA certificates (PEM), in addition to Node's bundled roots. */
  ca?: string | Buffer | Array<string | Buffer>;
  /** 'POST' (upstream's) or 'GET'. */
  method?: 'POST' | 'GET';
  maxResponseBytes?: number;
}

export class DohClient {
  private readonly agent: Agent;
  private readonly method: 'POST' | 'GET';
  private readonly maxResponse: number;

  constructor(
    readonly server: DohServer,
    transport: IpTransport,
    o: DohClientOptions = {},
  ) {
    this.method = o.method ?? 'POST';
    this.maxResponse = o.maxResponseBytes ?? MAX_DNS_MESSAGE;
    const host = server.url.hostname.replace(/^\[|\]$/g, '');
    const servername = isIP(host) ? undefined : host;
    const extra = o.ca === undefined ? [] : Array.isArray(o.ca) ? o.ca : [o.ca];
    // added to Node's roots (a `ca` option alone would replace them)
    const ca = extra.length > 0 ? [...rootCertificates, ...extra] : undefined;
    const agent = new Agent({ keepAlive: true, maxSockets: DOH_MAX_SOCKETS, maxFreeSockets: DOH_MAX_SOCKETS, timeout: DOH_IDLE_MS });
    // our own sockets: TCP to `address` through the transport, then TLS for the URL's host
    agent.createConnection = (opts: ClientRequestArgs, cb?: (err: Error | null, s: Duplex) => void) => {
      const timeoutMs = typeof opts.timeout === 'number' && opts.timeout > 0 ? opts.timeout : DOH_IDLE_MS;
      transport.connectTcp(server.connectHost, server.connectPort, timeoutMs).then(
        (tcp) => {
          const tls = tlsConnect({
            socket: tcp,
            host,
            ...(servername ? { servername } : {}),
            ALPNProtocols: ['http/1.1'],
            ...(ca ? { ca } : {}),
          });
          cb?.(null, tls);
        },
        (e: unknown) => cb?.(toBrookError(e), undefined as unknown as Duplex),
      );
      return undefined;
    };
    this.agent = agent;
  }

  /** One query (its id should be 0, RFC 8484 section 4.1); resolves with the raw reply message. */
  exchange(query: Buffer, timeoutMs: number): Promise<Buffer> {
    const u = this.server.url;
    const get = this.method === 'GET';
    let path = u.pathname + u.search;
    if (get) path += (u.search ? '&' : '?') + 'dns=' + query.toString('base64url');
    const headers: Record<string, string> = { host: u.host, accept: DNS_MESSAGE_MEDIA_TYPE };
    if (!get) {
      headers['content-type'] = DNS_MESSAGE_MEDIA_TYPE;
      headers['content-length'] = String(query.length);
    }
    const what = `DoH ${u.host}`;
    return new Promise<Buffer>((resolve, reject) => {
      let done = false;
      const finish = (err: BrookError | null, body?: Buffer) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) {
          req.destroy();
          reject(err);
        } else resolve(body!);
      };
      const req = request({
        agent: this.agent,
        method: this.method,
        host: u.hostname,
        port: u.port || 443,
        path,
        headers,
        timeout: timeoutMs,
      });
      const timer = setTimeout(() => finish(new BrookError(ErrorCodes.TIMEOUT, `${what}: no answer within ${timeoutMs} ms`)), timeoutMs);
      req.on('error', (e) => {
        const err = toBrookError(e);
        finish(new BrookError(err.code === ErrorCodes.INTERNAL ? ErrorCodes.DNS_FAILED : err.code, `${what}: ${err.message}`, { cause: e }));
      });
      req.on('response', (res) => {
        const type = String(res.headers['content-type'] ?? '');
        if (res.statusCode !== HTTP_OK || !type.toLowerCase().startsWith(DNS_MESSAGE_MEDIA_TYPE)) {
          res.resume();
          finish(new BrookError(ErrorCodes.DNS_FAILED, `${what}: HTTP ${res.statusCode} ${JSON.stringify(type.slice(0, 64))}`));
          return;
        }
        const declared = Number(res.headers['content-length'] ?? 0);
        if (declared > this.maxResponse) {
          finish(new BrookError(ErrorCodes.DNS_FAILED, `${what}: answer of ${declared} bytes exceeds ${this.maxResponse}`));
          return;
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          size += d.length;
          if (size > this.maxResponse) {
            finish(new BrookError(ErrorCodes.DNS_FAILED, `${what}: answer exceeds ${this.maxResponse} bytes`));
            return;
          }
          chunks.push(d);
        });
        res.on('end', () => finish(null, Buffer.concat(chunks)));
        res.on('error', (e) => finish(toBrookError(e)));
      });
      req.end(get ? undefined : query);
    });
  }

  /** Close the pooled connections. */
  close(): void {
    this.agent.destroy();
  }
}
