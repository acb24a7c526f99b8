/**
 * The decoders `make fuzz` drives (bench/fuzz.ts), one Target each. A target
 * makes a valid encoding with the project's own encoders, and feeds an input
 * (that encoding, a mutation of it, or random bytes) to its decoder split at
 * random points, the way the network would deliver it. Only a BrookError may
 * come out; an untouched valid encoding must decode to what was encoded.
 */
import { BrookError } from '../src/errors.js';
import { type Address, decodeAddress, encodeAddress } from '../src/protocol/address.js';
import { type AeadBackend, BrookCipher } from '../src/protocol/cipher.js';
import { FragmentDecoder, FragmentEncoder } from '../src/protocol/fragment.js';
import { buildFirstPayload, type Network, parseFirstPayload } from '../src/protocol/header.js';
import { createClientCodec, createServerCodec } from '../src/protocol/session.js';
import { MAX_TCP_PAYLOAD, MAX_UDP_PAYLOAD, MAX_WOB_UDP_PAYLOAD } from '../src/protocol/sizes.js';
import { buildUpgradeResponse, checkUpgradeRequest, type HeaderBag, parseUpgradeResponse } from '../src/protocol/upgrade.js';
import { buildWobHeader, encodeWobDatagram, WobDatagramDecoder, WobHeaderDecoder, wobPasswordHash } from '../src/protocol/wob.js';
import { parseGreeting, parseRequest, parseUdpHeader, parseUserPassAuth } from '../src/socks5/codec.js';
import { parseAuthority, parseProxyRequest, ProxyRequestReader, splitAbsoluteUri } from '../src/httpproxy/codec.js';
import { type Rng, split } from './hostile.js';

export const FUZZ_PASSWORD = 'fuzz-password';
const KEY = Buffer.alloc(32, 7);
const NONCE = Buffer.alloc(12, 3);
/** Largest stream a valid encoding carries (a few fragments). */
const MAX_STREAM_DATA = 6000;
const MAX_DATAGRAM = 3000;

export interface Target {
  name: string;
  /** A valid encoding and a check of what decoding it must give (throws on a mismatch). */
  valid(rng: Rng): { input: Buffer; check: (out: Decoded) => void };
  /** Decode `input` split at random points (`valid`: it is an untouched valid encoding, so use default limits). */
  decode(input: Buffer, rng: Rng, valid: boolean): Decoded;
}

export interface Decoded {
  data?: Buffer;
  items?: unknown[];
}

class Mismatch extends Error {}
function expect(ok: boolean, what: string): void {
  if (!ok) throw new Mismatch(what);
}
export { Mismatch };

// ---------------------------------------------------------------- generators of valid values

function randomAddress(rng: Rng): Address {
  switch (rng.int(3)) {
    case 0:
      return { type: 'ipv4', host: [rng.int(256), rng.int(256), rng.int(256), rng.int(256)].join('.'), port: rng.int(65536) };
    case 1: {
      // through the decoder, so the host is in the decoder's (compressed) form
      const b = Buffer.concat([Buffer.from([4]), rng.chance(0.3) ? Buffer.alloc(16) : rng.bytes(16), rng.bytes(2)]);
      return decodeAddress(b).address;
    }
    default: {
      const n = 1 + rng.length(80);
      const host = Array.from({ length: n }, () => 'abcdefghijklmnopqrstuvwxyz0123456789.-'[rng.int(38)]).join('');
      return { type: 'domain', host, port: rng.int(65536) };
    }
  }
}

const sameAddress = (a: Address, b: Address) => a.type === b.type && a.host === b.host && a.port === b.port;

/** Feed chunks to an incremental decoder, collecting emitted buffers. */
function feed(rng: Rng, input: Buffer, push: (c: Buffer, emit: (b: Buffer) => void) => void): Buffer[] {
  const out: Buffer[] = [];
  for (const c of split(rng, input)) push(c, (b) => out.push(Buffer.from(b)));
  return out;
}

/** Call a "parse what has arrived so far" function with growing prefixes until it returns a value. */
function prefixes<T>(rng: Rng, input: Buffer, parse: (b: Buffer) => T | null): T | null {
  let have = 0;
  for (const c of split(rng, input)) {
    have += c.length;
    const r = parse(input.subarray(0, have));
    if (r !== null) return r;
  }
  return null;
}

// ---------------------------------------------------------------- targets

