/**
 * /proc figures of a process and its descendants (cluster workers), for the
 * benchmark and the hostile tools: RSS, CPU time, descriptors.
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat times (Linux USER_HZ). */
const CLK_TCK = 100;

/** The process and its descendants (cluster workers). */
export function tree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8');
      const ppid = Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(d));
      children.set(ppid, list);
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

/** VmRSS of the process tree, KiB. */
export function rssKiB(pid: number): number {
  let kib = 0;
  for (const p of tree(pid)) {
    try {
      const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) kib += Number(m[1]);
    } catch {
      /* gone */
    }
  }
  return kib;
}

/** Open descriptors of the process tree. */
export function fdCount(pid: number): number {
  let n = 0;
  for (const p of tree(pid)) {
    try {
      n += readdirSync(`/proc/${p}/fd`).length;
    } catch {
      /* gone */
    }
  }
  return n;
}

/** Open socket descriptors of the process tree. */
export function socketCount(pid: number): number {
  let n = 0;
  for (const p of tree(pid)) {
    let fds: string[] = [];
    try {
      fds = readdirSync(`/proc/${p}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${p}/fd/${fd}`).startsWith('socket:')) n++;
      } catch {
        /* closed meanwhile */
      }
    }
  }
  return n;
}

/** utime + stime of the process tree, seconds. */
export function cpuSeconds(pid: number): number {
  let ticks = 0;
  for (const p of tree(pid)) {
    try {
      const st = readFileSync(`/proc/${p}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      ticks += Number(f[11]) + Number(f[12]); // fields 14 and 15 of stat
    } catch {
      /* gone */
    }
  }
  return ticks / CLK_TCK;
}
