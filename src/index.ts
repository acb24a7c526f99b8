/**
 * brook-ts as a library (package.json "exports": `import { ... } from 'brook-ts'`).
 * The CLI (src/cli/) is a layer over the same classes. README: "Use it from Node.js".
 *
 * Server side:
 *   attachBrook(server, { path, password })  tunnels on your own http(s) server / Express app's server
 *   createBrookEndpoint(options)             the same, for your own 'upgrade' routing
 *   WsServer                                 the wsserver / wssserver of the CLI (its own server, hardened front door)
 * Client side:
 *   dial({ server, password, destination })  one tunnel as a Duplex, no local port
 *   WsClient                                 the wsclient of the CLI: a local SOCKS5 (and HTTP) proxy
 *   resolveServer(urlOrLink, options)        a ws:// / wss:// URL or brook:// link -> WsClient settings
 * TLS ClientHello of a wss client: tlsFingerprint 'chrome', fragment (parseFragmentSpec).
 * Links: parseLink, buildLink. Errors: BrookError with a stable `code` (ErrorCodes).
 * Crypto: node:crypto unless selectBackend('auto') installs the native AES-GCM addon.
 */
export { attachBrook, createBrookEndpoint, type BrookEndpoint, type BrookEndpointOptions } from './server/attach.js';
export { WsServer, type WsServerOptions, DEFAULT_PATH } from './server/wsserver.js';
export type { TunnelEndpointOptions } from './server/endpoint.js';
export { dial, resolveServer, type BrookDialOptions, type BrookSocket, type ClientSettings, type ServerOptions } from './client/connect.js';
export { TunnelDuplex } from './client/duplex.js';
export { WsClient, type WsClientOptions, DEFAULT_SOCKS5_LISTEN } from './client/wsclient.js';
export type { ServerEndpoint } from './client/dial.js';
export type { TlsFingerprint } from './tls/fingerprint.js';
export { parseFragmentSpec, type TlsFragmentSpec } from './tls/fragment-spec.js';
export { buildLink, parseLink, type LinkKind, type LinkOptions, type ParsedLink } from './link.js';
export { BrookError, ErrorCodes, isBrookError, type ErrorCode } from './errors.js';
export { createLogger, silentLogger, type LogEntry, type Logger } from './log.js';
export { backendName, selectBackend, type BackendPreference } from './crypto/index.js';