function fragmentTarget(network: Network, backend: AeadBackend, label: string): Target {
  const tcp = network === 'tcp';
  const maxPayload = tcp ? MAX_TCP_PAYLOAD : MAX_UDP_PAYLOAD;
  return {
    name: `fragment decoder ${network} [${label}]`,
    valid(rng) {
      const enc = new FragmentEncoder(new BrookCipher(KEY, NONCE, { backend }), maxPayload);
      if (tcp) {
        const data = rng.bytes(rng.length(MAX_STREAM_DATA));
        return { input: enc.encode(data), check: (o) => expect(o.data!.equals(data), 'stream payload differs') };
      }
      const grams = Array.from({ length: 1 + rng.int(3) }, () => rng.bytes(rng.length(MAX_DATAGRAM)));
      return {
        input: Buffer.concat(grams.map((g) => enc.encodeOne(g))),
        check: (o) => expect(o.items!.length === grams.length && grams.every((g, i) => g.equals(o.items![i] as Buffer)), 'datagrams differ'),
      };
    },
    decode(input, rng) {
      const dec = new FragmentDecoder(new BrookCipher(KEY, NONCE, { backend }), { maxPayload, coalesce: tcp });
      const out = feed(rng, input, (c, e) => dec.push(c, e));
      dec.end();
      return { data: Buffer.concat(out), items: out };
    },
  };
}

function serverCodecTarget(wob: boolean, backends: AeadBackend[]): Target {
  return {
    name: `server session codec ${wob ? 'withoutBrookProtocol' : 'Brook'}`,
    valid(rng) {
      const network: Network = rng.chance(0.5) ? 'tcp' : 'udp';
      const destination = randomAddress(rng);
      const c = createClientCodec({ password: FUZZ_PASSWORD, withoutBrookProtocol: wob, network, destination, backend: rng.pick(backends) });
      const items = Array.from({ length: rng.int(3) }, () => rng.bytes(1 + rng.length(network === 'tcp' ? MAX_STREAM_DATA : MAX_DATAGRAM)));
      const input = Buffer.concat([c.hello(), ...items.map((d) => c.seal(d))]);
      return {
        input,
        check: (o) => {
          const h = o.items![0] as { network: Network; destination: Address } | null;
          expect(h !== null && h.network === network && sameAddress(h.destination, destination), 'header differs');
          expect(o.data!.equals(Buffer.concat(items)), 'relayed data differs');
        },
      };
    },
    decode(input, rng) {
      const s = createServerCodec({ password: FUZZ_PASSWORD, withoutBrookProtocol: wob, backend: rng.pick(backends) });
      let header: unknown = null;
      const out = feed(rng, input, (c, e) => {
        const h = s.push(c, e);
        if (h) header = h;
      });
      s.end();
      return { data: Buffer.concat(out), items: [header] };
    },
  };
}

function clientCodecTarget(wob: boolean, backends: AeadBackend[]): Target {
  let pending: { network: Network; destination: Address; client: ReturnType<typeof createClientCodec> } | null = null;
  const make = (rng: Rng, network: Network) => {
    const destination = randomAddress(rng);
    return { network, destination, client: createClientCodec({ password: FUZZ_PASSWORD, withoutBrookProtocol: wob, network, destination, backend: rng.pick(backends) }) };
  };
  return {
    name: `client session codec ${wob ? 'withoutBrookProtocol' : 'Brook'}`,
    valid(rng) {
      const p = make(rng, rng.chance(0.5) ? 'tcp' : 'udp');
      pending = p;
      const server = createServerCodec({ password: FUZZ_PASSWORD, withoutBrookProtocol: wob, backend: rng.pick(backends) });
      server.push(p.client.hello(), () => {});
      const items = Array.from({ length: rng.int(3) }, () => rng.bytes(1 + rng.length(p.network === 'tcp' ? MAX_STREAM_DATA : MAX_DATAGRAM)));
      const input = Buffer.concat([server.accept(), ...items.map((d) => server.seal(d))]);
      return { input, check: (o) => expect(o.data!.equals(Buffer.concat(items)), 'data from the server differs') };
    },
    decode(input, rng) {
      // a valid input decodes with the client it was made for; other inputs with a fresh one
      const p = pending ?? make(rng, rng.chance(0.5) ? 'tcp' : 'udp');
      pending = null;
      const out = feed(rng, input, (c, e) => p.client.push(c, e));
      p.client.end();
      return { data: Buffer.concat(out) };
    },
  };
}

const WOB_HASH = wobPasswordHash(FUZZ_PASSWORD);

const wobHeaderTarget: Target = {
  name: 'wob header decoder',
  valid(rng) {
    const network: Network = rng.chance(0.5) ? 'tcp' : 'udp';
    const destination = randomAddress(rng);
    const rest = rng.bytes(rng.length(100));
    return {
      input: Buffer.concat([buildWobHeader(WOB_HASH, { network, destination }), rest]),
      check: (o) => {
        const r = o.items![0] as { header: { destination: Address; network: Network }; rest: Buffer } | null;
        expect(r !== null && sameAddress(r.header.destination, destination) && r.header.network === network, 'wob header differs');
      },
    };
  },
  decode(input, rng) {
    const d = new WobHeaderDecoder(WOB_HASH);
    let r: unknown = null;
    for (const c of split(rng, input)) {
      r = d.push(c);
      if (r) break;
    }
    return { items: [r] };
  },
};

