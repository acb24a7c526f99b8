/**
 * Test helpers for UDP through SOCKS5 (RFC 1928 section 7), written
 * independently of src/socks5/codec.ts so the tests do not check our code
 * against itself:
 *   - UDP responders (echo, tagged echo, DNS-shaped) on loopback;
 *   - a minimal SOCKS5 UDP ASSOCIATE client (control TCP connection + UDP socket);
 *   - a windowed exchange that checks every datagram comes back intact;
 *   - DNS query/response bytes built by hand.
 *
 * SOCKS5 UDP datagram: RSV(2)=0 FRAG(1) ATYP(1) DST.ADDR DST.PORT(2) DATA
 */
import dgram from 'node:dgram';
import net from 'node:net';

export interface UdpResponder {
  host: string;
  port: number;
  /** Datagrams received so far. */
  received: number;
  close(): Promise<void>;
}

/** Bind a UDP socket on host:port (0 = ephemeral) answering each datagram with reply(data) (null = no answer). */
export function startUdpResponder(host: string, reply: (d: Buffer) => Buffer | null, port = 0): Promise<UdpResponder> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket({ type: net.isIPv6(host) ? 'udp6' : 'udp4' });
    const r: UdpResponder = {
      host,
      port: 0,
      received: 0,
      close: () => new Promise<void>((res) => s.close(() => res())),
    };
    s.once('error', reject);
    s.on('message', (msg, rinfo) => {
      r.received++;
      const out = reply(msg);
      if (out) s.send(out, rinfo.port, rinfo.address);
    });
    s.bind(port, host, () => {
      s.removeListener('error', reject);
      s.on('error', () => {});
      r.port = s.address().port;
      resolve(r);
    });
  });
}

export const startUdpEcho = (host: string, port = 0) => startUdpResponder(host, (d) => d, port);

// ---- SOCKS5 UDP header (hand-built) -----------------------------------------

/** The next datagram on `s`, or null after `ms`. */
export function nextDatagram(s: dgram.Socket, ms: number): Promise<Buffer | null> {
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      s.removeListener('message', on);
      resolve(null);
    }, ms);
    const on = (m: Buffer): void => {
      clearTimeout(t);
      resolve(m);
    };
    s.once('message', on);
  });
}

export interface Dst {
  host: string;
  port: number;
}

export function socksUdpHeader(dst: Dst, frag = 0): Buffer {
  const port = Buffer.alloc(2);
  port.writeUInt16BE(dst.port);
  let addr: Buffer;
  if (net.isIPv4(dst.host)) {
    addr = Buffer.from([0x01, ...dst.host.split('.').map(Number)]);
  } else if (net.isIPv6(dst.host)) {
    addr = Buffer.concat([Buffer.from([0x04]), ipv6Bytes(dst.host)]);
  } else {
    const name = Buffer.from(dst.host, 'utf8');
    addr = Buffer.concat([Buffer.from([0x03, name.length]), name]);
  }
  return Buffer.concat([Buffer.from([0, 0, frag]), addr, port]);
}

function ipv6Bytes(ip: string): Buffer {
  const [head, tail] = ip.includes('::') ? ip.split('::') : [ip, ''];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2));
  return out;
}

function ipv6String(b: Buffer): string {
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(b.readUInt16BE(i).toString(16));
  return g.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}

export interface SocksUdpReply {
  atyp: number;
  src: Dst;
  data: Buffer;
}

export function parseSocksUdp(msg: Buffer): SocksUdpReply {
  if (msg.length < 4 || msg[0] !== 0 || msg[1] !== 0 || msg[2] !== 0) throw new Error('bad SOCKS5 UDP header');
  const atyp = msg[3];
  let off = 4;
  let host: string;
  if (atyp === 0x01) {
    host = [...msg.subarray(4, 8)].join('.');
    off = 8;
  } else if (atyp === 0x04) {
    host = ipv6String(msg.subarray(4, 20));
    off = 20;
  } else if (atyp === 0x03) {
    const n = msg[4];
    host = msg.subarray(5, 5 + n).toString('utf8');
    off = 5 + n;
  } else {
    throw new Error(`bad ATYP ${atyp}`);
  }
  const port = msg.readUInt16BE(off);
  return { atyp, src: { host, port }, data: msg.subarray(off + 2) };
}

// ---- SOCKS5 UDP ASSOCIATE client --------------------------------------------

export class Socks5UdpClient {
  private handlers = new Set<(r: SocksUdpReply) => void>();
  /** Replies that did not parse. */
  malformed = 0;

