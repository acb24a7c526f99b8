/**
 * Prekeyed pool entries (issue 11): a pooled connection's client nonce, key and AES
 * context are made while it idles (prepareClientKey, src/protocol/session.ts; the
 * pool's `prepare`, src/client/pool.ts), so opening a tunnel on it only builds and
 * seals the first fragment. What must hold:
 * - the bytes are those of a codec that made its key at once (same nonce, same time);
 * - the header time is read when the codec is made, never when the key is;
 * - a prepared key is used once, only with the options it was made for;
 * - the pool makes one key per idle connection on the tick after it joins, hands it
 *   out with that connection only, and a real server (custom HKDF infos) accepts it.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { connectUpgraded, type ServerEndpoint, startTunnel } from '../src/client/dial.js';
import { TunnelPool } from '../src/client/pool.js';
import { ErrorCodes } from '../src/errors.js';
import { nodeCryptoBackend } from '../src/protocol/cipher.js';
import { BROOK_MODE } from '../src/protocol/mode.js';
import { createClientCodec, createServerCodec, type PreparedClientKey, prepareClientKey } from '../src/protocol/session.js';
import { NONCE_SIZE } from '../src/protocol/sizes.js';
import { WsServer } from '../src/server/wsserver.js';
import { startEcho } from './helpers/replay.js';
import { type Closable, closeAll, LOOPBACK, PASSWORD, sleep, waitFor } from './helpers/net.js';

const started: Closable[] = [];
afterEach(() => closeAll(started));

const DEST = { type: 'domain', host: 'example.com', port: 443 } as const;
const NONCE = Buffer.from('0102030405060708090a0b0c', 'hex');
const T0 = 1_700_000_000_000;
const fixed = (b: Buffer) => (size: number) => {
  if (size !== b.length) throw new Error(`random(${size})`);
  return Buffer.from(b);
};
const codeOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
};

describe('prepareClientKey + createClientCodec({prepared})', () => {
  it.each(['tcp', 'udp'] as const)('%s: hello and data bytes equal those of a codec keyed at once (default and custom info)', (network) => {
    for (const clientHKDFInfo of [undefined, Buffer.from('c-info')]) {
      const o = { password: PASSWORD, clientHKDFInfo, network, destination: DEST, now: () => T0 };
      const prepared = prepareClientKey({ ...o, random: fixed(NONCE) })!;
      const a = createClientCodec({ ...o, prepared });
      const b = createClientCodec({ ...o, random: fixed(NONCE) });
      const hello = a.hello();
      expect(hello.toString('hex')).toBe(b.hello().toString('hex'));
      expect(hello.subarray(0, NONCE_SIZE)).toEqual(NONCE);
      for (const n of [0, 1, 2014, 5000]) {
        if (network === 'udp' && n === 0) continue;
        const d = Buffer.alloc(n, n & 0xff);
        expect(a.seal(d).toString('hex')).toBe(b.seal(d).toString('hex'));
      }
    }
  });

  it('the header time is read when the codec is made: a key prepared long before still opens a fresh tunnel', () => {
    let now = T0;
    const o = { password: PASSWORD, network: 'tcp' as const, destination: DEST };
    // preparing reads no clock
    const prepared = prepareClientKey({ ...o, now: () => { throw new Error('clock read while preparing'); } })!;
    now += 10 * 60_000; // ten minutes later: a time taken when preparing would be refused as stale
    const client = createClientCodec({ ...o, now: () => now, prepared });
    const server = createServerCodec({ password: PASSWORD, now: () => now, maxAheadSeconds: 60 });
    const hello = client.hello();
    const header = server.push(hello, () => undefined);
    expect(header).not.toBeNull();
    expect(header!.destination).toEqual(DEST);
    expect(server.clientNonce).toEqual(hello.subarray(0, NONCE_SIZE));
  });

  it('two prepared keys never share a nonce', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const c = createClientCodec({ password: PASSWORD, network: 'tcp', destination: DEST, prepared: prepareClientKey({ password: PASSWORD })! });
      seen.add(c.hello().subarray(0, NONCE_SIZE).toString('hex'));
    }
    expect(seen.size).toBe(200);
  });

  it('used twice, or with other options (password, info, backend): INTERNAL', () => {
    const o = { password: PASSWORD, network: 'tcp' as const, destination: DEST };
    const p = prepareClientKey({ password: PASSWORD })!;
    createClientCodec({ ...o, prepared: p });
    expect(codeOf(() => createClientCodec({ ...o, prepared: p }))).toBe(ErrorCodes.INTERNAL);
    const fresh = () => prepareClientKey({ password: PASSWORD, backend: nodeCryptoBackend })!;
    expect(codeOf(() => createClientCodec({ ...o, password: 'other', backend: nodeCryptoBackend, prepared: fresh() }))).toBe(ErrorCodes.INTERNAL);
    expect(codeOf(() => createClientCodec({ ...o, clientHKDFInfo: Buffer.from('c-info'), backend: nodeCryptoBackend, prepared: fresh() }))).toBe(ErrorCodes.INTERNAL);
    const otherBackend = { name: 'other', createEngine: nodeCryptoBackend.createEngine };
    expect(codeOf(() => createClientCodec({ ...o, backend: otherBackend, prepared: fresh() }))).toBe(ErrorCodes.INTERNAL);
    expect(codeOf(() => createClientCodec({ ...o, backend: nodeCryptoBackend, prepared: fresh() }))).toBeUndefined();
  });

  it('withoutBrookProtocol has no key: null', () => {
    expect(prepareClientKey({ password: PASSWORD, withoutBrookProtocol: true })).toBeNull();
  });
});

describe('TunnelPool with prepare', () => {
  async function server(o: { clientHKDFInfo?: Buffer; serverHKDFInfo?: Buffer } = {}) {
    const s = new WsServer({ listen: `${LOOPBACK}:0`, password: PASSWORD, log: () => undefined, ...o });
    const addr = await s.listen();
    started.push({ close: () => s.close() });
    const endpoint: ServerEndpoint = { secure: false, hostPort: `${LOOPBACK}:${addr.port}`, hostname: LOOPBACK, port: addr.port, path: '/ws' };
    return endpoint;
  }

  it('one key per idle connection, made after it joins, handed out with it; a real server (custom infos) takes the tunnel', async () => {
    const infos = { clientHKDFInfo: Buffer.from('c-info'), serverHKDFInfo: Buffer.from('s-info') };
    const endpoint = await server(infos);
    const echo = await startEcho();
    started.push(echo);
    const made: PreparedClientKey[] = [];
    const session = { password: PASSWORD, ...infos };
    const pool = new TunnelPool({
      size: 2,
      connect: (signal) => connectUpgraded({ endpoint, timeoutMs: 5000, signal }),
      prepare: () => {
        const k = prepareClientKey(session)!;
        made.push(k);
        return k;
      },
    });
    started.push({ close: async () => pool.close() });
    pool.start();
    await waitFor(() => pool.size === 2 && made.length === 2, 5000, 'a warm, keyed pool');
    const c = pool.take()!;
    expect(c.prepared).toBeDefined();
    expect(made).toContain(c.prepared);
    const t = startTunnel(c, { ...session, mode: BROOK_MODE, network: 'tcp', destination: { type: 'ipv4', host: LOOPBACK, port: echo.port } });
    // the key went to this tunnel and cannot go to another
    expect(codeOf(() => createClientCodec({ ...session, network: 'tcp', destination: DEST, prepared: c.prepared }))).toBe(ErrorCodes.INTERNAL);
    const got: Buffer[] = [];
    t.socket.on('data', (d: Buffer) => t.codec.push(d, (p) => got.push(Buffer.from(p))));
    t.socket.resume();
    t.socket.write(t.codec.seal(Buffer.from('hello prekeyed')));
    await waitFor(() => Buffer.concat(got).toString() === 'hello prekeyed', 5000, 'the echo');
    c.settled();
    t.socket.destroy();
    // the refill gets its own key
    await waitFor(() => pool.size === 2 && made.length === 3, 5000, 'the refill, keyed');
    expect(new Set(made).size).toBe(3);
  });

  it('taken in the tick it joined: no key yet, made at take; a throwing prepare leaves the key to take', async () => {
    const endpoint = await server();
    let calls = 0;
    const joined: (() => void)[] = [];
    const pool = new TunnelPool({
      size: 1,
      connect: (signal) =>
        connectUpgraded({ endpoint, timeoutMs: 5000, signal }).then((u) => {
          // run take() once the pool has parked it, before the next turn of the loop (nextTick runs after the microtasks)
          process.nextTick(() => joined.forEach((f) => f()));
          return u;
        }),
      prepare: () => {
        calls++;
        throw new Error('no key');
      },
    });
    started.push({ close: async () => pool.close() });
    let early: ReturnType<TunnelPool['take']> = null;
    let callsAtTake = -1;
    joined.push(() => {
      if (early) return;
      early = pool.take();
      callsAtTake = calls;
    });
    pool.start();
    await waitFor(() => early !== null, 5000, 'an early take');
    expect(early!.prepared).toBeUndefined();
    expect(callsAtTake).toBe(0);
    early!.socket.destroy();
    await waitFor(() => pool.size === 1, 5000, 'the refill');
    await sleep(20);
    expect(calls).toBeGreaterThanOrEqual(1);
    const late = pool.take()!;
    expect(late.prepared).toBeUndefined();
    late.socket.destroy();
  });
});
