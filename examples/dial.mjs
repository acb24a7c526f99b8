// Fetch a page through a Brook server without any local port: dial() gives a Duplex to the destination.
import { dial } from 'brook-ts';

const server = process.env.SERVER ?? 'ws://127.0.0.1:8080/ws'; // or a brook:// link
const password = process.env.PASSWORD ?? 'change-me';
const url = new URL(process.env.URL ?? 'http://127.0.0.1:8080/');

const socket = await dial({ server, password, destination: `${url.hostname}:${url.port || 80}` });
// our half-close: the request is complete; the answer still comes back
socket.end(`GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nConnection: close\r\n\r\n`);
try {
  for await (const chunk of socket) process.stdout.write(chunk);
} catch (e) {
  console.error(`tunnel failed: ${e.code ?? ''} ${e.message}`); // e.g. the destination refused or reset
  process.exitCode = 1;
}
