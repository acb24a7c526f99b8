/**
 * wsserver / wssserver: an Express app on an http(s) server. The WebSocket
 * upgrade is taken from the server's 'upgrade' event on the exact path, GET
 * only; after the 101 the raw socket carries the Brook stream (src/server/tunnel.ts).
 *
 * Non-upgrade answers match upstream: 404 with an empty body on other paths,
 * 400 on the path without a valid upgrade, 405 for another method, and
 * `Server: nginx` on every one of them.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, type ServerOptions as HttpsOptions } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import express from 'express';
import { BrookError, ErrorCodes } from '../errors.js';
import { createLogger, type Logger } from '../log.js';
import { parseListen } from '../net/listen.js';
import type { Clock } from '../protocol/header.js';
import type { AeadBackend } from '../protocol/cipher.js';
import { buildUpgradeResponse, checkUpgradeRequest } from '../protocol/upgrade.js';
import {
  DEFAULT_DIAL_TIMEOUT_MS,
  DEFAULT_PROBE_BYTE_BUDGET,
  DEFAULT_PROBE_TIMEOUT_MS,
  DEFAULT_UDP_QUEUE_LIMIT,
  type ServerTunnelOptions,
  serveTunnel,
  type TunnelHandle,
} from './tunnel.js';

export interface WsServerOptions {
  /** "host:port", ":port" (all interfaces), "[::1]:port". */
  listen: string;
  password: string;
  path?: string;
  tcpTimeout?: number;
  udpTimeout?: number;
  withoutBrookProtocol?: boolean;
  /** Log the first X-Forwarded-For address instead of the peer address. */
  xForwardedFor?: boolean;
  clientHKDFInfo?: Uint8Array;
  serverHKDFInfo?: Uint8Array;
  probeTimeoutMs?: number;
  probeByteBudget?: number;
  dialTimeoutMs?: number;
  udpQueueLimit?: number;
  /** TLS: serve https (wssserver). ALPN is forced to http/1.1. */
  tls?: HttpsOptions;
  log?: Logger;
  now?: Clock;
  backend?: AeadBackend;
}

export const DEFAULT_PATH = '/ws';

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 404: 'Not Found', 405: 'Method Not Allowed' };

/** A complete HTTP/1.1 response written on a raw (upgrade) socket, then closed. */
function rawResponse(socket: Socket, status: number, body = '', extra: Record<string, string> = {}): void {
  const headers = { Server: 'nginx', ...extra, 'Content-Length': String(Buffer.byteLength(body)), Connection: 'close' };
  const head =
    `HTTP/1.1 ${status} ${STATUS_TEXT[status] ?? ''}\r\n` +
    Object.entries(headers)
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('') +
    '\r\n';
  socket.end(head + body);
}

export class WsServer {
  readonly server: HttpServer;
  private readonly tunnels = new Set<TunnelHandle>();
  private readonly o: Required<Pick<WsServerOptions, 'path'>> & WsServerOptions;
  private readonly tunnelOptions: ServerTunnelOptions;
  private readonly log: Logger;

  constructor(opts: WsServerOptions) {
    const path = opts.path ?? DEFAULT_PATH;
    if (!path.startsWith('/')) throw new BrookError(ErrorCodes.CONFIG, `--path must start with "/": ${path}`);
    if (!opts.password) throw new BrookError(ErrorCodes.CONFIG, '--password is required');
    this.o = { ...opts, path };
    this.log = opts.log ?? createLogger();
    this.tunnelOptions = {
      password: opts.password,
      withoutBrookProtocol: opts.withoutBrookProtocol ?? false,
      clientHKDFInfo: opts.clientHKDFInfo,
      serverHKDFInfo: opts.serverHKDFInfo,
      now: opts.now,
      backend: opts.backend,
      tcpTimeout: opts.tcpTimeout ?? 0,
      udpTimeout: opts.udpTimeout ?? 60,
      probeTimeoutMs: opts.probeTimeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS,
      probeByteBudget: opts.probeByteBudget ?? DEFAULT_PROBE_BYTE_BUDGET,
      dialTimeoutMs: opts.dialTimeoutMs ?? DEFAULT_DIAL_TIMEOUT_MS,
      udpQueueLimit: opts.udpQueueLimit ?? DEFAULT_UDP_QUEUE_LIMIT,
      log: this.log,
    };

    const app = express();
    app.disable('x-powered-by');
    app.disable('etag');
    app.use((_req, res, next) => {
      res.setHeader('Server', 'nginx');
      next();
    });
    app.use((req, res) => {
      if (req.path !== path) {
        res.status(404).end();
      } else if (req.method !== 'GET') {
        res.status(405).end();
      } else {
        res.status(400).type('text/plain').send('Bad Request\n');
      }
    });

    this.server = opts.tls
      ? createHttpsServer({ ...opts.tls, ALPNProtocols: ['http/1.1'] }, app)
      : createHttpServer(app);
    this.server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.onUpgrade(req, socket, head));
    this.server.on('clientError', (_err, socket: Socket) => {
      if (socket.writable) rawResponse(socket, 400);
      else socket.destroy();
    });
  }

  private onUpgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const url = req.url ?? '';
    const q = url.indexOf('?');
    const reqPath = q >= 0 ? url.slice(0, q) : url;
    if (reqPath !== this.o.path) {
      rawResponse(socket, 404);
      return;
    }
    const check = checkUpgradeRequest(req.method ?? '', req.headers);
    if (!check.ok) {
      rawResponse(socket, check.status, check.status === 400 ? 'Bad Request\n' : '', check.headers);
      return;
    }
    socket.write(buildUpgradeResponse(check.key));
    const handle = serveTunnel(socket, head, this.from(req, socket), this.tunnelOptions);
    this.tunnels.add(handle);
    void handle.closed.then(() => this.tunnels.delete(handle));
  }

  private from(req: IncomingMessage, socket: Socket): string {
    if (this.o.xForwardedFor) {
      const xff = req.headers['x-forwarded-for'];
      const first = (Array.isArray(xff) ? xff[0] : xff)?.split(',')[0]?.trim();
      if (first) return first;
    }
    const a = socket.remoteAddress ?? '';
    return a.includes(':') ? `[${a}]:${socket.remotePort}` : `${a}:${socket.remotePort}`;
  }

  get openTunnels(): number {
    return this.tunnels.size;
  }

  async listen(): Promise<AddressInfo> {
    const { host, port } = parseListen(this.o.listen);
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port }, () => {
        this.server.removeListener('error', reject);
        resolve();
      });
    });
    return this.server.address() as AddressInfo;
  }

  /** Stop accepting; let open tunnels finish within `graceMs`, then cut them. */
  async close(graceMs = 0): Promise<void> {
    const closing = new Promise<void>((r) => this.server.close(() => r()));
    this.server.closeIdleConnections?.();
    if (graceMs > 0 && this.tunnels.size > 0) {
      const all = Promise.all([...this.tunnels].map((t) => t.closed));
      await Promise.race([all, new Promise((r) => setTimeout(r, graceMs).unref())]);
    }
    for (const t of this.tunnels) t.destroy();
    this.server.closeAllConnections?.();
    await closing;
  }
}
