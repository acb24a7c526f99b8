// A local SOCKS5 proxy (what `brook-ts wsclient` runs) whose connections go through a Brook server.
import { resolveServer, WsClient } from 'brook-ts';

const server = process.env.SERVER ?? 'ws://127.0.0.1:8080/ws'; // or a brook:// link
const password = process.env.PASSWORD ?? 'change-me';

const client = new WsClient({
  ...resolveServer(server, { password }),
  socks5: process.env.SOCKS5 ?? '127.0.0.1:1080',
  log: (e) => console.error(JSON.stringify(e)),
});
await client.listen();
const a = client.socks.address();
console.log(`SOCKS5 on ${a.address}:${a.port}, through ${server}`);

process.once('SIGTERM', () => client.close(1000));
