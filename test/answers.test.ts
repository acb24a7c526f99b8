/**
 * The non-tunnel answers carry the headers, in the order, that upstream's Go server sends (gorilla/mux 404/405,
 * gorilla/websocket v1.5.1's refusal through http.Error, net/http's parse error), so the way we answer tells a
 * prober no more than upstream's does: no Keep-Alive header (a Node fingerprint), no Connection header on a
 * keep-alive answer. Dates are replaced by "D" before comparing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WsServer } from '../src/server/wsserver.js';
import { connectRaw, LOOPBACK, readAll, upgradeRequest, withTimeout } from './helpers/net.js';

let server: WsServer;
let port: number;
beforeAll(async () => {
  server = new WsServer({ listen: `${LOOPBACK}:0`, password: 'p', log: () => undefined });
  port = (await server.listen()).port;
});
afterAll(() => server?.close());

/** The first answer to `request`, its Date replaced; the connection is closed by us after it. */
async function answer(request: string): Promise<string> {
  const s = await connectRaw(port);
  s.write(request);
  const text = await new Promise<string>((resolve) => {
    let got = '';
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      const end = got.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = /Content-Length: (\d+)/.exec(got.slice(0, end));
      if (!len || got.length >= end + 4 + Number(len[1])) resolve(got);
    });
    s.on('end', () => resolve(got));
  });
  s.destroy();
  return text.replace(/Date: [^\r]+/, 'Date: D');
}

const GET = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: example.com\r\n${extra}\r\n`;

describe('answers like upstream', () => {
  it('404 on another path, 405 for another method, 400 on the path without an upgrade (keep-alive, no Connection header)', async () => {
    expect(await answer(GET('/other'))).toBe('HTTP/1.1 404 Not Found\r\nServer: nginx\r\nDate: D\r\nContent-Length: 0\r\n\r\n');
    expect(await answer(`POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n`)).toBe(
      'HTTP/1.1 405 Method Not Allowed\r\nServer: nginx\r\nDate: D\r\nContent-Length: 0\r\n\r\n',
    );
    expect(await answer(GET('/ws'))).toBe(
      'HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nSec-Websocket-Version: 13\r\nServer: nginx\r\n' +
        'X-Content-Type-Options: nosniff\r\nDate: D\r\nContent-Length: 12\r\n\r\nBad Request\n',
    );
  });

  it('a client that asks to close gets Connection: close, as from Go', async () => {
    expect(await answer(GET('/other', 'Connection: close\r\n'))).toBe('HTTP/1.1 404 Not Found\r\nServer: nginx\r\nConnection: close\r\nDate: D\r\nContent-Length: 0\r\n\r\n');
  });

  it('refused upgrades: the same headers, and Connection: close (we close after them)', async () => {
    const bad = upgradeRequest(port).replace('Sec-WebSocket-Version: 13', 'Sec-WebSocket-Version: 12');
    expect(await answer(bad)).toBe(
      'HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nSec-Websocket-Version: 13\r\nServer: nginx\r\n' +
        'X-Content-Type-Options: nosniff\r\nConnection: close\r\nDate: D\r\nContent-Length: 12\r\n\r\nBad Request\n',
    );
    expect(await answer(upgradeRequest(port, '/other'))).toBe('HTTP/1.1 404 Not Found\r\nServer: nginx\r\nConnection: close\r\nDate: D\r\nContent-Length: 0\r\n\r\n');
  });

  it('an unparsable request gets net/http\'s own 400', async () => {
    const s = await connectRaw(port);
    s.write('GARBAGE\r\n\r\n');
    const got = await withTimeout(readAll(s), 5000, 'the answer and close');
    expect(got.toString('latin1')).toBe('HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request');
  });
});
