/**
 * `tlsfingerprint=chrome`: the TLS client settings that bring Node's ClientHello
 * as close to Chrome's as Node 20's OpenSSL 3.0 allows (pure: no I/O). Spec and
 * what still differs from Chrome: protocol/tls-client.md.
 *
 * Upstream (brooklink.go) knows one value, `chrome` (uTLS HelloChrome_Auto with
 * ALPN forced to http/1.1). brook-ts refuses any other value with a one-line
 * error instead of silently sending its default hello.
 *
 * What Node lets us set, and set here as Chrome does:
 * - cipher suites and their order (Chrome's 15; OpenSSL adds the
 *   TLS_EMPTY_RENEGOTIATION_INFO_SCSV value 0x00ff to every first handshake);
 * - supported_groups: x25519, P-256, P-384 (Chrome puts X25519MLKEM768 first,
 *   unknown to OpenSSL 3.0); OpenSSL sends a key share for the first, x25519;
 * - signature_algorithms, in Chrome's order;
 * - status_request (OCSP) asked for, as Chrome does;
 * - no encrypt_then_mac (Chrome sends none; OpenSSL does unless told not to);
 * - TLS 1.2 to 1.3, session tickets on, ALPN http/1.1 (the wss default already).
 */
import { BrookError, type ErrorCode, ErrorCodes } from '../errors.js';

/** Values of tlsfingerprint brook-ts knows (upstream's: chrome). */
export const TLS_FINGERPRINTS = ['chrome'] as const;
export type TlsFingerprint = (typeof TLS_FINGERPRINTS)[number];

/** OpenSSL's SSL_OP_NO_ENCRYPT_THEN_MAC (crypto.constants has it; named here to keep this file free of node:crypto). */
export const SSL_OP_NO_ENCRYPT_THEN_MAC = 0x00080000;

/** Chrome's cipher suites in Chrome's order, as OpenSSL names them. */
export const CHROME_CIPHERS = [
  'TLS_AES_128_GCM_SHA256', // 0x1301
  'TLS_AES_256_GCM_SHA384', // 0x1302
  'TLS_CHACHA20_POLY1305_SHA256', // 0x1303
  'ECDHE-ECDSA-AES128-GCM-SHA256', // 0xc02b
  'ECDHE-RSA-AES128-GCM-SHA256', // 0xc02f
  'ECDHE-ECDSA-AES256-GCM-SHA384', // 0xc02c
  'ECDHE-RSA-AES256-GCM-SHA384', // 0xc030
  'ECDHE-ECDSA-CHACHA20-POLY1305', // 0xcca9
  'ECDHE-RSA-CHACHA20-POLY1305', // 0xcca8
  'ECDHE-RSA-AES128-SHA', // 0xc013
  'ECDHE-RSA-AES256-SHA', // 0xc014
  'AES128-GCM-SHA256', // 0x009c
  'AES256-GCM-SHA384', // 0x009d
  'AES128-SHA', // 0x002f
  'AES256-SHA', // 0x0035
] as const;

/** Chrome's signature_algorithms, in its order (0403 0804 0401 0503 0805 0501 0806 0601). */
export const CHROME_SIGALGS = [
  'ecdsa_secp256r1_sha256',
  'rsa_pss_rsae_sha256',
  'rsa_pkcs1_sha256',
  'ecdsa_secp384r1_sha384',
  'rsa_pss_rsae_sha384',
  'rsa_pkcs1_sha384',
  'rsa_pss_rsae_sha512',
  'rsa_pkcs1_sha512',
] as const;

/** Chrome's groups that OpenSSL 3.0 has (Chrome: GREASE, X25519MLKEM768, x25519, P-256, P-384). */
export const CHROME_GROUPS = ['X25519', 'P-256', 'P-384'] as const;

/** What goes into the endpoint's secure context (tls.createSecureContext). */
export interface FingerprintContextOptions {
  ciphers: string;
  sigalgs: string;
  ecdhCurve: string;
  minVersion: 'TLSv1.2';
  maxVersion: 'TLSv1.3';
  secureOptions: number;
}

/** What goes into each tls.connect. */
export interface FingerprintConnectOptions {
  requestOCSP: boolean;
}

export function contextOptionsFor(f: TlsFingerprint): FingerprintContextOptions {
  switch (f) {
    case 'chrome':
      return {
        ciphers: CHROME_CIPHERS.join(':'),
        sigalgs: CHROME_SIGALGS.join(':'),
        ecdhCurve: CHROME_GROUPS.join(':'),
        minVersion: 'TLSv1.2',
        maxVersion: 'TLSv1.3',
        secureOptions: SSL_OP_NO_ENCRYPT_THEN_MAC,
      };
  }
}

export function connectOptionsFor(f: TlsFingerprint): FingerprintConnectOptions {
  switch (f) {
    case 'chrome':
      return { requestOCSP: true };
  }
}

/** A tlsfingerprint value: `chrome`, or a one-line error (CONFIG, or the caller's code). */
export function parseTlsFingerprint(v: unknown, code: ErrorCode = ErrorCodes.CONFIG): TlsFingerprint {
  if ((TLS_FINGERPRINTS as readonly unknown[]).includes(v)) return v as TlsFingerprint;
  throw new BrookError(code, `tlsfingerprint ${JSON.stringify(v)} is not known (known: ${TLS_FINGERPRINTS.join(', ')})`);
}
