/**
 * The client side for programs: a server given as a URL or a brook:// link
 * (resolveServer, also what a WsClient needs), and dial(), one tunnel to a
 * destination as a plain Duplex (no local SOCKS5 port): what the program
 * writes reaches the destination, what the destination sends is read.
 *
 * The stream (src/client/duplex.ts): backpressure both ways (write() returns
 * false while the tunnel socket's buffer is full; reading pauses it), half-close
 * (end() sends our FIN through the tunnel, the answer can still be read),
 * resets (a destination or tunnel RST destroys the stream with an error;
 * resetAndDestroy() resets the tunnel, and the server resets the destination).
 */
import { BrookError, ErrorCodes } from '../errors.js';
import { type LinkKind, linkKindForServer, LINK_SCHEME, type ParsedLink, parseLink, parseServerUrl } from '../link.js';
import { type Address, makeAddress, parseHostPort } from '../protocol/address.js';
import type { AeadBackend } from '../protocol/cipher.js';
import { parseTlsFingerprint, type TlsFingerprint } from '../tls/fingerprint.js';
import { checkFragmentSpec, parseFragmentSpec, type TlsFragmentSpec } from '../tls/fragment-spec.js';
import { protocolMode } from '../protocol/mode.js';
import { DEFAULT_TUNNEL_TIMEOUT_MS, dialTunnel, type ServerEndpoint } from './dial.js';
import { TunnelDuplex } from './duplex.js';

/** How to reach a server, beyond what its URL or link says. */
export interface ServerOptions {
  /** Needed with a URL; with a link, replaces the link's password (unless empty). */
  password?: string;
  /** Dial this "host:port" instead of the URL's host (upstream --address). */
  address?: string;
  /** wss: skip certificate and host-name checks. */
  insecure?: boolean;
  /** wss: a CA certificate (PEM text) to trust. */
  ca?: string;
  /** wss: a ClientHello like Chrome's (the only value, as upstream); replaces the link's. */
  tlsFingerprint?: TlsFingerprint;
  /** wss: split the ClientHello (delays in microseconds; or the link's text "50:100:10:50"); replaces the link's. */
  fragment?: TlsFragmentSpec | string;
  withoutBrookProtocol?: boolean;
  clientHKDFInfo?: Uint8Array;
  serverHKDFInfo?: Uint8Array;
}

/** A server resolved: spread it into WsClientOptions. */
export interface ClientSettings {
  endpoint: ServerEndpoint;
  password: string;
  withoutBrookProtocol: boolean;
  clientHKDFInfo?: Uint8Array;
  serverHKDFInfo?: Uint8Array;
}

/**
 * `ws://host:port/path`, `wss://host:port/path` or a `brook://wsserver?...` /
 * `brook://wssserver?...` link. Throws a BrookError: LINK_INVALID or LINK_KIND
 * for a bad server or link, CONFIG without a password (the one check of it on the way
 * from a URL or link to a client: the CLI maps its flags onto these options).
 */
export function resolveServer(server: string, o: ServerOptions = {}): ClientSettings {
  if (server.trim().toLowerCase().startsWith(LINK_SCHEME)) return settingsFromLink(parseLink(server), o);
  return settingsFromUrl(linkKindForServer(server), server, o);
}

/** A parsed link's server; the options replace (password unless empty, address, ca, infos) or add to (insecure, withoutBrookProtocol) the link's. */
export function settingsFromLink(l: ParsedLink, o: ServerOptions = {}): ClientSettings {
  const s: ClientSettings = {
    endpoint: {
      secure: l.kind === 'wssserver',
      hostPort: l.hostPort,
      hostname: l.hostname,
      port: l.port,
      path: l.path,
      ...hostPortOf(o.address ?? l.address),
      insecure: Boolean(o.insecure) || l.insecure,
      ...(o.ca ?? l.ca ? { ca: o.ca ?? l.ca } : {}),
      ...helloOptions(`${LINK_SCHEME}${l.kind}`, l.kind === 'wssserver', o, l),
    },
    password: o.password || l.password,
    withoutBrookProtocol: Boolean(o.withoutBrookProtocol) || l.withoutBrookProtocol,
    ...defined({ clientHKDFInfo: o.clientHKDFInfo ?? l.clientHKDFInfo, serverHKDFInfo: o.serverHKDFInfo ?? l.serverHKDFInfo }),
  };
  if (!s.password) throw new BrookError(ErrorCodes.CONFIG, 'a password is required for this link');
  return s;
}

