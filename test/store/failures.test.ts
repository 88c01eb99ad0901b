/**
 * I/O failures inside a sync (docs/FORMAT.md §11). Each hazard of the reference gets a test that
 * fails on the reference behaviour (prologue effects kept after a failed sync) and passes with
 * the handling of §11.3: the failed target is cut to empty, the cursor goes back, the next sync
 * rewrites the target, and a failed version never surfaces.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { fixedKeys } from "../../server/store/codec.js";
import { isStoreError } from "../../server/store/errors.js";
import { type Metadata, openMetadata } from "../../server/store/metadata.js";
import { FaultyStorage } from "../../server/store/storage/faulty.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { u64 } from "../support/store-helpers.js";

/** Crash options that keep every unsynced byte: the disk wrote everything it was given. */
const KEEP_EVERYTHING = { random: () => 0.99 };

function setup() {
  const memory = new MemoryStorage();
  const faulty = new FaultyStorage(memory);
  const open = (discardVersionsFrom?: bigint) =>
    openMetadata(faulty, {
      partition: "test",
      keyCodec: fixedKeys(8),
      ...(discardVersionsFrom === undefined ? {} : { discardVersionsFrom }),
    });
  return { memory, faulty, open };
}

/** A store whose two blobs both hold the keys 0..9 (values of 10 bytes), key order stable. */
async function stableStore(open: () => Promise<Metadata>): Promise<Metadata> {
  const store = await open();
  for (let i = 0; i < 10; i++) store.put(u64(i), Buffer.alloc(10, i));
  await store.sync();
  await store.sync();
  return store;
}

function entries(store: Metadata): [string, string][] {
  return [...store.entries()].map(([k, v]) => [k.toString("hex"), Buffer.from(v).toString("hex")]);
}

async function rejectsSyncFailed(promise: Promise<unknown>): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(isStoreError(err, "SyncFailed"), String(err));
    assert.match((err as Error).message, /was not committed/);
    return true;
  });
}

test("hazard 1: a failed rewrite is not followed by an overwrite from a stale image", async () => {
  const { faulty, open } = setup();
  const store = await stableStore(open);

  // A new key forces a rewrite; it fails before any byte lands.
  store.put(u64(100), Buffer.from("acknowledged later"));
  faulty.inject({ op: "write" });
  await rejectsSyncFailed(store.sync());

  // These syncs succeed: the key is acknowledged by the first of them. (A third sync would
  // overwrite the other blob again and hide the loss.)
  await store.sync();
  await store.sync();
  const expected = entries(store);
  await store.close();

  // The reference would now serve an overwrite of the stale image, without key 100.
  const reopened = await open();
  assert.deepEqual(entries(reopened), expected);
  assert.equal(Buffer.from(reopened.get(u64(100)) ?? []).toString(), "acknowledged later");
});

test("hazard 1: a failed overwrite does not poison the image used by later overwrites", async () => {
  const { faulty, open } = setup();
  const store = await stableStore(open);

  // Same-size change: an overwrite, whose first write (the value) fails.
  store.put(u64(3), Buffer.alloc(10, 0xaa));
  faulty.inject({ op: "write" });
  await rejectsSyncFailed(store.sync());

  await store.sync(); // acknowledged: holds key 3 = 0xaa
  store.put(u64(7), Buffer.alloc(10, 0xbb));
  await store.sync(); // acknowledged: holds key 7 = 0xbb
  const expected = entries(store);
  await store.close();

  // The reference writes a CRC over bytes the file does not hold: this version would fail its
  // CRC at open and the store would fall back to the previous one, losing key 7 = 0xbb.
  const reopened = await open();
  assert.deepEqual(entries(reopened), expected);
  assert.deepEqual(reopened.get(u64(7)), Buffer.alloc(10, 0xbb));
});

test("hazard 2: a torn failed sync and a crash in the next one do not damage both blobs", async () => {
  const { faulty, open } = setup();
  const store = await stableStore(open);
  const acknowledged = entries(store);

  // The rewrite of the target is torn half way and fails.
  store.put(u64(200), Buffer.alloc(50, 1));
  faulty.inject({ op: "write", tearBytes: 40 });
  await rejectsSyncFailed(store.sync());

  // The next sync is torn too, and the machine crashes during it, keeping every byte given.
  store.put(u64(201), Buffer.alloc(50, 2));
  faulty.inject({ op: "write", tearBytes: 30, crash: KEEP_EVERYTHING });
  await assert.rejects(store.sync());

  // The reference targets the intact blob in that second sync, so both would be damaged and
  // the store would reopen empty. Here the last acknowledged state is intact.
  const reopened = await open();
  assert.deepEqual(entries(reopened), acknowledged);
});

