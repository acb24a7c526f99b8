/**
 * Issue 10, item 4 across processes: the CLI with --workers 2. The primary holds
 * the replay cache, so a recorded tunnel replayed into the server is refused by
 * either worker; which worker holds each socket is read from /proc, and the
 * replays must include both the worker that accepted the original and the other.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { childPids, type CliProcess, startCli, stopCli } from './helpers/cli.js';
import { LOOPBACK, PASSWORD, sleep, waitFor } from './helpers/net.js';
import { expectSilentRefusal, recordTunnel, replay, type ReplayResult, REPLAY_SPREAD_MS, REPLAYS, startEcho } from './helpers/replay.js';

/** Inode of the server side of the 127.0.0.1 connection serverPort <- clientPort (/proc/net/tcp). */
function serverSocketInode(serverPort: number, clientPort: number): string | null {
  const hex = (p: number) => `0100007F:${p.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const line of readFileSync('/proc/net/tcp', 'latin1').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === hex(serverPort) && f[2] === hex(clientPort)) return f[9] ?? null;
  }
  return null;
}

/** Which of `pids` holds the server side of that connection (null: none / closed). */
function holder(pids: number[], serverPort: number, clientPort: number): number | null {
  const inode = serverSocketInode(serverPort, clientPort);
  if (!inode) return null;
  for (const pid of pids) {
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        try {
          if (readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${inode}]`) return pid;
        } catch {
          /* closed meanwhile */
        }
      }
    } catch {
      /* gone */
    }
  }
  return null;
}

describe('replays across --workers 2 (CLI)', () => {
  let server: CliProcess;
  let echo: Awaited<ReturnType<typeof startEcho>>;
  let port: number;

  beforeAll(async () => {
    echo = await startEcho();
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, LOOPBACK, () => r()));
    port = (probe.address() as net.AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    server = await startCli(['wsserver', '--listen', `${LOOPBACK}:${port}`, '--password', PASSWORD, '--workers', '2', '--probeTimeout', '1', '--shutdownGrace', '1']);
    await waitFor(() => server.lines.some((l) => l['msg'] === 'workers listening'), 10_000, 'workers');
  }, 30_000);
  afterAll(async () => {
    if (server) await stopCli(server);
    await echo?.close();
  });

  it('a replay is refused whichever worker it lands on', async () => {
    const workers = childPids(server.pid);
    expect(workers).toHaveLength(2);
    let originalWorker: number | null = null;
    const rec = await recordTunnel(port, echo.port, (p) => {
      originalWorker = holder(workers, port, p);
    });
    expect(originalWorker, 'the worker holding the original tunnel').not.toBeNull();
    await waitFor(() => echo.connections() === 1, 5000, 'the original tunnel at the destination');
    const other = workers.find((w) => w !== originalWorker)!;
    const landed = new Map<number, number>();
    const results: { fin: boolean; r: ReplayResult }[] = [];
    // rounds of parallel replays (no FIN: open until the deadline, so /proc can name the worker)
    for (let round = 0; round < 5 && (landed.get(other) ?? 0) < 3; round++) {
      const batch = await Promise.all(
        Array.from({ length: REPLAYS }, async (_, i) => {
          await sleep((i * REPLAY_SPREAD_MS) / REPLAYS / 4);
          const r = await replay(port, rec, false, async (local) => {
            await sleep(50);
            const w = holder(workers, port, local);
            if (w !== null) landed.set(w, (landed.get(w) ?? 0) + 1);
          });
          return { fin: false, r };
        }),
      );
      results.push(...batch);
    }
    expectSilentRefusal(results);
    expect(echo.connections()).toBe(1);
    expect(landed.get(other) ?? 0, `replays per worker: ${JSON.stringify([...landed])}`).toBeGreaterThan(0);
    expect(landed.get(originalWorker!) ?? 0, `replays per worker: ${JSON.stringify([...landed])}`).toBeGreaterThan(0);
    expect(server.lines.some((l) => l['code'] === ErrorCodes.REPLAY)).toBe(true);
  }, 60_000);
});