/** A server URL of this kind (ws:// for wsserver, wss:// for wssserver) and its password. */
export function settingsFromUrl(kind: LinkKind, server: string, o: ServerOptions = {}): ClientSettings {
  if (!o.password) throw new BrookError(ErrorCodes.CONFIG, '--password or --passwordFile is required');
  const u = parseServerUrl(kind, server);
  return {
    endpoint: {
      secure: kind === 'wssserver',
      ...u,
      ...hostPortOf(o.address),
      insecure: Boolean(o.insecure),
      ...(o.ca ? { ca: o.ca } : {}),
      ...helloOptions(server, kind === 'wssserver', o, {}),
    },
    password: o.password,
    withoutBrookProtocol: Boolean(o.withoutBrookProtocol),
    ...defined({ clientHKDFInfo: o.clientHKDFInfo, serverHKDFInfo: o.serverHKDFInfo }),
  };
}

/** tlsFingerprint and fragment of the endpoint: the options' (checked), else the link's; wss only. */
function helloOptions(
  server: string,
  secure: boolean,
  o: ServerOptions,
  l: { tlsFingerprint?: TlsFingerprint; fragment?: TlsFragmentSpec },
): { tlsFingerprint?: TlsFingerprint; fragment?: TlsFragmentSpec } {
  if (!secure && (o.tlsFingerprint !== undefined || o.fragment !== undefined)) {
    throw new BrookError(ErrorCodes.CONFIG, `tlsFingerprint and fragment shape a TLS ClientHello: ${server} is not a wss:// server`);
  }
  const f = o.tlsFingerprint !== undefined ? parseTlsFingerprint(o.tlsFingerprint) : l.tlsFingerprint;
  const s = o.fragment === undefined ? l.fragment : typeof o.fragment === 'string' ? parseFragmentSpec(o.fragment) : checkFragmentSpec(o.fragment);
  return { ...(f ? { tlsFingerprint: f } : {}), ...(s ? { fragment: s } : {}) };
}

function hostPortOf(address: string | undefined): { address?: { host: string; port: number } } {
  if (address === undefined) return {};
  const a = parseHostPort(address);
  return { address: { host: a.host, port: a.port } };
}

function defined<T extends Record<string, unknown>>(o: T): Partial<T> {
  const out: Partial<T> = {};
  for (const [k, v] of Object.entries(o)) if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}

export interface BrookDialOptions extends ServerOptions {
  /** The Brook server: a ws:// or wss:// URL (with its path), or a brook:// link. */
  server: string;
  /** Where the server connects: "host:port" ("[v6]:port"), or { host, port }. */
  destination: string | { host: string; port: number };
  /** Give up on the connection to the server and its 101 after this long (ms, default 10 000). */
  timeoutMs?: number;
  backend?: AeadBackend;
}

/** A tunnel stream; resetAndDestroy() aborts it with a reset at both ends. */
export type BrookSocket = TunnelDuplex;

function destinationOf(d: BrookDialOptions['destination']): Address {
  if (typeof d === 'string') return parseHostPort(d);
  if (d === null || typeof d !== 'object') throw new BrookError(ErrorCodes.ADDRESS_INVALID, 'destination must be "host:port" or { host, port }');
  return makeAddress(String(d.host), Number(d.port));
}

/**
 * One TCP tunnel to `destination` through the server. Resolves once the server
 * answered the upgrade and our header is sent; the server dials the destination
 * when the header arrives, so a refused or blocked destination shows as a reset
 * of the stream (an 'error'), not as a rejection here.
 * Rejects with a BrookError (CONFIG, LINK_*, ADDRESS_INVALID, TIMEOUT,
 * UPGRADE_RESPONSE, or the connection's error).
 */
export async function dial(o: BrookDialOptions): Promise<BrookSocket> {
  if (o === null || typeof o !== 'object') throw new BrookError(ErrorCodes.CONFIG, 'dial needs options: { server, password, destination }');
  if (typeof o.server !== 'string') throw new BrookError(ErrorCodes.CONFIG, 'dial: server must be a ws://, wss:// URL or a brook:// link');
  const s = resolveServer(o.server, o);
  const destination = destinationOf(o.destination);
  const t = await dialTunnel({
    ...s,
    mode: protocolMode(s.withoutBrookProtocol),
    network: 'tcp',
    destination,
    timeoutMs: o.timeoutMs ?? DEFAULT_TUNNEL_TIMEOUT_MS,
    ...(o.backend ? { backend: o.backend } : {}),
  });
  return new TunnelDuplex(t);
}
