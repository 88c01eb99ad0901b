/**
 * Recovery of damaged blobs on the filesystem: flipped bytes, truncated and zero-filled bodies in
 * one and in both blobs, for both blob layouts (V0 and V1). Each case asserts what is served, what is logged, what is kept in the
 * quarantine (byte for byte) and what `metadata_blobs_discarded_total` counts.
 */
import assert from "node:assert/strict";
import { readdir, readFile, stat, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, test } from "node:test";
import { Registry } from "prom-client";
import { fixedKeys } from "../../server/store/codec.js";
import { isStoreError } from "../../server/store/errors.js";
import { type MetadataConfig, openMetadata } from "../../server/store/metadata.js";
import { createFileQuarantine, QUARANTINE_DIRECTORY } from "../../server/store/quarantine.js";
import { type BlobLayout, V1_DATA_OFFSET } from "../../server/store/storage/blob-header.js";
import { FilesystemStorage } from "../../server/store/storage/filesystem.js";
import { tempDir } from "../support/temp-dir.js";

const LEFT_FILE = "6c656674";
const RIGHT_FILE = "7269676874";
/** Bytes before the body of a blob file, per layout (V0: 8, V1: one 4096-byte page). */
const HEADER_BYTES: Readonly<Record<BlobLayout, number>> = { v0: 8, v1: V1_DATA_OFFSET };
/** The layout of the test running now, and its header size. */
let layout: BlobLayout = "v1";
let HEADER = HEADER_BYTES[layout];

/** Registers `body` once per blob layout. */
function layoutTest(name: string, body: () => Promise<void>): void {
  for (const each of ["v0", "v1"] as const) {
    test(`${name} (${each})`, async () => {
      layout = each;
      HEADER = HEADER_BYTES[each];
      await body();
    });
  }
}

let dir: { path: string; remove(): Promise<void> };
let warnings: string[];
let registry: Registry;

beforeEach(async () => {
  dir = await tempDir("metadata-recovery-");
  warnings = [];
  registry = new Registry();
});

afterEach(async () => {
  await dir.remove();
});

function config(extra: Partial<MetadataConfig> = {}): MetadataConfig {
  return {
    partition: "p",
    keyCodec: fixedKeys(1),
    registry,
    quarantine: createFileQuarantine(dir.path),
    warn: (message) => warnings.push(message),
    blobLayout: layout,
    ...extra,
  };
}

function open(extra: Partial<MetadataConfig> = {}) {
  return openMetadata(new FilesystemStorage(dir.path), config(extra));
}

const file = (name: string) => join(dir.path, "p", name);

/** right holds v1 {1: one}, left v2 {1: two, 2: new}. */
async function twoVersions(): Promise<void> {
  const store = await open();
  store.put(Buffer.of(1), Buffer.from("one"));
  await store.sync();
  store.put(Buffer.of(1), Buffer.from("two"));
  store.put(Buffer.of(2), Buffer.from("new"));
  await store.sync();
  await store.close();
}

async function flipLastBodyByte(name: string): Promise<void> {
  const bytes = await readFile(file(name));
  bytes[bytes.length - 5] = (bytes[bytes.length - 5] as number) ^ 0x01;
  await writeFile(file(name), bytes);
}

async function zeroBody(name: string): Promise<void> {
  const bytes = await readFile(file(name));
  bytes.fill(0, HEADER);
  await writeFile(file(name), bytes);
}

async function quarantined(): Promise<{ name: string; bytes: Buffer }[]> {
  const directory = join(dir.path, QUARANTINE_DIRECTORY, "p");
  let names: string[];
  try {
    names = (await readdir(directory)).sort();
  } catch {
    return [];
  }
  return Promise.all(names.map(async (name) => ({ name, bytes: await readFile(join(directory, name)) })));
}

async function discarded(reason: string): Promise<number> {
  const text = await registry.metrics();
  const match = new RegExp(
    `^metadata_blobs_discarded_total\\{partition="p",reason="${reason}"\\} (\\d+)$`,
    "m",
  ).exec(text);
  return match === null ? 0 : Number(match[1]);
}

function entries(store: Awaited<ReturnType<typeof open>>): string[] {
  return [...store.entries()].map(([k, v]) => `${k.toString("hex")}=${Buffer.from(v).toString()}`);
}

