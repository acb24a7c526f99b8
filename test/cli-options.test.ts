/**
 * The typed CLI layer (src/cli/) in process: each command's flags, parsed by the real
 * program, land on the library's options by the family's one mapping function
 * (serverOptions, wssServerOptions, clientOptions, linkOptions), every flag given a value
 * other than its default; the defaults map as the library's own; a flag table whose key is
 * not commander's attribute name is refused; the replay cache across processes (the
 * primary's answering side, a worker's asking side) fails closed; the layers import downwards
 * only (nothing under src/server or src/client imports the CLI or src/cluster.ts).
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command, OptionValues } from 'commander';
import { afterAll, describe, expect, it } from 'vitest';
import { clientOptions, type ClientFlags } from '../src/cli/clients.js';
import { addFlags, flag } from '../src/cli/flags.js';
import { type GlobalFlags, parseGlobals } from '../src/cli/globals.js';
import { linkOptions, type LinkFlags } from '../src/cli/link.js';
import { buildProgram } from '../src/cli/main.js';
import type { Runtime } from '../src/cli/runtime.js';
import { serverOptions, type ServerFlags, wssServerOptions, type WssServerFlags } from '../src/cli/servers.js';
import { defaultDialer } from '../src/dial/index.js';
import { BrookError, ErrorCodes } from '../src/errors.js';
import { noMetrics } from '../src/ops/metrics.js';
import { answerReplayQuestions, remoteReplayGuard, ReplayCache } from '../src/server/replay.js';
import { tempDir } from './helpers/cli.js';

const tmp = tempDir('brook-cli-options-');
afterAll(() => tmp.remove());

/** The flags (with the globals) a command line gives its command, without running it. */
async function flagsOf<F extends OptionValues>(argv: string[]): Promise<F & GlobalFlags> {
  const program = buildProgram().exitOverride();
  let flags: (F & GlobalFlags) | null = null;
  for (const c of program.commands) c.action((_o: unknown, cmd: Command) => void (flags = cmd.optsWithGlobals<F & GlobalFlags>()));
  await program.parseAsync(['node', 'brook-ts', ...argv]);
  if (!flags) throw new Error(`no command ran for ${argv.join(' ')}`);
  return flags;
}

const dialer = defaultDialer();
const log = () => undefined;
const bytes = (s: string) => new TextEncoder().encode(s);
const rtOf = (f: GlobalFlags): Runtime => ({ log, metrics: noMetrics, dialer, policy: null, globals: parseGlobals(f) });

describe('servers: flags -> WsServerOptions', () => {
  it('every flag of wsserver reaches its option', async () => {
    const f = await flagsOf<ServerFlags & { listen: string }>([
      '--clientHKDFInfo', 'ci', '--serverHKDFInfo', 'si',
      'wsserver', '-l', '127.0.0.1:0', '-p', 'pw', '--path', '/p', '--tcpTimeout', '7', '--udpTimeout', '8', '--keepalive', '9',
      '--xForwardedFor', '--trustedProxies', '10.0.0.0/8', '--proxyProtocol', '--fallback', tmp.dir, '--host', 'a.test',
      '--probeTimeout', '11', '--probeBytes', '12', '--headTimeout', '13', '--maxPending', '14', '--maxTimeAhead', '15',
      '--replayCacheSize', '16', '--crypto', 'node', '--shutdownGrace', '17', '--workers', '1',
    ]);
    const rt = rtOf(f);
    expect(f.listen).toBe('127.0.0.1:0');
    expect(serverOptions(f, rt)).toEqual({
      password: 'pw', path: '/p', tcpTimeout: 7, udpTimeout: 8, keepalive: 9, withoutBrookProtocol: false,
      xForwardedFor: true, trustedProxies: '10.0.0.0/8', proxyProtocol: true, fallback: tmp.dir, host: 'a.test',
      probeTimeoutMs: 11_000, probeByteBudget: 12, headTimeoutMs: 13_000, maxPending: 14, maxTimeAheadSeconds: 15,
      replayCacheSize: 16, replay: undefined, clientHKDFInfo: bytes('ci'), serverHKDFInfo: bytes('si'),
      dialer, policy: null, metrics: noMetrics, log,
    });
    expect(f.crypto).toBe('node');
    expect(f.shutdownGrace).toBe(17);
  });

  it("the defaults are the library's (--maxPending auto: the library picks)", async () => {
    const f = await flagsOf<ServerFlags>(['wsserver', '-l', ':1', '-p', 'pw']);
    const o = serverOptions(f, rtOf(f));
    expect(o).toMatchObject({ path: '/ws', tcpTimeout: 0, udpTimeout: 60, keepalive: 0, probeTimeoutMs: 30_000, probeByteBudget: 262_144, headTimeoutMs: 5_000, maxTimeAheadSeconds: 60, replayCacheSize: 250_000 });
    expect(o.maxPending).toBeUndefined();
    expect(f.workers).toBe(1);
  });

  it('wssserver: certificate files, or ACME with its settings', async () => {
    const ca = join(tmp.dir, 'ca.pem');
    writeFileSync(ca, 'PEM');
    const files = await flagsOf<WssServerFlags>(['wssserver', '--domainaddress', 'a.test:8443', '-p', 'pw', '--cert', 'c.pem', '--certkey', 'k.pem', '--listen', ':1']);
    expect(wssServerOptions(files, rtOf(files))).toMatchObject({ domainAddress: 'a.test:8443', listen: ':1', certificate: { certFile: 'c.pem', keyFile: 'k.pem' }, password: 'pw' });
    const acme = await flagsOf<WssServerFlags>([
      'wssserver', '--domainaddress', 'a.test:443', '-p', 'pw', '--httpListen', ':8080', '--acmeDirectory', 'staging',
      '--acmeEmail', 'me@a.test', '--acmeCA', ca, '--cacheDir', 'cache', '--acmeSkipChallengeVerification',
    ]);
    expect(wssServerOptions(acme, rtOf(acme))).toMatchObject({
      listen: undefined,
      certificate: { acme: { directory: 'staging', email: 'me@a.test', cacheDir: 'cache', caBundle: Buffer.from('PEM'), httpListen: ':8080', skipChallengeVerification: true } },
    });
    const half = await flagsOf<WssServerFlags>(['wssserver', '--domainaddress', 'a.test:443', '-p', 'pw', '--certkey', 'k.pem']);
    expect(() => wssServerOptions(half, rtOf(half))).toThrow('--cert and --certkey go together');
  });
});

