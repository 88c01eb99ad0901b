/**
 * The reference test-suite of commonware-storage 2026.4.0 `metadata`, ported test by test with
 * its figures (sync counters, keys gauge, storage write bytes). Keys are U64 (`fixedKeys(8)`),
 * values byte strings. Reference names are kept so the suites diff by eye. The suite runs on any
 * backend given as a `ReferenceBackend`: memory (test/store/metadata.test.ts) and etcd
 * (test/store/storage/etcd.test.ts).
 *
 * Where the reference labels a reopened instance "second", "third", this port reads the same
 * partition label: the counters of a partition restart at zero at each open, as per instance.
 *
 * The store is configured as that release writes: V0 blobs, no-change syncs bump the version.
 * The tests added or changed by 2026.10.0 are in metadata-2026-10.test.ts.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Registry } from "prom-client";
import { fixedKeys, MAX_VALUE_BYTES } from "../../server/store/codec.js";
import { isStoreError } from "../../server/store/errors.js";
import { type Metadata, openMetadata } from "../../server/store/metadata.js";
import { MeteredStorage } from "../../server/store/storage/metered.js";
import type { Storage } from "../../server/store/storage/storage.js";
import { Rng } from "../support/rng.js";
import { AuditedStorage, metricValue, syncCounters, u64, utf8 } from "../support/store-helpers.js";

/** What the reference suite needs of a backend besides the Storage interface. */
export interface ReferenceBackend {
  /** A fresh, empty storage. */
  create(): Promise<Storage>;
  /** Models a crash of `storage`: what it did not sync is lost. Returns the storage to reopen. */
  crash(storage: Storage): Promise<Storage>;
  /** Physical length of a blob (header included), or undefined when missing. */
  fileLength(storage: Storage, partition: string, name: Uint8Array): Promise<number | undefined>;
}

