/**
 * Recovery at start: every existing partition is opened once after a start, so that data loss
 * and damaged blobs are reported before any call names them; the check never makes the partitions
 * in use give way to the open limit, goes on past a partition that fails to open, and stops at
 * shutdown.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Registry } from "prom-client";
import { isEngineError } from "../../server/engine/errors.js";
import { createGroupCommitMetrics } from "../../server/engine/group-commit.js";
import { Engine } from "../../server/engine/operations.js";
import { Partitions } from "../../server/engine/partitions.js";
import { recoverAtStart } from "../../server/engine/recovery-at-start.js";
import { fixedKeys, type KeyCodec } from "../../server/store/codec.js";
import { isStoreError } from "../../server/store/errors.js";
import { BLOB_NAMES } from "../../server/store/metadata.js";
import { dataOffset } from "../../server/store/storage/blob-header.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import {
  type OpenedBlob,
  type OpenOptions,
  type Storage,
  StorageWrapper,
} from "../../server/store/storage/storage.js";
import { partitionsConfig } from "../support/engine-config.js";
import { utf8 } from "../support/store-helpers.js";

function engineOn(
  storage: Storage,
  options: { maxOpenPartitions?: number; keyCodecs?: Map<string, KeyCodec> } = {},
): { engine: Engine; registry: Registry } {
  const registry = new Registry();
  const partitions = new Partitions(
    storage,
    partitionsConfig({
      keyCodecs: options.keyCodecs ?? new Map(),
      maxOpenPartitions: options.maxOpenPartitions ?? 256,
      recovery: { warn: () => undefined },
    }),
    registry,
    createGroupCommitMetrics(registry),
  );
  return { engine: new Engine(partitions), registry };
}

/** Writes two durable versions in each partition (so both blobs hold a body), then closes. */
async function populate(storage: MemoryStorage, names: string[]): Promise<void> {
  const { engine } = engineOn(storage);
  for (const partition of names) {
    for (const value of ["1", "2"]) {
      await engine.put({ partition, key: utf8("k"), value: utf8(value), durable: true });
    }
  }
  await engine.partitions.close();
}

/** Flips the last body byte of a blob (the byte before its CRC): a checksum mismatch. */
function damage(storage: MemoryStorage, partition: string, blob: 0 | 1): void {
  const bytes = Uint8Array.from(storage.fileBytes(partition, BLOB_NAMES[blob]) ?? []);
  assert.ok(bytes.length > 5, `${partition} blob ${blob} holds a body`);
  bytes[bytes.length - 5] = (bytes[bytes.length - 5] as number) ^ 0x40;
  storage.setFileBytes(partition, BLOB_NAMES[blob], bytes);
}

/** The blob holding the newest version of a partition (default layout). */
function newestBlob(storage: MemoryStorage, partition: string): 0 | 1 {
  const version = (blob: 0 | 1) =>
    Buffer.from(storage.fileBytes(partition, BLOB_NAMES[blob]) ?? []).readBigUInt64BE(dataOffset("v1"));
  return version(1) > version(0) ? 1 : 0;
}

/** Calls `onOpen` with the count at every blob open. */
class OpenCounting extends StorageWrapper {
  private opens = 0;
  constructor(
    inner: Storage,
    private readonly onOpen: (count: number) => void,
  ) {
    super(inner);
  }

  open(partition: string, name: Uint8Array, options?: OpenOptions): Promise<OpenedBlob> {
    this.onOpen(++this.opens);
    return this.inner.open(partition, name, options);
  }
}

