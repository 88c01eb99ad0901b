/**
 * CRC32C: the check values of docs/FORMAT.md §4, and in-place patches equal to a full recompute for
 * random messages and changes (seeded; TEST_SEED repeats a run).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { crc32c, crc32cPatch } from "../../server/store/checksum.js";
import { Rng, testSeed } from "../support/rng.js";

test("check values of FORMAT.md §4", () => {
  const ascending = Uint8Array.from({ length: 32 }, (_, i) => i);
  const cases: [Uint8Array, number][] = [
    [Buffer.from("123456789"), 0xe3069283],
    [new Uint8Array(0), 0x00000000],
    [new Uint8Array(32), 0x8a9136aa],
    [new Uint8Array(32).fill(0xff), 0x62a8ab43],
    [ascending, 0x46dd794e],
    [ascending.slice().reverse(), 0x113fdb5c],
    [Buffer.from("The quick brown fox jumps over the lazy dog"), 0x22620404],
    [Uint8Array.from({ length: 240 }, (_, i) => i + 1), 0x24c5d375],
    [Buffer.from("0000000000000003", "hex"), 0x9f78417e],
  ];
  for (const [bytes, expected] of cases)
    assert.equal(crc32c(bytes), expected, Buffer.from(bytes).toString("hex"));
});

test("a patched CRC equals the CRC of the changed message", () => {
  const rng = new Rng(testSeed());
  for (let trial = 0; trial < 3000; trial++) {
    // Lengths across the zero-operator tables' boundaries (4096, 4096^2 bytes).
    const large = trial % 1000 === 0;
    const length = 1 + (large ? 4096 * 4096 + rng.int(10_000) : rng.int(trial % 7 === 0 ? 20_000 : 600));
    const message = large ? Buffer.alloc(length, rng.int(256)) : rng.bytes(length);
    const offset = rng.int(message.length);
    const size = rng.int(Math.min(200, message.length - offset + 1));
    const changed = Buffer.from(message);
    rng.bytes(size).copy(changed, offset);
    const patched = crc32cPatch(
      crc32c(message),
      message.length,
      offset,
      message.subarray(offset, offset + size),
      changed.subarray(offset, offset + size),
    );
    assert.equal(
      patched,
      crc32c(changed),
      `seed ${rng.seed} trial ${trial}: length ${message.length} offset ${offset} size ${size}`,
    );
  }
});