/** Registers every reference test, on storages made by `backend`. */
export function referenceSuite(backend: ReferenceBackend): void {
  const LEFT = utf8("left");
  const RIGHT = utf8("right");

  function init(storage: Storage, registry: Registry, partition = "test"): Promise<Metadata> {
    return openMetadata(storage, { partition, keyCodec: fixedKeys(8), registry, blobLayout: "v0" });
  }

  async function keysGauge(registry: Registry): Promise<number> {
    return metricValue(registry, "metadata_keys");
  }

  test("test_put_get_clear", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    let metadata = await init(storage, registry);

    const key = u64(42);
    assert.equal(metadata.get(key), undefined);
    assert.deepEqual(await syncCounters(registry), [0, 0]);
    assert.equal(await keysGauge(registry), 0);

    const hello = utf8("hello");
    metadata.put(key, hello);
    assert.deepEqual(metadata.get(key), hello);
    assert.deepEqual(await syncCounters(registry), [0, 0]);
    assert.equal(await keysGauge(registry), 1);

    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [1, 0]);
    assert.equal(await keysGauge(registry), 1);

    await metadata.close();
    metadata = await init(storage, registry);
    assert.deepEqual(await syncCounters(registry), [0, 0]);
    assert.equal(await keysGauge(registry), 1);
    assert.deepEqual(metadata.get(key), hello);

    metadata.clear();
    assert.equal(metadata.get(key), undefined);
    assert.deepEqual(await syncCounters(registry), [0, 0]);
    assert.equal(await keysGauge(registry), 0);

    await metadata.destroy();
  });

  test("test_put_returns_previous_value", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    let metadata = await init(storage, registry);
    const key = u64(42);

    assert.equal(metadata.put(key, utf8("first")), undefined);
    assert.deepEqual(metadata.put(key, utf8("second")), utf8("first"));
    assert.deepEqual(metadata.put(key, utf8("third")), utf8("second"));
    assert.deepEqual(metadata.get(key), utf8("third"));
    assert.equal(metadata.put(u64(99), utf8("other")), undefined);

    await metadata.sync();
    await metadata.close();
    metadata = await init(storage, registry);
    assert.deepEqual(metadata.put(key, utf8("fourth")), utf8("third"));

    await metadata.destroy();
  });

  test("test_multi_sync", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    let metadata = await init(storage, registry);

    const key = u64(42);
    const hello = utf8("hello");
    metadata.put(key, hello);
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [1, 0]);
    assert.equal(await keysGauge(registry), 1);

    const world = utf8("world");
    metadata.put(key, world);
    const key2 = u64(43);
    const foo = utf8("foo");
    metadata.put(key2, foo);
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [2, 0]);
    assert.equal(await keysGauge(registry), 2);

    await metadata.close();
    metadata = await init(storage, registry);
    assert.deepEqual(await syncCounters(registry), [0, 0]);
    assert.equal(await keysGauge(registry), 2);
    assert.deepEqual(metadata.get(key), world);
    assert.deepEqual(metadata.get(key2), foo);

    metadata.remove(key);
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [1, 0]);
    assert.equal(await keysGauge(registry), 1);

    await metadata.close();
    metadata = await init(storage, registry);
    assert.deepEqual(await syncCounters(registry), [0, 0]);
    assert.equal(await keysGauge(registry), 1);
    assert.equal(metadata.get(key), undefined);
    assert.deepEqual(metadata.get(key2), foo);

    await metadata.destroy();
  });

  /** The common setup of the recovery tests: right holds v1 {42: hello}, left v2 {42: world, 43: foo}. */
  async function twoVersions(storage: Storage, registry: Registry): Promise<void> {
    const metadata = await init(storage, registry);
    metadata.put(u64(42), utf8("hello"));
    await metadata.sync();
    metadata.put(u64(42), utf8("world"));
    metadata.put(u64(43), utf8("foo"));
    await metadata.sync();
    await metadata.close();
  }

  test("test_recover_corrupted_one", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    await twoVersions(storage, registry);

    const { blob } = await storage.open("test", LEFT);
    await blob.write(0, utf8("corrupted"));
    await blob.sync();
    await blob.close();

    const metadata = await init(storage, registry);
    assert.deepEqual(metadata.get(u64(42)), utf8("hello"));
    await metadata.destroy();
  });

  test("test_recover_corrupted_both", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    await twoVersions(storage, registry);

    for (const name of [LEFT, RIGHT]) {
      const { blob } = await storage.open("test", name);
      await blob.write(0, utf8("corrupted"));
      await blob.sync();
      await blob.close();
    }

    // Deliberate difference: 2026.4.0 serves an empty store here. This port refuses to open
    // until the loss is accepted (test/store/recovery.test.ts), then behaves as the reference.
    await assert.rejects(init(storage, registry), (err: unknown) => isStoreError(err, "DataLoss"));
    const metadata = await openMetadata(storage, {
      partition: "test",
      keyCodec: fixedKeys(8),
      registry,
      blobLayout: "v0",
      acceptDataLoss: true,
      warn: () => undefined,
    });
    assert.equal(metadata.get(u64(42)), undefined);
    assert.deepEqual(await syncCounters(registry), [0, 0]);
    assert.equal(await keysGauge(registry), 0);
    await metadata.destroy();
  });

  test("test_recover_corrupted_truncate", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    await twoVersions(storage, registry);

    const { blob, length } = await storage.open("test", LEFT);
    assert.equal(length, 38);
    await blob.resize(length - 8);
    await blob.sync();
    await blob.close();

    const metadata = await init(storage, registry);
    assert.deepEqual(metadata.get(u64(42)), utf8("hello"));
    await metadata.destroy();
  });

  test("test_recover_corrupted_short", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    await twoVersions(storage, registry);

    const { blob } = await storage.open("test", LEFT);
    await blob.resize(5);
    await blob.sync();
    await blob.close();

    const metadata = await init(storage, registry);
    assert.deepEqual(metadata.get(u64(42)), utf8("hello"));
    await metadata.destroy();
  });

  test("test_unclean_shutdown", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    const key = u64(42);
    {
      const metadata = await init(storage, registry);
      metadata.put(key, utf8("hello"));
      // Dropped before any sync.
    }
    const restarted = await backend.crash(storage);

    const metadata = await init(restarted, registry);
    assert.equal(metadata.get(key), undefined);
    assert.deepEqual(await syncCounters(registry), [0, 0]);
    assert.equal(await keysGauge(registry), 0);
    await metadata.destroy();
  });

  test("test_value_too_big_error", async () => {
    // The reference accepts the value and aborts at the sync; this port refuses it at put with a
    // typed error and changes nothing.
    const storage = await backend.create();
    const registry = new Registry();
    const metadata = await init(storage, registry);
    // A view claiming 2^32 bytes without allocating them: only its length is read before refusal.
    const tooBig = new Proxy(new Uint8Array(0), {
      get: (target, property) =>
        property === "length" ? MAX_VALUE_BYTES + 1 : Reflect.get(target, property),
    });
    assert.throws(
      () => metadata.put(u64(1), tooBig),
      (err: unknown) =>
        isStoreError(err, "ValueTooLarge") && /4294967296 bytes > 4294967295/.test(err.message),
    );
    assert.equal(metadata.get(u64(1)), undefined);
    assert.equal(metadata.size, 0);
    await metadata.sync();
    await metadata.destroy();
  });

  test("test_delta_writes", async () => {
    const registry = new Registry();
    const storage = new MeteredStorage(await backend.create(), registry);
    const metadata = await init(storage, registry);
    const writeBytes = () => metricValue(registry, "metadata_storage_write_bytes_total");

    for (let i = 0; i < 100; i++) metadata.put(u64(i), Buffer.alloc(100, i));

    // 100 keys * (8 key + 1 length + 100 value) + 8 version + 4 checksum
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [1, 0]);
    assert.equal(await writeBytes(), 10912);

    // Modify one key; the second blob is still written in full.
    metadata.put(u64(51), Buffer.alloc(100, 0xff));
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [2, 0]);
    assert.equal(await writeBytes(), 21824);

    // Only the diff: 1 length + 100 value + 8 version + 4 checksum
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [2, 1]);
    assert.equal(await writeBytes(), 21937);

    // Nothing changed for this blob: 8 version + 4 checksum
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [2, 2]);
    assert.equal(await writeBytes(), 21949);

    // Removing a key rewrites: 99 * 109 + 12
    metadata.remove(u64(51));
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [3, 2]);
    assert.equal(await writeBytes(), 32752);

    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [4, 2]);
    assert.equal(await writeBytes(), 43555);

    // In place again: 1 + 100 + 8 + 4
    metadata.put(u64(50), Buffer.alloc(100, 0xff));
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [4, 3]);
    assert.equal(await writeBytes(), 43668);

    await metadata.destroy();
  });

  test("test_sync_with_no_changes", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    const metadata = await init(storage, registry);

    metadata.put(u64(1), utf8("hello"));
    await metadata.sync();

    // Rewrite: the key order changed recently (at open).
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [2, 0]);

    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [2, 1]);

    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [2, 2]);

    await metadata.destroy();
  });

  test("test_get_mut_marks_modified", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    let metadata = await init(storage, registry);

    metadata.put(u64(1), utf8("hello"));
    await metadata.sync();
    await metadata.sync();

    assert.equal(
      metadata.update(u64(1), (value) => {
        value[0] = "H".charCodeAt(0);
        return undefined;
      }),
      true,
    );

    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [2, 1]);

    await metadata.close();
    metadata = await init(storage, registry);
    assert.equal(metadata.get(u64(1))?.[0], "H".charCodeAt(0));
    await metadata.destroy();
  });

  test("test_mixed_operation_sequences", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    let metadata = await init(storage, registry);
    const key = u64(1);

    metadata.put(key, utf8("first"));
    metadata.remove(key);
    metadata.put(key, utf8("second"));
    await metadata.sync();
    assert.deepEqual(metadata.get(key), utf8("second"));

    metadata.put(key, utf8("third"));
    metadata.update(key, (value) => {
      value[0] = "T".charCodeAt(0);
      return undefined;
    });
    metadata.remove(key);
    metadata.put(key, utf8("fourth"));
    await metadata.sync();
    assert.deepEqual(metadata.get(key), utf8("fourth"));

    await metadata.close();
    metadata = await init(storage, registry);
    assert.deepEqual(metadata.get(key), utf8("fourth"));
    await metadata.destroy();
  });

  test("test_overwrite_vs_rewrite", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    const metadata = await init(storage, registry);

    metadata.put(u64(1), Buffer.alloc(10, 1));
    metadata.put(u64(2), Buffer.alloc(10, 2));
    await metadata.sync();

    // Same size before both blobs are populated: rewrite.
    metadata.put(u64(1), Buffer.alloc(10, 0xff));
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [2, 0]);

    // Key order stable: overwrite.
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [2, 1]);

    metadata.put(u64(1), Buffer.alloc(10, 0xaa));
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [2, 2]);

    // Different size: rewrite.
    metadata.put(u64(1), Buffer.alloc(20, 0xff));
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [3, 2]);

    // New key: rewrite.
    metadata.put(u64(3), Buffer.alloc(10, 3));
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [4, 2]);

    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [5, 2]);

    metadata.put(u64(2), Buffer.alloc(10, 0xaa));
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [5, 3]);

    await metadata.destroy();
  });

  test("test_blob_resize", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    let metadata = await init(storage, registry);

    for (let i = 0; i < 10; i++) metadata.put(u64(i), Buffer.alloc(100, i));
    await metadata.sync();
    await metadata.sync();
    assert.deepEqual(await syncCounters(registry), [2, 0]);
    assert.equal(await backend.fileLength(storage, "test", RIGHT), 8 + 1102);

    for (let i = 1; i < 10; i++) metadata.remove(u64(i));
    await metadata.sync();
    const value = metadata.get(u64(0));
    assert.equal(value?.length, 100);
    assert.equal(value?.[0], 0);
    assert.deepEqual(await syncCounters(registry), [3, 0]);
    // Right was cut from 1102 to 121 body bytes.
    assert.equal(await backend.fileLength(storage, "test", RIGHT), 129);

    await metadata.close();
    metadata = await init(storage, registry);
    const reopened = metadata.get(u64(0));
    assert.equal(reopened?.length, 100);
    assert.equal(reopened?.[0], 0);
    for (let i = 1; i < 10; i++) assert.equal(metadata.get(u64(i)), undefined);
    await metadata.destroy();
  });

  test("test_clear_and_repopulate", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    let metadata = await init(storage, registry);

    metadata.put(u64(1), utf8("first"));
    metadata.put(u64(2), utf8("second"));
    await metadata.sync();

    metadata.clear();
    await metadata.sync();
    assert.equal(metadata.get(u64(1)), undefined);
    assert.equal(metadata.get(u64(2)), undefined);
    assert.equal(await backend.fileLength(storage, "test", LEFT), 8 + 12);

    await metadata.close();
    metadata = await init(storage, registry);
    assert.equal(metadata.get(u64(1)), undefined);
    assert.equal(metadata.get(u64(2)), undefined);

    metadata.put(u64(3), utf8("third"));
    metadata.put(u64(4), utf8("fourth"));
    await metadata.sync();
    assert.deepEqual(metadata.get(u64(3)), utf8("third"));
    assert.deepEqual(metadata.get(u64(4)), utf8("fourth"));
    assert.equal(metadata.get(u64(1)), undefined);
    assert.equal(metadata.get(u64(2)), undefined);
    assert.equal(await backend.fileLength(storage, "test", RIGHT), 8 + 41);

    await metadata.destroy();
  });

  async function operationsAndRestart(numOperations: number): Promise<string> {
    const rng = new Rng(0);
    const storage = new AuditedStorage(await backend.create());
    const registry = new Registry();
    const metadata = await openMetadata(storage, {
      partition: "test-determinism",
      keyCodec: fixedKeys(8),
      registry,
    });
    for (let i = 0; i < numOperations; i++) {
      metadata.put(u64(i), rng.bytes(64));
      if (rng.chance(0.1)) await metadata.sync();
      if (rng.chance(0.1)) metadata.put(u64(rng.int(i + 1)), rng.bytes(64));
      if (rng.chance(0.1)) metadata.remove(u64(rng.int(i + 1)));
      if (rng.chance(0.1)) {
        metadata.update(u64(rng.int(i + 1)), (value) => {
          if (value.length > 0) value[0] = ((value[0] as number) + 1) & 0xff;
          return undefined;
        });
      }
    }
    await metadata.sync();
    await metadata.destroy();
    return storage.state();
  }

  test("test_determinism", async () => {
    const first = await operationsAndRestart(1_000);
    const second = await operationsAndRestart(1_000);
    assert.equal(first, second);
  });

  test("test_keys_iterator", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    const metadata = await init(storage, registry);

    for (const [k, v] of [
      [0x1000, "value1"],
      [0x1001, "value2"],
      [0x1002, "value3"],
      [0x2000, "value4"],
      [0x2001, "value5"],
      [0x3000, "value6"],
    ] as const) {
      metadata.put(u64(k), utf8(v));
    }

    const all = [...metadata.keys()];
    assert.equal(all.length, 6);
    assert.ok(all.some((k) => k.equals(u64(0x1000))));
    assert.ok(all.some((k) => k.equals(u64(0x3000))));

    const withPrefix = (hex: string) =>
      [...metadata.keys()].filter((k) => k.subarray(0, 7).equals(Buffer.from(hex, "hex")));
    const p10 = withPrefix("00000000000010");
    assert.equal(p10.length, 3);
    assert.ok(p10.some((k) => k.equals(u64(0x1000))));
    assert.ok(p10.some((k) => k.equals(u64(0x1001))));
    assert.ok(p10.some((k) => k.equals(u64(0x1002))));
    assert.ok(!p10.some((k) => k.equals(u64(0x2000))));

    const p20 = withPrefix("00000000000020");
    assert.equal(p20.length, 2);
    assert.ok(p20.some((k) => k.equals(u64(0x2000))));
    assert.ok(p20.some((k) => k.equals(u64(0x2001))));

    assert.equal(withPrefix("00000000000040").length, 0);

    // The store's own prefix iteration gives the same answers, in order.
    assert.deepEqual(
      [...metadata.keys({ prefix: Buffer.from("00000000000010", "hex") })],
      [u64(0x1000), u64(0x1001), u64(0x1002)],
    );
    assert.deepEqual([...metadata.keys({ prefix: Buffer.from("00000000000040", "hex") })], []);

    await metadata.destroy();
  });

  test("test_retain", async () => {
    const storage = await backend.create();
    const registry = new Registry();
    let metadata = await init(storage, registry);

    for (const [k, v] of [
      [0x1000, "value1"],
      [0x1001, "value2"],
      [0x1002, "value3"],
      [0x2000, "value4"],
      [0x2001, "value5"],
      [0x3000, "value6"],
    ] as const) {
      metadata.put(u64(k), utf8(v));
    }
    assert.equal(await keysGauge(registry), 6);

    const prefix10 = Buffer.from("00000000000010", "hex");
    metadata.retain((k) => !k.subarray(0, 7).equals(prefix10));
    assert.equal(await keysGauge(registry), 3);

    assert.equal(metadata.get(u64(0x1000)), undefined);
    assert.equal(metadata.get(u64(0x1001)), undefined);
    assert.equal(metadata.get(u64(0x1002)), undefined);
    assert.notEqual(metadata.get(u64(0x2000)), undefined);
    assert.notEqual(metadata.get(u64(0x2001)), undefined);
    assert.notEqual(metadata.get(u64(0x3000)), undefined);

    await metadata.sync();
    await metadata.close();
    metadata = await init(storage, registry);
    assert.equal(metadata.get(u64(0x1000)), undefined);
    assert.notEqual(metadata.get(u64(0x2000)), undefined);
    assert.equal([...metadata.keys()].length, 3);
    assert.equal(await keysGauge(registry), 3);

    const prefix40 = Buffer.from("00000000000040", "hex");
    metadata.retain((k) => !k.subarray(0, 7).equals(prefix40));
    metadata.retain(() => false);
    assert.equal([...metadata.keys()].length, 0);
    assert.equal(await keysGauge(registry), 0);

    await metadata.destroy();
  });
  // Not a reference test: the crate's put_sync and upsert_sync, as this port's API.
  test("put_sync and upsert_sync are durable when they resolve", async () => {
    const storage = await backend.create();
    const store = await init(storage, new Registry());
    // upsert_sync changes a present value in place and inserts change(empty) for an absent key.
    store.put(u64(1), utf8("one"));
    await store.upsertSync(u64(1), (value) => Buffer.concat([value, utf8("!")]));
    await store.upsertSync(u64(2), (value) => Buffer.concat([value, utf8("new")]));
    // put_sync answers the previous value; its write is the last one synced before the crash.
    assert.equal(await store.putSync(u64(4), utf8("four")), undefined);
    assert.deepEqual(Buffer.from((await store.putSync(u64(4), utf8("vier"))) ?? []), utf8("four"));
    store.put(u64(3), utf8("never synced"));
    const restarted = await backend.crash(storage);

    const reopened = await init(restarted, new Registry());
    assert.deepEqual(
      [...reopened.entries()].map(([k, v]) => [k.readBigUInt64BE(0), Buffer.from(v).toString()]),
      [
        [1n, "one!"],
        [2n, "new"],
        [4n, "vier"],
      ],
    );
    await reopened.destroy();
  });
}
