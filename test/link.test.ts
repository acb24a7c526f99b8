import { describe, expect, it } from 'vitest';
import { BrookError, ErrorCodes } from '../src/errors.js';
import {
  buildLink,
  linkKindForServer,
  parseLink,
  queryEscape,
  queryEscapeBytes,
  queryUnescapeBytes,
} from '../src/link.js';

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(BrookError);
    return (e as BrookError).code;
  }
  return undefined;
}

function messageOf(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    return (e as Error).message;
  }
  return '';
}

const PEM =
  '-----BEGIN CERTIFICATE-----\nMIIBkTCB+wIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnVu\ndXNlZDAeFw0=\n-----END CERTIFICATE-----\n';
// Go: url.QueryEscape(PEM): space -> '+', '\n' -> %0A, '+' -> %2B, '=' -> %3D, '/' -> %2F.
const PEM_ESCAPED =
  '-----BEGIN+CERTIFICATE-----%0AMIIBkTCB%2BwIJAKHBfpegPjMCMA0GCSqGSIb3DQEBCwUAMBExDzANBgNVBAMMBnVu%0AdXNlZDAeFw0%3D%0A-----END+CERTIFICATE-----%0A';

describe('queryEscape (Go url.QueryEscape)', () => {
  it('keeps unreserved, turns space into +, escapes everything else as uppercase %XX per UTF-8 byte', () => {
    expect(queryEscape('AZaz09-_.~')).toBe('AZaz09-_.~');
    expect(queryEscape('a b')).toBe('a+b');
    expect(queryEscape('$&+,/:;=?@#%!*\'()[]"<>\\^`{|}')).toBe(
      '%24%26%2B%2C%2F%3A%3B%3D%3F%40%23%25%21%2A%27%28%29%5B%5D%22%3C%3E%5C%5E%60%7B%7C%7D',
    );
    expect(queryEscape('é€')).toBe('%C3%A9%E2%82%AC');
    expect(queryEscape('\n\t\x00')).toBe('%0A%09%00');
    expect(queryEscapeBytes(Uint8Array.of(0xff, 0x00, 0x41))).toBe('%FF%00A');
  });

  it('unescapes + and %XX (either case) to bytes, rejects broken escapes', () => {
    expect(queryUnescapeBytes('a+b%2b%2B%c3%A9').toString('utf8')).toBe('a b++é');
    expect(queryUnescapeBytes('%FF%00')).toEqual(Buffer.from([0xff, 0x00]));
    for (const bad of ['%', '%4', '%zz', 'a%g1']) {
      expect(codeOf(() => queryUnescapeBytes(bad))).toBe(ErrorCodes.LINK_INVALID);
    }
  });
});

