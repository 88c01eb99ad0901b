/**
 * Blob layout and no-change-sync settings of the server: parsing (flags, environment, errors)
 * and their effect on disk: new partitions take the configured layout (per partition name, else
 * the default), an existing partition keeps the layout it has, and a sync with nothing to write
 * leaves the files alone on V1 (2026.10.0) and bumps the version on V0 (2026.4.0). A partition
 * whose first creation failed (a full disk) takes writes as soon as the disk has room again.
 */
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { ConfigError, parseConfig } from "../../server/config.js";
import { FaultyStorage } from "../../server/store/storage/faulty.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { startDirServer } from "../support/rpc-helpers.js";
import { tempDir } from "../support/temp-dir.js";

test("--blob-layout, --partition-blob-layout and --no-change-sync: defaults, flags, environment", () => {
  const defaults = parseConfig([], {});
  assert.equal(defaults.blobLayout, "v1");
  assert.deepEqual([...defaults.blobLayouts], []);
  assert.equal(defaults.noChangeSync, undefined);

  const flags = parseConfig(
    [
      "--blob-layout",
      "v0",
      "--partition-blob-layout",
      "new=v1",
      "--partition-blob-layout=old=V0",
      "--no-change-sync",
      "skip",
    ],
    {},
  );
  assert.equal(flags.blobLayout, "v0");
  assert.deepEqual(
    [...flags.blobLayouts],
    [
      ["new", "v1"],
      ["old", "v0"],
    ],
  );
  assert.equal(flags.noChangeSync, "skip");

  const env = parseConfig([], {
    METADATA_BLOB_LAYOUT: "v0",
    METADATA_PARTITION_BLOB_LAYOUTS: "a=v1, b=v0",
    METADATA_NO_CHANGE_SYNC: "bump",
  });
  assert.equal(env.blobLayout, "v0");
  assert.deepEqual(
    [...env.blobLayouts],
    [
      ["a", "v1"],
      ["b", "v0"],
    ],
  );
  assert.equal(env.noChangeSync, "bump");
  assert.equal(parseConfig([], { METADATA_NO_CHANGE_SYNC: "auto" }).noChangeSync, undefined);

  for (const [argv, message] of [
    [["--blob-layout", "v2"], /--blob-layout: invalid blob layout "v2": use v0 or v1/],
    [["--partition-blob-layout", "p"], /--partition-blob-layout: "p" is not NAME=v0\|v1/],
    [["--partition-blob-layout", "a/b=v0"], /--partition-blob-layout: invalid partition name "a\/b"/],
    [["--partition-blob-layout", "p=v9"], /--partition-blob-layout: invalid blob layout "v9"/],
    [["--no-change-sync", "never"], /--no-change-sync: "never" is not auto, bump or skip/],
  ] as const) {
    assert.throws(
      () => parseConfig(argv, {}),
      (err: unknown) => err instanceof ConfigError && message.test(err.message),
    );
  }
});

test("new partitions take the configured layout, existing ones keep theirs, no-change syncs follow the layout", async () => {
  const dir = await tempDir("metadata-layout-");
  const magic = async (partition: string) =>
    (await readFile(join(dir.path, partition, "6c656674"))).subarray(0, 4).toString();
  const files = async (partition: string) =>
    Buffer.concat([
      await readFile(join(dir.path, partition, "6c656674")),
      await readFile(join(dir.path, partition, "7269676874")),
    ]);
  try {
    let server = await startDirServer(dir.path, ["--partition-blob-layout", "legacy=v0"]);
    try {
      for (const partition of ["modern", "legacy"]) {
        await server.client.put(Buffer.from("k"), Buffer.from("v"), { partition });
      }
      assert.equal(await magic("modern"), "CWIK");
      assert.equal(await magic("legacy"), "CWIC");

      // A second put reaches the other blob, and a first removal of an absent key carries its
      // value to the first; from then on a removal of an absent key has nothing to write.
      const absent = Buffer.from("absent");
      for (const partition of ["modern", "legacy"]) {
        await server.client.put(Buffer.from("k"), Buffer.from("v"), { partition });
        await server.client.remove(absent, { partition });
      }
      const modern = await files("modern");
      const legacy = await files("legacy");
      const modernVersion = (await server.client.remove(absent, { partition: "modern" })).version;
      const legacyVersion = (await server.client.remove(absent, { partition: "legacy" })).version;
      assert.deepEqual(await files("modern"), modern, "V1: a no-change sync writes nothing");
      assert.equal((await server.client.remove(absent, { partition: "modern" })).version, modernVersion);
      assert.notDeepEqual(await files("legacy"), legacy, "V0: a no-change sync writes a new version");
      assert.equal((await server.client.remove(absent, { partition: "legacy" })).version, legacyVersion + 1n);
    } finally {
      await server.stop();
    }

    // Another default layout: existing partitions keep theirs, new ones take the new default.
    server = await startDirServer(dir.path, ["--blob-layout", "v0"]);
    try {
      for (const partition of ["modern", "legacy", "later"]) {
        await server.client.put(Buffer.from("k2"), Buffer.from("v2"), { partition });
        assert.deepEqual(
          await server.client.get(Buffer.from("k"), { partition }),
          partition === "later" ? undefined : Buffer.from("v"),
        );
      }
      assert.equal(await magic("modern"), "CWIK");
      assert.equal(await magic("legacy"), "CWIC");
      assert.equal(await magic("later"), "CWIC");
    } finally {
      await server.stop();
    }
  } finally {
    await dir.remove();
  }
});

test("a partition whose creation failed on a full disk takes writes once space is back, without a restart", async () => {
  for (const layout of ["v0", "v1"] as const) {
    const memory = new MemoryStorage();
    // What an earlier release left after ENOSPC between sizing a blob and writing its header.
    memory.setFileBytes("sized", Buffer.from("left"), Buffer.alloc(8));
    const faulty = new FaultyStorage(memory);
    const dir = await tempDir("metadata-layout-");
    const server = await startDirServer(dir.path, ["--blob-layout", layout], faulty);
    try {
      await server.client.put(Buffer.from("k"), Buffer.from("v"), { partition: "sized" });
      // A V1 header torn after 100 of its 4096 bytes; a V0 one after 7 of its 8.
      faulty.inject({ op: "create-write", tearBytes: layout === "v1" ? 100 : 7, errno: "ENOSPC" });
      await assert.rejects(server.client.put(Buffer.from("k"), Buffer.from("v"), { partition: "full" }));
      assert.equal(faulty.faultsFired, 1);
      faulty.heal();
      await server.client.put(Buffer.from("k"), Buffer.from("v"), { partition: "full" });
      assert.deepEqual(await server.client.get(Buffer.from("k"), { partition: "full" }), Buffer.from("v"));
    } finally {
      await server.stop();
    }
    const again = await startDirServer(dir.path, [], memory);
    try {
      assert.deepEqual(
        await again.client.get(Buffer.from("k"), { partition: "full" }),
        Buffer.from("v"),
        layout,
      );
      const magic = Buffer.from(memory.fileBytes("full", Buffer.from("left")) ?? [])
        .subarray(0, 4)
        .toString();
      assert.equal(magic, layout === "v0" ? "CWIC" : "CWIK");
    } finally {
      await again.stop();
      await dir.remove();
    }
  }
});
