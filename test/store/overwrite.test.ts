/**
 * Overwrite syncs on a store large enough that both ways of fixing the CRC run: patching it per
 * changed value (few changes in a large body) and hashing the patched body once (many changes).
 * After every sync the blobs are reopened from the durable bytes (which checks the CRC and
 * decodes every entry) and compared with a model, and the counters prove the sync overwrote.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Registry } from "prom-client";
import { fixedKeys } from "../../server/store/codec.js";
import { BLOB_NAMES, type Metadata, openMetadata } from "../../server/store/metadata.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { Rng } from "../support/rng.js";
import { syncCounters, u64 } from "../support/store-helpers.js";

const KEYS = 2_000;
const VALUE_BYTES = 100;

function open(storage: MemoryStorage, registry: Registry): Promise<Metadata> {
  return openMetadata(storage, { partition: "test", keyCodec: fixedKeys(8), registry });
}

/** Opens a copy of both blobs as synced, so the store under test keeps its own handles. */
async function assertReopensAs(storage: MemoryStorage, model: Map<number, Buffer>): Promise<void> {
  const copy = new MemoryStorage();
  for (const name of BLOB_NAMES) {
    const bytes = storage.fileBytes("test", name);
    assert.ok(bytes !== undefined);
    copy.setFileBytes("test", name, bytes);
  }
  const reopened = await open(copy, new Registry());
  assert.equal(reopened.size, model.size);
  for (const [key, value] of model) assert.deepEqual(reopened.get(u64(key)), value, `key ${key}`);
  await reopened.close();
}

test("overwrites of 1 to all values keep a valid CRC and the right bytes", async () => {
  const rng = new Rng(7);
  const storage = new MemoryStorage();
  let registry = new Registry();
  let store = await open(storage, registry);
  const model = new Map<number, Buffer>();
  for (let key = 0; key < KEYS; key++) {
    const value = rng.bytes(VALUE_BYTES);
    store.put(u64(key), value);
    model.set(key, value);
  }
  // Two rewrites (one per blob) after the key set changed, then only overwrites.
  await store.sync();
  await store.sync();
  await store.close();
  registry = new Registry();
  store = await open(storage, registry);
  await store.sync();
  await store.sync();
  assert.deepEqual(await syncCounters(registry), [2, 0]);

  let overwrites = 0;
  for (const changed of [1, 3, 1, 40, 150, KEYS, 2, KEYS, 1]) {
    for (let i = 0; i < changed; i++) {
      const key = changed === KEYS ? i : rng.int(KEYS);
      const value = rng.bytes(VALUE_BYTES);
      store.put(u64(key), value);
      model.set(key, value);
    }
    await store.sync();
    overwrites++;
    assert.deepEqual(await syncCounters(registry), [2, overwrites], `after changing ${changed}`);
    await assertReopensAs(storage, model);
  }
  await store.close();
});
