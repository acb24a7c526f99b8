import { describe, expect, it } from 'vitest';
import { BrookError, ErrorCodes } from '../src/errors.js';
import { MAX_HEAD_SIZE, parseProxyRequest, ProxyRequestReader } from '../src/httpproxy/codec.js';

type Outcome = { code: string } | { headSize: number; kind: string; destination: string; rewritten?: string; rest: string } | null;

function outcome(f: () => ReturnType<typeof parseProxyRequest>): Outcome {
  try {
    const r = f();
    if (r === null) return null;
    const q = r.request;
    return {
      headSize: q.head.headSize,
      kind: q.kind,
      destination: `${q.destination.host}:${q.destination.port}`,
      rewritten: q.kind === 'forward' ? q.rewrittenHead.toString('latin1') : undefined,
      rest: r.rest.toString('latin1'),
    };
  } catch (e) {
    expect(e).toBeInstanceOf(BrookError);
    return { code: (e as BrookError).code };
  }
}

/** Feed `input` in pieces cut at `cuts`; the outcome once a push decides, and the pushes made. */
function feed(input: Buffer, cuts: number[], maxSize = MAX_HEAD_SIZE): { out: Outcome; pushes: number; reader: ProxyRequestReader } {
  const reader = new ProxyRequestReader(maxSize);
  let from = 0;
  let pushes = 0;
  for (const to of [...cuts, input.length]) {
    if (to <= from) continue;
    pushes++;
    const out = outcome(() => reader.push(input.subarray(from, to)));
    if (out !== null) return { out, pushes, reader };
    from = to;
  }
  return { out: null, pushes, reader };
}

const everyByte = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

/** A small seeded generator (mulberry32), so a failing split can be reproduced. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const HEADS = [
  'CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\nafter',
  'GET http://a.b:8080/p?q HTTP/1.1\r\nHost: a.b:8080\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\nbody',
  'GET http://a/ HTTP/1.0\nX-B: 2\n\nbare LF',
  'GET http://a/ HTTP/1.1\r\nX: 1\n\r\nmixed',
  'GET http://a/ HTTP/1.1\r\nX: 1\r\r\n\r\nstray CR',
  'GET http://a/ HTTP/1.1\r\nX: 1\r\n',
  'not http at all\r\n\r\n',
  'GET /origin HTTP/1.1\r\n\r\n',
  '\n\n',
  '\r\n\r\n',
];

describe('ProxyRequestReader (the head read piece by piece)', () => {
  it('gives what parseProxyRequest gives for the whole input, however the input is split', () => {
    const next = rng(22);
    for (const text of HEADS) {
      const input = Buffer.from(text, 'latin1');
      const whole = outcome(() => parseProxyRequest(input));
      // what a reader returns as rest is what followed the head in the pieces pushed so far
      const agrees = (o: Outcome) => {
        if (whole !== null && 'rest' in whole && o !== null && 'rest' in o) expect({ ...o, rest: whole.rest.startsWith(o.rest) }).toEqual({ ...whole, rest: true });
        else expect(o).toEqual(whole);
      };
      agrees(feed(input, everyByte(input.length)).out);
      for (let k = 0; k < 50; k++) {
        const cuts = Array.from({ length: 1 + Math.floor(next() * 6) }, () => Math.floor(next() * input.length)).sort((a, b) => a - b);
        agrees(feed(input, cuts).out);
      }
    }
  });

  it('looks at each byte of a head of MAX_HEAD_SIZE sent one byte at a time once (plus one a push)', () => {
    const line = 'GET http://a/ HTTP/1.1\r\nX: ';
    const head = Buffer.from(line + 'v'.repeat(MAX_HEAD_SIZE - line.length - 4) + '\r\n\r\n', 'latin1');
    const { out, pushes, reader } = feed(head, everyByte(head.length));
    expect(out).toMatchObject({ headSize: MAX_HEAD_SIZE, kind: 'forward' });
    expect(pushes).toBe(MAX_HEAD_SIZE);
    // re-parsing on every byte looked at ~n^2/2 = 134 M bytes
    expect(reader.examined).toBeLessThanOrEqual(head.length + pushes);
  });

  it('HTTP_HEAD_TOO_LARGE at the byte that fills maxSize without a complete head, as parseProxyRequest', () => {
    const input = Buffer.from(`GET http://a/ HTTP/1.1\r\nX: ${'a'.repeat(100)}`, 'latin1');
    const reader = new ProxyRequestReader(64);
    let thrownAt = -1;
    for (let i = 0; i < input.length && thrownAt < 0; i++) {
      try {
        reader.push(input.subarray(i, i + 1));
      } catch (e) {
        expect((e as BrookError).code).toBe(ErrorCodes.HTTP_HEAD_TOO_LARGE);
        thrownAt = i + 1;
      }
    }
    expect(thrownAt).toBe(64);
    expect(parseProxyRequest(input.subarray(0, 63), 64)).toBeNull();
  });

  it('a head ending exactly at maxSize is read; one byte more is too large', () => {
    const line = 'CONNECT a:1 HTTP/1.1\r\nX: ';
    const exact = Buffer.from(line + 'v'.repeat(128 - line.length - 4) + '\r\n\r\n', 'latin1');
    expect(feed(exact, everyByte(exact.length), 128).out).toMatchObject({ headSize: 128, kind: 'connect' });
    const over = Buffer.concat([Buffer.from('x'), exact]);
    expect(feed(over, [60, 100], 128).out).toEqual({ code: ErrorCodes.HTTP_HEAD_TOO_LARGE });
  });

  it('keeps the bytes after the head in the piece that completes it; refuses a push after its head', () => {
    const reader = new ProxyRequestReader();
    expect(reader.push(Buffer.from('CONNECT a:1 HTTP/1.1\r\nHost: a:1\r'))).toBeNull();
    const r = reader.push(Buffer.from('\n\r\ntunnel bytes'));
    expect(r?.rest.toString()).toBe('tunnel bytes');
    expect(() => reader.push(Buffer.from('more'))).toThrow(expect.objectContaining({ code: ErrorCodes.INTERNAL }));
  });
});
