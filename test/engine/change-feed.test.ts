/**
 * ChangeFeed and Snapshot.changesSince on memory storage: the change set of each sync is exactly
 * the keys whose committed value changed (checked against a full comparison of the two views,
 * over random puts, removes, clears and retains); the history keeps the newest syncs within its
 * bounds and says which version it holds from; a watcher is ended (OutOfRange) the moment the
 * history evicts a change it was still to be given, and never before; a rebase to another state
 * ends every watcher; a prefix filters without losing versions.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { CHANGE_OVERHEAD_BYTES, ChangeFeed } from "../../server/engine/change-feed.js";
import { isEngineError, OutOfRangeError } from "../../server/engine/errors.js";
import { variableKeys } from "../../server/store/codec.js";
import { type Metadata, openMetadata, type Snapshot } from "../../server/store/metadata.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { Rng, testSeed } from "../support/rng.js";
import { utf8 } from "../support/store-helpers.js";

async function store(): Promise<Metadata> {
  return openMetadata(new MemoryStorage(), { partition: "feed", keyCodec: variableKeys() });
}

/** Every key whose value object differs between the views, with its value in `newer`. */
function fullComparison(newer: Snapshot, older: Snapshot): string[] {
  const before = new Map([...older.entries()].map(([k, v]) => [k.toString("hex"), v]));
  const after = new Map([...newer.entries()].map(([k, v]) => [k.toString("hex"), v]));
  const keys = [...new Set([...before.keys(), ...after.keys()])].sort();
  return keys
    .filter((k) => !Object.is(before.get(k), after.get(k)))
    .map((k) => `${k}=${after.has(k) ? Buffer.from(after.get(k) as Uint8Array).toString("hex") : "-"}`);
}

function shown(changes: [Buffer, Uint8Array | undefined][]): string[] {
  return changes.map(
    ([k, v]) => `${k.toString("hex")}=${v === undefined ? "-" : Buffer.from(v).toString("hex")}`,
  );
}

describe("Snapshot.changesSince", () => {
  test("is exactly what changed, sync by sync, over random puts, removes, clears and retains", async () => {
    const seed = testSeed();
    const rng = new Rng(seed);
    const s = await store();
    let previous = s.committed();
    for (let round = 0; round < 200; round++) {
      const ops = rng.int(40);
      for (let i = 0; i < ops; i++) {
        const key = utf8(`k${rng.int(300)}`);
        const roll = rng.int(100);
        if (roll < 60) s.put(key, rng.bytes(rng.int(4)));
        else if (roll < 95) s.remove(key);
        else if (roll < 97) s.retain((k) => k[k.length - 1] !== 0x37);
        else if (roll < 98) s.clear();
        else s.update(key, () => undefined);
      }
      await s.sync();
      const committed = s.committed();
      assert.deepEqual(
        shown(committed.changesSince(previous)),
        fullComparison(committed, previous),
        `seed ${seed}`,
      );
      // Against a view that is not the previous one, the walk of the trees gives the same.
      if (round > 2) {
        assert.deepEqual(shown(committed.changesSince(s.committed())), [], `seed ${seed}`);
      }
      previous = committed;
    }
    await s.close();
  });
});

