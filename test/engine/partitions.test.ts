/**
 * Partitions in the engine: the cap on open partitions (least recently used idle ones retired,
 * their metric series removed, reopened on demand with nothing lost), the cap on how many
 * partitions exist (refused, creating nothing), and retirement racing with writes.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Registry } from "prom-client";
import { isEngineError } from "../../server/engine/errors.js";
import { createGroupCommitMetrics } from "../../server/engine/group-commit.js";
import { Engine } from "../../server/engine/operations.js";
import { Partitions } from "../../server/engine/partitions.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { MeteredStorage } from "../../server/store/storage/metered.js";
import { partitionsConfig } from "../support/engine-config.js";
import { Rng, testSeed } from "../support/rng.js";
import { utf8 } from "../support/store-helpers.js";

function engineWith(
  limits: { maxOpenPartitions: number; maxPartitions: number },
  storage = new MemoryStorage(),
): { engine: Engine; registry: Registry; storage: MemoryStorage } {
  const registry = new Registry();
  const partitions = new Partitions(
    new MeteredStorage(storage, registry),
    partitionsConfig(limits),
    registry,
    createGroupCommitMetrics(registry),
  );
  return { engine: new Engine(partitions), registry, storage };
}

/** The partition names that have series in a scrape of `registry`. */
async function partitionsInScrape(registry: Registry): Promise<Set<string>> {
  const text = await registry.metrics();
  return new Set([...text.matchAll(/partition="([^"]+)"/g)].map((match) => match[1] as string));
}

describe("open partitions", () => {
  test("beyond the cap, idle partitions are retired and reopen with their data", async () => {
    const { engine, registry } = engineWith({ maxOpenPartitions: 3, maxPartitions: 1000 });
    for (let i = 0; i < 20; i++) {
      await engine.put({ partition: `p${i}`, key: utf8("k"), value: utf8(`v${i}`), durable: true });
    }
    // Retirement closes in the background; give it its turns.
    for (let i = 0; i < 20 && engine.partitions.openCount > 3; i++) await new Promise((r) => setImmediate(r));
    assert.ok(engine.partitions.openCount <= 3, `${engine.partitions.openCount} partitions open`);
    const scraped = await partitionsInScrape(registry);
    assert.ok(
      scraped.size <= 4,
      `series of ${scraped.size} partitions in a scrape: ${[...scraped].join(" ")}`,
    );
    for (let i = 0; i < 20; i++) {
      const { value } = await engine.get({ partition: `p${i}`, key: utf8("k") });
      assert.equal(Buffer.from(value ?? []).toString(), `v${i}`);
    }
    const overwrite = await engine.put({
      partition: "p0",
      key: utf8("k"),
      value: utf8("again"),
      durable: true,
    });
    assert.equal(Buffer.from(overwrite.previous ?? []).toString(), "v0");
    assert.ok(overwrite.version > 1n, "the reopened partition goes on from its committed version");
    await engine.partitions.close();
  });

  test("writes racing with retirement: every acknowledged write is there", async () => {
    const rng = new Rng(testSeed());
    const { engine } = engineWith({ maxOpenPartitions: 2, maxPartitions: 1000 });
    const model = new Map<string, string>();
    for (let round = 0; round < 30; round++) {
      const writes = [];
      for (let i = 0; i < 20; i++) {
        const partition = `r${rng.int(8)}`;
        const key = `k${rng.int(5)}`;
        const value = `${round}-${i}`;
        model.set(`${partition}/${key}`, value);
        writes.push(engine.put({ partition, key: utf8(key), value: utf8(value), durable: rng.int(2) === 0 }));
      }
      await Promise.all(writes);
      await engine.sync({ partition: `r${rng.int(8)}` });
    }
    for (let p = 0; p < 8; p++) await engine.sync({ partition: `r${p}` });
    for (const [path, value] of model) {
      const [partition, key] = path.split("/") as [string, string];
      const read = await engine.get({ partition, key: utf8(key) });
      assert.equal(Buffer.from(read.value ?? []).toString(), value, path);
    }
    await engine.partitions.close();
  });
});

describe("partition count", () => {
  test("creating a partition beyond --max-partitions is refused and creates nothing", async () => {
    const { engine, storage } = engineWith({ maxOpenPartitions: 100, maxPartitions: 3 });
    for (const name of ["a", "b", "c"]) {
      await engine.put({ partition: name, key: utf8("k"), value: utf8("v"), durable: true });
    }
    await assert.rejects(
      engine.put({ partition: "d", key: utf8("k"), value: utf8("v"), durable: true }),
      (err: unknown) =>
        isEngineError(err, "LimitExceeded") &&
        err.message === "too many partitions: 3 exist, the limit is 3 (--max-partitions)",
    );
    assert.deepEqual((await storage.listPartitions()).sort(), ["a", "b", "c"]);
    const again = await engine.put({ partition: "a", key: utf8("k"), value: utf8("w"), durable: true });
    assert.equal(Buffer.from(again.previous ?? []).toString(), "v");
    await engine.partitions.close();
  });
});

describe("changes nothing", () => {
  test("a Commit without mutations, or with a failing precondition, creates no partition", async () => {
    const { engine, storage } = engineWith({ maxOpenPartitions: 100, maxPartitions: 100 });
    assert.deepEqual(
      await engine.commit({ partition: "empty", mutations: [], preconditions: [], durable: true }),
      {
        version: 0n,
      },
    );
    await assert.rejects(
      engine.commit({
        partition: "cas",
        mutations: [{ key: utf8("k"), value: utf8("v") }],
        preconditions: [{ key: utf8("k"), require: "present" }],
        durable: true,
      }),
      (err: unknown) => isEngineError(err, "PreconditionFailed"),
    );
    const absent = await engine.commit({
      partition: "cas",
      mutations: [],
      preconditions: [{ key: utf8("k"), require: "absent" }],
      durable: true,
    });
    assert.equal(absent.version, 0n);
    assert.deepEqual(await storage.listPartitions(), []);
    // With a precondition that holds on the empty state, the batch does create the partition.
    const created = await engine.commit({
      partition: "cas",
      mutations: [{ key: utf8("k"), value: utf8("v") }],
      preconditions: [{ key: utf8("k"), require: "absent" }],
      durable: true,
    });
    assert.equal(created.version, 1n);
    assert.deepEqual(await storage.listPartitions(), ["cas"]);
    await engine.partitions.close();
  });
});
