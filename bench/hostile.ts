/**
 * Shared pieces of the hostile tools (bench/fuzz.ts, bench/soak.ts, bench/attack.ts), one file per role
 * under bench/hostile/:
 * a seeded random source, the CLI child processes and their /proc figures,
 * and raw-socket clients written here, independently of src/ and test/
 * (HTTP upgrade, SOCKS5, a Brook first fragment sealed with node:crypto).
 */
export * from './hostile/base.js';
export * from './hostile/rng.js';
export * from './hostile/procs.js';
export * from './hostile/wire.js';
export { fdCount, rssKiB, socketCount, tree } from './proc.js';
