/**
 * The command line's contract, as a user meets it: every command's --help (and the
 * program's), --example, --version, and the one stderr line + exit code of CLI
 * mistakes, compared with the files in test/fixtures/cli-contract/. A change to
 * any of them (a help text, a default, an error message, an exit code) fails here;
 * when it is meant, regenerate the files and let the diff show it:
 *
 *   npm run build && BROOK_TS_UPDATE_CLI_CONTRACT=1 npx vitest run test/cli-contract.test.ts
 *
 * The children run without $BROOK_TS_PASSWORD_FILE, with stdout a pipe (commander
 * wraps help at 80 columns then); temporary paths and the busy port are masked.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assertBuilt, LOOPBACK, selfSigned, tempDir } from './helpers/cli.js';
import { HELP_TARGETS, runAll, runOnce, type RunResult } from './helpers/cli-run.js';

const FIXTURES = join('test', 'fixtures', 'cli-contract');
const UPDATE = process.env['BROOK_TS_UPDATE_CLI_CONTRACT'] === '1';

const L = `${LOOPBACK}:0`;
const WS_LINK = 'brook://wsserver?password=x&wsserver=ws%3A%2F%2F127.0.0.1%3A1';
const WS_LINK_WOB = 'brook://wsserver?password=x&withoutBrookProtocol=true&wsserver=ws%3A%2F%2F127.0.0.1%3A1';
const WS_LINK_NO_PASSWORD = 'brook://wsserver?wsserver=ws%3A%2F%2F127.0.0.1%3A1';
const WSS_LINK = 'brook://wssserver?password=x&wssserver=wss%3A%2F%2Fa.test%3A443';
const SERVER = ['wsserver', '--listen', L, '--password', 'x'];
const CLIENT = ['wsclient', '--wsserver', 'ws://127.0.0.1:1', '--password', 'x', '--socks5', L];
const WSS = ['wssserver', '--domainaddress', 'a.test:443', '--password', 'x', '--listen', L];

/**
 * The mistakes: `{tmp}` is a temporary folder holding the files below, `{busy}` a
 * port in use. Each is one line on stderr and a non-zero exit (checked below too).
 */
