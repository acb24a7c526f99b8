/**
 * Loopback DNS servers for the dial tests: classic DNS on one port over UDP
 * and TCP, and DNS over HTTPS with a self-signed certificate made with
 * openssl. Both answer from a made-up zone the system resolver cannot know,
 * and record every query (transport, name, type) so a test can prove where an
 * answer came from and count cache hits.
 */
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import dnsPacket from 'dns-packet';

export interface ZoneEntry {
  A?: string[];
  AAAA?: string[];
  cname?: string;
  ttl?: number;
}
export type Zone = Record<string, ZoneEntry>;

export interface QueryLog {
  transport: 'udp' | 'tcp' | 'doh';
  name: string;
  type: string;
  id: number;
}

export interface DnsBehaviour {
  /** Names answered over UDP with TC set and no records (the client must ask over TCP). */
  truncateUdp?: Set<string>;
  /** Drop this many UDP queries before answering (the client must retry). */
  dropUdp?: number;
  /** Before each UDP answer, send one with a wrong id (the client must ignore it). */
  spoofWrongId?: boolean;
  /** Delay every answer by this many ms. */
  delayMs?: number;
}

/** SOA of the made-up zone: negative answers carry it (RFC 2308). */
const NEG_TTL = 60;
const NEG_MINIMUM = 10;

/** The reply to one query (a decoded packet) from the zone. */
export function answerFrom(zone: Zone, q: dnsPacket.DecodedPacket, truncate = false): Buffer {
  const question = q.questions?.[0];
  const base = { type: 'response' as const, id: q.id ?? 0, flags: dnsPacket.RECURSION_AVAILABLE, questions: q.questions ?? [] };
  if (!question) return dnsPacket.encode({ ...base, flags: 1 });
  const name = question.name.toLowerCase();
  if (truncate) return dnsPacket.encode({ ...base, flags: base.flags | dnsPacket.TRUNCATED_RESPONSE });
  const answers: dnsPacket.Answer[] = [];
  let owner = name;
  let entry = zone[owner];
  if (entry?.cname) {
    answers.push({ type: 'CNAME', name: owner, ttl: entry.ttl ?? 300, data: entry.cname });
    owner = entry.cname;
    entry = zone[owner];
  }
  if (!zone[name]) {
    // NXDOMAIN (rcode 3) with the zone's SOA
    return dnsPacket.encode({
      ...base,
      flags: base.flags | 3,
      authorities: [{ type: 'SOA', name: 'test', ttl: NEG_TTL, data: { mname: 'ns.test', rname: 'h.test', serial: 1, refresh: 60, retry: 60, expire: 60, minimum: NEG_MINIMUM } }],
    });
  }
  const kind = question.type as 'A' | 'AAAA';
  for (const ip of entry?.[kind] ?? []) answers.push({ type: kind, name: owner, ttl: entry?.ttl ?? 300, data: ip });
  return dnsPacket.encode({ ...base, answers });
}

export interface DnsServer {
  port: number;
  queries: QueryLog[];
  close(): Promise<void>;
}

