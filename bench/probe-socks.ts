/**
 * The SOCKS5 client side of bench/probe.ts (no-auth CONNECT and UDP ASSOCIATE, the greeting and
 * the request sent together), shared by its threads.
 */
import net from 'node:net';

const CONNECT_TIMEOUT_MS = 15_000;
const SOCKS_VERSION = 5;
export const CMD_CONNECT = 1;
export const CMD_UDP_ASSOCIATE = 3;
export const ATYP_IPV4 = 1;
const ATYP_IPV6 = 4;
const IPV4_SIZE = 4;
const IPV6_SIZE = 16;
const PORT_SIZE = 2;

/** Reads exactly n bytes from a socket that is in paused mode (via 'readable'). */
export function readN(s: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let have = 0;
    const onReadable = () => {
      for (;;) {
        const want = n - have;
        if (want === 0) break;
        let c: Buffer | null = s.read(Math.min(want, s.readableLength || want));
        if (c === null) c = s.read();
        if (c === null) return;
        if (c.length > want) {
          s.unshift(c.subarray(want));
          c = c.subarray(0, want);
        }
        parts.push(c);
        have += c.length;
      }
      cleanup();
      resolve(Buffer.concat(parts, n));
    };
    const onEnd = () => {
      cleanup();
      reject(new Error(`eof after ${have} of ${n} bytes`));
    };
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    const cleanup = () => {
      s.removeListener('readable', onReadable);
      s.removeListener('end', onEnd);
      s.removeListener('error', onError);
    };
    s.on('readable', onReadable);
    s.on('end', onEnd);
    s.on('error', onError);
    onReadable();
  });
}

export function parseHostPort(hp: string): { host: string; port: number } {
  const i = hp.lastIndexOf(':');
  return { host: hp.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(hp.slice(i + 1)) };
}

export function ipv4Bytes(ip: string): Buffer {
  return Buffer.from(ip.split('.').map(Number));
}

function tcpConnect(host: string, port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port, noDelay: true });
    const t = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect ${host}:${port} timed out`));
    }, CONNECT_TIMEOUT_MS);
    s.once('connect', () => {
      clearTimeout(t);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
  });
}

/** SOCKS5 no-auth handshake; returns the socket (paused) after the reply and the reply's bound address. */
export async function socksRequest(socks: string, cmd: number, host: string, port: number): Promise<{ s: net.Socket; bound: { host: string; port: number } }> {
  const p = parseHostPort(socks);
  const s = await tcpConnect(p.host, p.port);
  const portBuf = Buffer.alloc(2);
  portBuf.writeUInt16BE(port, 0);
  // greeting and request together: every contender accepts the pipelined request
  s.write(Buffer.concat([Buffer.from([SOCKS_VERSION, 1, 0]), Buffer.from([SOCKS_VERSION, cmd, 0, ATYP_IPV4]), ipv4Bytes(host), portBuf]));
  const m = await readN(s, 2);
  if (m[0] !== SOCKS_VERSION || m[1] !== 0) throw new Error(`method reply ${m.toString('hex')}`);
  const r = await readN(s, 4);
  if (r[1] !== 0) throw new Error(`request reply code ${r[1]}`);
  let bhost: string;
  if (r[3] === ATYP_IPV4) bhost = [...(await readN(s, IPV4_SIZE))].join('.');
  else if (r[3] === ATYP_IPV6) {
    const b = await readN(s, IPV6_SIZE);
    bhost = b.toString('hex').match(/.{4}/g)!.join(':');
  } else {
    const l = (await readN(s, 1))[0]!;
    bhost = (await readN(s, l)).toString();
  }
  const bport = (await readN(s, PORT_SIZE)).readUInt16BE(0);
  return { s, bound: { host: bhost, port: bport } };
}