const MISTAKES: string[][] = [
  // servers: password, listen, the flag parsers
  ['wsserver', '--listen', L],
  ['wsserver', '--password', 'x'],
  ['wsserver', '--password', 'x', '--listen', '1.2.3.4'],
  ['wsserver', '--password', 'x', '--listen', `${LOOPBACK}:{busy}`],
  [...SERVER, '--tcpTimeout', 'abc'],
  [...SERVER, '--tcptimeout', '1'],
  [...SERVER, '--path', 'ws'],
  [...SERVER, '--keepalive', '5', '--withoutBrookProtocol'],
  [...SERVER, '--keepalive', '-1'],
  [...SERVER, '--workers', '0'],
  [...SERVER, '--workers', 'many'],
  [...SERVER, '--maxPending', '0'],
  [...SERVER, '--probeBytes', '0'],
  [...SERVER, '--headTimeout', '0'],
  [...SERVER, '--crypto', 'fast'],
  [...SERVER, '--trustedProxies', 'not-an-ip'],
  [...SERVER, '--host', 'a b'],
  [...SERVER, '--fallback', '/nonexistent/site'],
  [...SERVER, '--fallback', 'ftp://a.test/'],
  [...SERVER, '--shutdownGrace', '1.5'],
  [...SERVER, '--passwordFile', '{tmp}/pw'],
  ['wsserver', '--listen', L, '--passwordFile', '/nonexistent/pw'],
  ['wsserver', '--listen', L, '--passwordFile', '{tmp}/two-lines'],
  ['wsserver', '--listen', L, '--passwordFile', '{tmp}/empty'],
  // globals
  ['--prometheus', L, ...SERVER],
  ['--prometheusPath', '/m', ...SERVER],
  ['--prometheus', L, '--prometheusPath', 'm', ...SERVER],
  ['--pprof', ':6060', ...SERVER],
  ['--tag', 'nocolon', ...SERVER],
  ['--log', '/nonexistent/dir/brook.log', ...SERVER],
  ['--blockListUpdateInterval', 'soon', ...SERVER],
  ['--blockGeoIP', 'USA', ...SERVER],
  ['--blockCIDR4List', '{tmp}/bad-cidr', ...SERVER],
  ['--blockDomainList', '/nonexistent/list', ...SERVER],
  ['--dialWithDNSPrefer', 'MX', ...SERVER],
  ['--dialWithSocks5', 'nope', ...SERVER],
  // block options on a client
  ['--blockDomainList', '{tmp}/list', ...CLIENT],
  ['--blockGeoIP', 'US', 'connect', '--link', WS_LINK, '--socks5', L],
  ['--blockCIDR6List', '{tmp}/list', 'wssclient', '--wssserver', 'wss://a.test:443', '--password', 'x', '--socks5', L],
  // wssserver
  ['wssserver', '--password', 'x', '--domainaddress', '1.2.3.4:443'],
  ['wssserver', '--password', 'x'],
  [...WSS, '--cert', '{tmp}/cert.pem'],
  [...WSS, '--certkey', '{tmp}/key.pem'],
  [...WSS, '--cert', '/nonexistent/cert.pem', '--certkey', '/nonexistent/key.pem'],
  [...WSS, '--cert', '{tmp}/empty', '--certkey', '{tmp}/empty'],
  [...WSS, '--acmeCA', '/nonexistent/ca.pem', '--httpListen', L, '--cacheDir', '{tmp}/cache'],
  [...WSS, '--cert', '{tmp}/cert.pem', '--certkey', '{tmp}/key.pem'],
  [...WSS, '--keepalive', '5', '--withoutBrookProtocol', '--cert', '{tmp}/real.crt.pem', '--certkey', '{tmp}/real.key.pem'],
  [...WSS, '--path', 'ws', '--cert', '{tmp}/real.crt.pem', '--certkey', '{tmp}/real.key.pem'],
  // ACME: the options are checked before the account key is made and the CA asked (it used to retry the CA first)
  [...WSS, '--path', 'ws', '--acmeDirectory', 'http://127.0.0.1:1/directory', '--httpListen', L, '--cacheDir', '{tmp}/cache'],
  // clients
  ['wsclient', '--password', 'x', '--socks5', L],
  ['wsclient', '--wsserver', 'ws://1.2.3.4:9999', '--socks5', L],
  ['wsclient', '--wsserver', 'ws://1.2.3.4', '--password', 'x', '--socks5', L],
  ['wsclient', '--wsserver', 'wss://1.2.3.4:443', '--password', 'x', '--socks5', L],
  ['wssclient', '--wssserver', 'ws://a.test:443', '--password', 'x', '--socks5', L],
  ['wssclient', '--wssserver', 'wss://a.test:443', '--password', 'x', '--ca', '/nonexistent/ca.pem', '--socks5', L],
  ['wssclient', '--link', WSS_LINK, '--ca', '/nonexistent/ca.pem', '--socks5', L],
  [...CLIENT, '--keepalive', '5', '--withoutBrookProtocol'],
  [...CLIENT, '--pool', '65'],
  [...CLIENT, '--poolMaxIdle', '0'],
  ['wsclient', '--wsserver', 'ws://127.0.0.1:1', '--password', 'x', '--socks5', 'nope'],
  [...CLIENT, '--http', ':'],
  [...CLIENT, '--address', 'nope'],
  [...CLIENT, '--password', 'y', '--passwordFile', '{tmp}/pw'],
  ['wsclient', '--link', 'garbage', '--socks5', L],
  ['wsclient', '--link', WSS_LINK, '--socks5', L],
  ['wssclient', '--link', WS_LINK, '--socks5', L],
  ['wsclient', '--link', 'brook://server?password=x&server=1.2.3.4%3A9999', '--socks5', L],
  ['wsclient', '--link', WS_LINK_NO_PASSWORD, '--socks5', L],
  ['wsclient', '--link', WS_LINK, '--address', 'nope', '--socks5', L],
  // connect
  ['connect'],
  ['connect', '--link', 'garbage', '--socks5', L],
  ['connect', '--link', WS_LINK_NO_PASSWORD, '--socks5', L],
  ['connect', '--link', WS_LINK_WOB, '--keepalive', '5', '--socks5', L],
  ['connect', '--link', WS_LINK, '--address', '127.0.0.1:2', '--socks5', L],
  ['connect', '--link', WS_LINK, '--password', 'y', '--socks5', L],
  ['connect', '--link', WS_LINK, '--passwordFile', '/nonexistent/pw', '--socks5', L],
  // link
  ['link', '-p', 'x'],
  ['link', '--server', 'ftp://a.test:1', '-p', 'x'],
  ['link', '--server', 'ws://a.test', '-p', 'x'],
  ['link', '--server', 'wss://a.test:443', '-p', 'x', '--ca', '/nonexistent/ca.pem'],
  // commander's own
  ['wsservr'],
  ['wsserver', '--listen'],
];

