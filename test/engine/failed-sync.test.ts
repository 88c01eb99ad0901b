/**
 * A failed sync whose cleanup fails too: its bytes may still be on disk, so "not committed" is
 * answered only once the reopen has discarded them durably (a crash right after the answer finds
 * nothing of the failed write), and the outcome is answered unknown when that reopen fails.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { isEngineError } from "../../server/engine/errors.js";
import { Engine } from "../../server/engine/operations.js";
import { Partitions } from "../../server/engine/partitions.js";
import { FaultyStorage } from "../../server/store/storage/faulty.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { partitionsConfig } from "../support/engine-config.js";
import { utf8 } from "../support/store-helpers.js";

function engineOn(storage: FaultyStorage): Engine {
  return new Engine(new Partitions(storage, partitionsConfig({ recovery: { warn: () => undefined } })));
}

/** A power cut that keeps every write not yet synced, whole: a failed fsync's bytes reached the disk. */
const KEEP_EVERYTHING = { random: () => 0.9999 };

const text = (value: Uint8Array | undefined) =>
  value === undefined ? undefined : Buffer.from(value).toString();

test("a failed sync whose cleanup fails: 'not committed' is answered once its bytes are durably gone", async () => {
  const storage = new FaultyStorage(new MemoryStorage());
  const engine = engineOn(storage);
  await engine.put({ partition: "p", key: utf8("base"), value: utf8("b"), durable: true });
  // The sync fails after its writes, and the cleanup's cut of the target blob fails too.
  storage.inject({ op: "sync" });
  storage.inject({ op: "resize" });
  let answered: unknown;
  // The power is cut the moment the failure is answered, keeping everything written.
  await engine.put({ partition: "p", key: utf8("lost"), value: utf8("x"), durable: true }).then(
    () => assert.fail("the put must fail"),
    (err: unknown) => {
      answered = err;
      storage.crash(KEEP_EVERYTHING);
    },
  );
  assert.ok(isEngineError(answered, "NotCommitted"), String(answered));
  assert.match((answered as Error).message, /^sync failed: version \d+ of p was not committed/);
  assert.equal(storage.faultsFired, 2);

  const restarted = engineOn(storage);
  assert.equal(text((await restarted.get({ partition: "p", key: utf8("lost") })).value), undefined);
  assert.equal(text((await restarted.get({ partition: "p", key: utf8("base") })).value), "b");
  await restarted.partitions.close();
});

test("a failed sync whose cleanup and reopen fail: the outcome is answered unknown", async () => {
  const storage = new FaultyStorage(new MemoryStorage());
  const engine = engineOn(storage);
  await engine.put({ partition: "p", key: utf8("base"), value: utf8("b"), durable: true });
  storage.inject({ op: "sync" });
  storage.inject({ op: "resize" });
  storage.inject({ op: "open" }); // the reopen after the failure
  await assert.rejects(
    engine.put({ partition: "p", key: utf8("maybe"), value: utf8("x"), durable: true }),
    (err: unknown) => {
      assert.ok(isEngineError(err, "OutcomeUnknown"), String(err));
      assert.match(
        (err as Error).message,
        /^sync of partition p failed and its bytes could not be discarded \(.*injected sync failure; reopening: .*injected open failure\): the outcome of the write is unknown: it is not visible now, but version \d+ may appear after a restart$/,
      );
      return true;
    },
  );
  assert.equal(storage.faultsFired, 3);
  // Not visible meanwhile, and the server's next reopen discards it for good.
  assert.equal(text((await engine.get({ partition: "p", key: utf8("maybe") })).value), undefined);
  for (let i = 0; ; i++) {
    try {
      await engine.put({ partition: "p", key: utf8("later"), value: utf8("y"), durable: true });
      break;
    } catch (err) {
      assert.ok(isEngineError(err, "NotCommitted"), String(err));
      assert.ok(i < 50, "the partition reopens within 5 s");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  storage.crash(KEEP_EVERYTHING);
  const restarted = engineOn(storage);
  assert.equal(text((await restarted.get({ partition: "p", key: utf8("maybe") })).value), undefined);
  assert.equal(text((await restarted.get({ partition: "p", key: utf8("later") })).value), "y");
  await restarted.partitions.close();
});
