/**
 * Reaching the store: rediss:// with our own CA (and refused without it), AUTH from
 * a password file, and ioredis loaded only when a store is opened (a server without
 * --redis never pays for it).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { resolveStoreEndpoint } from '../src/store/config.js';
import { FleetStore } from '../src/store/store.js';
import { tempDir } from './helpers/cli.js';
import { storeKit, until } from './helpers/redis.js';

const tmp = tempDir('brook-store-tls-');
afterAll(() => tmp.remove());
const kit = storeKit();
afterEach(kit.cleanup);

/** A CA and a server certificate for 127.0.0.1 signed by it (openssl). */
function makeCerts(): { ca: string; cert: string; key: string; otherCa: string } {
  const p = (n: string) => join(tmp.dir, n);
  const ossl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  for (const name of ['ca', 'other']) {
    ossl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', p(`${name}.key`), '-out', p(`${name}.pem`), '-days', '2', '-subj', `/CN=brook test ${name}`);
  }
  ossl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', p('server.key'), '-out', p('server.csr'), '-subj', '/CN=127.0.0.1');
  writeFileSync(p('ext'), 'subjectAltName=IP:127.0.0.1\n');
  ossl('x509', '-req', '-in', p('server.csr'), '-CA', p('ca.pem'), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p('server.pem'), '-days', '2', '-extfile', p('ext'));
  return { ca: p('ca.pem'), cert: p('server.pem'), key: p('server.key'), otherCa: p('other.pem') };
}

async function open(url: string, extra: { caFile?: string; passwordFile?: string } = {}): Promise<FleetStore> {
  const s = await FleetStore.open({ endpoint: resolveStoreEndpoint({ url, ...extra }), instanceId: 't', heartbeatMs: 100, reconnectMinMs: 20, reconnectMaxMs: 100, logIntervalMs: 200 });
  kit.defer(() => s.close());
  return s;
}

describe('connecting to the store', () => {
  it('rediss:// with --redisCA and a password file: up; with another CA: down (the certificate is checked)', async () => {
    const c = makeCerts();
    const r = await kit.redis({ tls: { cert: c.cert, key: c.key, ca: c.ca }, requirepass: 'tls-pw' });
    const pw = join(tmp.dir, 'pw');
    writeFileSync(pw, 'tls-pw\n');
    const good = await open(r.url, { caFile: c.ca, passwordFile: pw });
    await until(() => good.state === 'up', 5000, 'tls up');
    expect(await good.call({ op: 'heartbeat', bytes: 10 }, (x) => x.ping())).toBe('PONG');
    const bad = await open(r.url, { caFile: c.otherCa, passwordFile: pw });
    await new Promise((res) => setTimeout(res, 400));
    expect(bad.state).toBe('down');
    expect(bad.health.why).toMatch(/certificate|verify/i);
  });

  it('importing src/store loads no Redis client; opening a store does', () => {
    const probe = (code: string) => {
      const out = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { encoding: 'utf8', cwd: join(import.meta.dirname, '..') });
      expect(out.stderr).toBe('');
      return out.stdout.trim();
    };
    const loaded = "const { createRequire } = await import('node:module'); const req = createRequire(import.meta.url); const has = () => Object.keys(req.cache).some((k) => k.includes('/node_modules/ioredis/'));";
    expect(probe(`${loaded} await import('./src/store/index.ts'); console.log(has());`)).toBe('false');
    expect(
      probe(`${loaded} const m = await import('./src/store/index.ts'); const s = await m.FleetStore.open({ endpoint: m.resolveStoreEndpoint({ url: 'redis://127.0.0.1:1' }), instanceId: 'x' }); console.log(has()); await s.close();`),
    ).toBe('true');
  });
});
