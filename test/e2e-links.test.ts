/**
 * brook:// links through the built CLI: `link` output byte for byte as
 * upstream formats it, `connect --link`, `wsclient --link` and
 * `wssclient --link` (CA embedded, address, withoutBrookProtocol) running a
 * working client, HKDF info overrides from a link taking effect on the wire,
 * and a clear error for link kinds brook-ts does not speak.
 *
 * The HKDF servers run in-process (WsServer's clientHKDFInfo/serverHKDFInfo
 * options): upstream's server commands have no flag for them, so the CLI
 * does not add one either.
 */
import { readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import type { LogEntry } from '../src/log.js';
import { WsServer } from '../src/server/wsserver.js';
import {
  type CliProcess,
  curl,
  LOOPBACK,
  type Origin,
  runCli,
  selfSigned,
  sleep,
  startCli,
  startOrigin,
  stopAllClis,
  stopCli,
  tempDir,
} from './helpers/cli.js';

const PASSWORD = 'hello';
const DOMAIN = 'app.test';
const tmp = tempDir('brook-e2e-links-');
let origin: Origin;
const inProcess: WsServer[] = [];

beforeAll(async () => {
  origin = await startOrigin();
});

afterEach(async () => {
  await stopAllClis();
  for (const s of inProcess.splice(0)) await s.close();
});

afterAll(async () => {
  await origin?.close();
  tmp.remove();
});

async function link(args: string[]): Promise<string> {
  const r = await runCli(['link', ...args]);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return r.stdout.replace(/\n$/, '');
}

function viaSocks(client: CliProcess, path: string, maxMs = 10_000) {
  return curl(['--socks5-hostname', `${LOOPBACK}:${client.port('socks5')}`, `http://localhost:${origin.port}${path}`], maxMs);
}

async function expectWorks(client: CliProcess, tag: string): Promise<void> {
  const r = await viaSocks(client, `/hello?via=${tag}`);
  expect(r.stderr).toBe('');
  expect(r.stdout).toBe(`hello from origin /hello?via=${tag}\n`);
}

describe('brook-ts link', () => {
  it('formats ws links exactly as upstream (keys sorted, url.QueryEscape)', async () => {
    expect(await link(['-s', 'ws://127.0.0.1:9999', '-p', 'hello'])).toBe('brook://wsserver?password=hello&wsserver=ws%3A%2F%2F127.0.0.1%3A9999');
    expect(await link(['-s', 'wss://app.test:443/ws', '-p', 'p a&ss', '--name', 'my server', '--address', '127.0.0.1:443', '--insecure', '--withoutBrookProtocol'])).toBe(
      'brook://wssserver?address=127.0.0.1%3A443&insecure=true&name=my+server&password=p+a%26ss&withoutBrookProtocol=true&wssserver=wss%3A%2F%2Fapp.test%3A443%2Fws',
    );
  });

  it('names the kind of a link brook-ts does not speak (one line, non-zero exit)', async () => {
    const cases = [
      { args: ['link', '-s', '1.2.3.4:9999', '-p', 'x'], kind: 'server' },
      { args: ['connect', '--link', 'brook://server?password=x&server=1.2.3.4%3A9999'], kind: 'server' },
      { args: ['connect', '--link', 'brook://quicserver?password=x&quicserver=quic%3A%2F%2Fa.com%3A443'], kind: 'quicserver' },
      { args: ['wsclient', '--link', 'brook://socks5?socks5=socks5%3A%2F%2F1.2.3.4%3A1080'], kind: 'socks5' },
    ];
    const results = await Promise.all(cases.map((c) => runCli(c.args)));
    results.forEach((r, i) => {
      expect(r.code).toBe(1);
      const lines = r.stderr.trimEnd().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toContain(`"${cases[i]!.kind}"`);
      expect(lines[0]).toMatch(/not supported/);
    });
  });
});

describe('clients from links', () => {
  it('connect --link and wsclient --link reach a local HTTP server through a CLI wsserver', async () => {
    const server = await startCli(['wsserver', '--listen', `${LOOPBACK}:0`, '--password', PASSWORD]);
    const l = await link(['-s', `ws://${LOOPBACK}:${server.port('listen')}`, '-p', PASSWORD]);
    const [viaConnect, viaWsclient] = await Promise.all([
      startCli(['connect', '--link', l, '--socks5', `${LOOPBACK}:0`]),
      startCli(['wsclient', '--link', l, '--socks5', `${LOOPBACK}:0`]),
    ]);
    expect(viaConnect.listening).toMatchObject({ command: 'connect', server: `ws://${LOOPBACK}:${server.port('listen')}/ws` });
    await expectWorks(viaConnect, 'connect');
    await expectWorks(viaWsclient, 'wsclient');
    // a wss link given to wsclient is refused, naming what to use instead
    const wrong = await runCli(['wsclient', '--link', 'brook://wssserver?password=x&wssserver=wss%3A%2F%2Fa.test%3A443', '--socks5', `${LOOPBACK}:0`]);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(wrong.stderr).toMatch(/wssserver link.*wssclient or connect/);
  });

  it('flags beside a link win over it: --address replaces the link\'s address (as in the library\'s resolveServer)', async () => {
    const server = await startCli(['wsserver', '--listen', `${LOOPBACK}:0`, '--password', PASSWORD]);
    const port = server.port('listen');
    // the link names a host that does not resolve (.invalid) and, as its address, a port nothing listens on
    const l = await link(['-s', `ws://brook.invalid:${port}`, '-p', PASSWORD, '--address', `${LOOPBACK}:9`]);
    const client = await startCli(['wsclient', '--link', l, '--address', `${LOOPBACK}:${port}`, '--socks5', `${LOOPBACK}:0`, '--pool', '0']);
    await expectWorks(client, 'link-address');
  });

  it('wssclient --link and connect --link with the CA embedded, address and withoutBrookProtocol', async () => {
    const files = await selfSigned(tmp.dir, DOMAIN, 'app');
    const server = await startCli([
      'wssserver', '--domainaddress', `${DOMAIN}:443`, '--listen', `${LOOPBACK}:0`, '--password', PASSWORD,
      '--cert', files.cert, '--certkey', files.key, '--withoutBrookProtocol',
    ]);
    const port = server.port('listen');
    const l = await link([
      '-s', `wss://${DOMAIN}:${port}/ws`, '-p', PASSWORD, '--ca', files.cert, '--address', `${LOOPBACK}:${port}`, '--withoutBrookProtocol',
    ]);
    // the PEM itself is in the link, query-escaped
    const pem = readFileSync(files.cert, 'utf8');
    expect(new URL(l.replace('brook://', 'http://')).searchParams.get('ca')).toBe(pem);
    expect(l).toContain('withoutBrookProtocol=true');
    const [a, b] = await Promise.all([
      startCli(['wssclient', '--link', l, '--socks5', `${LOOPBACK}:0`]),
      startCli(['connect', '--link', l, '--socks5', `${LOOPBACK}:0`]),
    ]);
    expect(a.listening).toMatchObject({ server: `wss://${DOMAIN}:${port}/ws`, withoutBrookProtocol: true });
    await expectWorks(a, 'wssclient-link');
    await expectWorks(b, 'connect-wss-link');

    // Without the embedded CA the same link fails verification.
    const noCa = l.replace(/&?ca=[^&]*/, '').replace('?&', '?');
    const c = await startCli(['connect', '--link', noCa, '--socks5', `${LOOPBACK}:0`]);
    const r = await viaSocks(c, '/never');
    expect(r.code).not.toBe(0);
    expect(origin.requests.some((q) => q.url === '/never')).toBe(false);
    await stopCli(server);
  });

  it('clientHKDFInfo/serverHKDFInfo from a link take effect on the wire', async () => {
    const serverLog: LogEntry[] = [];
    const custom = new WsServer({
      listen: `${LOOPBACK}:0`,
      password: PASSWORD,
      clientHKDFInfo: Buffer.from('c-info'),
      serverHKDFInfo: Buffer.from('s-info'),
      probeTimeoutMs: 1_000,
      log: () => undefined,
    });
    const plain = new WsServer({ listen: `${LOOPBACK}:0`, password: PASSWORD, probeTimeoutMs: 1_000, log: (e) => void serverLog.push(e) });
    inProcess.push(custom, plain);
    const [pc, pp] = [(await custom.listen()).port, (await plain.listen()).port];
    const hkdf = ['--clientHKDFInfo', 'c-info', '--serverHKDFInfo', 's-info'];
    const toCustom = await link(['-s', `ws://${LOOPBACK}:${pc}`, '-p', PASSWORD, ...hkdf]);
    expect(toCustom).toBe(`brook://wsserver?clientHKDFInfo=c-info&password=hello&serverHKDFInfo=s-info&wsserver=ws%3A%2F%2F127.0.0.1%3A${pc}`);
    const toPlain = await link(['-s', `ws://${LOOPBACK}:${pp}`, '-p', PASSWORD, ...hkdf]);
    const swapped = await link(['-s', `ws://${LOOPBACK}:${pc}`, '-p', PASSWORD, '--clientHKDFInfo', 'c-info', '--serverHKDFInfo', 'wrong']);

    const [good, bad, half] = await Promise.all([
      startCli(['connect', '--link', toCustom, '--socks5', `${LOOPBACK}:0`]),
      startCli(['connect', '--link', toPlain, '--socks5', `${LOOPBACK}:0`]),
      startCli(['connect', '--link', swapped, '--socks5', `${LOOPBACK}:0`]),
    ]);
    await expectWorks(good, 'hkdf');

    // A server with the default info cannot open the client's first fragment: no answer.
    const before = origin.requests.length;
    const r = await viaSocks(bad, '/hkdf-default-server', 4_000);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toBe('');
    const deadline = Date.now() + 3_000;
    while (!serverLog.some((e) => e['code'] === ErrorCodes.AUTH_FAILED) && Date.now() < deadline) await sleep(50);
    expect(serverLog.some((e) => e['code'] === ErrorCodes.AUTH_FAILED)).toBe(true);

    // Only the server-to-client info differs: the request reaches the origin, the answer cannot be opened.
    const h = await viaSocks(half, '/hkdf-half', 4_000);
    expect(h.code).not.toBe(0);
    expect(h.stdout).toBe('');
    expect(origin.requests.slice(before).map((q) => q.url)).toEqual(['/hkdf-half']);
  });
});
