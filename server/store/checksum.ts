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

/** X2N[k] = x^(2^k) modulo the polynomial, reflected. */
const X2N: number[] = (() => {
  const table: number[] = [];
  let p = 0x40000000; // x^1
  for (let k = 0; k < 64; k++) {
    table.push(p);
    p = multModP(p, p);
  }
  return table;
})();

/** x^(8 * bytes) modulo the polynomial: the operator that appends `bytes` zero bytes. */
function zeroBytesOperator(bytes: number): number {
  let p = 0x80000000; // x^0
  // Exact in a double for any length below 2^50 bytes.
  let n = bytes * 8;
  for (let k = 0; n > 0; k++) {
    if (n % 2 === 1) p = multModP(X2N[k] as number, p);
    n = Math.floor(n / 2);
  }
  return p;
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
