/**
 * The bytes bench/probe.ts moves in its 'tcp' mode, the same in every thread of the probe: a
 * deterministic, incompressible-looking 1 MiB pattern, repeated; its SHA-256 for M MiB; and
 * writing M MiB of it to a socket with backpressure.
 */
import { createHash } from 'node:crypto';
import type net from 'node:net';

export const MIB = 1024 * 1024;
/** Size of the repeated data pattern (and of each write). */
export const PATTERN_SIZE = MIB;
export const DIGEST_SIZE = 32;
/** First byte of a 'tcp' connection: the target reads and hashes, or writes. */
export const MODE_UP = 0x75; // 'u'
export const MODE_DOWN = 0x64; // 'd'

export const pattern = Buffer.alloc(PATTERN_SIZE);
{
  let x = 0x9e3779b9;
  for (let i = 0; i < PATTERN_SIZE; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    pattern.writeUInt32LE(x >>> 0, i);
  }
}

export function expectedDigest(mib: number): Buffer {
  const h = createHash('sha256');
  for (let i = 0; i < mib; i++) h.update(pattern);
  return h.digest();
}

/** Write `mib` MiB of the pattern with backpressure. */
export async function writePattern(s: net.Socket, mib: number): Promise<void> {
  for (let i = 0; i < mib; i++) {
    if (!s.write(pattern)) {
      await new Promise<void>((resolve, reject) => {
        const onDrain = () => {
          s.removeListener('close', onClose);
          resolve();
        };
        const onClose = () => {
          s.removeListener('drain', onDrain);
          reject(new Error('closed while writing'));
        };
        s.once('drain', onDrain);
        s.once('close', onClose);
      });
    }
  }
}
