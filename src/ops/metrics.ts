/**
 * Prometheus metrics (upstream's global --prometheus ADDR and --prometheusPath PATH),
 * with prom-client. Every label takes its values from a small fixed set (command,
 * network, direction, reason, error code): upstream labels its one counter by client
 * address and destination, which grows without bound; ours cannot.
 *
 *   brook_tunnels_opened_total{command,network}      brook_tunnels_active{command,network}
 *   brook_bytes_total{command,direction}             (up = client -> destination; live tunnels included)
 *   brook_handshake_failures_total{command,reason}   brook_blocked_total{command,network}
 *   brook_dial_failures_total{command,code}          brook_udp_datagrams_total{command,direction}
 *   brook_udp_dropped_total{command}                 brook_certificate_expiry_seconds (wssserver)
 *   brook_acme_orders_total{result}                  + prom-client's default process metrics
 *
 * With --workers N the primary serves the endpoint and sums the workers' metrics
 * (prom-client's AggregatorRegistry over the cluster channel); workers serve nothing.
 *
 * This file holds what every server and client imports (the Metrics interface and
 * noMetrics); prom-client itself is in prometheus.ts, loaded only with --prometheus.
 */
import type { ErrorCode } from '../errors.js';

export type MetricsNetwork = 'tcp' | 'udp';
export type Direction = 'up' | 'down';
/** Why a connection did not become a tunnel. */
export const HANDSHAKE_FAILURE_REASONS = ['bad_upgrade', 'auth', 'stale_time', 'replay', 'malformed', 'timeout', 'probe_budget'] as const;
export type HandshakeFailureReason = (typeof HANDSHAKE_FAILURE_REASONS)[number];
export const ACME_RESULTS = ['issued', 'renewed', 'failed'] as const;
export type AcmeResult = (typeof ACME_RESULTS)[number];

/** What the servers and clients report; every method is cheap (a counter add). */
export interface Metrics {
  tunnelOpened(network: MetricsNetwork): void;
  tunnelClosed(network: MetricsNetwork, bytes: { up: number; down: number }): void;
  /** Bytes of the tunnels open right now, read at scrape time (so long tunnels show as they go). */
  liveBytes(source: () => { up: number; down: number }): void;
  handshakeFailed(reason: HandshakeFailureReason): void;
  blocked(network: MetricsNetwork): void;
  dialFailed(code: ErrorCode): void;
  udpDatagram(direction: Direction): void;
  udpDropped(): void;
  certificateExpiry(notAfterMs: number): void;
  acme(result: AcmeResult): void;
}

export const noMetrics: Metrics = {
  tunnelOpened: () => {},
  tunnelClosed: () => {},
  liveBytes: () => {},
  handshakeFailed: () => {},
  blocked: () => {},
  dialFailed: () => {},
  udpDatagram: () => {},
  udpDropped: () => {},
  certificateExpiry: () => {},
  acme: () => {},
};
