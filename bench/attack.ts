/**
 * `make attack` = `npx tsx bench/attack.ts`: the table of issue 10, measured again against a
 * live CLI wsserver under a descriptor limit, with hostile clients written here (bench/hostile.ts),
 * independently of the project's tests. Every row starts fresh processes.
 *
 *   npx tsx bench/attack.ts [--only a,b] [--nofile N] [--serverArgs "..."] [--out FILE] [--quick]
 *     rows: refused slowloris closetime replay emfile clientlog probes reset pendingflood dialfail clientburst
 *     --nofile             descriptor limit of the wsserver (default 1024)
 *     --serverArgs         extra wsserver flags, e.g. "--headTimeout 5 --maxPending 512"
 *     --refusedWait S      how long after the refused requests the descriptors are counted (10)
 *     --slowloris N        slowloris connections (3000, reconnecting; first 100 alone are timed); --slowlorisSeconds S (30)
 *     --slowlorisInterval S  seconds between header bytes (1; the issue's attack used 5)
 *     --closeCap S         how long the close-time row waits for the server to close (45)
 *     --probes N           bad probes (6000)
 *     --floodRate N        pendingflood: partial requests a second (1000); --floodSeconds S (20); --floodSpread N /24s (256)
 *     --dialFailures N     dialfail: failed dials on each side (2000)
 *     --burst N            clientburst: SOCKS5 CONNECTs at once (400) through a wsclient at --clientNofile N (256)
 *     --quick              small counts and waits (a smoke run); no results file
 *     --out                where the table goes (default bench/results/attack.txt)
 *
 * The rows live in bench/attacks/ (connections.ts, tunnels.ts, logs.ts, floods.ts, bursts.ts); this file runs them and writes the table.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { flag, now, RESULTS, table } from './hostile.js';
import { closetime, refused, slowloris } from './attacks/connections.js';
import { clientburst } from './attacks/bursts.js';
import { pendingflood } from './attacks/floods.js';
import { clientlog, dialfail, emfile, probes } from './attacks/logs.js';
import { NOFILE, quick, type Row, s1, SERVER_ARGS } from './attacks/shared.js';
import { replay, reset } from './attacks/tunnels.js';

const out = flag('out') ?? (quick ? undefined : join(RESULTS, 'attack.txt'));
const only = flag('only')?.split(',');

const logLine = (m: string) => process.stderr.write(`[attack] ${m}\n`);

const ROWS: Array<[string, () => Promise<Row>]> = [
  ['refused', refused],
  ['slowloris', slowloris],
  ['closetime', closetime],
  ['replay', replay],
  ['emfile', emfile],
  ['clientlog', clientlog],
  ['probes', probes],
  ['reset', reset],
  ['pendingflood', pendingflood],
  ['dialfail', dialfail],
  ['clientburst', clientburst],
];

async function main(): Promise<void> {
  const t0 = now();
  const rows: Row[] = [];
  const timings: string[] = [];
  for (const [name, run] of ROWS) {
    if (only && !only.includes(name)) continue;
    logLine(`${name} ...`);
    const t = now();
    try {
      rows.push(await run());
    } catch (e) {
      rows.push({ tried: name, measured: `harness error: ${(e as Error).message}`, upstream: '' });
    }
    timings.push(`${name} ${s1(now() - t)}`);
    logLine(`${name} done in ${s1(now() - t)}: ${rows.at(-1)!.measured}`);
  }
  const text = [
    `brook-ts attack table, ${new Date().toISOString()}; wsserver at ulimit -n ${NOFILE}${SERVER_ARGS.length ? `, flags ${SERVER_ARGS.join(' ')}` : ''}`,
    '',
    table(['what was tried', 'brook-ts measured', 'upstream (from the issue)'], rows.map((r) => [r.tried, r.measured, r.upstream])),
    '',
    `rows: ${timings.join(', ')}; total ${s1(now() - t0)}`,
  ].join('\n');
  process.stdout.write(text + '\n');
  if (out) writeFileSync(out, text + '\n');
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`attack: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(2);
  },
);
