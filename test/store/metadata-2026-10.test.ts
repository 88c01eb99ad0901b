/**
 * The reference tests of commonware-storage 2026.10.0 `metadata` that are new since 2026.4.0 or
 * whose figures changed, ported with their figures. The store is configured as that release
 * writes by default: V1 blobs and its sync rules (`noChangeSync: "skip"`: a sync with nothing to
 * write writes nothing; an overwrite of a body of at most 4096 bytes is one whole write).
 *
 * Not ported: the `start_sync` tests (pipelined syncs that consume the store; this store orders
 * its syncs itself and handles a failed one as docs/FORMAT.md §11.3 says) and
 * `test_io_options_and_durability` (the runtime's write options, which have no equivalent here).
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Registry } from "prom-client";
import { fixedKeys } from "../../server/store/codec.js";
import { StoreError } from "../../server/store/errors.js";
import { type Metadata, openMetadata } from "../../server/store/metadata.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { MeteredStorage } from "../../server/store/storage/metered.js";
import {
  type OpenedBlob,
  type OpenOptions,
  type Storage,
  StorageWrapper,
} from "../../server/store/storage/storage.js";
import { metricValue, syncCounters, u64, utf8 } from "../support/store-helpers.js";

const LEFT = utf8("left");

function init(storage: Storage, registry?: Registry, partition = "test"): Promise<Metadata> {
  return openMetadata(storage, {
    partition,
    keyCodec: fixedKeys(8),
    ...(registry === undefined ? {} : { registry }),
  });
}

function writeBytes(registry: Registry): Promise<number> {
  return metricValue(registry, "metadata_storage_write_bytes_total");
}

test("the defaults are those of 2026.10.0: V1 blobs, no-change syncs skipped", async () => {
  const memory = new MemoryStorage();
  const metadata = await init(memory);
  assert.equal(metadata.blobLayout, "v1");
  assert.equal(metadata.noChangeSync, "skip");
  assert.equal(
    Buffer.from(memory.fileBytes("test", LEFT) ?? [])
      .subarray(0, 4)
      .toString(),
    "CWIK",
  );
  await metadata.close();
});

test("test_delta_writes", async () => {
  const registry = new Registry();
  const metadata = await init(new MeteredStorage(new MemoryStorage(), registry), registry);

  for (let i = 0; i < 100; i++) metadata.put(u64(i), Buffer.alloc(100, i));

  // 100 keys * (8 key + 1 length + 100 value) + 8 version + 4 checksum
  await metadata.sync();
  assert.deepEqual(await syncCounters(registry), [1, 0]);
  assert.equal(await writeBytes(registry), 10912);

  metadata.put(u64(51), Buffer.alloc(100, 0xff));
  await metadata.sync();
  assert.deepEqual(await syncCounters(registry), [2, 0]);
  assert.equal(await writeBytes(registry), 21824);

  // Only the diff: 1 length + 100 value + 8 version + 4 checksum
  await metadata.sync();
  assert.deepEqual(await syncCounters(registry), [2, 1]);
  assert.equal(await writeBytes(registry), 21937);

  // Both blobs already hold the latest state: nothing is written.
  await metadata.sync();
  assert.deepEqual(await syncCounters(registry), [2, 1]);
  assert.equal(await writeBytes(registry), 21937);

  // Removing a key rewrites: 99 * 109 + 12
  metadata.remove(u64(51));
  await metadata.sync();
  assert.deepEqual(await syncCounters(registry), [3, 1]);
  assert.equal(await writeBytes(registry), 32740);

  await metadata.sync();
  assert.deepEqual(await syncCounters(registry), [4, 1]);
  assert.equal(await writeBytes(registry), 43543);

  // In place: 1 + 100 + 8 + 4
  metadata.put(u64(50), Buffer.alloc(100, 0xff));
  await metadata.sync();
  assert.deepEqual(await syncCounters(registry), [4, 2]);
  assert.equal(await writeBytes(registry), 43656);

  await metadata.destroy();
});

test("test_sync_with_no_changes", async () => {
  const memory = new MemoryStorage();
  const registry = new Registry();
  let metadata = await init(memory, registry);

  metadata.put(u64(1), utf8("hello"));
  assert.equal(await metadata.sync(), 1n);

  // Still a rewrite: only one blob has the new key order.
  assert.equal(await metadata.sync(), 2n);
  assert.deepEqual(await syncCounters(registry), [2, 0]);

  // Both blobs hold the latest state: nothing is written, the version stays.
  const files = () => [LEFT, utf8("right")].map((n) => Buffer.from(memory.fileBytes("test", n) ?? []));
  const before = files();
  assert.equal(await metadata.sync(), 2n);
  assert.deepEqual(await syncCounters(registry), [2, 0]);
  assert.equal(await metadata.sync(), 2n);
  assert.deepEqual(await syncCounters(registry), [2, 0]);
  assert.deepEqual(files(), before);

  // The no-op left a durable state.
  await metadata.close();
  metadata = await init(memory);
  assert.deepEqual(metadata.get(u64(1)), utf8("hello"));
  await metadata.destroy();
});

test("test_multi_key_overwrites", async () => {
  const memory = new MemoryStorage();
  const registry = new Registry();
  let metadata = await init(new MeteredStorage(memory, registry), registry);

  for (let i = 0; i < 100; i++) metadata.put(u64(i), Buffer.alloc(100, i));
  await metadata.sync();
  await metadata.sync();
  assert.deepEqual(await syncCounters(registry), [2, 0]);
  assert.equal(await writeBytes(registry), 21824);

  for (const i of [10, 11, 12, 50, 98, 99]) metadata.put(u64(i), Buffer.alloc(100, 0xaa));

  // One delta per modified value: 6 * (1 length + 100 value) + 8 version + 4 checksum
  await metadata.sync();
  assert.deepEqual(await syncCounters(registry), [2, 1]);
  assert.equal(await writeBytes(registry), 22442);

  // The same deltas reach the other blob.
  await metadata.sync();
  assert.deepEqual(await syncCounters(registry), [2, 2]);
  assert.equal(await writeBytes(registry), 23060);

  // Both blobs already hold the latest state.
  await metadata.sync();
  assert.deepEqual(await syncCounters(registry), [2, 2]);
  assert.equal(await writeBytes(registry), 23060);

  // A same-size update beside a size-changing one: the size change forces rewrites, which must
  // discard the partial in-place update of the first.
  metadata.put(u64(20), Buffer.alloc(100, 0xbb));
  metadata.put(u64(30), Buffer.alloc(150, 0xcc));
  await metadata.sync();
  await metadata.sync();
  assert.deepEqual(await syncCounters(registry), [4, 2]);

  await metadata.close();
  metadata = await init(memory);
  for (let i = 0; i < 100; i++) {
    const expected = [10, 11, 12, 50, 98, 99].includes(i)
      ? Buffer.alloc(100, 0xaa)
      : i === 20
        ? Buffer.alloc(100, 0xbb)
        : i === 30
          ? Buffer.alloc(150, 0xcc)
          : Buffer.alloc(100, i);
    assert.deepEqual(Buffer.from(metadata.get(u64(i)) ?? []), expected, `key ${i}`);
  }
  await metadata.destroy();
});

/** Length of the value that makes a one-key store encode to `storeBytes`: 8 + 8 + 2 + value + 4. */
function singleKeyValueLength(storeBytes: number): number {
  return storeBytes - 8 - 8 - 2 - 4;
}