/** Outputs that are not mistakes: they exit 0. */
const ANSWERS: string[][] = [
  ['--version'],
  ...HELP_TARGETS.filter((c) => c !== '').map((c) => [c, '--example']),
  ['link', '--server', 'ws://1.2.3.4:9999', '--password', 'hello'],
  ['link', '--server', 'wss://a.test:443/p', '--password', 'h', '--address', '1.2.3.4:443', '--insecure', '--withoutBrookProtocol', '--name', 'n', '--username', 'u'],
  ['--clientHKDFInfo', 'c', 'link', '--server', 'ws://1.2.3.4:9999', '--password', 'hello'],
];

/** Commands that start: their start and stop lines (after SIGTERM) are part of the contract too. */
const STARTS: string[][] = [
  ['wsserver', '--listen', L, '--password', 'x'],
  ['wsserver', '--listen', L, '--password', 'x', '--withoutBrookProtocol', '--path', '/p', '--shutdownGrace', '1'],
  ['--tag', 'region:eu', 'wsserver', '--listen', L, '--password', 'x', '--workers', '2', '--shutdownGrace', '1'],
  ['wssserver', '--domainaddress', 'a.test:443', '--listen', L, '--password', 'x', '--cert', '{tmp}/real.crt.pem', '--certkey', '{tmp}/real.key.pem'],
  ['wsclient', '--wsserver', 'ws://127.0.0.1:1', '--password', 'x', '--socks5', L, '--http', L, '--pool', '0'],
  ['wsclient', '--wsserver', 'ws://127.0.0.1:1', '--password', 'x', '--socks5', '[::1]:0', '--http', '[::1]:0', '--pool', '0'],
  ['wssclient', '--wssserver', 'wss://a.test:443/p', '--password', 'x', '--socks5', L, '--insecure', '--pool', '0'],
  ['wsclient', '--link', WS_LINK_WOB, '--socks5', L, '--pool', '0'],
  ['connect', '--link', WSS_LINK, '--socks5', L, '--pool', '0'],
];
/** The lines of a start that say what runs (per-connection lines are not compared). */
const START_MESSAGES = new Set(['listening', 'workers listening', 'shutting down', 'shutting down workers']);

/** Run until it printed `listening` `expect` times, then SIGTERM it and collect the rest. */
function start(args: string[], expect: number): Promise<RunResult> {
  let stopping = false;
  return runOnce(args, (all, stop) => {
    if (stopping || all.split('\n').filter((l) => l.includes('"msg":"listening"')).length < expect) return;
    stopping = true;
    setTimeout(() => stop('SIGTERM'), 200);
  });
}

