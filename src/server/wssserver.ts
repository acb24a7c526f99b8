/**
 * wssserver: wsserver over TLS, for one domain. With certificate files they are used;
 * with ACME settings a certificate for the domain is obtained (HTTP-01 on port 80,
 * configurable), cached on disk and renewed in place (protocol/wss-certificates.md).
 *
 * Order: the options are checked first (the WsServer is made before any file is read,
 * port bound or CA asked), then the certificate, then the https listener.
 */
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Server as TlsServer } from 'node:tls';
import { BrookError, ErrorCodes } from '../errors.js';
import { parseHostPort } from '../protocol/address.js';
import type { CertManager } from '../tls/acme.js';
import { loadCertFiles } from '../tls/certfiles.js';
import { attachCertManager, createPortEightyServer, createTlsOptions } from '../tls/tlsserver.js';
import { parseListen } from '../net/listen.js';
import { createLogger } from '../log.js';
import { WsServer, type WsServerOptions } from './wsserver.js';

/** Obtain the certificate by ACME (HTTP-01). */
export interface WssAcmeOptions {
  /** ACME directory URL, or 'production' / 'staging' (Let's Encrypt); default production. */
  directory?: string;
  /** Contact email of the ACME account. */
  email?: string;
  /** Where the account key and certificates are kept (default .letsencrypt). */
  cacheDir?: string;
  /** CA bundle (PEM) trusted to reach the ACME server. */
  caBundle?: Buffer;
  /** Where to serve the HTTP-01 challenges and redirect to https (default ":80"). */
  httpListen?: string;
  /** Testing only: skip acme-client's own pre-check of the challenge. */
  skipChallengeVerification?: boolean;
}

export interface WssServerOptions extends Omit<WsServerOptions, 'listen' | 'tls'> {
  /** "domain:port": the certificate's name and the https port (upstream --domainaddress). */
  domainAddress: string;
  /** Where to listen for https; default all interfaces on the port of domainAddress. */
  listen?: string;
  /** PEM files (key and certificate checked to match and be current), or ACME. */
  certificate: { certFile: string; keyFile: string } | { acme: WssAcmeOptions };
}

export interface WssHandle {
  server: WsServer;
  /** Where https listens. */
  address: AddressInfo;
  domain: string;
  /** Where the certificate came from, and when the one served at start expires. */
  certificate: 'files' | 'acme';
  notAfter: Date;
  port80: HttpServer | null;
  certManager: CertManager | null;
  close(graceMs: number): Promise<void>;
}

/** The domain and port of domainAddress; an IP address is refused (a certificate needs a name). */
function domainOf(domainAddress: string): { domain: string; port: number } {
  const da = parseHostPort(domainAddress);
  if (da.type !== 'domain') throw new BrookError(ErrorCodes.CONFIG, `--domainaddress needs a domain name, got ${da.host}`);
  return { domain: da.host, port: da.port };
}

/** Start a wssserver: resolves once https listens (with ACME: once a certificate is held). */
export async function startWssServer(o: WssServerOptions): Promise<WssHandle> {
  const { domain, port } = domainOf(o.domainAddress);
  const { domainAddress: _da, certificate, ...rest } = o;
  // the certificate is installed below (setSecureContext), before the server listens
  const server = new WsServer({ ...rest, listen: o.listen ?? `:${port}`, tls: createTlsOptions({ domain }) });
  const tls = server.server as unknown as TlsServer;
  const handle = { server, domain, port80: null, certManager: null, close: (g: number) => server.close(g) };

  if ('certFile' in certificate) {
    const c = await loadCertFiles(certificate.certFile, certificate.keyFile);
    tls.setSecureContext({ cert: c.cert, key: c.key });
    o.metrics?.certificateExpiry(c.notAfter.getTime());
    return { ...handle, address: await server.listen(), certificate: 'files', notAfter: c.notAfter };
  }

  // acme-client (and its HTTP stack) is loaded only when ACME is used
  const { CertManager, resolveDirectoryUrl } = await import('../tls/acme.js');
  const a = certificate.acme;
  const log = o.log ?? createLogger();
  const manager = new CertManager({
    domain,
    directoryUrl: resolveDirectoryUrl(a.directory ?? 'production'),
    email: a.email,
    cacheDir: a.cacheDir ?? '.letsencrypt',
    caBundle: a.caBundle,
    skipChallengeVerification: Boolean(a.skipChallengeVerification),
    log: (e) => log({ ...e }),
  });
  manager.on('error', () => {
    /* logged by the manager; it keeps retrying with backoff */
  });
  manager.on('certificate', (c: { notAfter: Date }) => o.metrics?.certificateExpiry(c.notAfter.getTime()));
  manager.on('order', (result: 'issued' | 'renewed' | 'failed') => o.metrics?.acme(result));
  const httpListen = parseListen(a.httpListen ?? ':80');
  const port80 = await createPortEightyServer({ host: httpListen.host, port: httpListen.port, certManager: manager, httpsPort: port });
  const cert = await manager.start();
  attachCertManager(tls, manager);
  return {
    ...handle,
    address: await server.listen(),
    certificate: 'acme',
    notAfter: cert.notAfter,
    port80,
    certManager: manager,
    close: async (g) => {
      manager.stop();
      await Promise.all([server.close(g), new Promise<void>((r) => port80.close(() => r()))]);
    },
  };
}