/** UDP and TCP on the same port of 127.0.0.1. */
export async function startDnsServer(zone: Zone, b: DnsBehaviour = {}): Promise<DnsServer> {
  const queries: QueryLog[] = [];
  let dropLeft = b.dropUdp ?? 0;
  const later = (f: () => void) => (b.delayMs ? setTimeout(f, b.delayMs) : f());
  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket('udp4');
    await new Promise<void>((r, j) => {
      udp.once('error', j);
      udp.bind(0, '127.0.0.1', () => r());
    });
    const port = udp.address().port;
    const sockets = new Set<net.Socket>();
    const tcp = net.createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
      let buf = Buffer.alloc(0);
      s.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
          buf = buf.subarray(2 + msg.length);
          const q = dnsPacket.decode(msg);
          queries.push({ transport: 'tcp', name: q.questions?.[0]?.name ?? '', type: q.questions?.[0]?.type ?? '', id: q.id ?? 0 });
          const out = answerFrom(zone, q);
          const framed = Buffer.alloc(2 + out.length);
          framed.writeUInt16BE(out.length, 0);
          out.copy(framed, 2);
          later(() => s.write(framed));
        }
      });
    });
    const ok = await new Promise<boolean>((r) => {
      tcp.once('error', () => r(false));
      tcp.listen(port, '127.0.0.1', () => r(true));
    });
    if (!ok) {
      udp.close();
      if (attempt > 5) throw new Error('no port free for UDP and TCP together');
      continue;
    }
    udp.on('message', (msg, rinfo) => {
      const q = dnsPacket.decode(msg);
      const name = q.questions?.[0]?.name ?? '';
      queries.push({ transport: 'udp', name, type: q.questions?.[0]?.type ?? '', id: q.id ?? 0 });
      if (dropLeft > 0) {
        dropLeft--;
        return;
      }
      const out = answerFrom(zone, q, b.truncateUdp?.has(name.toLowerCase()) ?? false);
      later(() => {
        if (b.spoofWrongId) {
          const bad = Buffer.from(out);
          bad.writeUInt16BE((out.readUInt16BE(0) + 1) & 0xffff, 0);
          udp.send(bad, rinfo.port, rinfo.address);
        }
        udp.send(out, rinfo.port, rinfo.address);
      });
    });
    return {
      port,
      queries,
      close: async () => {
        for (const s of sockets) s.destroy();
        await new Promise<void>((r) => tcp.close(() => r()));
        await new Promise<void>((r) => udp.close(() => r()));
      },
    };
  }
}

export interface TestCert {
  cert: string;
  key: string;
}

/** A self-signed certificate for `name` (SAN DNS:name), made with openssl. */
export async function makeCert(name: string): Promise<TestCert> {
  const dir = mkdtempSync(join(tmpdir(), 'brook-dial-cert-'));
  try {
    await promisify(execFile)('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2',
      '-subj', `/CN=${name}`, '-addext', `subjectAltName=DNS:${name}`,
      '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'),
    ]);
    return { cert: readFileSync(join(dir, 'c.pem'), 'utf8'), key: readFileSync(join(dir, 'k.pem'), 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export interface DohServer {
  port: number;
  queries: QueryLog[];
  /** Host header and TLS SNI of each request, and its method. */
  requests: { host: string; sni: string; method: string; path: string }[];
  close(): Promise<void>;
}

/** DoH (RFC 8484) on https://127.0.0.1:port/dns-query, POST and GET. */
export async function startDohServer(zone: Zone, cert: TestCert): Promise<DohServer> {
  const queries: QueryLog[] = [];
  const requests: DohServer['requests'] = [];
  const server: HttpsServer = createHttpsServer({ cert: cert.cert, key: cert.key }, (req, res) => {
    const u = new URL(req.url ?? '/', 'https://x');
    const sni = (req.socket as unknown as { servername?: string }).servername ?? '';
    requests.push({ host: req.headers.host ?? '', sni, method: req.method ?? '', path: u.pathname + u.search });
    const respond = (msg: Buffer) => {
      const q = dnsPacket.decode(msg);
      queries.push({ transport: 'doh', name: q.questions?.[0]?.name ?? '', type: q.questions?.[0]?.type ?? '', id: q.id ?? 0 });
      const out = answerFrom(zone, q);
      res.writeHead(200, { 'content-type': 'application/dns-message', 'content-length': out.length });
      res.end(out);
    };
    if (u.pathname !== '/dns-query') {
      res.writeHead(404).end();
      return;
    }
    if (req.method === 'GET') {
      respond(Buffer.from(u.searchParams.get('dns') ?? '', 'base64url'));
      return;
    }
    const chunks: Buffer[] = [];
    req.on('data', (d: Buffer) => chunks.push(d));
    req.on('end', () => respond(Buffer.concat(chunks)));
  });
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    queries,
    requests,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
