// An Express app that serves its own pages and carries Brook tunnels on /ws of the same port.
import express from 'express';
import { attachBrook } from 'brook-ts';

const port = Number(process.env.PORT ?? 8080);
const password = process.env.PASSWORD ?? 'change-me';

const app = express();
app.get('/', (req, res) => res.type('text/plain').send('hello from the app\n'));

const server = app.listen(port, '127.0.0.1', () => {
  console.log(`app on http://127.0.0.1:${server.address().port}/, Brook on ws://127.0.0.1:${server.address().port}/ws`);
});
const brook = attachBrook(server, { path: '/ws', password, log: (e) => console.error(JSON.stringify(e)) });

process.once('SIGTERM', async () => {
  await brook.close(1000); // open tunnels get a second to finish
  server.close();
});
