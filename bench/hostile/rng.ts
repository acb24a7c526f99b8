/** Seeded randomness for the hostile tools: a reproducible source and the mutations of a fuzzer. */

/** sfc32: small, fast, seedable; every run is reproduced by its seed. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(readonly seed: number) {
    this.a = 0x9e3779b9;
    this.b = 0x243f6a88;
    this.c = 0xb7e15162;
    this.d = seed >>> 0;
    for (let i = 0; i < 16; i++) this.u32();
  }

  u32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)]!;
  }

  bytes(n: number): Buffer {
    const b = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }

  /** Mostly small lengths, sometimes large ones. */
  length(max: number): number {
    const r = this.int(10);
    if (r < 5) return this.int(Math.min(max, 16) + 1);
    if (r < 8) return this.int(Math.min(max, 256) + 1);
    return this.int(max + 1);
  }
}

/** A valid input changed the ways a fuzzer does: flip, set, insert, delete, truncate, extend, splice. */
export function mutate(rng: Rng, valid: Buffer, maxLen = 70_000): Buffer {
  let b = Buffer.from(valid);
  const rounds = 1 + rng.int(4);
  for (let r = 0; r < rounds; r++) {
    switch (rng.int(8)) {
      case 0: // flip bits
        if (b.length) b[rng.int(b.length)]! ^= 1 << rng.int(8);
        break;
      case 1: // set a byte to an interesting value
        if (b.length) b[rng.int(b.length)] = rng.pick([0, 1, 0x7f, 0x80, 0xff, 0x0d, 0x0a, 0x20, 0x3a, rng.int(256)]);
        break;
      case 2: // truncate
        b = b.subarray(0, rng.int(b.length + 1));
        break;
      case 3: // extend with random bytes
        b = Buffer.concat([b, rng.bytes(rng.length(512))]);
        break;
      case 4: // insert random bytes
      {
        const at = rng.int(b.length + 1);
        b = Buffer.concat([b.subarray(0, at), rng.bytes(1 + rng.int(8)), b.subarray(at)]);
        break;
      }
      case 5: // delete a run
      {
        const at = rng.int(b.length + 1);
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + rng.int(8))]);
        break;
      }
      case 6: // duplicate a run
      {
        const at = rng.int(b.length + 1);
        const n = rng.int(Math.min(64, b.length - at) + 1);
        b = Buffer.concat([b.subarray(0, at + n), b.subarray(at, at + n), b.subarray(at + n)]);
        break;
      }
      default: // write a big-endian u16 somewhere (lengths)
        if (b.length >= 2) b.writeUInt16BE(rng.pick([0, 1, 0xff, 0x100, 2014, 2048, 0x7fff, 0xffff, rng.int(0x10000)]), rng.int(b.length - 1));
    }
  }
  return b.length > maxLen ? b.subarray(0, maxLen) : b;
}

/** Split a buffer at random points (1 to 6 pieces, sometimes one byte at a time). */
export function split(rng: Rng, b: Buffer): Buffer[] {
  if (b.length <= 1) return [b];
  if (b.length < 64 && rng.chance(0.05)) return Array.from(b, (_, i) => b.subarray(i, i + 1));
  const cuts = new Set<number>();
  const n = rng.int(6);
  for (let i = 0; i < n; i++) cuts.add(1 + rng.int(b.length - 1));
  const sorted = [...cuts].sort((x, y) => x - y);
  const out: Buffer[] = [];
  let prev = 0;
  for (const c of sorted) {
    out.push(b.subarray(prev, c));
    prev = c;
  }
  out.push(b.subarray(prev));
  return out;
}
