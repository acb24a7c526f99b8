/**
 * The relay's fill-fragments rule: reads that arrive in the same event-loop
 * turn are sealed together (full fragments), and a lone small write is sent
 * on the next turn, not held for a timer. And how it ends (protocol/resets.md):
 * a stream that fails to open mid-way, or a tunnel that ends inside a unit, is
 * an abort (RST to the plain side); an idle timeout closes with a FIN; a TLS
 * tunnel is reset through the TCP socket under it.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Relay, type TunnelTransform } from '../src/net/relay.js';
import { resetSocket } from '../src/net/reset.js';
import { BrookCipher } from '../src/protocol/cipher.js';
import { FragmentDecoder, FragmentEncoder } from '../src/protocol/fragment.js';
import { MAX_TCP_PAYLOAD } from '../src/protocol/sizes.js';
import { BrookError, ErrorCodes } from '../src/errors.js';
import { connect as tlsConnect, createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { selfSigned } from './helpers/cli.js';

/** Two connected sockets on 127.0.0.1. */
async function socketPair(): Promise<{ a: Socket; b: Socket; server: Server }> {
  const server = createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const a = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
  await new Promise<void>((r) => a.once('connect', () => r()));
  return { a, b: await accepted, server };
}

const cleanup: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanup.splice(0)) c();
});

function brookTransform(seals: number[]): { t: TunnelTransform; decode: (wire: Buffer) => Buffer[] } {
  const key = Buffer.alloc(32, 7);
  const nonce = Buffer.alloc(12, 1);
  const enc = new FragmentEncoder(new BrookCipher(key, nonce), MAX_TCP_PAYLOAD);
  const dec = new FragmentDecoder(new BrookCipher(key, nonce), { maxPayload: MAX_TCP_PAYLOAD });
  return {
    t: {
      open: (c, emit) => emit(c),
      seal: (d) => {
        seals.push(d.length);
        return enc.encode(d);
      },
      end: () => {},
    },
    decode: (wire) => {
      const out: Buffer[] = [];
      dec.push(wire, (p) => out.push(p));
      return out;
    },
  };
}

async function setup() {
  const plain = await socketPair();
  const tunnel = await socketPair();
  cleanup.push(() => {
    for (const s of [plain.a, plain.b, tunnel.a, tunnel.b]) s.destroy();
    plain.server.close();
    tunnel.server.close();
  });
  plain.b.pause();
  const seals: number[] = [];
  const { t, decode } = brookTransform(seals);
  const wire: Buffer[] = [];
  tunnel.b.on('data', (d: Buffer) => wire.push(d));
  return { app: plain.a, seals, wire, decode, start: () => new Relay(plain.b, tunnel.a, t) };
}

const waitFor = async (cond: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
};

describe('Relay fills fragments', () => {
  it('seals small writes that arrive together as full fragments, not one fragment per write', async () => {
    const { app, seals, wire, decode, start } = await setup();
    const piece = Buffer.alloc(100, 0x61);
    for (let i = 0; i < 50; i++) app.write(piece); // 50 small writes, waiting in the socket together
    await new Promise((r) => setTimeout(r, 100));
    start();
    await waitFor(() => seals.reduce((a, b) => a + b, 0) === 5000);
    const fragments = decode(Buffer.concat(wire));
    // full 2014-byte fragments (2014 + 2014 + 972), not 50 fragments of 100 bytes
    expect(fragments.map((f) => f.length)).toEqual([2014, 2014, 972]);
    expect(Buffer.concat(fragments)).toEqual(Buffer.alloc(5000, 0x61));
  });

  it('sends a lone small write at once, not held back for more', async () => {
    const { app, seals, wire, decode, start } = await setup();
    start();
    app.write('hi');
    await waitFor(() => seals.length === 1, 1000);
    expect(seals).toEqual([2]);
    await waitFor(() => wire.length > 0, 1000);
    expect(decode(Buffer.concat(wire)).map((f) => f.toString())).toEqual(['hi']);
  });
});

/** How the far end of `s` saw it end: the first of 'error' (its code) and 'end'. */
function ending(s: Socket): Promise<string> {
  return new Promise((r) => {
    s.once('error', (e: NodeJS.ErrnoException) => r(e.code ?? 'error'));
    s.once('end', () => r('end'));
    s.resume();
  });
}

/** A transform whose open() throws on a chunk starting with "BAD", and whose end() throws when told to. */
function failingTransform(o: { endInsideUnit?: boolean } = {}): TunnelTransform {
  return {
    open: (c, emit) => {
      if (c.subarray(0, 3).toString() === 'BAD') throw new BrookError(ErrorCodes.AUTH_FAILED, 'message authentication failed');
      emit(c);
    },
    seal: (d) => d,
    end: () => {
      if (o.endInsideUnit) throw new BrookError(ErrorCodes.STREAM_TRUNCATED, 'ended inside a fragment');
    },
  };
}