/** The value of one sample of a scrape, or undefined when the series is absent. */
async function sample(registry: Registry, series: string): Promise<number | undefined> {
  const line = (await registry.metrics()).split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test("data loss and a damaged blob are found and reported at start, before any call", async () => {
  const storage = new MemoryStorage();
  await populate(storage, ["fine", "lost", "torn"]);
  damage(storage, "lost", 0);
  damage(storage, "lost", 1);
  damage(storage, "torn", newestBlob(storage, "torn"));

  const { engine, registry } = engineOn(storage);
  const logged: string[] = [];
  const summary = await recoverAtStart(engine.partitions, { registry, log: (m) => logged.push(m) });

  assert.equal(summary.checked, 3);
  assert.equal(summary.opened, 2);
  assert.deepEqual(summary.dataLoss, ["lost"]);
  assert.deepEqual(summary.failed, []);
  assert.equal(summary.stopped, false);
  assert.deepEqual(engine.partitions.dataLoss(), ["lost"]);
  assert.equal(await sample(registry, 'metadata_partition_data_loss{partition="lost"}'), 1);
  assert.equal(
    await sample(registry, 'metadata_blobs_discarded_total{partition="torn",reason="checksum_mismatch"}'),
    1,
  );
  assert.equal(await sample(registry, "metadata_recovery_at_start_remaining"), 0);
  assert.equal(await sample(registry, 'metadata_recovery_at_start_partitions_total{result="opened"}'), 2);
  assert.equal(await sample(registry, 'metadata_recovery_at_start_partitions_total{result="data_loss"}'), 1);
  assert.equal(logged.length, 1);
  assert.match(
    logged[0] ?? "",
    /^recovery at start: 3 partition\(s\) checked in \d+ ms: 2 opened, 1 with data loss \(lost\)$/,
  );

  // The calls then find what the check found: the loss refused, the others served.
  await assert.rejects(engine.get({ partition: "lost", key: utf8("k") }), (err) =>
    isStoreError(err, "DataLoss"),
  );
  assert.equal(
    Buffer.from((await engine.get({ partition: "fine", key: utf8("k") })).value ?? []).toString(),
    "2",
  );
  // The torn partition's newest blob was the damaged one: it serves the version before it.
  assert.equal(
    Buffer.from((await engine.get({ partition: "torn", key: utf8("k") })).value ?? []).toString(),
    "1",
  );
  await engine.partitions.close();
});

test("beyond the open limit the check retires what it opened, not the partitions in use", async () => {
  const storage = new MemoryStorage();
  const names = ["p0", "p1", "p2", "p3", "p4", "p5"];
  await populate(storage, names);
  const { engine } = engineOn(storage, { maxOpenPartitions: 2 });
  // In use before the check reaches the others (and so the least recently used of them all).
  await engine.put({ partition: "p0", key: utf8("k"), value: utf8("3"), durable: true });

  const summary = await recoverAtStart(engine.partitions, { log: () => undefined });
  assert.equal(summary.checked, 6);
  assert.equal(summary.opened, 5);
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
  assert.ok(engine.partitions.openCount <= 2, `${engine.partitions.openCount} partitions open`);
  assert.ok(engine.partitions.isOpen("p0"), "the partition in use stays open");
  // The partitions the check retired reopen with their data.
  for (const partition of names.slice(1)) {
    assert.equal(Buffer.from((await engine.get({ partition, key: utf8("k") })).value ?? []).toString(), "2");
  }
  await engine.partitions.close();
});

test("a partition that fails to open is reported and the check goes on", async () => {
  const storage = new MemoryStorage();
  await populate(storage, ["a", "b", "c"]);
  // "b" holds 1-byte keys: configured for 8-byte keys, its body does not decode.
  const { engine, registry } = engineOn(storage, { keyCodecs: new Map([["b", fixedKeys(8)]]) });
  const warnings: string[] = [];
  const summary = await recoverAtStart(engine.partitions, {
    registry,
    log: () => undefined,
    warn: (m) => warnings.push(m),
  });
  assert.equal(summary.opened, 2);
  assert.deepEqual(
    summary.failed.map((f) => f.partition),
    ["b"],
  );
  assert.equal(warnings.length, 1);
  assert.match(
    warnings[0] ?? "",
    /^recovery at start: partition b did not open \(.+\); its next call tries again$/,
  );
  assert.ok(engine.partitions.isOpen("a") && engine.partitions.isOpen("c"));
  assert.equal(await sample(registry, 'metadata_recovery_at_start_partitions_total{result="failed"}'), 1);
  await engine.partitions.close();
});

test("shutdown stops the check between partitions", async () => {
  const storage = new MemoryStorage();
  const names = Array.from({ length: 40 }, (_, i) => `p${String(i).padStart(2, "0")}`);
  await populate(storage, names);
  let closing: Promise<void> | undefined;
  // Shutdown begins while the third partition opens (its first blob: the fifth blob open).
  const { engine, registry } = engineOn(
    new OpenCounting(storage, (count) => {
      if (count === 5) closing = engine.partitions.close();
    }),
  );
  const logged: string[] = [];
  const summary = await recoverAtStart(engine.partitions, { registry, log: (m) => logged.push(m) });
  await closing;
  assert.equal(summary.stopped, true);
  assert.ok(summary.opened < names.length, `${summary.opened} opened`);
  assert.match(logged[0] ?? "", /stopped by shutdown$/);
  assert.equal(await sample(registry, "metadata_recovery_at_start_remaining"), 0);
  await assert.rejects(engine.partitions.recover("p39"), (err) => isEngineError(err, "ShuttingDown"));
});