for (const [damage, apply, reason] of [
  ["a flipped byte", flipLastBodyByte, "checksum_mismatch"],
  [
    "a body cut short by a few bytes",
    async (n: string) => truncate(file(n), HEADER + 16),
    "checksum_mismatch",
  ],
  ["a body truncated below 12 bytes", async (n: string) => truncate(file(n), HEADER + 5), "too_short"],
  ["a zero-filled body", zeroBody, "checksum_mismatch"],
] as const) {
  layoutTest(
    `${damage} in the newest blob: the previous version is served, its bytes are quarantined, logged and counted`,
    async () => {
      await twoVersions();
      await apply(LEFT_FILE);
      const damaged = await readFile(file(LEFT_FILE));

      const store = await open();
      assert.deepEqual(entries(store), ["01=one"]);
      assert.equal(store.committed().version, 1n);

      assert.equal(warnings.length, 1);
      const claims =
        damage === "a zero-filled body"
          ? "claims version 0"
          : reason === "too_short"
            ? "no readable version"
            : "claims version 2";
      assert.match(warnings[0] as string, new RegExp(`discarding blob left \\(p/${LEFT_FILE}\\)`));
      assert.match(warnings[0] as string, new RegExp(reason.replace("_", " ")));
      assert.match(warnings[0] as string, new RegExp(claims));
      assert.match(warnings[0] as string, /right holds version 1/);
      assert.match(warnings[0] as string, /kept in \.quarantine\/p\/6c656674\./);

      const kept = await quarantined();
      assert.equal(kept.length, 1);
      assert.deepEqual(kept[0]?.bytes, damaged, "the quarantine holds the file as it was");
      assert.match(kept[0]?.name as string, new RegExp(`^${LEFT_FILE}\\.${reason}\\.`));
      assert.equal((await stat(file(LEFT_FILE))).size, HEADER, "the blob itself is cut");
      assert.equal(await discarded(reason), 1);

      // The next syncs go on from version 1 without losing anything served.
      store.put(Buffer.of(3), Buffer.from("three"));
      assert.equal(await store.sync(), 2n);
      await store.close();
      const again = await open();
      assert.deepEqual(entries(again), ["01=one", "03=three"]);
      await again.close();
    },
  );

  layoutTest(
    `${damage} in both blobs: DataLoss, nothing changed on disk, until the loss is accepted`,
    async () => {
      await twoVersions();
      await apply(LEFT_FILE);
      await apply(RIGHT_FILE);
      const before = [await readFile(file(LEFT_FILE)), await readFile(file(RIGHT_FILE))];

      for (let attempt = 0; attempt < 2; attempt++) {
        await assert.rejects(open(), (err: unknown) => {
          assert.ok(isStoreError(err, "DataLoss"), String(err));
          assert.match((err as Error).message, /data loss in partition p: no valid blob/);
          assert.match((err as Error).message, /accept-data-loss p/);
          return true;
        });
      }
      assert.deepEqual([await readFile(file(LEFT_FILE)), await readFile(file(RIGHT_FILE))], before);
      assert.deepEqual(await quarantined(), []);
      assert.match(await registry.metrics(), /^metadata_partition_data_loss\{partition="p"\} 1$/m);
      assert.match(warnings[0] as string, /^data loss in partition p/);

      const store = await open({ acceptDataLoss: true });
      assert.deepEqual(entries(store), []);
      const kept = await quarantined();
      assert.deepEqual(
        kept.map((k) => k.bytes),
        [before[0], before[1]],
        "both blobs are kept, byte for byte",
      );
      assert.equal(await discarded(reason), 2);
      assert.doesNotMatch(await registry.metrics(), /^metadata_partition_data_loss\{/m);
      store.put(Buffer.of(9), Buffer.from("after"));
      await store.sync();
      await store.close();
      const reopened = await open();
      assert.deepEqual(entries(reopened), ["09=after"]);
      await reopened.close();
    },
  );
}

layoutTest("the same blob damaged twice is quarantined twice, in two files", async () => {
  await twoVersions();
  await flipLastBodyByte(LEFT_FILE);
  let store = await open();
  store.put(Buffer.of(4), Buffer.from("four"));
  await store.sync(); // v3 into left
  await store.close();
  await flipLastBodyByte(LEFT_FILE);
  store = await open();
  assert.deepEqual(entries(store), ["01=one"]);
  await store.close();
  const kept = await quarantined();
  assert.equal(kept.length, 2);
  assert.notEqual(kept[0]?.name, kept[1]?.name);
  assert.equal(await discarded("checksum_mismatch"), 2);
});

layoutTest("a quarantine that fails leaves the damaged blob uncut and fails the open", async () => {
  await twoVersions();
  await flipLastBodyByte(LEFT_FILE);
  const damaged = await readFile(file(LEFT_FILE));
  // A file where the quarantine directory should be: mkdir fails.
  await writeFile(join(dir.path, QUARANTINE_DIRECTORY), "not a directory");
  await assert.rejects(
    open(),
    (err: unknown) => isStoreError(err) && /quarantine p\/6c656674/.test(String(err)),
  );
  assert.deepEqual(await readFile(file(LEFT_FILE)), damaged);
  assert.equal(await discarded("checksum_mismatch"), 0);
});

layoutTest(
  "the only blob that ever held data, damaged: served empty (a first sync cut short looks the same), kept and logged",
  async () => {
    const store = await open();
    store.put(Buffer.of(1), Buffer.from("one"));
    await store.sync(); // v1 into right; left never held a body
    await store.close();
    await flipLastBodyByte(RIGHT_FILE);
    const reopened = await open();
    assert.deepEqual(entries(reopened), []);
    await reopened.close();
    assert.equal((await quarantined()).length, 1);
    assert.match(warnings[0] as string, /discarding blob right .*claims version 1, left holds version 0/);
  },
);