const wobDatagramTarget: Target = {
  name: 'wob datagram decoder',
  valid(rng) {
    const grams = Array.from({ length: rng.int(4) }, () => rng.bytes(rng.length(MAX_DATAGRAM)));
    return {
      input: Buffer.concat(grams.map((g) => encodeWobDatagram(g))),
      check: (o) => expect(o.items!.length === grams.length && grams.every((g, i) => g.equals(o.items![i] as Buffer)), 'datagrams differ'),
    };
  },
  decode(input, rng) {
    const d = new WobDatagramDecoder(MAX_WOB_UDP_PAYLOAD);
    const out = feed(rng, input, (c, e) => d.push(c, e));
    d.end();
    return { items: out };
  },
};

const addressTarget: Target = {
  name: 'address (decodeAddress)',
  valid(rng) {
    const a = randomAddress(rng);
    return { input: encodeAddress(a), check: (o) => expect(sameAddress((o.items![0] as { address: Address }).address, a), 'address differs') };
  },
  decode(input, rng) {
    // a prefix of the input first (the truncated forms), then the whole
    const cut = rng.int(input.length + 1);
    try {
      decodeAddress(input.subarray(0, cut));
    } catch (e) {
      if (!(e instanceof BrookError)) throw e;
    }
    return { items: [decodeAddress(input, 0)] };
  },
};

const firstPayloadTarget: Target = {
  name: 'header (parseFirstPayload)',
  valid(rng) {
    const network: Network = rng.chance(0.5) ? 'tcp' : 'udp';
    const destination = randomAddress(rng);
    return {
      input: buildFirstPayload({ network, destination }),
      check: (o) => {
        const h = o.items![0] as { network: Network; destination: Address };
        expect(h.network === network && sameAddress(h.destination, destination), 'header differs');
      },
    };
  },
  decode(input, rng) {
    return { items: [parseFirstPayload(input)] };
  },
};

const KEY_B64 = 'dGhlIHNhbXBsZSBub25jZQ==';
const upgradeResponseTarget: Target = {
  name: 'upgrade response parser',
  valid(rng) {
    const rest = rng.bytes(rng.length(40));
    return {
      input: Buffer.concat([buildUpgradeResponse(KEY_B64), rest]),
      check: (o) => expect((o.items![0] as { status: number } | null)?.status === 101, 'not a 101'),
    };
  },
  decode(input, rng, valid) {
    const small = !valid && rng.chance(0.1);
    return { items: [prefixes(rng, input, (b) => parseUpgradeResponse(b, KEY_B64, small ? 64 : undefined))] };
  },
};