describe('buildLink', () => {
  // Vectors from upstream docs/brook-link.md.
  it('matches the upstream documentation examples', () => {
    expect(buildLink('wsserver', 'ws://1.2.3.4:9999', 'hello')).toBe(
      'brook://wsserver?password=hello&wsserver=ws%3A%2F%2F1.2.3.4%3A9999',
    );
    expect(buildLink('wsserver', 'ws://1.2.3.4:9999/ws', 'hello')).toBe(
      'brook://wsserver?password=hello&wsserver=ws%3A%2F%2F1.2.3.4%3A9999%2Fws',
    );
    expect(buildLink('wssserver', 'wss://domain.com:443', 'hello')).toBe(
      'brook://wssserver?password=hello&wssserver=wss%3A%2F%2Fdomain.com%3A443',
    );
    expect(buildLink('wssserver', 'wss://domain.com:443/ws', 'hello')).toBe(
      'brook://wssserver?password=hello&wssserver=wss%3A%2F%2Fdomain.com%3A443%2Fws',
    );
  });

  it('writes the server as given (no default path added) and always writes password, even empty', () => {
    expect(buildLink('wsserver', 'ws://[::1]:8080', '')).toBe('brook://wsserver?password=&wsserver=ws%3A%2F%2F%5B%3A%3A1%5D%3A8080');
  });

  it('escapes special characters in the password', () => {
    expect(buildLink('wsserver', 'ws://1.2.3.4:9999', 'p@ss w0rd/+&=?#%é~')).toBe(
      'brook://wsserver?password=p%40ss+w0rd%2F%2B%26%3D%3F%23%25%C3%A9~&wsserver=ws%3A%2F%2F1.2.3.4%3A9999',
    );
  });

  it('sorts every key by byte order and writes all known and unknown options', () => {
    const link = buildLink('wssserver', 'wss://example.com:443/ws', 'pw', {
      withoutBrookProtocol: true,
      username: 'u',
      tlsfingerprint: 'chrome',
      serverHKDFInfo: 's',
      name: 'my server',
      insecure: true,
      fragment: '50:100:10:50',
      clientHKDFInfo: 'c',
      address: '1.2.3.4:443',
      udpovertcp: false, // false and undefined are left out, like an unset flag upstream
      token: undefined,
      Zeta: 'upper case sorts first',
    });
    expect(link).toBe(
      'brook://wssserver?Zeta=upper+case+sorts+first&address=1.2.3.4%3A443&clientHKDFInfo=c&fragment=50%3A100%3A10%3A50' +
        '&insecure=true&name=my+server&password=pw&serverHKDFInfo=s&tlsfingerprint=chrome&username=u' +
        '&withoutBrookProtocol=true&wssserver=wss%3A%2F%2Fexample.com%3A443%2Fws',
    );
  });

  it('embeds a PEM CA as query-escaped text', () => {
    expect(buildLink('wssserver', 'wss://example.com:443', 'x', { ca: PEM })).toBe(
      `brook://wssserver?ca=${PEM_ESCAPED}&password=x&wssserver=wss%3A%2F%2Fexample.com%3A443`,
    );
  });

  it('writes HKDF info as plain text bytes (not base64); Buffers are written byte for byte', () => {
    expect(buildLink('wsserver', 'ws://h:1', 'p', { clientHKDFInfo: Buffer.from([0x00, 0xff, 0x62]) })).toBe(
      'brook://wsserver?clientHKDFInfo=%00%FFb&password=p&wsserver=ws%3A%2F%2Fh%3A1',
    );
  });

  it('the server overrides an option named like the kind (v.Set(kind, server))', () => {
    expect(buildLink('wsserver', 'ws://h:1', 'p', { wsserver: 'ws://other:2' })).toBe(
      'brook://wsserver?password=p&wsserver=ws%3A%2F%2Fh%3A1',
    );
  });

  it('refuses kinds brook-ts does not speak and servers it could not read back', () => {
    for (const kind of ['server', 'quicserver', 'socks5']) {
      expect(codeOf(() => buildLink(kind, '1.2.3.4:9999', 'p'))).toBe(ErrorCodes.LINK_KIND);
    }
    expect(codeOf(() => buildLink('wsserver', 'wss://h:1', 'p'))).toBe(ErrorCodes.LINK_INVALID);
    expect(codeOf(() => buildLink('wsserver', 'ws://h', 'p'))).toBe(ErrorCodes.LINK_INVALID);
    expect(codeOf(() => buildLink('wssserver', 'wss://h:0/ws', 'p'))).toBe(ErrorCodes.LINK_INVALID);
  });

  it('linkKindForServer picks the kind like `brook link -s`', () => {
    expect(linkKindForServer('ws://1.2.3.4:9999')).toBe('wsserver');
    expect(linkKindForServer('wss://d.com:443/ws')).toBe('wssserver');
    expect(messageOf(() => linkKindForServer('quic://d.com:443'))).toBe(
      'link kind "quicserver" is not supported by brook-ts (supported: wsserver, wssserver)',
    );
    expect(codeOf(() => linkKindForServer('1.2.3.4:9999'))).toBe(ErrorCodes.LINK_KIND);
    expect(codeOf(() => linkKindForServer('socks5://1.2.3.4:1080'))).toBe(ErrorCodes.LINK_KIND);
  });
});

