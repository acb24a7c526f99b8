/**
 * The tunnel endpoint on an application's own http(s) server (an Express app's
 * `app.listen()`, a `http.createServer()`...): the application keeps serving
 * its pages, and WebSocket upgrades on the tunnel path become Brook tunnels.
 *
 * Which requests are ours: only a valid WebSocket upgrade (GET, the upgrade
 * headers, a 16-byte key) on the path (and Host, with `host`). Everything else
 * is the application's, untouched:
 *
 * - requests without an Upgrade header never reach the 'upgrade' event: the
 *   application's request handler answers them, on our path too;
 * - an upgrade that is not ours, while the server has other 'upgrade'
 *   listeners (the application's WebSocket server on its own paths): left
 *   alone for them. Those handlers must ignore our path in turn (ws: use
 *   `noServer` and route in one handler; `new WebSocketServer({ server, path })`
 *   answers every other path with 400, ours included);
 * - an upgrade that is not ours, while ours are the only 'upgrade' listeners:
 *   Node would have given it to the request handler had we not listened, so we
 *   do (answered once, without a body, then closed).
 *
 * Hardening that holds here: every tunnel's close rule, probe bounds and byte
 * budget, the replay cache, rate-limited handshake lines (src/server/endpoint.ts,
 * src/server/tunnel.ts). The connection's head deadline and a cap on pending
 * connections are the host server's business (Node's headersTimeout,
 * requestTimeout, maxConnections; our own front door is src/server/wsserver.ts).
 */
import { type IncomingMessage, type Server as HttpServer, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { BrookError, ErrorCodes } from '../errors.js';
import { TunnelEndpoint, type TunnelEndpointOptions } from './endpoint.js';

/** After answering an upgrade nobody took: how long we wait for the client's FIN before closing. */
export const LINGER_MS = 5_000;

export type BrookEndpointOptions = TunnelEndpointOptions;

/** Tunnels on a server the application owns. */
export interface BrookEndpoint {
  /** The tunnel path. */
  readonly path: string;
  /**
   * Take the upgrade if it is a tunnel (true: the socket is ours now); false: nothing
   * was read or written, the caller answers it. For an application that routes its
   * own 'upgrade' event; attachBrook() calls it for you.
   */
  handleUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): boolean;
  /** Tunnels open now. */
  readonly openTunnels: number;
  /**
   * Stop taking upgrades (attachBrook: the listener is removed), let open tunnels
   * finish within `graceMs`, then cut them. The server itself is left running.
   */
  close(graceMs?: number): Promise<void>;
}

/** Anything with a server's 'upgrade' event: http.Server, https.Server (an Express app is not one). */
type UpgradeSource = Pick<HttpServer, 'on' | 'removeListener' | 'listenerCount' | 'emit'>;

/** The Brook endpoints attached to each server, behind one 'upgrade' listener. */
const attached = new WeakMap<UpgradeSource, { endpoints: Set<BrookEndpoint>; listener: (req: IncomingMessage, socket: Socket, head: Buffer) => void }>();

/** A tunnel endpoint without a server: call its handleUpgrade from your own 'upgrade' handler. */
export function createBrookEndpoint(options: BrookEndpointOptions): BrookEndpoint {
  const endpoint = new TunnelEndpoint(options);
  let closed = false;
  return {
    path: endpoint.path,
    handleUpgrade(req, socket, head) {
      if (closed) return false;
      const v = endpoint.check(req);
      if (!v.tunnel) return false;
      socket.on('error', () => socket.destroy());
      endpoint.accept(req, socket, head, v.key);
      return true;
    },
    get openTunnels() {
      return endpoint.openTunnels;
    },
    async close(graceMs = 0) {
      if (closed) return;
      closed = true;
      await endpoint.closeTunnels(graceMs);
      endpoint.close();
    },
  };
}

/**
 * Carry Brook tunnels on `server` at `options.path` (default /ws). Throws CONFIG
 * (a BrookError) for bad options, or when `server` is not a server (an Express
 * app: pass what `app.listen()` returns).
 */
export function attachBrook(server: UpgradeSource, options: BrookEndpointOptions): BrookEndpoint {
  if (!isServer(server)) {
    throw new BrookError(
      ErrorCodes.CONFIG,
      typeof server === 'function'
        ? 'attachBrook needs the http(s) server, not the Express app: attachBrook(app.listen(port), options)'
        : 'attachBrook needs an http.Server or https.Server',
    );
  }
  const inner = createBrookEndpoint(options);
  let entry = attached.get(server);
  if (!entry) {
    const endpoints = new Set<BrookEndpoint>();
    const listener = (req: IncomingMessage, socket: Socket, head: Buffer): void => {
      for (const e of endpoints) if (e.handleUpgrade(req, socket, head)) return;
      // nobody else listens: the request handler, as if we were not here
      if (server.listenerCount('upgrade') === 1) toRequestHandler(server, req, socket);
    };
    entry = { endpoints, listener };
    attached.set(server, entry);
    server.on('upgrade', listener);
  }
  const e = entry;
  const handle: BrookEndpoint = {
    path: inner.path,
    handleUpgrade: (req, socket, head) => inner.handleUpgrade(req, socket, head),
    get openTunnels() {
      return inner.openTunnels;
    },
    async close(graceMs = 0) {
      if (e.endpoints.delete(handle) && e.endpoints.size === 0) {
        server.removeListener('upgrade', e.listener);
        attached.delete(server);
      }
      await inner.close(graceMs);
    },
  };
  e.endpoints.add(handle);
  return handle;
}

function isServer(s: unknown): s is UpgradeSource {
  if (s === null || typeof s !== 'object') return false;
  const o = s as Record<string, unknown>;
  return typeof o['on'] === 'function' && typeof o['listenerCount'] === 'function' && typeof o['listen'] === 'function';
}

/**
 * An upgrade request nobody takes, answered by the server's request handler:
 * once, without a body (after an upgrade head the bytes are not HTTP-framed),
 * then the connection is closed.
 */
function toRequestHandler(server: UpgradeSource, req: IncomingMessage, socket: Socket): void {
  socket.on('error', () => socket.destroy());
  if (!req.complete) req.push(null);
  const res = new ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket);
  res.once('finish', () => {
    res.detachSocket(socket);
    // read and discard until the client's FIN, at most LINGER_MS: no descriptor outlives its use
    socket.on('data', () => undefined);
    socket.once('end', () => socket.destroy());
    socket.setTimeout(LINGER_MS, () => socket.destroy());
    socket.resume();
    socket.end();
  });
  socket.once('close', () => {
    if (!res.writableFinished) res.destroy();
  });
  server.emit('request', req, res);
}