describe("ChangeFeed", () => {
  test("keeps the newest syncs within its bounds and the oldest version it can give", async () => {
    const s = await store();
    const feed = new ChangeFeed("feed", s.committed(), { historyMaxSyncs: 3, historyMaxBytes: 1 << 20 });
    assert.equal(feed.oldestVersion, 1n);
    for (let i = 1; i <= 5; i++) {
      s.put(utf8(`k${i}`), utf8("v"));
      await s.sync();
      feed.record(s.committed());
    }
    assert.equal(feed.historySyncs, 3);
    assert.equal(feed.oldestVersion, 3n);
    // A sync that changes nothing records nothing.
    s.remove(utf8("absent"));
    await s.sync();
    assert.equal(feed.record(s.committed()), undefined);
    assert.equal(feed.historySyncs, 3);

    assert.throws(
      () => feed.watch({ fromVersion: 2n, prefix: new Uint8Array() }),
      (err: unknown) => err instanceof OutOfRangeError && err.oldestVersion === 3n,
    );
    const w = feed.watch({ fromVersion: 3n, prefix: new Uint8Array() });
    assert.deepEqual(
      [(await w.take()).version, (await w.take()).version, (await w.take()).version],
      [3n, 4n, 5n],
    );
    await s.close();
  });

  test("a byte bound counts keys, values and the overhead, and keeps the newest sync whatever its size", async () => {
    const s = await store();
    const feed = new ChangeFeed("feed", s.committed(), { historyMaxSyncs: 100, historyMaxBytes: 1000 });
    s.put(utf8("a"), Buffer.alloc(100));
    await s.sync();
    assert.equal(feed.record(s.committed())?.bytes, 1 + 100 + CHANGE_OVERHEAD_BYTES);
    s.put(utf8("b"), Buffer.alloc(5000));
    await s.sync();
    feed.record(s.committed());
    assert.equal(feed.historySyncs, 1);
    assert.equal(feed.oldestVersion, 2n);
    await s.close();
  });

  test("a watcher is ended when its next change is evicted, not before; a live one never", async () => {
    const s = await store();
    const feed = new ChangeFeed("feed", s.committed(), { historyMaxSyncs: 2, historyMaxBytes: 1 << 20 });
    const slow = feed.watch({ fromVersion: 0n, prefix: new Uint8Array() });
    const live = feed.watch({ fromVersion: 0n, prefix: new Uint8Array() });
    let ended: unknown;
    void slow.ended.then((err) => {
      ended = err;
    });
    const seen: bigint[] = [];
    const reader = (async () => {
      for (;;) seen.push((await live.take()).version);
    })();
    reader.catch(() => undefined);
    for (let i = 1; i <= 2; i++) {
      s.put(utf8(`k${i}`), utf8("v"));
      await s.sync();
      feed.record(s.committed());
      await new Promise((resolve) => setImmediate(resolve));
    }
    assert.equal(ended, undefined, "still held: versions 1 and 2");
    s.put(utf8("k3"), utf8("v"));
    await s.sync();
    feed.record(s.committed());
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(isEngineError(ended, "OutOfRange"), String(ended));
    assert.equal((ended as OutOfRangeError).oldestVersion, 2n);
    await assert.rejects(slow.take(), OutOfRangeError);
    assert.deepEqual(seen, [1n, 2n, 3n]);
    assert.equal(feed.watcherCount, 1);
    live.close();
    assert.equal(feed.watcherCount, 0);
    await s.close();
  });

  test("a prefix gives only matching changes, skipping syncs without one", async () => {
    const s = await store();
    const feed = new ChangeFeed("feed", s.committed());
    const w = feed.watch({ fromVersion: 1n, prefix: utf8("a") });
    for (const key of ["a1", "b1", "b2", "a2"]) {
      s.put(utf8(key), utf8("v"));
      s.put(utf8(`b${key}`), utf8("v"));
      await s.sync();
      feed.record(s.committed());
    }
    const first = await w.take();
    const second = await w.take();
    assert.deepEqual([first.version, first.changes.map((c) => c.key.toString())], [1n, ["a1"]]);
    assert.deepEqual([second.version, second.changes.map((c) => c.key.toString())], [4n, ["a2"]]);
    await s.close();
  });

  test("a rebase to the same version changes nothing; to another ends every watcher", async () => {
    const s = await store();
    s.put(utf8("a"), utf8("1"));
    await s.sync();
    const feed = new ChangeFeed("feed", s.committed());
    const w = feed.watch({ fromVersion: 0n, prefix: new Uint8Array() });
    const other = await store();
    feed.rebase(other.committed());
    await assert.rejects(
      w.take(),
      (err: unknown) => err instanceof OutOfRangeError && err.oldestVersion === 1n,
    );
    await s.close();
    await other.close();
  });
});
