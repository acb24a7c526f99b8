/**
 * Independent SOCKS5 servers for the --dialWithSocks5 tests: the `socksv5` npm
 * package (CONNECT, optional username/password) and a Python stdlib server
 * with UDP ASSOCIATE (dial-socks5-udp.py).
 */
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import * as socks from 'socksv5';

export const USER = 'brook-user';
export const PASS = 'brook-pass';

export interface Proxy {
  port: number;
  seen: { src: string; dst: string }[];
  close(): Promise<void>;
}

export async function startSocksv5(auth: boolean): Promise<Proxy> {
  const seen: Proxy['seen'] = [];
  const srv = socks.createServer((info, accept) => {
    seen.push({ src: info.srcAddr, dst: `${info.dstAddr}:${info.dstPort}` });
    accept();
  });
  srv.useAuth(auth ? socks.auth.UserPassword((u, p, cb) => cb(u === USER && p === PASS)) : socks.auth.None());
  const conns = new Set<net.Socket>();
  // the package's own net.Server (its 'connection' event is the SOCKS request)
  (srv as unknown as { _srv: net.Server })._srv.on('connection', (s: net.Socket) => {
    conns.add(s);
    s.on('close', () => conns.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return {
    port: (srv.address() as net.AddressInfo).port,
    seen,
    close: async () => {
      for (const s of conns) s.destroy();
      await new Promise<void>((r) => srv.close(() => r()));
    },
  };
}


export interface PyProxy {
  port: number;
  lines: string[];
  proc: ChildProcessWithoutNullStreams;
  waitLine(prefix: string, ms?: number): Promise<string>;
  close(): Promise<void>;
}

export async function startPyProxy(args: string[] = []): Promise<PyProxy> {
  const script = fileURLToPath(new URL('./dial-socks5-udp.py', import.meta.url));
  const proc = spawn('python3', [script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let buf = '';
  proc.stdout.on('data', (d: Buffer) => {
    buf += d.toString();
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  const waitLine = async (prefix: string, ms = 10_000): Promise<string> => {
    const deadline = Date.now() + ms;
    let seen = 0;
    for (;;) {
      const hit = lines.slice(seen).find((l) => l.startsWith(prefix));
      if (hit) {
        lines.splice(lines.indexOf(hit), 1);
        return hit;
      }
      seen = 0;
      if (Date.now() > deadline) throw new Error(`python proxy: no "${prefix}" line in ${ms} ms (have ${JSON.stringify(lines)})`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const port = Number((await waitLine('PORT ')).split(' ')[1]);
  return {
    port,
    lines,
    proc,
    waitLine,
    close: async () => {
      if (proc.exitCode !== null) return;
      const exited = new Promise<void>((r) => proc.once('exit', () => r()));
      proc.stdin.end();
      const t = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}