describe('clients: flags -> WsClientOptions', () => {
  it('wssclient with a URL: every flag reaches its option', async () => {
    const ca = join(tmp.dir, 'ca2.pem');
    writeFileSync(ca, 'CA PEM');
    const f = await flagsOf<ClientFlags>([
      'wssclient', '-s', 'wss://a.test:443/p', '-p', 'pw', '--address', '127.0.0.1:2', '--insecure', '--ca', ca, '--noTlsResume',
      '--socks5', '127.0.0.1:0', '--socks5ServerIP', '127.0.0.2', '--socks5Username', 'u', '--socks5Password', 'v', '--http', '127.0.0.1:0',
      '--tcpTimeout', '3', '--udpTimeout', '4', '--keepalive', '5', '--pool', '6', '--poolMaxIdle', '7',
    ]);
    expect(clientOptions('wssclient', f, rtOf(f))).toEqual({
      endpoint: { secure: true, hostPort: 'a.test:443', hostname: 'a.test', port: 443, path: '/p', address: { host: '127.0.0.1', port: 2 }, insecure: true, ca: 'CA PEM' },
      password: 'pw', withoutBrookProtocol: false,
      socks5: '127.0.0.1:0', socks5ServerIP: '127.0.0.2', socks5Auth: { username: 'u', password: 'v' }, socks5UdpPort: undefined, http: '127.0.0.1:0',
      tcpTimeout: 3, udpTimeout: 4, keepalive: 5, pool: { size: 6, maxIdleMs: 7000 }, tlsResume: false,
      dialer, metrics: noMetrics, log,
    });
  });

  it("a link: flags beside it win, the link's HKDF infos over the global ones", async () => {
    const link = 'brook://wsserver?address=1.2.3.4%3A9&clientHKDFInfo=lc&password=lp&wsserver=ws%3A%2F%2Fa.test%3A80';
    const f = await flagsOf<ClientFlags>(['--clientHKDFInfo', 'gc', '--serverHKDFInfo', 'gs', 'wsclient', '--link', link, '--address', '127.0.0.1:3', '--withoutBrookProtocol']);
    const o = clientOptions('wsclient', f, rtOf(f));
    expect(o).toMatchObject({ password: 'lp', withoutBrookProtocol: true, clientHKDFInfo: Buffer.from('lc'), serverHKDFInfo: bytes('gs') });
    expect(o.endpoint).toEqual({ secure: false, hostPort: 'a.test:80', hostname: 'a.test', port: 80, path: '/ws', address: { host: '127.0.0.1', port: 3 }, insecure: false });
    const c = await flagsOf<ClientFlags>(['connect', '-l', link]);
    expect(clientOptions('connect', c, rtOf(c)).endpoint.address).toEqual({ host: '1.2.3.4', port: 9 });
  });

  it('the password and the link kind are checked once, by the library, with the same errors', async () => {
    const noPassword = await flagsOf<ClientFlags>(['wsclient', '-s', 'ws://a.test:80']);
    expect(() => clientOptions('wsclient', noPassword, rtOf(noPassword))).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG, message: '--password or --passwordFile is required' }));
    const wrongKind = await flagsOf<ClientFlags>(['wssclient', '--link', 'brook://wsserver?password=x&wsserver=ws%3A%2F%2Fa.test%3A80']);
    expect(() => clientOptions('wssclient', wrongKind, rtOf(wrongKind))).toThrow(expect.objectContaining({ code: ErrorCodes.LINK_KIND }));
  });
});

