/**
 * Seeded random numbers for tests (sfc32). The seed comes from TEST_SEED when set, so a failing
 * run can be repeated; tests print the seed they used when they fail.
 */

/** A seeded generator of numbers in [0, 1) with integer and byte helpers. */
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
    for (let i = 0; i < 15; i++) this.next();
  }

  /** Next number in [0, 1). */
  next(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return (t >>> 0) / 4294967296;
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.next() < p;
  }

  /** `n` random bytes. */
  bytes(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    for (let i = 0; i < n; i++) out[i] = this.int(256);
    return out;
  }

  /** The function form, for APIs that take `() => number`. */
  get random(): () => number {
    return () => this.next();
  }
}

/** The seed of this run: TEST_SEED if set, else a fixed default so CI runs repeat. */
export function testSeed(fallback = 20261125): number {
  const fromEnv = process.env.TEST_SEED;
  return fromEnv !== undefined && fromEnv !== "" ? Number(fromEnv) : fallback;
}
