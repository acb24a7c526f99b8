/**
 * Out of descriptors, seen from any side (the server's front door, the client's listeners): which errno
 * codes mean it, and a probe that finds out whether a descriptor is free now.
 */
import { closeSync, openSync } from 'node:fs';
import { devNull } from 'node:os';

/** errno codes that mean "out of descriptors or kernel memory" (accept, dial, open). */
export const EXHAUSTION_CODES: ReadonlySet<string> = new Set(['EMFILE', 'ENFILE', 'ENOMEM', 'ENOBUFS']);

/** An errno error with one of EXHAUSTION_CODES, or a BrookError made from one (its cause). */
export function isExhaustion(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  if (typeof code === 'string' && EXHAUSTION_CODES.has(code)) return true;
  const cause = (e as { cause?: unknown } | null)?.cause;
  return cause !== undefined && cause !== e && isExhaustion(cause);
}

/** Open and at once close /dev/null: throws EMFILE/ENFILE when no descriptor is free. */
export function probeDescriptor(): void {
  closeSync(openSync(devNull, 'r'));
}