/** A one-key store with both blobs populated, so an equal-size update overwrites in place. */
async function initSingleKey(storage: Storage, registry: Registry, valueLength: number): Promise<Metadata> {
  const metadata = await init(storage, registry);
  metadata.put(u64(1), Buffer.alloc(valueLength, 1));
  await metadata.sync();
  await metadata.sync();
  return metadata;
}

for (const storeBytes of [4096, 4097]) {
  test(`test_full_overwrite_limit (${storeBytes} bytes)`, async () => {
    const valueLength = singleKeyValueLength(storeBytes);
    const memory = new MemoryStorage();
    const registry = new Registry();
    const metered = new MeteredStorage(memory, registry);
    let metadata = await initSingleKey(metered, registry, valueLength);
    const writesBefore = metered.totals.writes;

    metadata.put(u64(1), Buffer.alloc(valueLength, 2));
    await metadata.sync();
    // A store of one page is written whole; a larger one as value, version and checksum.
    assert.equal(metered.totals.writes - writesBefore, storeBytes > 4096 ? 3 : 1);
    assert.deepEqual(await syncCounters(registry), [2, 1]);

    await metadata.close();
    // The store encodes to exactly `storeBytes` bytes after the 4096-byte header.
    assert.equal(memory.fileBytes("test", LEFT)?.length, 4096 + storeBytes);
    metadata = await init(memory);
    assert.deepEqual(Buffer.from(metadata.get(u64(1)) ?? []), Buffer.alloc(valueLength, 2));
    await metadata.close();
  });

  test(`test_overwrite_survives_crash (${storeBytes} bytes)`, async () => {
    const valueLength = singleKeyValueLength(storeBytes);
    const memory = new MemoryStorage();
    const metadata = await initSingleKey(memory, new Registry(), valueLength);
    metadata.put(u64(1), Buffer.alloc(valueLength, 2));
    await metadata.sync();
    memory.crash();
    const reopened = await init(memory);
    assert.deepEqual(Buffer.from(reopened.get(u64(1)) ?? []), Buffer.alloc(valueLength, 2));
    await reopened.close();
  });
}

