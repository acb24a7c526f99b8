/**
 * The built CLI's basics: --help and --example for every command, one-line
 * errors with a non-zero exit for missing or invalid flags, and SIGTERM
 * letting an open tunnel finish within --shutdownGrace before exiting 0.
 */
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { LOOPBACK, sleep, startCli, stopAllClis } from './helpers/cli.js';
import { runAll } from './helpers/cli-run.js';

const COMMANDS = ['wsserver', 'wssserver', 'wsclient', 'wssclient', 'link', 'connect'] as const;
afterEach(async () => {
  await stopAllClis();
});

describe('--help and --example', () => {
  it('exit 0 for every command; --example prints a runnable example line', async () => {
    const results = await runAll(COMMANDS.flatMap((c) => [[c, '--help'], [c, '--example']]));
    COMMANDS.forEach((c, i) => {
      const help = results[2 * i]!;
      const example = results[2 * i + 1]!;
      expect(help.code, `${c} --help: ${help.stderr}`).toBe(0);
      expect(help.stdout).toContain(`Usage: brook-ts ${c} [options]`);
      expect(example.code, `${c} --example: ${example.stderr}`).toBe(0);
      expect(example.stdout).toMatch(new RegExp(`^brook-ts ${c} .+\\n$`));
    });
    const wss = results[2 * COMMANDS.indexOf('wssserver')]!.stdout;
    for (const flag of ['--domainaddress', '--cert ', '--certkey', '--httpListen', '--acmeDirectory', '--acmeEmail', '--acmeCA', '--cacheDir']) expect(wss).toContain(flag);
    expect(wss).not.toContain('acmeSkipChallengeVerification'); // testing-only flag stays hidden
    const wssc = results[2 * COMMANDS.indexOf('wssclient')]!.stdout;
    for (const flag of ['--wssserver', '--insecure', '--ca ', '--address', '--link', '--http ']) expect(wssc).toContain(flag);
  });
});

describe('mistakes: one line on stderr, non-zero exit', () => {
  let busy: net.Server;
  let busyPort: number;

  beforeAll(async () => {
    busy = net.createServer();
    await new Promise<void>((r) => busy.listen(0, LOOPBACK, r));
    busyPort = (busy.address() as net.AddressInfo).port;
  });

  afterAll(async () => {
    await new Promise<void>((r) => busy.close(() => r()));
  });

  it('missing and invalid flags', async () => {
    const cases: { args: string[]; re: RegExp }[] = [
      { args: ['wsserver', '--listen', `${LOOPBACK}:0`], re: /--password/ },
      { args: ['wsserver', '--password', 'x'], re: /--listen/ },
      { args: ['wsserver', '--password', 'x', '--listen', '1.2.3.4'], re: /--listen.*1\.2\.3\.4.*host:port/ },
      { args: ['wsserver', '--password', 'x', '--listen', `${LOOPBACK}:0`, '--tcpTimeout', 'abc'], re: /--tcpTimeout.*abc/ },
      { args: ['wsserver', '--password', 'x', '--listen', `${LOOPBACK}:0`, '--tcptimeout', '1'], re: /unknown option '--tcptimeout'.*Did you mean --tcpTimeout/ },
      { args: ['wsserver', '--password', 'x', '--listen', `${LOOPBACK}:0`, '--path', 'ws'], re: /--path must start with "\/"/ },
      { args: ['wsserver', '--password', 'x', '--listen', `${LOOPBACK}:${busyPort}`], re: /address already in use/ },
      { args: ['wsclient', '--password', 'x', '--socks5', `${LOOPBACK}:0`], re: /--wsserver or --link is required/ },
      { args: ['wsclient', '--wsserver', 'ws://1.2.3.4:9999', '--socks5', `${LOOPBACK}:0`], re: /--password/ },
      { args: ['wsclient', '--wsserver', 'ws://1.2.3.4', '--password', 'x', '--socks5', `${LOOPBACK}:0`], re: /host:port/ },
      { args: ['wssclient', '--wssserver', 'ws://a.test:443', '--password', 'x', '--socks5', `${LOOPBACK}:0`], re: /wss:\/\// },
      { args: ['wssclient', '--wssserver', 'wss://a.test:443', '--password', 'x', '--ca', '/nonexistent/ca.pem', '--socks5', `${LOOPBACK}:0`], re: /\/nonexistent\/ca\.pem/ },
      { args: ['wsclient', '--link', 'garbage', '--socks5', `${LOOPBACK}:0`], re: /brook:\/\// },
      { args: ['connect'], re: /--link/ },
      { args: ['link', '-p', 'x'], re: /--server/ },
      { args: ['wssserver', '--password', 'x', '--domainaddress', '1.2.3.4:443'], re: /domain name/ },
      { args: ['wsservr'], re: /unknown command 'wsservr'.*Did you mean wsserver/ },
    ];
    const results = await runAll(cases.map((c) => c.args));
    results.forEach((r, i) => {
      const what = cases[i]!.args.join(' ');
      expect(r.code, what).not.toBe(0);
      expect(r.code, what).not.toBeNull(); // exited by itself, not killed by the timeout
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines, what).toHaveLength(1);
      expect(lines[0], what).toMatch(/^brook-ts: /);
      expect(lines[0], what).toMatch(cases[i]!.re);
      expect(r.stdout, what).not.toContain('"listening"');
    });
  });
});

/** SOCKS5 CONNECT (no auth) to 127.0.0.1:port on raw bytes; resolves once the reply says success. */
async function socksConnect(socksPort: number, port: number): Promise<net.Socket> {
  const s = net.connect({ host: LOOPBACK, port: socksPort });
  await new Promise<void>((res, rej) => {
    s.once('connect', res);
    s.once('error', rej);
  });
  const req = Buffer.from([0x05, 0x01, 0x00, 0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, port >> 8, port & 0xff]);
  s.write(req);
  const reply = await readN(s, 2 + 10);
  if (reply[1] !== 0x00 || reply[3] !== 0x00) throw new Error(`SOCKS5 replies ${reply.toString('hex')}`);
  return s;
}

function readN(s: net.Socket, n: number, ms = 5_000): Promise<Buffer> {
  return new Promise((res, rej) => {
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => done(new Error(`read ${n} bytes: timeout (have ${buf.length})`)), ms);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= n) done(null);
    };
    const onEnd = () => done(new Error(`read ${n} bytes: ended after ${buf.length}`));
    const done = (e: Error | null) => {
      clearTimeout(t);
      s.off('data', onData);
      s.off('end', onEnd);
      if (e) rej(e);
      else res(buf);
    };
    s.on('data', onData);
    s.on('end', onEnd);
  });
}