  private constructor(
    readonly control: net.Socket,
    readonly sock: dgram.Socket,
    readonly relay: Dst,
  ) {
    sock.on('message', (msg) => {
      let r: SocksUdpReply;
      try {
        r = parseSocksUdp(msg);
      } catch {
        this.malformed++;
        return;
      }
      for (const h of this.handlers) h(r);
    });
  }

  /** Greeting (no auth) + UDP ASSOCIATE announcing our UDP socket's address; bounded by timeoutMs. */
  static async associate(socks: Dst, timeoutMs = 5000): Promise<Socks5UdpClient> {
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', () => r()));
    const control = net.connect(socks.port, socks.host);
    control.on('error', () => {});
    try {
      let buf = Buffer.alloc(0);
      const need = (n: number) =>
        new Promise<Buffer>((resolve, reject) => {
          const timer = setTimeout(() => done(new Error(`SOCKS5 handshake: timeout waiting for ${n} bytes`)), timeoutMs);
          const check = () => {
            if (buf.length < n) return;
            const out = buf.subarray(0, n);
            buf = buf.subarray(n);
            done(null, out);
          };
          const onData = (d: Buffer) => {
            buf = Buffer.concat([buf, d]);
            check();
          };
          const onClose = () => done(new Error('SOCKS5 handshake: control connection closed'));
          const done = (err: Error | null, out?: Buffer) => {
            clearTimeout(timer);
            control.removeListener('data', onData);
            control.removeListener('close', onClose);
            if (err) reject(err);
            else resolve(out!);
          };
          control.on('data', onData);
          control.on('close', onClose);
          check();
        });
      control.write(Buffer.from([5, 1, 0]));
      const m = await need(2);
      if (m[0] !== 5 || m[1] !== 0) throw new Error(`method reply ${m.toString('hex')}`);
      const port = Buffer.alloc(2);
      port.writeUInt16BE(sock.address().port);
      control.write(Buffer.concat([Buffer.from([5, 3, 0, 1, 127, 0, 0, 1]), port]));
      const head = await need(4);
      if (head[1] !== 0) throw new Error(`UDP ASSOCIATE reply code ${head[1]}`);
      const rest = await need(head[3] === 4 ? 18 : 6);
      const relay: Dst =
        head[3] === 4
          ? { host: ipv6String(rest.subarray(0, 16)), port: rest.readUInt16BE(16) }
          : { host: [...rest.subarray(0, 4)].join('.'), port: rest.readUInt16BE(4) };
      return new Socks5UdpClient(control, sock, relay);
    } catch (e) {
      control.destroy();
      sock.close();
      throw e;
    }
  }

  send(dst: Dst, data: Buffer, frag = 0): void {
    this.sendRaw(Buffer.concat([socksUdpHeader(dst, frag), data]));
  }

  sendRaw(msg: Buffer): void {
    this.sock.send(msg, this.relay.port, this.relay.host);
  }

  onReply(h: (r: SocksUdpReply) => void): () => void {
    this.handlers.add(h);
    return () => this.handlers.delete(h);
  }

  /** First reply matching `pred` within timeoutMs (rejects on timeout). */
  next(pred: (r: SocksUdpReply) => boolean = () => true, timeoutMs = 3000): Promise<SocksUdpReply> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`no matching reply within ${timeoutMs} ms`));
      }, timeoutMs);
      const off = this.onReply((r) => {
        if (!pred(r)) return;
        clearTimeout(timer);
        off();
        resolve(r);
      });
    });
  }

  /** Collect replies for `ms` milliseconds, or until `count` have come. */
  collect(ms: number, count = Infinity): Promise<SocksUdpReply[]> {
    return new Promise((resolve) => {
      const got: SocksUdpReply[] = [];
      const done = () => {
        clearTimeout(timer);
        off();
        resolve(got);
      };
      const timer = setTimeout(done, ms);
      const off = this.onReply((r) => {
        got.push(r);
        if (got.length >= count) done();
      });
    });
  }

  async close(): Promise<void> {
    this.handlers.clear();
    this.control.destroy();
    await new Promise<void>((r) => this.sock.close(() => r()));
  }
}

// ---- windowed exchange -------------------------------------------------------

export interface ExchangeResult {
  sent: number;
  intact: number;
  /** Replies whose content did not match what was sent with that sequence number. */
  corrupted: number;
  /** Replies from other sources (other flows of the same client), ignored. */
  otherSource: number;
}