describe('Relay: how it ends', () => {
  async function pairs(t: TunnelTransform, opts: { idleTimeoutMs?: number } = {}) {
    const plain = await socketPair();
    const tunnel = await socketPair();
    cleanup.push(() => {
      for (const s of [plain.a, plain.b, tunnel.a, tunnel.b]) s.destroy();
      plain.server.close();
      tunnel.server.close();
    });
    for (const s of [plain.a, tunnel.b]) s.on('error', () => undefined);
    let closed: { err: BrookError | null; aborted: boolean } | null = null;
    const relay = new Relay(plain.b, tunnel.a, t, { ...opts, onClose: (err, st) => (closed = { err, aborted: st.aborted }) });
    return { app: plain.a, far: tunnel.b, relay, closed: () => closed };
  }

  it('a tunnel stream that fails to open mid-way resets both sides', async () => {
    const { app, far, closed } = await pairs(failingTransform());
    const appEnd = ending(app);
    const farEnd = ending(far);
    far.write('good bytes');
    await waitFor(() => app.readableLength > 0 || app.bytesRead > 0);
    far.write('BAD tag');
    expect(await appEnd).toBe('ECONNRESET');
    expect(await farEnd).toBe('ECONNRESET');
    expect(closed()).toMatchObject({ aborted: true, err: { code: ErrorCodes.AUTH_FAILED } });
  });

  it('a tunnel that ends inside a unit resets the plain side', async () => {
    const { app, far, closed } = await pairs(failingTransform({ endInsideUnit: true }));
    const appEnd = ending(app);
    far.end('partial');
    expect(await appEnd).toBe('ECONNRESET');
    expect(closed()).toMatchObject({ aborted: true, err: { code: ErrorCodes.STREAM_TRUNCATED } });
  });

  it('clean ends both ways stay FINs', async () => {
    const { app, far, closed } = await pairs(failingTransform());
    const appEnd = ending(app);
    const farEnd = ending(far);
    app.end('up');
    far.end('down');
    expect(await appEnd).toBe('end');
    expect(await farEnd).toBe('end');
    await waitFor(() => closed() !== null);
    expect(closed()).toEqual({ err: null, aborted: false });
  });

  it('an idle timeout closes with a FIN, not a reset', async () => {
    const { app, far, closed } = await pairs(failingTransform(), { idleTimeoutMs: 100 });
    expect(await ending(app)).toBe('end');
    expect(await ending(far)).toBe('end');
    expect(closed()).toMatchObject({ aborted: false, err: { code: ErrorCodes.TIMEOUT } });
  });

  it('a TLS tunnel is closed, not reset (resetting the TCP socket under a TLS socket crashes Node), and the process lives', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'brook-relay-tls-'));
    const files = await selfSigned(dir, 'relay.test', 'relay');
    const key = readFileSync(files.key);
    const cert = readFileSync(files.cert);
    rmSync(dir, { recursive: true, force: true });
    const srv = createTlsServer({ key, cert, allowHalfOpen: true });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    cleanup.push(() => srv.close());
    const port = (srv.address() as { port: number }).port;
    // the states in which a reset of the TCP socket under the TLS socket crashed: right after
    // the handshake, and after the peer's FIN; many times over
    for (let i = 0; i < 100; i++) {
      const afterFin = i % 2 === 1;
      const accepted = new Promise<TLSSocket>((r) => srv.once('secureConnection', r));
      const client = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...({ allowHalfOpen: true } as object) });
      client.on('error', () => undefined);
      await new Promise<void>((r) => client.once('secureConnect', () => r()));
      const server = await accepted;
      server.on('error', () => undefined);
      const closed = new Promise<void>((r) => {
        client.once('end', () => r());
        client.once('close', () => r());
      });
      client.resume();
      if (afterFin) {
        const ended = new Promise<void>((r) => server.once('end', () => r()));
        server.resume();
        client.end();
        await ended;
      }
      resetSocket(server);
      await closed;
      client.destroy();
    }
    // and through a relay: the plain side's RST closes the TLS tunnel side
    const accepted = new Promise<TLSSocket>((r) => srv.once('secureConnection', r));
    const client = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...({ allowHalfOpen: true } as object) });
    client.on('error', () => undefined);
    await new Promise<void>((r) => client.once('secureConnect', () => r()));
    const server = await accepted;
    const plain = await socketPair();
    cleanup.push(() => {
      for (const s of [plain.a, plain.b, client, server]) s.destroy();
      plain.server.close();
    });
    for (const s of [plain.a, server]) s.on('error', () => undefined);
    new Relay(plain.b, server, failingTransform());
    const farEnd = ending(client as unknown as Socket);
    plain.a.resetAndDestroy();
    expect(['end', 'close']).toContain(await farEnd);
  });
});