/** The start/stop lines, sorted (workers print in any order), with times, ports, pids, dates and the AES backend masked. */
function startLines(stdout: string): string {
  const lines: string[] = [];
  for (const l of stdout.split('\n')) {
    let j: Record<string, unknown>;
    try {
      j = JSON.parse(l) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (!START_MESSAGES.has(String(j['msg']))) continue;
    for (const [k, v] of Object.entries(j)) {
      // the backend depends on the machine (the native addon built or not): the field's presence is compared
      if (k === 'time' || k === 'notAfter' || k === 'crypto') j[k] = `<${k}>`;
      else if (k === 'cryptoReason') delete j[k];
      else if (k === 'pids') j[k] = '<pids>';
      else if (typeof v === 'string') j[k] = v.replace(/:\d{1,5}(?=\/|$)/, ':<port>');
    }
    lines.push(JSON.stringify(j));
  }
  return lines.sort().join('\n');
}

const tmp = tempDir('brook-contract-');
let busy: net.Server;
let busyPort = 0;

const fill = (args: string[]) => args.map((a) => a.replaceAll('{tmp}', tmp.dir).replaceAll('{busy}', String(busyPort)));
const mask = (s: string) => s.replaceAll(tmp.dir, '{tmp}').replaceAll(`:${busyPort}`, ':{busy}');

/** One case as text: the command line, the exit, then stdout and stderr lines. */
function record(args: string[], r: RunResult): string {
  const out = [`$ brook-ts ${args.join(' ')}`, `exit ${r.code ?? r.signal}`];
  for (const l of mask(r.stdout).trimEnd().split('\n')) if (l) out.push(`stdout: ${l}`);
  for (const l of mask(r.stderr).trimEnd().split('\n')) if (l) out.push(`stderr: ${l}`);
  return out.join('\n') + '\n';
}

function compare(file: string, actual: string): void {
  const path = join(FIXTURES, file);
  if (UPDATE) {
    mkdirSync(FIXTURES, { recursive: true });
    writeFileSync(path, actual);
    return;
  }
  expect(actual, `${path} (regenerate: see the top of test/cli-contract.test.ts)`).toBe(readFileSync(path, 'utf8'));
}

const helpFile = (target: string) => `help-${target || 'brook-ts'}.txt`;

beforeAll(async () => {
  assertBuilt();
  busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, LOOPBACK, r));
  busyPort = (busy.address() as net.AddressInfo).port;
  writeFileSync(join(tmp.dir, 'pw'), 'secret\n');
  writeFileSync(join(tmp.dir, 'two-lines'), 'a\nb\n');
  writeFileSync(join(tmp.dir, 'empty'), '');
  writeFileSync(join(tmp.dir, 'list'), 'example.com\n');
  writeFileSync(join(tmp.dir, 'bad-cidr'), '10.0.0.0/8\nnot a cidr\n');
  writeFileSync(join(tmp.dir, 'cert.pem'), 'not a certificate\n');
  writeFileSync(join(tmp.dir, 'key.pem'), 'not a key\n');
  await selfSigned(tmp.dir, 'a.test', 'real');
});

afterAll(async () => {
  await new Promise<void>((r) => busy.close(() => r()));
  tmp.remove();
});

describe('the CLI contract (test/fixtures/cli-contract)', () => {
  it('--help of the program and of every command', async () => {
    const results = await runAll(HELP_TARGETS.map((c) => (c ? [c, '--help'] : ['--help'])));
    HELP_TARGETS.forEach((c, i) => {
      const r = results[i]!;
      expect(r.code, `${c} --help: ${r.stderr}`).toBe(0);
      expect(r.stderr).toBe('');
      compare(helpFile(c), r.stdout);
    });
  });

  it('answers: --version, --example, link', async () => {
    const results = await runAll(ANSWERS);
    ANSWERS.forEach((a, i) => expect(results[i]!.code, a.join(' ')).toBe(0));
    compare('answers.txt', ANSWERS.map((a, i) => record(a, results[i]!)).join('\n'));
  });

  it('starts: the start and stop lines', async () => {
    const out: string[] = [];
    for (const a of STARTS) {
      const workers = a.includes('--workers') ? Number(a[a.indexOf('--workers') + 1]) : 1;
      const r = await start(fill(a), workers);
      expect(r.code, `${a.join(' ')}: ${r.stderr}`).toBe(0);
      out.push(`$ brook-ts ${a.join(' ')}\nexit ${r.code ?? r.signal}\n${startLines(mask(r.stdout))}\n`);
    }
    compare('starts.txt', out.join('\n'));
  });

  it('mistakes: one line on stderr, nothing on stdout, exit 1', async () => {
    const results = await runAll(MISTAKES.map(fill));
    MISTAKES.forEach((a, i) => {
      const r = results[i]!;
      const what = a.join(' ');
      expect(r.code, what).toBe(1);
      expect(r.stdout, what).toBe('');
      expect(r.stderr, what).toMatch(/^brook-ts: [^\n]+\n$/);
    });
    compare('mistakes.txt', MISTAKES.map((a, i) => record(a, results[i]!)).join('\n'));
  });
});