/** The server parses requests with Node's http parser; this target parses the head loosely into what that parser would hand over. */
const upgradeRequestTarget: Target = {
  name: 'upgrade request check',
  valid() {
    const input = Buffer.from(
      `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:9999\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${KEY_B64}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      'latin1',
    );
    return { input, check: (o) => expect((o.items![0] as { ok: boolean }).ok, 'valid request refused') };
  },
  decode(input, rng) {
    const lines = input.toString('latin1').split('\r\n');
    const method = (lines[0] ?? '').split(' ')[0] ?? '';
    const headers: HeaderBag = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      if (i <= 0) continue;
      const k = l.slice(0, i).trim().toLowerCase();
      const v = l.slice(i + 1).trim();
      const prev = headers[k];
      // Node joins most repeated headers, keeps some as arrays: try both shapes
      headers[k] = prev === undefined ? v : rng.chance(0.5) ? [...(Array.isArray(prev) ? prev : [prev]), v] : `${String(prev)}, ${v}`;
    }
    return { items: [checkUpgradeRequest(method, headers)] };
  },
};

function socksTarget(name: string, make: (rng: Rng) => Buffer, parse: (b: Buffer) => unknown): Target {
  return {
    name,
    valid(rng) {
      const input = make(rng);
      return { input, check: (o) => expect(o.items![0] !== null, 'valid message not parsed') };
    },
    decode(input, rng) {
      return { items: [prefixes(rng, input, (b) => parse(b) as object | null)] };
    },
  };
}

const socksGreeting = socksTarget(
  'SOCKS5 greeting',
  (rng) => {
    const m = rng.bytes(1 + rng.int(4));
    return Buffer.concat([Buffer.from([5, m.length]), m]);
  },
  parseGreeting,
);
const socksUserPass = socksTarget(
  'SOCKS5 username/password',
  (rng) => {
    const u = rng.bytes(1 + rng.int(20));
    const p = rng.bytes(1 + rng.int(20));
    return Buffer.concat([Buffer.from([1, u.length]), u, Buffer.from([p.length]), p]);
  },
  parseUserPassAuth,
);
const socksRequest = socksTarget(
  'SOCKS5 request',
  (rng) => Buffer.concat([Buffer.from([5, rng.pick([1, 2, 3]), 0]), encodeAddress(randomAddress(rng))]),
  parseRequest,
);
const socksUdp: Target = {
  name: 'SOCKS5 UDP header',
  valid(rng) {
    const data = rng.bytes(rng.length(1500));
    const input = Buffer.concat([Buffer.from([0, 0, 0]), encodeAddress(randomAddress(rng)), data]);
    return { input, check: (o) => expect((o.items![0] as { data: Buffer }).data.equals(data), 'UDP payload differs') };
  },
  decode(input) {
    return { items: [parseUdpHeader(input)] };
  },
};

const HTTP_HOSTS = ['127.0.0.1:8080', 'example.com', 'example.com:443', '[::1]:80', 'a.b.c:65535', 'user@host:1'];
const httpProxyTarget: Target = {
  name: 'HTTP proxy request',
  valid(rng) {
    const host = rng.pick(HTTP_HOSTS);
    const connect = rng.chance(0.5) && /:\d+$/.test(host) && !host.includes('@');
    const head = connect
      ? `CONNECT ${host} HTTP/1.1\r\nHost: ${host}\r\nProxy-Connection: keep-alive\r\n\r\n`
      : `GET http://${host}/p?q=1 HTTP/1.1\r\nHost: ${host.replace(/^.*@/, '')}\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\nAccept: */*\r\n\r\n`;
    return { input: Buffer.concat([Buffer.from(head, 'latin1'), rng.bytes(rng.length(64))]), check: (o) => expect(o.items![0] !== null, 'valid request not parsed') };
  },
  decode(input, rng, valid) {
    const small = !valid && rng.chance(0.1);
    const r = prefixes(rng, input, (b) => parseProxyRequest(b, small ? 128 : undefined));
    return { items: [r] };
  },
};

type ProxyParse = ReturnType<typeof parseProxyRequest>;
const describeParse = (r: ProxyParse) =>
  r === null ? 'incomplete' : `${r.request.kind} ${r.request.destination.host}:${r.request.destination.port} head ${r.request.head.headSize}`;

/** The reader a connection uses, fed the input in pieces, must decide as parseProxyRequest does on all of it. */
const httpReaderTarget: Target = {
  name: 'HTTP proxy request reader',
  valid: (rng) => httpProxyTarget.valid(rng),
  decode(input, rng, valid) {
    const max = !valid && rng.chance(0.1) ? 128 : undefined;
    let want: string;
    try {
      want = describeParse(parseProxyRequest(input, max));
    } catch (e) {
      if (!(e instanceof BrookError)) throw e;
      want = e.code;
    }
    const reader = new ProxyRequestReader(max);
    let r: ProxyParse = null;
    try {
      for (const c of split(rng, input)) if ((r = reader.push(c)) !== null) break;
    } catch (e) {
      if (e instanceof BrookError) expect(e.code === want, `reader threw ${e.code}, parseProxyRequest gave ${want}`);
      throw e;
    }
    expect(describeParse(r) === want, `reader gave ${describeParse(r)}, parseProxyRequest ${want}`);
    return { items: [r] };
  },
};

const httpAuthorityTarget: Target = {
  name: 'HTTP proxy authority/URI',
  valid(rng) {
    const host = rng.pick(HTTP_HOSTS.filter((h) => !h.includes('@')));
    return { input: Buffer.from(`http://${host}/x`, 'latin1'), check: (o) => expect(o.items![0] !== null, 'valid URI refused') };
  },
  decode(input) {
    const text = input.toString('latin1');
    try {
      parseAuthority(text, undefined);
    } catch (e) {
      if (!(e instanceof BrookError)) throw e;
    }
    const { authority } = splitAbsoluteUri(text);
    return { items: [parseAuthority(authority, 80)] };
  },
};

/** All targets; the fragment decoder and session codecs run on every crypto backend given. */
export function targets(backends: Array<{ label: string; backend: AeadBackend }>): Target[] {
  const all = backends.map((b) => b.backend);
  return [
    ...backends.flatMap((b) => [fragmentTarget('tcp', b.backend, b.label), fragmentTarget('udp', b.backend, b.label)]),
    serverCodecTarget(false, all),
    serverCodecTarget(true, all),
    clientCodecTarget(false, all),
    clientCodecTarget(true, all),
    wobHeaderTarget,
    wobDatagramTarget,
    addressTarget,
    firstPayloadTarget,
    upgradeRequestTarget,
    upgradeResponseTarget,
    socksGreeting,
    socksUserPass,
    socksRequest,
    socksUdp,
    httpProxyTarget,
    httpReaderTarget,
    httpAuthorityTarget,
  ];
}
