/**
 * `metadata-cli check`: a read-only check of a data directory says, per partition, what a
 * server's open then does (ok, recoverable, data loss, corrupt), changes no byte, exits 1 when a
 * partition would not be served, and refuses while a server holds the directory.
 */
import assert from "node:assert/strict";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { status } from "@grpc/grpc-js";
import { fixedKeys, variableKeys } from "../../server/store/codec.js";
import { openMetadata } from "../../server/store/metadata.js";
import { FilesystemStorage } from "../../server/store/storage/filesystem.js";
import { runCli } from "../support/cli-process.js";
import { startDirServer } from "../support/rpc-helpers.js";
import { u64, utf8 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";

const LEFT = "6c656674";
const RIGHT = "7269676874";

/** Writes `versions` syncs of one key into `partition`, then closes it. */
async function write(dataDir: string, partition: string, versions: number, wide = false): Promise<void> {
  const store = await openMetadata(new FilesystemStorage(dataDir), {
    partition,
    keyCodec: wide ? fixedKeys(8) : variableKeys(),
  });
  for (let v = 1; v <= versions; v++) {
    store.put(wide ? u64(1) : utf8("k"), utf8(`v${v}`));
    store.put(wide ? u64(2) : utf8("j"), utf8("same"));
    await store.sync();
  }
  await store.close();
}

/** The blob file holding the newer version of a partition (default layout: data at 4096). */
async function newest(dataDir: string, partition: string): Promise<string> {
  const version = async (file: string) =>
    (await readFile(join(dataDir, partition, file))).readBigUInt64BE(4096);
  return (await version(RIGHT)) > (await version(LEFT)) ? RIGHT : LEFT;
}

async function flipLastBodyByte(path: string): Promise<void> {
  const bytes = await readFile(path);
  bytes[bytes.length - 5] = (bytes[bytes.length - 5] as number) ^ 0x40;
  await writeFile(path, bytes);
}

/** Every file under `dir` with its bytes, for "nothing changed". */
async function snapshot(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const path = join(entry.parentPath, entry.name);
    files.set(path, entry.isFile() ? (await readFile(path)).toString("hex") : "dir");
  }
  return files;
}

test("check says what each partition's open will do, changes nothing, and exits 1 on data loss", async () => {
  const dir = await tempDir("metadata-check-");
  try {
    await write(dir.path, "good", 3);
    await write(dir.path, "torn", 3);
    await write(dir.path, "lost", 3);
    await write(dir.path, "wide", 2, true);
    await flipLastBodyByte(join(dir.path, "torn", await newest(dir.path, "torn")));
    await flipLastBodyByte(join(dir.path, "lost", LEFT));
    await flipLastBodyByte(join(dir.path, "lost", RIGHT));
    await writeFile(join(dir.path, "good", "notes.txt"), "an operator's notes");
    const before = await snapshot(dir.path);

    // "wide" holds 8-byte keys; checked with the variable codec it decodes differently, so the
    // check takes the server's codec flags.
    const run = await runCli(["check", "--data-dir", dir.path, "--partition-key-codec", "wide=fixed:8"]);
    assert.equal(run.code, 1, run.stderr);
    const lines = run.stdout.trim().split("\n");
    assert.deepEqual(
      lines.map((line) => line.split(":")[0]),
      ["good", "lost", "torn", "wide", `checked 4 partition(s) in ${dir.path}`],
    );
    assert.match(
      lines[0] ?? "",
      /^good: ok: left v\d, right v\d; serves version 3, 2 key\(s\); other entries left alone: notes\.txt$/,
    );
    assert.match(
      lines[1] ?? "",
      /^lost: DATA LOSS: left checksum mismatch \(claims v\d\), right checksum mismatch \(claims v\d\); no valid blob: answered DATA_LOSS until the loss is accepted$/,
    );
    assert.match(
      lines[2] ?? "",
      /^torn: recoverable: .*checksum mismatch \(claims v3\).*; the open keeps the damaged blob in the quarantine, cuts it and serves version 2, 2 key\(s\) \(the writes of the damaged, newer version are lost\)$/,
    );
    assert.match(lines[3] ?? "", /^wide: ok: left v\d, right v\d; serves version 2, 2 key\(s\)$/);
    assert.match(lines[4] ?? "", /: 2 ok, 1 recoverable, 1 with data loss, 0 corrupt$/);
    assert.deepEqual(await snapshot(dir.path), before, "the check changed nothing");

    // Without the codec flag, "wide" does not decode: corrupt, as a server would refuse it.
    const unflagged = await runCli(["check", "wide", "--data-dir", dir.path]);
    assert.equal(unflagged.code, 1);
    assert.match(
      unflagged.stdout,
      /^wide: CORRUPT: corrupt body in wide\/(left|right): .* \(with key codec variable\); the open refuses it \(DATA_LOSS\)$/m,
    );

    // One partition, fine: exit 0.
    const one = await runCli(["check", "good", "torn", "--data-dir", dir.path]);
    assert.equal(one.code, 0, one.stdout + one.stderr);
    assert.match(one.stdout, /: 1 ok, 1 recoverable, 0 with data loss, 0 corrupt$/m);

    // What the server then does agrees.
    const server = await startDirServer(dir.path, ["--partition-key-codec", "wide=fixed:8"]);
    try {
      const value = async (partition: string, key: Uint8Array) =>
        Buffer.from((await server.client.get(key, { partition })) ?? []).toString();
      assert.equal(await value("good", utf8("k")), "v3");
      assert.equal(await value("torn", utf8("k")), "v2");
      assert.equal(await value("wide", u64(1)), "v2");
      await assert.rejects(server.client.get(utf8("k"), { partition: "lost" }), { code: status.DATA_LOSS });
      // Refused while the server holds the directory.
      const busy = await runCli(["check", "--data-dir", dir.path]);
      assert.equal(busy.code, 1);
      assert.match(busy.stderr, /stop the server, or check a copy/);
    } finally {
      await server.stop();
    }

    const unknown = await runCli(["check", "nosuch", "--data-dir", dir.path]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /^error: no partition nosuch in /);
  } finally {
    await dir.remove();
  }
});
