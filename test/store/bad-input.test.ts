/**
 * Bad input to the store: each case gets a typed error (or the documented recovery) and changes
 * nothing, and nothing already synced is lost.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { crc32c } from "../../server/store/checksum.js";
import { fixedKeys, parseKeyCodec, readVarint, variableKeys, writeVarint } from "../../server/store/codec.js";
import { isStoreError, type StoreErrorKind } from "../../server/store/errors.js";
import { type Metadata, openMetadata } from "../../server/store/metadata.js";
import {
  BLOB_LAYOUTS,
  type BlobLayout,
  dataOffset,
  headerRegion,
} from "../../server/store/storage/blob-header.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { u64, utf8 } from "../support/store-helpers.js";

const LEFT = utf8("left");
const RIGHT = utf8("right");

const is = (kind: StoreErrorKind) => (err: unknown) => isStoreError(err, kind);

async function syncedStore(
  memory: MemoryStorage,
  maxValueBytes?: number,
  blobLayout?: BlobLayout,
): Promise<Metadata> {
  const store = await openMetadata(memory, {
    partition: "test",
    keyCodec: fixedKeys(8),
    ...(blobLayout === undefined ? {} : { blobLayout }),
    ...(maxValueBytes === undefined ? {} : { maxValueBytes }),
  });
  store.put(u64(1), utf8("one"));
  await store.sync();
  return store;
}

function unchanged(store: Metadata): void {
  assert.equal(store.size, 1);
  assert.deepEqual(store.get(u64(1)), utf8("one"));
  assert.deepEqual(store.committed().get(u64(1)), utf8("one"));
}

test("a key of the wrong width is refused and changes nothing", async () => {
  const store = await syncedStore(new MemoryStorage());
  for (const key of [Buffer.alloc(0), Buffer.alloc(7), Buffer.alloc(9)]) {
    assert.throws(() => store.put(key, utf8("x")), is("KeyWidth"));
  }
  assert.throws(() => store.put(Buffer.alloc(7), utf8("x")), /key width 7 bytes != 8/);
  unchanged(store);
});

test("variable keys: empty and too long keys are refused", async () => {
  const store = await openMetadata(new MemoryStorage(), { partition: "v", keyCodec: variableKeys(4) });
  assert.throws(() => store.put(Buffer.alloc(0), utf8("x")), is("EmptyKey"));
  assert.throws(() => store.put(Buffer.alloc(5), utf8("x")), /key too large: 5 bytes > 4/);
  store.put(Buffer.alloc(4), utf8("x"));
  assert.equal(store.size, 1);
});

test("an oversize value is refused by put, update and upsert, and changes nothing", async () => {
  const store = await syncedStore(new MemoryStorage(), 16);
  assert.throws(() => store.put(u64(2), Buffer.alloc(17)), /value too large: 17 bytes > 16/);
  assert.throws(() => store.put(u64(1), Buffer.alloc(17)), is("ValueTooLarge"));
  assert.throws(() => store.update(u64(1), () => Buffer.alloc(17)), is("ValueTooLarge"));
  assert.throws(
    () =>
      store.update(u64(1), (v) => {
        v[0] = 0x4f; // changes the private copy only
        return Buffer.alloc(17);
      }),
    is("ValueTooLarge"),
  );
  assert.throws(() => store.upsert(u64(3), () => Buffer.alloc(17)), is("ValueTooLarge"));
  unchanged(store);
  store.put(u64(1), utf8("one")); // a value of exactly the limit or less is fine
  store.put(u64(2), Buffer.alloc(16));
  assert.equal(store.size, 2);
});

test("invalid configurations are refused", async () => {
  const memory = new MemoryStorage();
  await assert.rejects(openMetadata(memory, { partition: "a/b" }), is("InvalidPartitionName"));
  await assert.rejects(openMetadata(memory, { partition: "" }), is("InvalidPartitionName"));
  await assert.rejects(openMetadata(memory, { partition: "p", maxValueBytes: 2 ** 32 }), is("InvalidConfig"));
  assert.throws(() => fixedKeys(0), is("InvalidConfig"));
  assert.throws(() => parseKeyCodec("fixed:x"), is("InvalidConfig"));
  assert.deepEqual(parseKeyCodec("fixed:8"), fixedKeys(8));
  assert.deepEqual(parseKeyCodec("variable"), variableKeys());
  assert.deepEqual(await memory.listPartitions(), []);
});

/** A body with a valid CRC: version 5, then `entries` raw. */
function bodyWithValidCrc(entries: Buffer): Buffer {
  const body = Buffer.alloc(8 + entries.length + 4);
  body.writeBigUInt64BE(5n, 0);
  entries.copy(body, 8);
  body.writeUInt32BE(crc32c(body.subarray(0, 8 + entries.length)), 8 + entries.length);
  return Buffer.concat([Buffer.from("4357494300000000", "hex"), body]);
}

