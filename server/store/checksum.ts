/**
 * CRC32C (Castagnoli) of blob bodies, whole or updated in place.
 *
 * `crc32c(bytes)` is the standard CRC-32C (poly 0x1EDC6F41 reflected, init and final xor
 * 0xFFFFFFFF; check value of "123456789" is 0xE3069283), computed by the `crc-32` package.
 *
 * `crc32cPatch` updates the CRC of a message when some of its bytes change, in time linear in the
 * changed bytes and logarithmic in the distance to the end of the message, without reading the
 * rest of the message. It rests on the linearity of the CRC: for two messages of equal length,
 * crc(A) ^ crc(B) = L(A ^ B), where L is the CRC register run from 0 with no final xor, and for
 * D = (zeros, d, n zero bytes) L(D) = L(d) multiplied by x^(8n) modulo the polynomial.
 *
 * Invariant: every result is an unsigned 32-bit number (`>>> 0` applied).
 */
import CRC32C from "crc-32/crc32c.js";

/** Reflected CRC-32C polynomial. */
const POLY = 0x82f63b78;

/** CRC-32C of `bytes`, unsigned. */
export function crc32c(bytes: Uint8Array): number {
  return CRC32C.buf(bytes) >>> 0;
}

/** Register value after feeding `bytes` to a zero register, without the final xor. */
function rawCrc(bytes: Uint8Array): number {
  // The package starts from (seed ^ -1) and returns (register ^ -1): a seed of -1 starts from 0.
  return ~CRC32C.buf(bytes, -1) >>> 0;
}

/** Product of a and b modulo the polynomial, both in reflected bit order. */
function multModP(a: number, b: number): number {
  if (a === 0) return 0;
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}

/** x^n modulo the polynomial, for n of up to 53 bits, by square and multiply. */
function xPowModP(n: number): number {
  let p = 0x80000000; // x^0
  let square = 0x40000000; // x^1, then x^2, x^4, ...
  for (let rest = n; rest > 0; rest = Math.floor(rest / 2)) {
    if (rest % 2 === 1) p = multModP(square, p);
    square = multModP(square, square);
  }
  return p;
}

/** ZEROS[level][i] = x^(8 * i * 4096^level): appending i * 4096^level zero bytes. */
const ZEROS: Uint32Array[] = [0, 1, 2].map((level) => {
  const table = new Uint32Array(4096);
  const step = xPowModP(8 * 4096 ** level);
  let p = 0x80000000;
  for (let i = 0; i < 4096; i++) {
    table[i] = p;
    p = multModP(step, p);
  }
  return table;
});

/**
 * x^(8 * bytes) modulo the polynomial: the operator that appends `bytes` zero bytes, from three
 * 4096-entry tables (so for any length below 2^36 bytes) in at most two multiplications.
 */
function zeroBytesOperator(bytes: number): number {
  if (bytes >= 4096 ** 3) return xPowModP(8 * bytes);
  const low = ZEROS[0]?.[bytes % 4096] as number;
  const middle = ZEROS[1]?.[Math.floor(bytes / 4096) % 4096] as number;
  const high = ZEROS[2]?.[Math.floor(bytes / 4096 ** 2)] as number;
  return multModP(multModP(low, middle), high);
}

/**
 * CRC-32C of a message after the bytes at `offset` change from `before` to `after` (same
 * length), given the CRC of the message before the change and its total length.
 */
export function crc32cPatch(
  crcBefore: number,
  messageLength: number,
  offset: number,
  before: Uint8Array,
  after: Uint8Array,
): number {
  if (before.length !== after.length) throw new RangeError("crc32cPatch: before and after differ in length");
  const end = offset + after.length;
  if (offset < 0 || end > messageLength) throw new RangeError("crc32cPatch: change outside the message");
  const delta = new Uint8Array(after.length);
  let changed = false;
  for (let i = 0; i < delta.length; i++) {
    const d = (before[i] as number) ^ (after[i] as number);
    delta[i] = d;
    if (d !== 0) changed = true;
  }
  if (!changed) return crcBefore >>> 0;
  const trailing = messageLength - end;
  return (crcBefore ^ multModP(zeroBytesOperator(trailing), rawCrc(delta))) >>> 0;
}
