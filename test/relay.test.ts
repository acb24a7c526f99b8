/**
 * The relay's fill-fragments rule: reads that arrive in the same event-loop
 * turn are sealed together (full fragments), and a lone small write is sent
 * on the next turn, not held for a timer.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { Relay, type TunnelTransform } from '../src/net/relay.js';
import { BrookCipher } from '../src/protocol/cipher.js';
import { FragmentDecoder, FragmentEncoder } from '../src/protocol/fragment.js';
import { MAX_TCP_PAYLOAD } from '../src/protocol/sizes.js';

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