test("a body with a valid CRC that does not decode fails the open and is left untouched", async () => {
  const cases: [string, Buffer][] = [
    ["key runs into the CRC", Buffer.from("000000000000", "hex")],
    ["value runs into the CRC", Buffer.concat([u64(1), Buffer.from([0x05, 0x41])])],
    ["non-canonical varint", Buffer.concat([u64(1), Buffer.from([0x80, 0x00])])],
    ["keys out of order", Buffer.concat([u64(2), Buffer.from([0x00]), u64(1), Buffer.from([0x00])])],
    ["duplicate keys", Buffer.concat([u64(1), Buffer.from([0x00]), u64(1), Buffer.from([0x00])])],
  ];
  for (const [what, entries] of cases) {
    const memory = new MemoryStorage();
    const store = await syncedStore(memory);
    await store.sync(); // left v2, right v1
    await store.close();
    const bad = bodyWithValidCrc(entries);
    memory.setFileBytes("test", LEFT, bad);
    const right = memory.fileBytes("test", RIGHT);
    await assert.rejects(
      openMetadata(memory, { partition: "test", keyCodec: fixedKeys(8) }),
      (err: unknown) =>
        isStoreError(err, "Corrupt") && /corrupt body in test\/left/.test((err as Error).message),
      what,
    );
    const hex = (b: Uint8Array | undefined) => Buffer.from(b ?? []).toString("hex");
    assert.equal(hex(memory.fileBytes("test", LEFT)), hex(bad), `${what}: left untouched`);
    assert.equal(hex(memory.fileBytes("test", RIGHT)), hex(right), `${what}: right untouched`);
  }
});

test("a damaged header fails the open with a typed error and modifies nothing", async () => {
  const memory = new MemoryStorage();
  const store = await syncedStore(memory);
  await store.close();
  const right = Buffer.from(memory.fileBytes("test", RIGHT) ?? []);
  const damaged = Buffer.from(right);
  damaged[0] = 0x00;
  memory.setFileBytes("test", RIGHT, damaged);
  await assert.rejects(openMetadata(memory, { partition: "test", keyCodec: fixedKeys(8) }), /invalid magic/);
  assert.deepEqual(Buffer.from(memory.fileBytes("test", RIGHT) ?? []), damaged);
});

test("corrupt or truncated files fall back to the other blob, losing nothing synced", async () => {
  for (const layout of BLOB_LAYOUTS) {
    const header = dataOffset(layout);
    for (const damage of ["flip a value byte", "cut the CRC", "cut below the header", "cut to the header"]) {
      const what = `${layout}: ${damage}`;
      const memory = new MemoryStorage();
      const store = await syncedStore(memory, undefined, layout); // right v1 {1: one}
      store.put(u64(2), utf8("two"));
      await store.sync(); // left v2 {1: one, 2: two}
      await store.close();
      const left = Buffer.from(memory.fileBytes("test", LEFT) ?? []);
      const flip = header + 12;
      const damaged =
        damage === "flip a value byte"
          ? Buffer.concat([
              left.subarray(0, flip),
              Buffer.from([(left[flip] as number) ^ 1]),
              left.subarray(flip + 1),
            ])
          : damage === "cut the CRC"
            ? left.subarray(0, left.length - 2)
            : damage === "cut below the header"
              ? left.subarray(0, 5)
              : left.subarray(0, header);
      memory.setFileBytes("test", LEFT, damaged);
      const reopened = await openMetadata(memory, { partition: "test", keyCodec: fixedKeys(8) });
      assert.deepEqual(reopened.get(u64(1)), utf8("one"), what);
      assert.equal(reopened.get(u64(2)), undefined, what);
      // The damaged blob was cut to a bare header of its layout; the next sync rewrites it.
      assert.deepEqual(
        Buffer.from(memory.fileBytes("test", LEFT) ?? []),
        Buffer.from(headerRegion(layout)),
        what,
      );
      assert.equal(reopened.blobLayout, layout, what);
      reopened.put(u64(3), utf8("three"));
      assert.equal(await reopened.sync(), 2n);
    }
  }
});

test("varints: canonical encodings only", () => {
  for (const n of [0, 5, 127, 128, 300, 16383, 16384, 2097152, 268435455, 268435456, 4294967295]) {
    const out = Buffer.alloc(5);
    const end = writeVarint(out, 0, n);
    assert.deepEqual(readVarint(out, 0, end), { value: n, next: end });
  }
  assert.deepEqual(
    Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f]),
    (() => {
      const out = Buffer.alloc(5);
      writeVarint(out, 0, 4294967295);
      return out;
    })(),
  );
  for (const bad of [
    [0x80, 0x00],
    [0xff, 0xff, 0xff, 0xff, 0x10],
    [0x80],
    [0xff, 0xff, 0xff, 0xff, 0x8f, 0x01],
  ]) {
    assert.throws(() => readVarint(Buffer.from(bad), 0, bad.length), is("Corrupt"), JSON.stringify(bad));
  }
});
