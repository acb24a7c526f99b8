/**
 * Reading a block list (--blockDomainList, --blockCIDR4List, --blockCIDR6List):
 * a local file or an http(s) URL, one entry a line.
 *
 * Every read is bounded: a file must be a regular file no larger than
 * maxBytes; a URL must answer 2xx within timeoutMs (the whole exchange, body
 * included, as upstream's 9 s http.Client timeout) and send no more than
 * maxBytes. A hostile or broken list server can cost us at most that.
 *
 * Line rules (ours): CRLF or LF; a UTF-8 BOM is dropped; everything from the
 * first `#` on is a comment; surrounding whitespace is trimmed; blank lines
 * are skipped. (Upstream removes every space in the file and has no
 * comments; `#` can appear in neither a domain nor a CIDR, so a list that
 * upstream reads means the same here.)
 */
import { open } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import { BrookError, ErrorCodes } from '../errors.js';

/** Largest list we read (file or URL body). 100,000 domains are about 2.5 MB. */
export const DEFAULT_MAX_LIST_BYTES = 32 * 1024 * 1024;
/** Whole-exchange timeout for a list URL (upstream's http.Client uses 9 s). */
export const DEFAULT_LIST_FETCH_TIMEOUT_MS = 9_000;
/** A longer line cannot be an entry; it is reported, shortened to this, in the error. */
export const MAX_LINE_EXCERPT = 60;

export interface ListReadOptions {
  maxBytes?: number;
  timeoutMs?: number;
  /** Injected for tests or to route list downloads through the process-wide dialer. */
  fetch?: typeof globalThis.fetch;
  /** Aborts a download in flight (DestinationPolicy.close()). */
  signal?: AbortSignal;
}

export interface ListLine {
  /** 1-based line number in the source. */
  line: number;
  text: string;
}

export function isUrlSource(source: string): boolean {
  return /^https?:\/\//i.test(source);
}

/**
 * Canonical form of a list source: URLs as given, file paths made absolute
 * (against the working directory at start, so a later chdir changes nothing).
 */
export function normalizeSource(source: string): string {
  if (source.trim() === '') throw new BrookError(ErrorCodes.CONFIG, 'empty block list source');
  return isUrlSource(source) ? source : resolvePath(source);
}

/** The source as it may appear in logs and errors: no userinfo, no query values (they may be tokens). */
export function describeSource(source: string): string {
  if (!isUrlSource(source)) return source;
  try {
    const u = new URL(source);
    const query = u.search ? '?…' : '';
    return `${u.protocol}//${u.host}${u.pathname}${query}`;
  } catch {
    return '(unparsable URL)';
  }
}

/** Read a list's text from a file or URL, within the bounds. Throws LIST_UNREACHABLE or LIST_INVALID. */
export async function readListSource(source: string, o: ListReadOptions = {}): Promise<string> {
  const maxBytes = o.maxBytes ?? DEFAULT_MAX_LIST_BYTES;
  const bytes = isUrlSource(source)
    ? await fetchBounded(source, maxBytes, o.timeoutMs ?? DEFAULT_LIST_FETCH_TIMEOUT_MS, o.fetch ?? globalThis.fetch, o.signal)
    : await readFileBounded(source, maxBytes);
  return new TextDecoder('utf-8').decode(bytes); // drops a leading BOM
}

async function readFileBounded(path: string, maxBytes: number): Promise<Uint8Array> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw unreachable(path, (e as Error).message, e);
  }
  try {
    const st = await fh.stat();
    // A FIFO would block a threadpool thread, /dev/zero would never end.
    if (!st.isFile()) throw unreachable(path, 'not a regular file');
    if (st.size > maxBytes) throw tooLarge(path, maxBytes);
    // Read at most maxBytes + 1: a file that grew since stat is still caught.
    const buf = new Uint8Array(Math.min(st.size, maxBytes) + 1);
    let got = 0;
    for (;;) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, null);
      if (bytesRead === 0) break;
      got += bytesRead;
      if (got > maxBytes) throw tooLarge(path, maxBytes);
      // More bytes than stat said: the file is being rewritten (write lists with a rename).
      if (got === buf.length) throw unreachable(path, 'file changed while being read');
    }
    return buf.subarray(0, got);
  } catch (e) {
    if (e instanceof BrookError) throw e;
    throw unreachable(path, (e as Error).message, e);
  } finally {
    await fh.close().catch(() => {});
  }
}