describe('SIGTERM on a running wsserver', () => {
  let echo: net.Server;
  let echoPort: number;
  const echoSockets = new Set<net.Socket>();

  beforeAll(async () => {
    echo = net.createServer((s) => {
      echoSockets.add(s);
      s.on('close', () => echoSockets.delete(s));
      s.on('error', () => undefined);
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, LOOPBACK, r));
    echoPort = (echo.address() as net.AddressInfo).port;
  });

  afterAll(async () => {
    for (const s of echoSockets) s.destroy();
    await new Promise<void>((r) => echo.close(() => r()));
  });

  async function pair(graceSeconds: number) {
    const server = await startCli(['wsserver', '--listen', `${LOOPBACK}:0`, '--password', 'hello', '--shutdownGrace', String(graceSeconds)]);
    const client = await startCli(['wsclient', '--wsserver', `ws://${LOOPBACK}:${server.port('listen')}`, '--password', 'hello', '--socks5', `${LOOPBACK}:0`]);
    const tunnel = await socksConnect(client.port('socks5'), echoPort);
    tunnel.on('error', () => undefined);
    tunnel.write('before');
    expect((await readN(tunnel, 6)).toString()).toBe('before');
    return { server, client, tunnel };
  }

  it('stops listening, lets the open tunnel finish, then exits 0 within the grace period', async () => {
    const GRACE_S = 8;
    const { server, tunnel } = await pair(GRACE_S);
    const t0 = Date.now();
    process.kill(server.pid, 'SIGTERM');
    await sleep(500);
    expect(server.child.exitCode).toBeNull(); // still running: a tunnel is open
    expect(server.lines.some((l) => l['msg'] === 'shutting down' && l['signal'] === 'SIGTERM')).toBe(true);
    // no new connections...
    const refused = await new Promise<boolean>((r) => {
      const s = net.connect({ host: LOOPBACK, port: server.port('listen') });
      s.once('connect', () => {
        s.destroy();
        r(false);
      });
      s.once('error', () => r(true));
    });
    expect(refused).toBe(true);
    // ...but the open tunnel still carries data both ways
    tunnel.write('during grace');
    expect((await readN(tunnel, 12)).toString()).toBe('during grace');
    tunnel.end();
    const exit = await Promise.race([server.exited, sleep(GRACE_S * 1000).then(() => null)]);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeLessThan(GRACE_S * 1000);
    tunnel.destroy();
  });

  it('closes a tunnel still open when the grace period ends, and exits 0', async () => {
    const { server, tunnel } = await pair(1);
    const closed = new Promise<void>((r) => tunnel.once('close', () => r()));
    const t0 = Date.now();
    process.kill(server.pid, 'SIGTERM');
    const exit = await Promise.race([server.exited, sleep(5_000).then(() => null)]);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    // the client side notices: the tunnel through it ends
    await Promise.race([closed, sleep(3_000).then(() => Promise.reject(new Error('tunnel not closed')))]);
  });
});
