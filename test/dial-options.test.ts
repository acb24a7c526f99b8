/**
 * The --dialWith* flag values: parsed as upstream means them, a bad one a
 * one-line CONFIG error.
 */
import { describe, expect, it } from 'vitest';
import {
  DIAL_FLAGS,
  dialConfigFromFlags,
  parseDialWithDNS,
  parseDialWithDNSPrefer,
  parseDialWithIP4,
  parseDialWithIP6,
  parseDialWithNIC,
} from '../src/dial/options.js';
import { ErrorCodes, isBrookError } from '../src/errors.js';

function configError(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    expect(isBrookError(e, ErrorCodes.CONFIG)).toBe(true);
    const m = (e as Error).message;
    expect(m).not.toContain('\n');
    return m;
  }
  throw new Error('expected a CONFIG error');
}

describe('--dialWithDNS', () => {
  it('IP:port is UDP (TCP on truncation)', () => {
    expect(parseDialWithDNS('8.8.8.8:53')).toEqual({ kind: 'udp', host: '8.8.8.8', port: 53 });
    expect(parseDialWithDNS('[2001:4860:4860::8888]:53')).toEqual({ kind: 'udp', host: '2001:4860:4860::8888', port: 53 });
  });

  it("upstream's DoH form: address is where to connect, the URL's host the TLS name", () => {
    const s = parseDialWithDNS('https://dns.google/dns-query?address=8.8.8.8%3A443');
    expect(s.kind).toBe('doh');
    if (s.kind !== 'doh') return;
    expect(s.connectHost).toBe('8.8.8.8');
    expect(s.connectPort).toBe(443);
    expect(s.url.hostname).toBe('dns.google');
    expect(s.url.toString()).toBe('https://dns.google/dns-query');
    const v6 = parseDialWithDNS('https://dns.google/dns-query?x=1&address=%5B2001%3A4860%3A4860%3A%3A8888%5D%3A443');
    expect(v6.kind === 'doh' && v6.connectHost).toBe('2001:4860:4860::8888');
    expect(v6.kind === 'doh' && v6.url.search).toBe('?x=1');
  });

  it('bad values: one line each', () => {
    expect(configError(() => parseDialWithDNS('https://dns.google/dns-query'))).toContain('address');
    configError(() => parseDialWithDNS('https://dns.google/dns-query?address=dns.google%3A443'));
    configError(() => parseDialWithDNS('8.8.8.8'));
    configError(() => parseDialWithDNS('dns.google:53'));
    configError(() => parseDialWithDNS('8.8.8.8:70000'));
    configError(() => parseDialWithDNS('tls://8.8.8.8:853'));
    configError(() => parseDialWithDNS('https://[bad'));
  });

  it('--dialWithDNSPrefer: A or AAAA (default A)', () => {
    expect(parseDialWithDNSPrefer(undefined)).toBe('A');
    expect(parseDialWithDNSPrefer('AAAA')).toBe('AAAA');
    expect(parseDialWithDNSPrefer('aaaa')).toBe('AAAA');
    configError(() => parseDialWithDNSPrefer('MX'));
  });
});

describe('--dialWithIP4 / --dialWithIP6 / --dialWithNIC', () => {
  it('an address of the right family', () => {
    expect(parseDialWithIP4('127.0.0.2')).toBe('127.0.0.2');
    expect(parseDialWithIP6('::1')).toBe('::1');
    expect(parseDialWithIP6('[2001:db8::1]')).toBe('2001:db8::1');
    configError(() => parseDialWithIP4('::1'));
    configError(() => parseDialWithIP4('256.1.1.1'));
    configError(() => parseDialWithIP4('example.com'));
    configError(() => parseDialWithIP6('127.0.0.1'));
    configError(() => parseDialWithIP6('::ffff:1.2.3.4'));
  });

  it('an interface that exists; otherwise a line pointing to --dialWithIP4/6', () => {
    expect(parseDialWithNIC('lo')).toBe('lo');
    expect(configError(() => parseDialWithNIC('no-such-nic0'))).toContain('--dialWithIP4');
    configError(() => parseDialWithNIC('bad name'));
  });
});

describe('--dialWithSocks5 and its companions', () => {
  it('host:port with defaults TCP 0 s, UDP 60 s', () => {
    expect(dialConfigFromFlags({ dialWithSocks5: '127.0.0.1:1081' }).socks5).toEqual({
      host: '127.0.0.1',
      port: 1081,
      tcpTimeoutSeconds: 0,
      udpTimeoutSeconds: 60,
    });
    const c = dialConfigFromFlags({
      dialWithSocks5: 'proxy.example:1080',
      dialWithSocks5Username: 'u',
      dialWithSocks5Password: 'p',
      dialWithSocks5TCPTimeout: '5',
      dialWithSocks5UDPTimeout: 0,
    });
    expect(c.socks5).toEqual({ host: 'proxy.example', port: 1080, username: 'u', password: 'p', tcpTimeoutSeconds: 5, udpTimeoutSeconds: 0 });
    expect(dialConfigFromFlags({ dialWithSocks5: '[::1]:1080' }).socks5?.host).toBe('::1');
  });

  it('bad values: one line each', () => {
    configError(() => dialConfigFromFlags({ dialWithSocks5: '127.0.0.1' }));
    configError(() => dialConfigFromFlags({ dialWithSocks5: '127.0.0.1:0' }));
    configError(() => dialConfigFromFlags({ dialWithSocks5: 'a b:1080' }));
    configError(() => dialConfigFromFlags({ dialWithSocks5: '::1:1080' }));
    configError(() => dialConfigFromFlags({ dialWithSocks5: '127.0.0.1:1080', dialWithSocks5TCPTimeout: '-1' }));
    configError(() => dialConfigFromFlags({ dialWithSocks5: '127.0.0.1:1080', dialWithSocks5UDPTimeout: '1.5' }));
    configError(() => dialConfigFromFlags({ dialWithSocks5: '127.0.0.1:1080', dialWithSocks5Username: 'u' }));
    configError(() => dialConfigFromFlags({ dialWithSocks5: '127.0.0.1:1080', dialWithSocks5Username: 'u', dialWithSocks5Password: 'p'.repeat(256) }));
    configError(() => dialConfigFromFlags({ dialWithSocks5Username: 'u', dialWithSocks5Password: 'p' }));
  });

  it('nothing set: the default dialer', () => {
    expect(dialConfigFromFlags({})).toEqual({ dns: null, dnsPrefer: 'A', socks5: null });
  });

  it('every flag listed once for the CLI, upstream defaults', () => {
    const names = DIAL_FLAGS.map((f) => f.flag.split(' ')[0]);
    expect(names).toEqual([
      '--dialWithDNS',
      '--dialWithDNSPrefer',
      '--dialWithIP4',
      '--dialWithIP6',
      '--dialWithNIC',
      '--dialWithSocks5',
      '--dialWithSocks5Username',
      '--dialWithSocks5Password',
      '--dialWithSocks5TCPTimeout',
      '--dialWithSocks5UDPTimeout',
    ]);
    const dflt = Object.fromEntries(DIAL_FLAGS.map((f) => [f.flag.split(' ')[0], 'default' in f ? f.default : undefined]));
    expect(dflt['--dialWithSocks5TCPTimeout']).toBe(0);
    expect(dflt['--dialWithSocks5UDPTimeout']).toBe(60);
  });
});