async function fetchBounded(
  url: string,
  maxBytes: number,
  timeoutMs: number,
  fetchFn: typeof globalThis.fetch,
  signal: AbortSignal | undefined,
): Promise<Uint8Array> {
  if (signal?.aborted) throw unreachable(url, 'aborted');
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  timer.unref();
  const onAbort = () => ac.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    let res: Response;
    try {
      res = await fetchFn(url, { signal: ac.signal, redirect: 'follow' });
    } catch (e) {
      throw unreachable(url, ac.signal.aborted ? abortText(signal, `no answer within ${timeoutMs} ms`) : causeText(e), e);
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => {});
      throw unreachable(url, `HTTP ${res.status}`);
    }
    const declared = Number(res.headers.get('content-length'));
    if (Number.isFinite(declared) && declared > maxBytes) {
      await res.body?.cancel().catch(() => {});
      throw tooLarge(url, maxBytes);
    }
    if (!res.body) return new Uint8Array(0);
    const chunks: Uint8Array[] = [];
    let total = 0;
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > maxBytes) throw tooLarge(url, maxBytes);
        chunks.push(value);
      }
    } catch (e) {
      if (e instanceof BrookError) throw e;
      throw unreachable(url, ac.signal.aborted ? abortText(signal, `body not complete within ${timeoutMs} ms`) : causeText(e), e);
    } finally {
      await reader.cancel().catch(() => {});
    }
    return Buffer.concat(chunks, total);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
  }
}

/** Split a list's text into its entry lines (comments, blanks and whitespace removed). */
export function listLines(text: string): ListLine[] {
  const out: ListLine[] = [];
  const raw = text.split('\n');
  for (let i = 0; i < raw.length; i++) {
    let s = raw[i]!;
    const hash = s.indexOf('#');
    if (hash >= 0) s = s.slice(0, hash);
    s = s.trim();
    if (s !== '') out.push({ line: i + 1, text: s });
  }
  return out;
}

/** A LIST_INVALID error naming the source, line and (shortened) text. */
export function invalidLine(source: string, l: ListLine, why: string): BrookError {
  const t = l.text.length > MAX_LINE_EXCERPT ? `${l.text.slice(0, MAX_LINE_EXCERPT)}…` : l.text;
  return new BrookError(
    ErrorCodes.LIST_INVALID,
    `${describeSource(source)} line ${l.line}: ${why}: ${JSON.stringify(t)}`,
  );
}

function unreachable(source: string, why: string, cause?: unknown): BrookError {
  return new BrookError(ErrorCodes.LIST_UNREACHABLE, `cannot read ${describeSource(source)}: ${oneLine(why)}`, {
    cause,
  });
}

function tooLarge(source: string, maxBytes: number): BrookError {
  return new BrookError(ErrorCodes.LIST_INVALID, `${describeSource(source)} is larger than ${maxBytes} bytes`);
}

/** fetch() wraps the network error in `cause`; that is the useful part. */
function causeText(e: unknown): string {
  const err = e as { message?: string; cause?: { code?: string; message?: string } };
  const c = err?.cause;
  if (c && (c.code || c.message)) return [c.code, c.message].filter(Boolean).join(' ');
  return err?.message ?? String(e);
}

function abortText(signal: AbortSignal | undefined, timedOut: string): string {
  return signal?.aborted ? 'aborted' : timedOut;
}

function oneLine(s: string): string {
  return s.replace(/\s+/g, ' ').trim();
}