/**
 * Send `payloads` (each must start with a unique u32 sequence number) to `dst`,
 * at most `window` outstanding, and wait for each to come back: the reply must
 * equal expect(payload) (default: the payload itself; its sequence number at
 * offset seqAt, default 0) and come from `dst`.
 * No retransmission: a lost datagram makes the result short. Bounded by timeoutMs.
 */
export function exchange(
  c: Socks5UdpClient,
  dst: Dst,
  payloads: Buffer[],
  o: { window: number; timeoutMs: number; expect?: (p: Buffer) => Buffer; seqAt?: number },
): Promise<ExchangeResult> {
  const expect = o.expect ?? ((p: Buffer) => p);
  const seqAt = o.seqAt ?? 0;
  const res: ExchangeResult = { sent: 0, intact: 0, corrupted: 0, otherSource: 0 };
  const pending = new Map<number, Buffer>();
  return new Promise((resolve) => {
    let next = 0;
    const finish = () => {
      clearTimeout(timer);
      off();
      resolve(res);
    };
    const timer = setTimeout(finish, o.timeoutMs);
    const pump = () => {
      while (next < payloads.length && pending.size < o.window) {
        const p = payloads[next++];
        pending.set(p.readUInt32BE(0), p);
        res.sent++;
        c.send(dst, p);
      }
      if (pending.size === 0 && next >= payloads.length) finish();
    };
    const off = c.onReply((r) => {
      if (r.src.port !== dst.port || r.src.host !== dst.host) {
        res.otherSource++;
        return;
      }
      const seq = r.data.length >= seqAt + 4 ? r.data.readUInt32BE(seqAt) : -1;
      const p = pending.get(seq);
      if (!p) {
        res.corrupted++;
        return;
      }
      pending.delete(seq);
      if (r.data.equals(expect(p))) res.intact++;
      else res.corrupted++;
      pump();
    });
    pump();
  });
}

/** Payload i: u32 i then deterministic bytes, `size` bytes in all (size >= 4). */
export function seqPayload(i: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  b.writeUInt32BE(i, 0);
  for (let k = 4; k < size; k++) b[k] = (i * 31 + k * 7) & 0xff;
  return b;
}

// ---- DNS-shaped messages (RFC 1035 section 4) ----------------------------------

export function dnsQuery(id: number, name: string): Buffer {
  const h = Buffer.alloc(12);
  h.writeUInt16BE(id, 0);
  h.writeUInt16BE(0x0100, 2); // RD
  h.writeUInt16BE(1, 4); // QDCOUNT
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l, 'ascii')]));
  return Buffer.concat([h, ...labels, Buffer.from([0, 0, 1, 0, 1])]); // root, QTYPE A, QCLASS IN
}

/** Answer an A query with `ip` (IPv4) and TTL 60; null for anything that is not a one-question query. */
export function dnsAnswer(query: Buffer, ip: string): Buffer | null {
  if (query.length < 17 || query.readUInt16BE(4) !== 1 || (query[2] & 0x80) !== 0) return null;
  let off = 12;
  while (off < query.length && query[off] !== 0) off += query[off] + 1;
  const qEnd = off + 5;
  if (qEnd > query.length) return null;
  const h = Buffer.from(query.subarray(0, 12));
  h.writeUInt16BE(0x8180, 2); // QR RD RA, NOERROR
  h.writeUInt16BE(1, 6); // ANCOUNT
  const rr = Buffer.alloc(16);
  rr.writeUInt16BE(0xc00c, 0); // name: pointer to the question
  rr.writeUInt16BE(1, 2);
  rr.writeUInt16BE(1, 4);
  rr.writeUInt32BE(60, 6);
  rr.writeUInt16BE(4, 10);
  ip.split('.').forEach((o, i) => (rr[12 + i] = Number(o)));
  return Buffer.concat([h, query.subarray(12, qEnd), rr]);
}

export function parseDnsAnswer(msg: Buffer): { id: number; rcode: number; a: string[] } {
  const id = msg.readUInt16BE(0);
  const rcode = msg.readUInt16BE(2) & 0xf;
  const an = msg.readUInt16BE(6);
  let off = 12;
  while (msg[off] !== 0) off += msg[off] + 1;
  off += 5;
  const a: string[] = [];
  for (let i = 0; i < an; i++) {
    off += 2; // compressed name
    const type = msg.readUInt16BE(off);
    const len = msg.readUInt16BE(off + 8);
    if (type === 1 && len === 4) a.push([...msg.subarray(off + 10, off + 14)].join('.'));
    off += 10 + len;
  }
  return { id, rcode, a };
}
