/**
 * TLS plumbing for wssserver (protocol/wss-certificates.md):
 * - createTlsOptions: tls/https server options with ALPN http/1.1 only and an
 *   SNICallback that accepts only the configured domain. Other SNI names fail
 *   the handshake. Clients that send no SNI (e.g. connecting by IP address)
 *   get the default context, i.e. the domain's certificate, as upstream does
 *   with --cert/--certkey.
 * - attachCertManager: swaps the server's default context in place
 *   (setSecureContext) on every 'certificate' event, so renewal needs no
 *   restart; open connections keep their session.
 * - createPortEightyServer: HTTP on port 80 serving the ACME HTTP-01 challenge
 *   and redirecting everything else to https (301).
 */

import http from 'node:http';
import tls from 'node:tls';
import type { CertManager, CurrentCert } from './acme.js';
import { ACME_CHALLENGE_PREFIX } from './constants.js';

export const ALPN_PROTOCOLS = ['http/1.1'];
export const HTTPS_DEFAULT_PORT = 443;
export const HTTP_DEFAULT_PORT = 80;

export function normalizeServerName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

export interface TlsOptionsInput {
  domain: string;
  /** Initial certificate for the default context (optional when attachCertManager installs it later). */
  cert?: string;
  key?: string;
  /**
   * Context for a matching SNI name. Returning undefined (or omitting it) uses the
   * server's default context, which attachCertManager keeps current.
   */
  getContext?: () => tls.SecureContext | undefined;
}

export function createTlsOptions(input: TlsOptionsInput): tls.TlsOptions {
  const domain = normalizeServerName(input.domain);
  const opts: tls.TlsOptions = {
    ALPNProtocols: ALPN_PROTOCOLS,
    SNICallback: (servername, cb) => {
      if (normalizeServerName(servername) !== domain) {
        cb(new Error(`unknown server name ${JSON.stringify(servername)}`), undefined);
        return;
      }
      // undefined context: Node keeps the default context.
      cb(null, input.getContext?.() as tls.SecureContext);
    },
  };
  if (input.cert !== undefined) opts.cert = input.cert;
  if (input.key !== undefined) opts.key = input.key;
  return opts;
}

/**
 * Installs manager.current() (if any) and every later certificate into `server`
 * with setSecureContext. Returns a function that detaches the listener.
 */
export function attachCertManager(server: tls.Server, manager: CertManager): () => void {
  const apply = (c: CurrentCert): void => {
    server.setSecureContext({ cert: c.cert, key: c.key });
  };
  const cur = manager.current();
  if (cur) apply(cur);
  manager.on('certificate', apply);
  return () => {
    manager.off('certificate', apply);
  };
}

export interface PortEightyOptions {
  /** Listen address; default all interfaces. */
  host?: string;
  /** Default 80; ACME validates HTTP-01 there (pebble: its configured httpPort). */
  port?: number;
  certManager: CertManager;
  /** Port of the https server, used in redirects; omitted from the URL when 443. */
  httpsPort?: number;
}

/** Listens and resolves with the server: the ACME challenge, else 301 to https://<domain>[:httpsPort]<path>. */
export function createPortEightyServer(opts: PortEightyOptions): Promise<http.Server> {
  const challenge = opts.certManager.challengeHandler();
  const httpsPort = opts.httpsPort ?? HTTPS_DEFAULT_PORT;
  const origin = `https://${opts.certManager.domain}${httpsPort === HTTPS_DEFAULT_PORT ? '' : `:${httpsPort}`}`;
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    if (url.startsWith(ACME_CHALLENGE_PREFIX)) {
      challenge(req, res);
      return;
    }
    const path = url.startsWith('/') ? url : '/';
    res.writeHead(301, { Location: origin + path, 'Content-Length': '0', Connection: 'close' });
    res.end();
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? HTTP_DEFAULT_PORT, opts.host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