describe('link: flags -> LinkOptions', () => {
  it('every option, and nothing for the absent ones', async () => {
    const f = await flagsOf<LinkFlags>(['link', '-s', 'ws://a.test:80', '-p', 'x', '-u', 'u', '--name', 'n', '--address', '1.2.3.4:5', '--insecure', '--withoutBrookProtocol', '--clientHKDFInfo', 'c', '--serverHKDFInfo', 's']);
    expect(linkOptions(f)).toEqual({ address: '1.2.3.4:5', insecure: true, ca: undefined, withoutBrookProtocol: true, clientHKDFInfo: 'c', serverHKDFInfo: 's', name: 'n', username: 'u' });
    const bare = await flagsOf<LinkFlags>(['link', '-s', 'ws://a.test:80']);
    expect(Object.values(linkOptions(bare)).every((v) => v === undefined)).toBe(true);
  });
});

describe('flag tables', () => {
  it("a key that is not commander's attribute name is refused when the command is built", async () => {
    const { Command } = await import('commander');
    expect(() => addFlags(new Command('x'), { tcptimeout: flag('--tcpTimeout <s>') })).toThrow(/"tcptimeout" names --tcpTimeout <s> \(attribute tcpTimeout\)/);
  });
});

describe('layers', () => {
  const importsOf = (file: string) => [...readFileSync(file, 'utf8').matchAll(/^import [^;]*? from '([^']+)'/gms)].map((m) => m[1]!);
  const filesIn = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => join(dir, f));

  it('src/server and src/client import neither the CLI layer nor src/cluster.ts; src/cluster.ts imports nothing of src/server', () => {
    for (const file of [...filesIn('src/server'), ...filesIn('src/client')]) {
      for (const spec of importsOf(file)) expect(spec, `${file} imports ${spec}`).not.toMatch(/\/cli\/|\/runtime\.js$|\/cluster\.js$/);
    }
    for (const spec of importsOf('src/cluster.ts')) expect(spec, `src/cluster.ts imports ${spec}`).not.toMatch(/\/server\/|\/client\/|\/cli\//);
  });
});

describe('the replay cache across processes', () => {
  const nonce = Buffer.alloc(12, 7);

  it("the answering side: a fresh nonce once, then a replay; malformed questions get no answer", () => {
    const answer = answerReplayQuestions(new ReplayCache({ now: () => 1_000_000_000 }));
    const q = { nonce: nonce.toString('hex'), time: 1_000_000 };
    expect(answer(q)).toBe('fresh');
    expect(answer(q)).toBe('replay');
    for (const bad of [null, 'x', { nonce: 'zz'.repeat(12), time: 1 }, { nonce: nonce.toString('hex').slice(2), time: 1 }, { nonce: nonce.toString('hex'), time: 1.5 }]) {
      expect(answer(bad)).toBeUndefined();
    }
  });

  it('the asking side: the verdict carried back; anything else is stale; a failed ask refuses (TIMEOUT)', async () => {
    const answer = answerReplayQuestions(new ReplayCache({ now: () => 1_000_000_000 }));
    const guard = remoteReplayGuard(async (q) => answer(q));
    expect(await guard.check(nonce, 1_000_000)).toBe('fresh');
    expect(await guard.check(nonce, 1_000_000)).toBe('replay');
    expect(await remoteReplayGuard(async () => 'maybe').check(nonce, 1)).toBe('stale');
    const failed = remoteReplayGuard(() => Promise.reject(new BrookError(ErrorCodes.TIMEOUT, 'no channel to the primary')));
    await expect(failed.check(nonce, 1)).rejects.toMatchObject({ code: ErrorCodes.TIMEOUT, message: 'replay check: no channel to the primary' });
  });
});
