/**
 * The read-only check (store/check.ts) agrees with what `openMetadata` then does, over damage of
 * every kind drawn at random: ok and recoverable open with the version and keys the check said
 * (recoverable after discarding a blob, ok without), data_loss fails with DataLoss, corrupt
 * with BlobCorrupt or Corrupt.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Registry } from "prom-client";
import { checkPartition } from "../../server/store/check.js";
import { fixedKeys, variableKeys } from "../../server/store/codec.js";
import { isStoreError } from "../../server/store/errors.js";
import { BLOB_NAMES, openMetadata } from "../../server/store/metadata.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { Rng, testSeed } from "../support/rng.js";
import { utf8 } from "../support/store-helpers.js";

type Damage = "none" | "flip" | "truncate" | "header" | "remove" | "empty";
const DAMAGES: Damage[] = ["none", "none", "flip", "truncate", "header", "remove", "empty"];

function damage(bytes: Uint8Array | undefined, how: Damage, rng: Rng): Uint8Array | undefined {
  if (bytes === undefined) return undefined;
  const out = Uint8Array.from(bytes);
  switch (how) {
    case "none":
      return out;
    case "flip": {
      const at = 4096 + rng.int(out.length - 4096);
      out[at] = (out[at] as number) ^ (1 << rng.int(8));
      return out;
    }
    case "truncate":
      return out.subarray(0, 4096 + rng.int(out.length - 4096));
    case "header":
      out[rng.int(4)] = 0x58;
      return out;
    case "remove":
      return undefined;
    case "empty":
      return out.subarray(0, 4096);
  }
}

test("the check's verdict is what the open does, for random damage", async () => {
  const rng = new Rng(testSeed(4711));
  const verdicts = new Map<string, number>();
  for (let round = 0; round < 300; round++) {
    const storage = new MemoryStorage();
    const wide = rng.chance(0.2);
    const store = await openMetadata(storage, {
      partition: "p",
      keyCodec: wide ? fixedKeys(8) : variableKeys(),
    });
    const syncs = rng.int(4);
    for (let v = 0; v < syncs; v++) {
      for (let k = 0; k < 1 + rng.int(5); k++)
        store.put(utf8(`key${rng.int(6)}`.padEnd(8, "_")), utf8(`v${v}`));
      await store.sync();
    }
    await store.close();
    const files = BLOB_NAMES.map((name) =>
      damage(storage.fileBytes("p", name), DAMAGES[rng.int(DAMAGES.length)] as Damage, rng),
    );
    const fresh = new MemoryStorage();
    for (const [i, bytes] of files.entries()) {
      if (bytes !== undefined) fresh.setFileBytes("p", BLOB_NAMES[i as 0 | 1], bytes);
    }
    // Checked with the variable codec now and then although written with 8-byte keys.
    const codec = wide && rng.chance(0.5) ? variableKeys() : wide ? fixedKeys(8) : variableKeys();
    const check = checkPartition("p", files[0], files[1], codec);
    verdicts.set(check.verdict, (verdicts.get(check.verdict) ?? 0) + 1);
    const registry = new Registry();
    const context = `round ${round}: ${check.summary}`;
    try {
      const opened = await openMetadata(fresh, {
        partition: "p",
        keyCodec: codec,
        registry,
        warn: () => undefined,
      });
      assert.ok(check.verdict === "ok" || check.verdict === "recoverable", `opened, but ${context}`);
      assert.equal(opened.committed().version, check.version, context);
      assert.equal(opened.size, check.keys, context);
      const discarded = (await registry.metrics())
        .split("\n")
        .some((line) => line.startsWith('metadata_blobs_discarded_total{partition="p"'));
      assert.equal(discarded, check.verdict === "recoverable", context);
      await opened.close();
    } catch (err) {
      if (err instanceof assert.AssertionError) throw err;
      if (isStoreError(err, "DataLoss")) assert.equal(check.verdict, "data_loss", context);
      else if (isStoreError(err, "BlobCorrupt") || isStoreError(err, "Corrupt"))
        assert.equal(check.verdict, "corrupt", `${String(err)}; ${context}`);
      else throw err;
    }
  }
  for (const verdict of ["ok", "recoverable", "data_loss", "corrupt"]) {
    assert.ok(
      (verdicts.get(verdict) ?? 0) >= 5,
      `verdict ${verdict} drawn ${verdicts.get(verdict) ?? 0} times`,
    );
  }
});