test("test_bytes_values_reload", async () => {
  const memory = new MemoryStorage();
  let metadata = await init(memory);
  metadata.put(u64(1), Buffer.alloc(8, 1));
  metadata.put(u64(2), Buffer.alloc(8, 2));
  await metadata.sync();
  await metadata.close();

  // Reload, then overwrite an equal-size value twice to exercise both copies.
  metadata = await init(memory);
  const first = metadata.get(u64(1));
  assert.deepEqual(Buffer.from(first ?? []), Buffer.alloc(8, 1));
  assert.deepEqual(Buffer.from(metadata.get(u64(2)) ?? []), Buffer.alloc(8, 2));
  metadata.put(u64(1), Buffer.alloc(8, 3));
  await metadata.sync();
  metadata.put(u64(1), Buffer.alloc(8, 4));
  await metadata.sync();
  // A value read before the overwrites stays as it was.
  assert.deepEqual(Buffer.from(first ?? []), Buffer.alloc(8, 1));

  // A longer value rewrites the blob.
  metadata.put(u64(2), Buffer.alloc(16, 5));
  await metadata.sync();
  await metadata.close();

  metadata = await init(memory);
  assert.deepEqual(Buffer.from(metadata.get(u64(1)) ?? []), Buffer.alloc(8, 4));
  assert.deepEqual(Buffer.from(metadata.get(u64(2)) ?? []), Buffer.alloc(16, 5));
  await metadata.destroy();
});

test("test_recovered_buffer_supports_shrinking_rewrite", async () => {
  const memory = new MemoryStorage();
  let metadata = await init(memory);
  metadata.put(u64(42), utf8("hello"));
  await metadata.sync();
  metadata.put(u64(42), utf8("world"));
  metadata.put(u64(43), utf8("foo"));
  await metadata.sync();
  await metadata.close();

  // Corrupt the newer copy so that the next open must repair it.
  const { blob } = await memory.open("test", LEFT);
  await blob.write(0, utf8("corrupted"));
  await blob.sync();
  await blob.close();

  // The repaired copy must take a shrinking rewrite: a stale tail would poison the next open.
  metadata = await init(memory);
  assert.deepEqual(metadata.get(u64(42)), utf8("hello"));
  metadata.clear();
  await metadata.sync();
  await metadata.close();

  metadata = await init(memory);
  assert.equal(metadata.get(u64(42)), undefined);
  await metadata.destroy();
});

/** Fails the second blob removal, as a destroy interrupted between its two removals. */
class FailSecondRemoval extends StorageWrapper {
  removals = 0;

  open(partition: string, name: Uint8Array, options?: OpenOptions): Promise<OpenedBlob> {
    return this.inner.open(partition, name, options);
  }

  override async remove(partition: string, name?: Uint8Array): Promise<void> {
    if (name !== undefined && ++this.removals === 2)
      throw new StoreError("Io", "i/o error: injected remove failure");
    return this.inner.remove(partition, name);
  }
}

test("test_interrupted_destroy_keeps_newest_generation", async () => {
  for (const generations of [2, 3]) {
    const memory = new MemoryStorage();
    const storage = new FailSecondRemoval(memory);
    const metadata = await init(storage);
    for (let generation = 1; generation <= generations; generation++) {
      metadata.put(u64(0), u64(generation));
      await metadata.sync();
    }
    await assert.rejects(metadata.destroy(), /injected remove failure/);
    assert.equal((await memory.scan("test")).length, 1, "one copy left");

    // The older copy went first: a reopen finds the newest generation.
    const reopened = await init(memory);
    assert.deepEqual(reopened.get(u64(0)), u64(generations), `${generations} generations`);
    await reopened.close();
  }
});
