/**
 * Certificate files for `wssserver --cert/--certkey` (protocol/wss-certificates.md).
 *
 * loadCertFiles reads a PEM certificate (chain) and its PEM private key, checks
 * that they belong together and that the leaf is not expired, and reports every
 * failure as a BrookError with a stable code:
 *   CERT_MISSING     a file does not exist (message names the resolved path)
 *   CERT_UNREADABLE  not readable (permission, directory), not PEM, not parseable
 *   CERT_MISMATCH    the key is not the leaf certificate's key
 *   CERT_EXPIRED     the leaf's notAfter is in the past (message gives the date)
 * Upstream Brook wants absolute paths; relative paths are accepted here and
 * resolved against the working directory.
 */

import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { BrookError, ErrorCodes } from '../errors.js';

export interface LoadedCert {
  /** PEM: the leaf first, then any intermediates, as read from the file. */
  cert: string;
  /** PEM private key. */
  key: string;
  notAfter: Date;
  /** DNS names of the leaf (subjectAltName DNS entries, else the subject CN). */
  names: string[];
}

export interface LoadCertOptions {
  now?: () => Date;
}

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Information about the leaf of a PEM certificate chain. */
export interface CertInfo {
  notBefore: Date;
  notAfter: Date;
  serialNumber: string;
  names: string[];
  x509: X509Certificate;
}

/** Parse the first certificate of a PEM chain; throws CERT_UNREADABLE. */
export function readCertInfo(pem: string, label = 'certificate'): CertInfo {
  const blocks = pem.match(PEM_CERT_RE);
  if (!blocks || blocks.length === 0) {
    throw new BrookError(ErrorCodes.CERT_UNREADABLE, `${label}: no PEM CERTIFICATE block found`);
  }
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(blocks[0]!);
  } catch (e) {
    throw new BrookError(ErrorCodes.CERT_UNREADABLE, `${label}: cannot parse certificate: ${(e as Error).message}`, { cause: e });
  }
  const notBefore = new Date(x509.validFrom);
  const notAfter = new Date(x509.validTo);
  if (Number.isNaN(notAfter.getTime()) || Number.isNaN(notBefore.getTime())) {
    throw new BrookError(ErrorCodes.CERT_UNREADABLE, `${label}: cannot parse validity dates`);
  }
  return { notBefore, notAfter, serialNumber: x509.serialNumber, names: certNames(x509), x509 };
}

/** DNS names from subjectAltName, falling back to the subject's CN. */
export function certNames(x509: X509Certificate): string[] {
  const names: string[] = [];
  for (const part of (x509.subjectAltName ?? '').split(',')) {
    const m = /^\s*DNS:(.+?)\s*$/.exec(part);
    if (m) names.push(m[1]!.toLowerCase());
  }
  if (names.length === 0) {
    const cn = /(?:^|\n)CN=([^\n]+)/.exec(x509.subject);
    if (cn) names.push(cn[1]!.trim().toLowerCase());
  }
  return names;
}

/** Check that `keyPem` is the private key of the leaf in `certPem`; throws CERT_UNREADABLE / CERT_MISMATCH. */
export function checkKeyPair(info: CertInfo, keyPem: string, label = 'key'): KeyObject {
  let key: KeyObject;
  try {
    key = createPrivateKey(keyPem);
  } catch (e) {
    throw new BrookError(ErrorCodes.CERT_UNREADABLE, `${label}: cannot parse private key: ${(e as Error).message}`, { cause: e });
  }
  if (!info.x509.checkPrivateKey(key)) {
    throw new BrookError(ErrorCodes.CERT_MISMATCH, `${label}: private key does not match the certificate (subject ${info.x509.subject.replace(/\n/g, ', ')})`);
  }
  return key;
}

async function readPem(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') {
      throw new BrookError(ErrorCodes.CERT_MISSING, `${what} file not found: ${path}`, { cause: e });
    }
    throw new BrookError(ErrorCodes.CERT_UNREADABLE, `${what} file not readable: ${path}: ${(e as Error).message}`, { cause: e });
  }
}

export async function loadCertFiles(certPath: string, keyPath: string, opts: LoadCertOptions = {}): Promise<LoadedCert> {
  const now = opts.now ?? (() => new Date());
  const certFile = resolve(certPath);
  const keyFile = resolve(keyPath);
  const cert = await readPem(certFile, 'certificate');
  const key = await readPem(keyFile, 'certificate key');
  const info = readCertInfo(cert, certFile);
  checkKeyPair(info, key, keyFile);
  if (info.notAfter.getTime() <= now().getTime()) {
    throw new BrookError(ErrorCodes.CERT_EXPIRED, `certificate ${certFile} expired on ${info.notAfter.toISOString()}`);
  }
  return { cert, key, notAfter: info.notAfter, names: info.names };
}
