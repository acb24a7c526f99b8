/** Upstream Brook captures (test/fixtures/*.json, copied from ../shared/brook-vectors). */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface Vector {
  password: string;
  dst: string;
  dst_socks5_bytes_hex: string;
  withoutBrookProtocol: boolean;
  client_to_server_hex: string;
  server_to_client_hex: string;
  ws_upgrade_request_text: string;
  ws_upgrade_response_text: string;
  after_upgrade_client_to_server_hex: string;
  after_upgrade_server_to_client_hex: string;
  client_payload_text?: string;
  server_payload_text?: string;
  decoded: { time: number; network: 'tcp' | 'udp'; dst: string; c2s_frames: string[]; s2c_frames: string[] } & Record<string, unknown>;
}

export const VECTOR_NAMES = ['tcp', 'tcp-wob', 'udp', 'udp-wob'] as const;
export type VectorName = (typeof VECTOR_NAMES)[number];

export function loadVector(name: VectorName): Vector {
  const p = fileURLToPath(new URL(`../fixtures/${name}.json`, import.meta.url));
  return JSON.parse(readFileSync(p, 'utf8')) as Vector;
}
