/**
 * The Prometheus side of src/ops/metrics.ts: prom-client registries, the
 * endpoint, and the cluster sum. Loaded only when --prometheus is given (prom-client
 * adds about 10 MiB to a process).
 */
import cluster from 'node:cluster';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AggregatorRegistry, collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { BrookError, ErrorCodes } from '../errors.js';
import { parseListen } from '../net/listen.js';
import { HANDSHAKE_FAILURE_REASONS, type Metrics } from './metrics.js';

const KNOWN_CODES = new Set<string>(Object.values(ErrorCodes));

/** A registry with brook-ts's metrics for one command (wsserver, wsclient, ...). */
export function createMetrics(command: string, registry = new Registry()): { metrics: Metrics; registry: Registry } {
  collectDefaultMetrics({ register: registry });
  const closedBytes = { up: 0, down: 0 };
  const live: Array<() => { up: number; down: number }> = [];
  const opened = new Counter({ name: 'brook_tunnels_opened_total', help: 'Tunnels that passed the handshake', labelNames: ['command', 'network'], registers: [registry] });
  const active = new Gauge({ name: 'brook_tunnels_active', help: 'Tunnels open now', labelNames: ['command', 'network'], registers: [registry] });
  new Counter({
    name: 'brook_bytes_total',
    help: 'Payload bytes relayed (up: towards the destination, down: back), open tunnels included',
    labelNames: ['command', 'direction'],
    registers: [registry],
    collect() {
      const sum = { ...closedBytes };
      for (const f of live) {
        const b = f();
        sum.up += b.up;
        sum.down += b.down;
      }
      this.reset();
      this.inc({ command, direction: 'up' }, sum.up);
      this.inc({ command, direction: 'down' }, sum.down);
    },
  });
  const failures = new Counter({ name: 'brook_handshake_failures_total', help: 'Connections that did not become tunnels, by reason', labelNames: ['command', 'reason'], registers: [registry] });
  const blocked = new Counter({ name: 'brook_blocked_total', help: 'Destinations refused by the block lists', labelNames: ['command', 'network'], registers: [registry] });
  const dial = new Counter({ name: 'brook_dial_failures_total', help: 'Outgoing connections that failed, by error code', labelNames: ['command', 'code'], registers: [registry] });
  const datagrams = new Counter({ name: 'brook_udp_datagrams_total', help: 'UDP datagrams relayed', labelNames: ['command', 'direction'], registers: [registry] });
  const dropped = new Counter({ name: 'brook_udp_dropped_total', help: 'UDP datagrams dropped (oversize, backlog, refused)', labelNames: ['command'], registers: [registry] });
  const expiry = new Gauge({ name: 'brook_certificate_expiry_seconds', help: 'Unix time the served certificate expires', registers: [registry], aggregator: 'min' });
  const acme = new Counter({ name: 'brook_acme_orders_total', help: 'ACME certificate orders by result', labelNames: ['result'], registers: [registry] });

  // every label set exists from the start (a scrape shows zeros, not gaps)
  for (const network of ['tcp', 'udp'] as const) {
    opened.inc({ command, network }, 0);
    active.set({ command, network }, 0);
    blocked.inc({ command, network }, 0);
  }
  for (const reason of HANDSHAKE_FAILURE_REASONS) failures.inc({ command, reason }, 0);
  for (const direction of ['up', 'down'] as const) datagrams.inc({ command, direction }, 0);
  dropped.inc({ command }, 0);

  const metrics: Metrics = {
    tunnelOpened: (network) => {
      opened.inc({ command, network });
      active.inc({ command, network });
    },
    tunnelClosed: (network, bytes) => {
      active.dec({ command, network });
      closedBytes.up += bytes.up;
      closedBytes.down += bytes.down;
    },
    liveBytes: (source) => void live.push(source),
    handshakeFailed: (reason) => failures.inc({ command, reason }),
    blocked: (network) => blocked.inc({ command, network }),
    // an unknown code would be a new label value: fold it into INTERNAL
    dialFailed: (code) => dial.inc({ command, code: KNOWN_CODES.has(code) ? code : ErrorCodes.INTERNAL }),
    udpDatagram: (direction) => datagrams.inc({ command, direction }),
    udpDropped: () => dropped.inc({ command }),
    certificateExpiry: (notAfterMs) => expiry.set(Math.floor(notAfterMs / 1000)),
    acme: (result) => acme.inc({ result }),
  };
  return { metrics, registry };
}

/** In a worker: answer the primary's scrape requests with this registry. */
export function shareWithPrimary(registry: Registry): void {
  AggregatorRegistry.setRegistries([registry]);
  new AggregatorRegistry(); // installs the worker's listener on the cluster channel
}

export interface MetricsServer {
  address: AddressInfo;
  close(): Promise<void>;
}

/**
 * Serve `GET path` on `listen` ("host:port" or ":port"). In a cluster primary the
 * answer is the sum over the workers. Other paths and methods get 404 / 405.
 * A port in use rejects with the listen error (the CLI prints one line).
 */
export async function serveMetrics(listen: string, path: string, source: Registry | 'cluster'): Promise<MetricsServer> {
  if (!path.startsWith('/')) throw new BrookError(ErrorCodes.CONFIG, `--prometheusPath must start with "/": ${path}`);
  const aggregator = source === 'cluster' ? new AggregatorRegistry() : null;
  const server: Server = createServer((req, res) => {
    const url = req.url ?? '';
    const q = url.indexOf('?');
    if ((q >= 0 ? url.slice(0, q) : url) !== path) {
      res.writeHead(404).end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD' }).end();
      return;
    }
    const text = aggregator ? aggregator.clusterMetrics() : (source as Registry).metrics();
    const type = aggregator ? aggregator.contentType : (source as Registry).contentType;
    text.then(
      (body) => res.writeHead(200, { 'Content-Type': type }).end(req.method === 'HEAD' ? undefined : body),
      (e: Error) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`metrics unavailable: ${e.message}\n`),
    );
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  const { host, port } = parseListen(listen);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.removeListener('error', reject);
      resolve();
    });
  });
  return {
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

/** Whether this process should serve the endpoint: not a worker of a pool (the primary serves the sum). */
export function servesMetrics(): boolean {
  return !cluster.isWorker;
}