test("hazard 3: a sync reported as failed never surfaces after a restart", async () => {
  const { faulty, open } = setup();
  const store = await stableStore(open);
  const acknowledged = entries(store);

  // Every byte of the sync lands, then its fsync fails: the caller is told it failed.
  store.put(u64(300), Buffer.from("never acknowledged"));
  faulty.inject({ op: "sync" });
  await rejectsSyncFailed(store.sync());

  // The disk keeps everything it was given, then the machine crashes.
  faulty.crash(KEEP_EVERYTHING);
  const reopened = await open();
  assert.deepEqual(entries(reopened), acknowledged);
  assert.equal(reopened.get(u64(300)), undefined);
});

test("a failed sync keeps its mutations pending: the next sync commits them", async () => {
  const { faulty, open } = setup();
  const store = await stableStore(open);
  store.put(u64(400), Buffer.from("retry me"));
  faulty.inject({ op: "sync" });
  await rejectsSyncFailed(store.sync());
  assert.equal(store.committed().get(u64(400)), undefined, "the committed view is unchanged");
  const version = await store.sync();
  assert.equal(Buffer.from(store.committed().get(u64(400)) ?? []).toString(), "retry me");
  assert.equal(store.committed().version, version);
  await store.close();
  const reopened = await open();
  assert.equal(Buffer.from(reopened.get(u64(400)) ?? []).toString(), "retry me");
});

test("a failed sync whose cleanup fails too leaves the store refusing work until reopened", async () => {
  const { faulty, open } = setup();
  const store = await stableStore(open);
  const acknowledged = entries(store);

  store.put(u64(500), Buffer.from("lost"));
  faulty.inject({ op: "sync" }); // the sync's fsync
  faulty.inject({ op: "resize" }); // the cleanup's cut
  await rejectsSyncFailed(store.sync());

  assert.throws(
    () => store.put(u64(1), Buffer.alloc(10)),
    (err: unknown) => isStoreError(err, "Failed"),
  );
  await assert.rejects(store.sync(), (err: unknown) => isStoreError(err, "Failed"));
  const unsafe = store.unsafeVersionsFrom;
  assert.ok(unsafe !== undefined);

  // Every byte of the failed sync reached the disk; a reopen told to discard it serves the
  // last acknowledged state.
  faulty.crash(KEEP_EVERYTHING);
  const reopened = await open(unsafe);
  assert.deepEqual(entries(reopened), acknowledged);
  reopened.put(u64(501), Buffer.from("after"));
  await reopened.sync();
  await reopened.close();
  const again = await open();
  assert.equal(Buffer.from(again.get(u64(501)) ?? []).toString(), "after");
  assert.equal(again.get(u64(500)), undefined);
});

test("a failed sync the backend voided leaves no version to discard, even when its cleanup fails", async () => {
  const { faulty, open } = setup();
  const store = await stableStore(open);
  const acknowledged = entries(store);
  store.put(u64(500), Buffer.from("lost"));
  // The backend says the failed sync can never land (as etcd does for a refused transaction).
  faulty.inject({ op: "sync", voided: true });
  faulty.inject({ op: "resize" }); // the cleanup's cut
  await rejectsSyncFailed(store.sync());
  await assert.rejects(store.sync(), (err: unknown) => isStoreError(err, "Failed"));
  assert.equal(store.unsafeVersionsFrom, undefined);
  faulty.crash(); // what was not synced is gone, as the backend promised
  const reopened = await open();
  assert.deepEqual(entries(reopened), acknowledged);
});

test("a crash in the middle of a sync serves the previous or the new version, whole", async () => {
  for (let tear = 0; tear <= 40; tear += 5) {
    const { faulty, open } = setup();
    const store = await stableStore(open);
    const before = entries(store);
    store.put(u64(600), Buffer.alloc(20, 6));
    const after = [...before, [u64(600).toString("hex"), Buffer.alloc(20, 6).toString("hex")]].sort();
    faulty.inject({ op: "write", tearBytes: tear, crash: KEEP_EVERYTHING });
    await assert.rejects(store.sync());
    const reopened = await open();
    const got = entries(reopened);
    assert.ok(
      JSON.stringify(got) === JSON.stringify(before) || JSON.stringify(got) === JSON.stringify(after),
      `tear ${tear}: got a mixture`,
    );
    // A torn write never completes a body, so the old version is what survives.
    assert.deepEqual(got, before);
  }
});
