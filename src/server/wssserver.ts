/**
 * wssserver: wsserver over TLS. With --cert/--certkey the files are used;
 * without them a certificate for the domain is obtained by ACME (HTTP-01 on
 * port 80, configurable), cached on disk and renewed in place
 * (protocol/wss-certificates.md).
 */
import type { Server as HttpServer } from 'node:http';
import type { Server as TlsServer } from 'node:tls';
import { BrookError, ErrorCodes } from '../errors.js';
import type { Runtime } from '../runtime.js';
import { parseHostPort } from '../protocol/address.js';
import { loadCertFiles } from '../tls/certfiles.js';
import { attachCertManager, createPortEightyServer, createTlsOptions } from '../tls/tlsserver.js';
import { formatBound, parseListen } from '../net/listen.js';
import { readFileSync } from 'node:fs';
import { WsServer, type WsServerOptions } from './wsserver.js';
import { replayGuardForProcess } from '../cluster.js';
import { checkKeepalive } from '../net/tunnel-transform.js';

type Opts = Record<string, unknown>;

export interface WssHandle {
  server: WsServer;
  port80: HttpServer | null;
  certManager: import('../tls/acme.js').CertManager | null;
  close(graceMs: number): Promise<void>;
}

/** WsServer options from the flags wsserver and wssserver share, and the process's runtime (log, metrics, dialer, globals). */
export function serverOptionsFromFlags(
  o: Opts,
  listen: string,
  rt: Pick<Runtime, 'log' | 'metrics' | 'dialer' | 'policy' | 'globals'>,
): WsServerOptions {
  const log = rt.log;
  // a one-line start error: withoutBrookProtocol has no framing for a keepalive
  checkKeepalive(o['keepalive'] as number | undefined, Boolean(o['withoutBrookProtocol']));
  return {
    listen,
    password: String(o['password']),
    path: String(o['path']),
    tcpTimeout: o['tcpTimeout'] as number,
    udpTimeout: o['udpTimeout'] as number,
    keepalive: o['keepalive'] as number | undefined,
    withoutBrookProtocol: Boolean(o['withoutBrookProtocol']),
    xForwardedFor: Boolean(o['xForwardedFor']),
    trustedProxies: o['trustedProxies'] as string | undefined,
    proxyProtocol: Boolean(o['proxyProtocol']),
    fallback: o['fallback'] as string | undefined,
    host: o['host'] as string | undefined,
    probeTimeoutMs: (o['probeTimeout'] as number) * 1000,
    probeByteBudget: o['probeBytes'] as number,
    headTimeoutMs: o['headTimeout'] === undefined ? undefined : (o['headTimeout'] as number) * 1000,
    maxPending: typeof o['maxPending'] === 'number' ? o['maxPending'] : undefined,
    maxTimeAheadSeconds: o['maxTimeAhead'] as number,
    replayCacheSize: o['replayCacheSize'] as number,
    // with --workers the primary holds the replay cache (src/cluster.ts); withoutBrookProtocol has none
    replay: o['withoutBrookProtocol'] ? undefined : replayGuardForProcess(),
    clientHKDFInfo: rt.globals.clientHKDFInfo,
    serverHKDFInfo: rt.globals.serverHKDFInfo,
    dialer: rt.dialer,
    policy: rt.policy,
    metrics: rt.metrics,
    log,
  };
}

function readPemFile(path: string, flag: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new BrookError(ErrorCodes.CONFIG, `cannot read ${flag} ${path}: ${(e as Error).message}`);
  }
}

export async function startWssServer(o: Opts, rt: Runtime): Promise<WssHandle> {
  const log = rt.log;
  const da = parseHostPort(String(o['domainaddress']));
  if (da.type !== 'domain') {
    throw new BrookError(ErrorCodes.CONFIG, `--domainaddress needs a domain name, got ${da.host}`);
  }
  const domain = da.host;
  const listen = o['listen'] ? String(o['listen']) : `:${da.port}`;
  const common = serverOptionsFromFlags(o, listen, rt);

  if (o['cert'] || o['certkey']) {
    if (!o['cert'] || !o['certkey']) throw new BrookError(ErrorCodes.CONFIG, '--cert and --certkey go together');
    const c = await loadCertFiles(String(o['cert']), String(o['certkey']));
    const server = new WsServer({ ...common, tls: createTlsOptions({ domain, cert: c.cert, key: c.key }) });
    common.metrics?.certificateExpiry(c.notAfter.getTime());
    const a = await server.listen();
    log({ msg: 'listening', command: 'wssserver', listen: formatBound(a), domain, certificate: 'files', notAfter: c.notAfter.toISOString() });
    return { server, port80: null, certManager: null, close: (g) => server.close(g) };
  }

  // acme-client (and its HTTP stack) is loaded only when ACME is used
  const { CertManager, resolveDirectoryUrl } = await import('../tls/acme.js');
  const manager = new CertManager({
    domain,
    directoryUrl: resolveDirectoryUrl(String(o['acmeDirectory'] ?? 'production')),
    email: o['acmeEmail'] as string | undefined,
    cacheDir: String(o['cacheDir'] ?? '.letsencrypt'),
    caBundle: o['acmeCA'] ? readPemFile(String(o['acmeCA']), '--acmeCA') : undefined,
    skipChallengeVerification: Boolean(o['acmeSkipChallengeVerification']),
    log: (e) => log({ ...e }),
  });
  manager.on('error', () => {
    /* logged by the manager; it keeps retrying with backoff */
  });
  manager.on('certificate', (c: { notAfter: Date }) => common.metrics?.certificateExpiry(c.notAfter.getTime()));
  manager.on('order', (result: 'issued' | 'renewed' | 'failed') => common.metrics?.acme(result));
  const httpListen = parseListen(String(o['httpListen'] ?? ':80'));
  const port80 = await createPortEightyServer({ host: httpListen.host, port: httpListen.port, certManager: manager, httpsPort: da.port });
  const cert = await manager.start();
  const server = new WsServer({ ...common, tls: createTlsOptions({ domain, cert: cert.cert, key: cert.key }) });
  attachCertManager(server.server as unknown as TlsServer, manager);
  const a = await server.listen();
  log({ msg: 'listening', command: 'wssserver', listen: formatBound(a), domain, certificate: 'acme', notAfter: cert.notAfter.toISOString() });
  return {
    server,
    port80,
    certManager: manager,
    close: async (g) => {
      manager.stop();
      await Promise.all([server.close(g), new Promise<void>((r) => port80.close(() => r()))]);
    },
  };
}
