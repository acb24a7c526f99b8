/** Block list reading: line rules, bounded file and URL reads, and the error code of each failure. */
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { describeSource, listLines, normalizeSource, readListSource } from '../src/policy/lists.js';

let dir: string;
let server: Server;
let base: string;
let deadPort: number;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'brook-policy-lists-'));
  server = createServer((req, res) => {
    switch (req.url) {
      case '/ok.txt':
        res.end('example.com\n# comment\n\nexample.org\n');
        return;
      case '/missing':
        res.statusCode = 404;
        res.end('not here');
        return;
      case '/slow':
        return; // never answers
      case '/stall-body':
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.write('example.com\n'); // then nothing more
        return;
      case '/endless': {
        // chunked, no content-length: the bound must stop us
        res.writeHead(200);
        const chunk = Buffer.alloc(16 * 1024, 'a');
        const pump = () => {
          while (res.write(chunk)) if (res.destroyed) return;
          res.once('drain', pump);
        };
        res.on('close', () => res.removeAllListeners('drain'));
        pump();
        return;
      }
      case '/declared-huge':
        res.writeHead(200, { 'content-length': String(10 * 1024 * 1024) });
        res.write('x');
        return;
      case '/redirect':
        res.writeHead(302, { location: '/ok.txt' });
        res.end();
        return;
      default:
        res.statusCode = 500;
        res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const probe = createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  deadPort = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((r) => server.close(() => r()));
  await rm(dir, { recursive: true, force: true });
});

describe('listLines', () => {
  it('skips blanks and comments, trims, handles CRLF, numbers lines from 1', () => {
    const text = 'a.com\r\n\r\n  # whole-line comment\n\tb.com  \nc.com # trailing comment\n#\n   \nd.com';
    expect(listLines(text)).toEqual([
      { line: 1, text: 'a.com' },
      { line: 4, text: 'b.com' },
      { line: 5, text: 'c.com' },
      { line: 8, text: 'd.com' },
    ]);
  });

  it('gives nothing for an empty or comment-only list', () => {
    expect(listLines('')).toEqual([]);
    expect(listLines('\n\n# only\n')).toEqual([]);
  });
});

describe('readListSource: files', () => {
  it('reads a file and drops a UTF-8 BOM', async () => {
    const f = join(dir, 'bom.txt');
    await writeFile(f, Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from('a.com\n')]));
    expect(await readListSource(f)).toBe('a.com\n');
  });

  it('a missing file is LIST_UNREACHABLE with its path in one line', async () => {
    const f = join(dir, 'nope.txt');
    const e = await readListSource(f).catch((x) => x);
    expect(e.code).toBe(ErrorCodes.LIST_UNREACHABLE);
    expect(e.message).toContain(f);
    expect(e.message).not.toContain('\n');
  });

  it('a directory or a device is refused (no hang, no unbounded read)', async () => {
    const d = join(dir, 'adir');
    await mkdir(d, { recursive: true });
    expect((await readListSource(d).catch((x) => x)).code).toBe(ErrorCodes.LIST_UNREACHABLE);
    const z = await readListSource('/dev/zero').catch((x) => x);
    expect(z.code).toBe(ErrorCodes.LIST_UNREACHABLE);
    expect(z.message).toContain('not a regular file');
  });

  it('a file over maxBytes is LIST_INVALID', async () => {
    const f = join(dir, 'big.txt');
    await writeFile(f, 'a.com\n'.repeat(100));
    expect((await readListSource(f, { maxBytes: 100 }).catch((x) => x)).code).toBe(ErrorCodes.LIST_INVALID);
    expect(await readListSource(f, { maxBytes: 600 })).toHaveLength(600);
  });

  it('relative paths are made absolute', () => {
    expect(normalizeSource('lists/a.txt')).toBe(join(process.cwd(), 'lists/a.txt'));
    expect(normalizeSource('https://h/x')).toBe('https://h/x');
  });
});

describe('readListSource: URLs', () => {
  it('reads a 200 body and follows a redirect', async () => {
    expect(await readListSource(`${base}/ok.txt`)).toBe('example.com\n# comment\n\nexample.org\n');
    expect(await readListSource(`${base}/redirect`)).toContain('example.org');
  });

  it('a non-2xx answer is LIST_UNREACHABLE naming the status', async () => {
    const e = await readListSource(`${base}/missing`).catch((x) => x);
    expect(e.code).toBe(ErrorCodes.LIST_UNREACHABLE);
    expect(e.message).toContain('HTTP 404');
  });

  it('a refused connection is LIST_UNREACHABLE', async () => {
    const e = await readListSource(`http://127.0.0.1:${deadPort}/x.txt`).catch((x) => x);
    expect(e.code).toBe(ErrorCodes.LIST_UNREACHABLE);
    expect(e.message).toMatch(/ECONNREFUSED/);
  });

  it('a server that never answers, or stalls mid-body, times out', async () => {
    const a = await readListSource(`${base}/slow`, { timeoutMs: 300 }).catch((x) => x);
    expect(a.code).toBe(ErrorCodes.LIST_UNREACHABLE);
    expect(a.message).toContain('within 300 ms');
    const b = await readListSource(`${base}/stall-body`, { timeoutMs: 300 }).catch((x) => x);
    expect(b.code).toBe(ErrorCodes.LIST_UNREACHABLE);
  });

  it('an endless body or a huge declared length stops at maxBytes (LIST_INVALID)', async () => {
    const a = await readListSource(`${base}/endless`, { maxBytes: 256 * 1024 }).catch((x) => x);
    expect(a.code).toBe(ErrorCodes.LIST_INVALID);
    expect(a.message).toContain('larger than 262144 bytes');
    const b = await readListSource(`${base}/declared-huge`, { maxBytes: 1024 }).catch((x) => x);
    expect(b.code).toBe(ErrorCodes.LIST_INVALID);
  });

  it('an aborted signal stops a download', async () => {
    const ac = new AbortController();
    const p = readListSource(`${base}/slow`, { signal: ac.signal, timeoutMs: 30_000 });
    setTimeout(() => ac.abort(), 50);
    const e = await p.catch((x) => x);
    expect(e.code).toBe(ErrorCodes.LIST_UNREACHABLE);
    expect(e.message).toContain('aborted');
  });

  it('logs and errors never show URL credentials or query values', () => {
    expect(describeSource('https://user:secret@lists.example/a.txt?token=abc')).toBe('https://lists.example/a.txt?…');
    expect(describeSource('/etc/brook/a.txt')).toBe('/etc/brook/a.txt');
  });
});
