/**
 * Replace a file so that a reader (or a crash) only ever sees the old bytes or the new ones:
 * write a temporary file beside it, fsync it, rename it over the file, fsync the folder.
 * Used for the users file (`users add`, `users remove`) and the accounting state file.
 */
import { randomBytes } from 'node:crypto';
import * as nodeFs from 'node:fs';
import { basename, dirname, join } from 'node:path';

/** The fs calls used (injected by tests to fail one of them). */
export interface AtomicFs {
  openSync(path: string, flags: string, mode?: number): number;
  writeSync(fd: number, data: Uint8Array, offset: number, length: number): number;
  fsyncSync(fd: number): void;
  fchmodSync(fd: number, mode: number): void;
  closeSync(fd: number): void;
  renameSync(from: string, to: string): void;
  unlinkSync(path: string): void;
}

/** Default mode of a file made new (the users file holds passwords). */
export const PRIVATE_FILE_MODE = 0o600;
/** Random bytes in a temporary file's name (two writers never share one). */
const TMP_RANDOM_BYTES = 6;

export interface WriteAtomicOptions {
  /** Permission bits of the new file (default PRIVATE_FILE_MODE). */
  mode?: number;
  fs?: AtomicFs;
}

/** The temporary name for `path`: hidden, in the same folder (so rename stays on one file system). */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(TMP_RANDOM_BYTES).toString('hex')}.tmp`);
}

function fsyncFolder(fs: AtomicFs, dir: string): void {
  let fd: number;
  try {
    fd = fs.openSync(dir, 'r');
  } catch {
    return; // not every platform opens folders; the rename itself is done
  }
  try {
    fs.fsyncSync(fd);
  } catch {
    /* some file systems refuse fsync on a folder */
  } finally {
    fs.closeSync(fd);
  }
}

/** Write `data` to `path` atomically; on any failure the old file is untouched and the temporary removed. */
export function writeFileAtomic(path: string, data: string | Uint8Array, opts: WriteAtomicOptions = {}): void {
  const fs = opts.fs ?? (nodeFs as unknown as AtomicFs);
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
  const tmp = tempPathFor(path);
  const mode = opts.mode ?? PRIVATE_FILE_MODE;
  const fd = fs.openSync(tmp, 'wx', mode);
  let renamed = false;
  try {
    try {
      fs.fchmodSync(fd, mode); // exactly these bits, whatever the umask
      for (let off = 0; off < bytes.length; ) off += fs.writeSync(fd, bytes, off, bytes.length - off);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path);
    renamed = true;
  } finally {
    if (!renamed) {
      try {
        fs.unlinkSync(tmp);
      } catch {
        /* already gone */
      }
    }
  }
  fsyncFolder(fs, dirname(path));
}
