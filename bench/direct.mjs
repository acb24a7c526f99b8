// The no-encryption baseline of the benchmark: a plain SOCKS5 pass-through
// (src/socks5/direct.ts, built into dist/) listening on 127.0.0.1:PORT (TCP and UDP).
//   node bench/direct.mjs PORT
import { createDirectSocks5 } from '../dist/src/socks5/direct.js';

const port = Number(process.argv[2] ?? '1080');
const srv = createDirectSocks5({ host: '127.0.0.1', port });
await srv.listen();
process.stdout.write(JSON.stringify({ msg: 'listening', socks5: `127.0.0.1:${srv.address().port}` }) + '\n');
const stop = () => srv.close().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