describe('parseLink', () => {
  it('reads the upstream documentation examples, defaulting the path to /ws', () => {
    const a = parseLink('brook://wsserver?password=hello&wsserver=ws%3A%2F%2F1.2.3.4%3A9999');
    expect(a).toEqual({
      kind: 'wsserver',
      server: 'ws://1.2.3.4:9999',
      password: 'hello',
      options: {},
      hostPort: '1.2.3.4:9999',
      hostname: '1.2.3.4',
      port: 9999,
      path: '/ws',
      insecure: false,
      withoutBrookProtocol: false,
    });
    const b = parseLink('brook://wssserver?password=hello&wssserver=wss%3A%2F%2Fdomain.com%3A443%2Fws');
    expect(b.kind).toBe('wssserver');
    expect(b.server).toBe('wss://domain.com:443/ws');
    expect(b.hostname).toBe('domain.com');
    expect(b.port).toBe(443);
    expect(b.path).toBe('/ws');
  });

  it('keeps an explicit path, including "/" (upstream only defaults an empty path)', () => {
    expect(parseLink(buildLink('wsserver', 'ws://h:1/', 'p')).path).toBe('/');
    expect(parseLink(buildLink('wsserver', 'ws://h:1/a/b', 'p')).path).toBe('/a/b');
    expect(parseLink(buildLink('wsserver', 'ws://h:1/a?x=1', 'p')).path).toBe('/a');
  });

  it('reads every option, typed, and keeps unknown ones', () => {
    const link =
      'brook://wssserver?Zeta=z&address=1.2.3.4%3A443&ca=' +
      PEM_ESCAPED +
      '&clientHKDFInfo=c+i&fragment=50%3A100%3A10%3A50&insecure=true&name=my+server&password=pw%2B' +
      '&serverHKDFInfo=%00%FF&tlsfingerprint=chrome&username=u&withoutBrookProtocol=true' +
      '&wssserver=wss%3A%2F%2F%5B2001%3Adb8%3A%3A1%5D%3A443';
    const p = parseLink(link);
    expect(p.kind).toBe('wssserver');
    expect(p.server).toBe('wss://[2001:db8::1]:443');
    expect(p.hostPort).toBe('[2001:db8::1]:443');
    expect(p.hostname).toBe('2001:db8::1');
    expect(p.password).toBe('pw+');
    expect(p.username).toBe('u');
    expect(p.address).toBe('1.2.3.4:443');
    expect(p.insecure).toBe(true);
    expect(p.withoutBrookProtocol).toBe(true);
    expect(p.ca).toBe(PEM);
    expect(p.name).toBe('my server');
    expect(p.clientHKDFInfo).toEqual(Buffer.from('c i'));
    expect(p.serverHKDFInfo).toEqual(Buffer.from([0x00, 0xff]));
    expect(p.options).toMatchObject({ Zeta: 'z', fragment: '50:100:10:50', tlsfingerprint: 'chrome', username: 'u' });
    expect(p.tlsFingerprint).toBe('chrome');
    expect(p.fragment).toEqual({ minLength: 50, maxLength: 100, minDelay: 10, maxDelay: 50 });
    expect(p.options).not.toHaveProperty('password');
    expect(p.options).not.toHaveProperty('wssserver');
  });

  it('treats booleans as upstream does: only the exact value "true" is set', () => {
    const p = parseLink(buildLink('wsserver', 'ws://h:1', 'p', { insecure: 'TRUE', withoutBrookProtocol: '1' }));
    expect(p.insecure).toBe(false);
    expect(p.withoutBrookProtocol).toBe(false);
  });

  it('round trips build -> parse -> build', () => {
    const cases: Array<[string, string, string, Record<string, string | boolean>]> = [
      ['wsserver', 'ws://1.2.3.4:9999', 'hello', {}],
      ['wsserver', 'ws://[::1]:80/x y', ' sp ace+&=%', { withoutBrookProtocol: true, name: 'ñ é' }],
      ['wssserver', 'wss://example.com:443/ws', 'pw', { ca: PEM, insecure: true, address: '10.0.0.1:8443', tlsfingerprint: 'chrome' }],
      ['wssserver', 'wss://example.com:8443', '', { clientHKDFInfo: 'client', serverHKDFInfo: 'server', username: 'me', fragment: '1:2:3:4' }],
    ];
    for (const [kind, server, password, options] of cases) {
      const link = buildLink(kind, server, password, options);
      const p = parseLink(link);
      expect(p.kind).toBe(kind);
      expect(p.server).toBe(server);
      expect(p.password).toBe(password);
      expect(buildLink(p.kind, p.server, p.password, p.options)).toBe(link);
    }
  });

  it('takes the first value of a repeated key (url.Values.Get), ignores empty pairs and a URL fragment', () => {
    const p = parseLink('brook://wsserver?&password=a&password=b&&wsserver=ws%3A%2F%2Fh%3A1#frag');
    expect(p.password).toBe('a');
    expect(p.server).toBe('ws://h:1');
  });

  it('accepts surrounding whitespace and an upper-case scheme', () => {
    expect(parseLink('  BROOK://wsserver?password=p&wsserver=ws%3A%2F%2Fh%3A1\n').server).toBe('ws://h:1');
  });

  it('LINK_KIND names the kind for kinds brook-ts does not speak', () => {
    expect(messageOf(() => parseLink('brook://quicserver?password=p&quicserver=quic%3A%2F%2Fd.com%3A443'))).toBe(
      'link kind "quicserver" is not supported by brook-ts (supported: wsserver, wssserver)',
    );
    for (const link of [
      'brook://server?password=hello&server=1.2.3.4%3A9999',
      'brook://socks5?password=world&socks5=socks5%3A%2F%2F1.2.3.4%3A9999&username=hello',
      'brook://quicserver?password=p&quicserver=quic%3A%2F%2Fd.com%3A443',
      'brook://WSSERVER?password=p&WSSERVER=ws%3A%2F%2Fh%3A1',
    ]) {
      expect(codeOf(() => parseLink(link))).toBe(ErrorCodes.LINK_KIND);
    }
    expect(messageOf(() => parseLink('brook://socks5?socks5=socks5%3A%2F%2F1.2.3.4%3A9999'))).toContain('"socks5"');
  });

  it('LINK_INVALID for malformed links', () => {
    const bad = [
      '',
      'wsserver?password=p&wsserver=ws%3A%2F%2Fh%3A1', // no scheme
      'http://wsserver?password=p&wsserver=ws%3A%2F%2Fh%3A1', // wrong scheme
      'brook://?password=p', // no kind
      'brook://ws server?password=p', // malformed kind
      'brook://wsserver?password=p', // no server
      'brook://wsserver?password=p&wsserver=', // empty server
      'brook://wsserver?password=p%zz&wsserver=ws%3A%2F%2Fh%3A1', // bad escape
      'brook://wsserver?password=p;x&wsserver=ws%3A%2F%2Fh%3A1', // semicolon
      'brook://wsserver?password=p\n&wsserver=ws%3A%2F%2Fh%3A1', // control character
      'brook://wsserver?password=p&wsserver=wss%3A%2F%2Fh%3A1', // scheme does not match kind
      'brook://wssserver?password=p&wssserver=wss%3A%2F%2Fh', // no port
      'brook://wsserver?password=p&wsserver=ws%3A%2F%2Fh%3A99999', // port out of range
      'brook://wsserver?password=p&wsserver=ws%3A%2F%2F%3A80', // empty host
      'brook://wsserver?password=p&wsserver=1.2.3.4%3A9999', // not a ws:// URL
    ];
    for (const link of bad) {
      expect(codeOf(() => parseLink(link)), link).toBe(ErrorCodes.LINK_INVALID);
    }
  });
});
