/**
 * --pid FILE (upstream's global option): the process id written at start and
 * removed at exit. Only the process that owns the command writes it (with
 * --workers, the primary).
 */
import { unlinkSync, writeFileSync } from 'node:fs';
import { BrookError, ErrorCodes } from '../errors.js';

/** rw-r--r--: readable by service managers and scripts. */
export const PID_FILE_MODE = 0o644;

export function writePidFile(path: string, pid = process.pid): () => void {
  try {
    writeFileSync(path, `${pid}\n`, { mode: PID_FILE_MODE });
  } catch (e) {
    throw new BrookError(ErrorCodes.CONFIG, `cannot write pid file ${path}: ${(e as Error).message}`, { cause: e });
  }
  let removed = false;
  const remove = () => {
    if (removed) return;
    removed = true;
    try {
      unlinkSync(path);
    } catch {
      /* already gone */
    }
  };
  process.once('exit', remove);
  return remove;
}
