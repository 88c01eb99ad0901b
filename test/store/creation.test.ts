/**
 * Blob creation that a full disk or a crash cannot break (docs/FORMAT.md §2.3).
 *
 * - Header resolution follows commonware-runtime 2026.10.0 exactly: every state an interrupted
 *   V1 creation can leave is healed (created again), anything else is refused loudly and left
 *   as it is. The accept and reject tables are those of the runtime's own tests.
 * - Creation writes the header into an empty file without sizing it first, so a V0 creation torn
 *   at any byte is healed too, while a whole V0 header stays readable by 2026.4.0.
 * - Faults at each creation step (ENOSPC, a crash keeping a torn prefix or nothing) for each
 *   layout: the failed open creates nothing usable, and once the fault is gone the partition
 *   opens, takes writes and reads them back after a restart.
 */
import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { crc32c } from "../../server/store/checksum.js";
import { fixedKeys } from "../../server/store/codec.js";
import { isStoreError } from "../../server/store/errors.js";
import { openMetadata } from "../../server/store/metadata.js";
import {
  BLOB_LAYOUTS,
  type BlobLayout,
  headerRegion,
  isInterruptedV1Creation,
  resolveHeader,
  resolveLength,
} from "../../server/store/storage/blob-header.js";
import { type Fault, FaultyStorage } from "../../server/store/storage/faulty.js";
import { FilesystemStorage } from "../../server/store/storage/filesystem.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import type { Storage } from "../../server/store/storage/storage.js";
import { u64, utf8 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";

const LEFT = utf8("left");
const RIGHT = utf8("right");

/** A V1 region (blob version `version`, valid CRC) followed by `payload`. */
function v1Blob(version: number, payload: Uint8Array = new Uint8Array()): Buffer {
  const region = Buffer.from(headerRegion("v1"));
  region.writeUInt16BE(version, 6);
  region.writeUInt32BE(crc32c(region.subarray(0, 8)), 8);
  return Buffer.concat([region, payload]);
}

/** A V0 header (blob version `version`) followed by `payload`. */
function v0Blob(version: number, payload: Uint8Array = new Uint8Array()): Buffer {
  const header = Buffer.from(headerRegion("v0"));
  header.writeUInt16BE(version, 6);
  return Buffer.concat([header, payload]);
}

function edit(bytes: Buffer, change: (b: Buffer) => void): Buffer {
  const copy = Buffer.from(bytes);
  change(copy);
  return copy;
}

/** Resolves a whole file as the storage does: a header, or undefined for "create again". */
function resolveFile(file: Uint8Array): ReturnType<typeof resolveHeader> {
  return resolveHeader(file.subarray(0, resolveLength(file.length)), file.length, "p/6c656674");
}

const region = v1Blob(5);
const HEALED: [string, Buffer][] = [
  ["only sizes flushed", Buffer.alloc(region.length)],
  ["sub-prelude fragment", Buffer.alloc(3)],
  ["prefix of the magic", region.subarray(0, 2)],
  ["prefix ending in the version bytes", region.subarray(0, 8)],
  ["prefix ending mid-CRC", region.subarray(0, 10)],
  ["torn after the prelude, CRC unwritten", edit(region, (r) => r.fill(0, 8, 12))],
  [
    "prefix with a persisted length",
    Buffer.concat([region.subarray(0, 10), Buffer.alloc(region.length - 10)]),
  ],
  ["V0 rotted into a canonical V1 prefix", edit(v0Blob(0, Buffer.alloc(100)), (r) => r.writeUInt8(0, 3))],
  ["V0 creation sized, header unwritten", Buffer.alloc(8)],
  ["V0 creation torn inside the magic", Buffer.from("4357490000000000", "hex")],
];

const REFUSED: [string, Buffer, "BlobCorrupt" | "BlobVersionMismatch"][] = [
  ["non-canonical magic byte", edit(region, (r) => r.writeUInt8(0x58, 0)), "BlobCorrupt"],
  ["non-canonical layout version", edit(region, (r) => r.writeUInt8(2, 4)), "BlobCorrupt"],
  ["magic byte lost with later bytes persisted", edit(region, (r) => r.writeUInt8(0, 3)), "BlobCorrupt"],
  [
    "layout version byte lost with later bytes persisted",
    edit(region, (r) => r.writeUInt8(0, 5)),
    "BlobCorrupt",
  ],
  [
    "CRC that does not match its own prelude",
    edit(region, (r) => r.writeUInt8((r.readUInt8(9) + 1) % 256 || 1, 9)),
    "BlobCorrupt",
  ],
  ["nonzero padding", edit(region, (r) => r.writeUInt8(0xff, 100)), "BlobCorrupt"],
  ["data past the header region", Buffer.concat([region, Buffer.from([1])]), "BlobVersionMismatch"],
  [
    "rotted-magic V0 blob with its version stamp",
    edit(v0Blob(5, Buffer.alloc(100)), (r) => r.writeUInt8(0, 3)),
    "BlobCorrupt",
  ],
  [
    "rotted-magic V0 blob with payload",
    edit(v0Blob(5, Buffer.from([0xaa, 0xbb])), (r) => r.writeUInt8(0, 3)),
    "BlobCorrupt",
  ],
  ["all zeros, one byte longer than the creation region", Buffer.alloc(4097), "BlobCorrupt"],
  [
    "zero payload past the header region, CRC lost",
    edit(v1Blob(5, Buffer.alloc(100)), (r) => r.fill(0, 8, 12)),
    "BlobCorrupt",
  ],
  ["whole V1 header, blob version 5", region, "BlobVersionMismatch"],
  ["whole V0 header, blob version 5", v0Blob(5), "BlobVersionMismatch"],
];

test("every state an interrupted creation leaves resolves as 'create again'", () => {
  for (const [what, file] of HEALED) {
    assert.equal(resolveFile(file), undefined, what);
    if (file.length >= 8) assert.ok(isInterruptedV1Creation(file), what);
  }
});

test("anything else is refused loudly", () => {
  for (const [what, file, kind] of REFUSED) {
    assert.throws(
      () => resolveFile(file),
      (err: unknown) => isStoreError(err, kind),
      what,
    );
  }
});

test("whole headers of both layouts resolve to their layout and data offset", () => {
  assert.deepEqual(resolveFile(headerRegion("v0")), { layout: "v0", dataOffset: 8 });
  assert.deepEqual(resolveFile(headerRegion("v1")), { layout: "v1", dataOffset: 4096 });
  assert.equal(Buffer.from(headerRegion("v1").subarray(0, 12)).toString("hex"), "4357494b000100002813d8dc");
});

for (const layout of BLOB_LAYOUTS) {
  test(`${layout}: a store opens over healed blobs, creates them again and leaves refused ones alone`, async () => {
    for (const [what, file] of HEALED) {
      const memory = new MemoryStorage();
      memory.setFileBytes("p", LEFT, file);
      memory.setFileBytes("p", RIGHT, file);
      const store = await openMetadata(memory, {
        partition: "p",
        keyCodec: fixedKeys(8),
        blobLayout: layout,
      });
      assert.equal(store.blobLayout, layout, what);
      for (const name of [LEFT, RIGHT]) {
        assert.deepEqual(
          Buffer.from(memory.fileBytes("p", name) ?? []),
          Buffer.from(headerRegion(layout)),
          what,
        );
      }
      store.put(u64(1), utf8("one"));
      await store.sync();
      await store.close();
    }
    for (const [what, file, kind] of REFUSED) {
      const memory = new MemoryStorage();
      memory.setFileBytes("p", LEFT, file);
      await assert.rejects(
        openMetadata(memory, { partition: "p", keyCodec: fixedKeys(8), blobLayout: layout }),
        (err: unknown) => isStoreError(err, kind),
        what,
      );
      assert.deepEqual(Buffer.from(memory.fileBytes("p", LEFT) ?? []), file, `${what}: untouched`);
    }
  });
}

/** Keeps every operation since the last sync at a crash: the torn write's prefix stays. */
const KEEP_ALL = { random: () => 0.999 };

interface Step {
  what: string;
  fault: Fault;
}

/** The steps of creating a blob of `layout` in an empty file, each failed or crashed. */
function creationSteps(layout: BlobLayout): Step[] {
  const size = headerRegion(layout).length;
  const tears = layout === "v0" ? [0, 1, 3, 4, 7] : [0, 1, 4, 6, 8, 10, 12, 100, 4095];
  const steps: Step[] = [];
  for (const [how, extra] of [
    ["ENOSPC", { errno: "ENOSPC" }],
    ["crash keeping the prefix", { crash: KEEP_ALL }],
    ["crash losing it", { crash: {} }],
  ] as const) {
    for (const tear of tears) {
      steps.push({
        what: `${how}: header write torn at ${tear}/${size}`,
        fault: { op: "create-write", tearBytes: tear, ...extra },
      });
    }
    steps.push({ what: `${how}: header sync`, fault: { op: "create-sync", ...extra } });
  }
  return steps;
}

/** Opens, puts and syncs; then reopens and checks, on `storage` (faults healed). */
async function opensAndTakesWrites(storage: Storage, layout: BlobLayout, what: string): Promise<void> {
  const store = await openMetadata(storage, { partition: "p", keyCodec: fixedKeys(8), blobLayout: layout });
  assert.equal(store.blobLayout, layout, what);
  store.put(u64(1), utf8("one"));
  assert.equal(await store.sync(), 1n, what);
  await store.close();
  const again = await openMetadata(storage, { partition: "p", keyCodec: fixedKeys(8) });
  assert.deepEqual(again.get(u64(1)), utf8("one"), what);
  assert.equal(again.blobLayout, layout, what);
  await again.close();
}

for (const layout of BLOB_LAYOUTS) {
  test(`${layout}: a partition first created on a full disk or during a crash opens and takes writes afterwards`, async () => {
    for (const blob of [0, 1]) {
      for (const { what, fault } of creationSteps(layout)) {
        const label = `${blob === 0 ? "left" : "right"}: ${what}`;
        const memory = new MemoryStorage();
        const faulty = new FaultyStorage(memory);
        // The right blob's steps come after the left blob's.
        faulty.inject({ ...fault, after: blob });
        await assert.rejects(
          openMetadata(faulty, { partition: "p", keyCodec: fixedKeys(8), blobLayout: layout }),
          (err: unknown) => isStoreError(err, "Io") && /injected/.test((err as Error).message),
          label,
        );
        faulty.heal();
        await opensAndTakesWrites(faulty, layout, label);
      }
    }
  });

  test(`${layout}: healing a torn blob survives a failure or crash at each of its own steps`, async () => {
    for (const op of ["create-truncate", "create-write", "create-sync"] as const) {
      for (const extra of [{ errno: "ENOSPC" }, { crash: KEEP_ALL }, { crash: {} }]) {
        const label = `${op} ${JSON.stringify(extra)}`;
        const memory = new MemoryStorage();
        // What 2026.4.0 leaves when its header write fails after sizing the file.
        memory.setFileBytes("p", LEFT, Buffer.alloc(8));
        const faulty = new FaultyStorage(memory);
        faulty.inject({ op, ...(op === "create-write" ? { tearBytes: 5 } : {}), ...extra });
        await assert.rejects(openMetadata(faulty, { partition: "p", blobLayout: layout }), /injected/, label);
        faulty.heal();
        await opensAndTakesWrites(faulty, layout, label);
      }
    }
  });
}

test("filesystem: ENOSPC at the header write leaves a file the next open creates again", async () => {
  const dir = await tempDir();
  try {
    for (const layout of BLOB_LAYOUTS) {
      const fs = new FilesystemStorage(join(dir.path, layout));
      const faulty = new FaultyStorage(fs);
      faulty.inject({ op: "create-write", tearBytes: 3, errno: "ENOSPC" });
      await assert.rejects(openMetadata(faulty, { partition: "p", blobLayout: layout }), /ENOSPC/);
      assert.equal((await readFile(join(fs.root, "p", "6c656674"))).toString("hex"), "435749");
      // 2026.4.0 sized the file before its header write: the same failure left 8 zero bytes.
      await writeFile(join(fs.root, "p", "6c656674"), Buffer.alloc(8));
      await opensAndTakesWrites(fs, layout, layout);
      const file = await readFile(join(fs.root, "p", "6c656674"));
      assert.deepEqual(file.subarray(0, headerRegion(layout).length), Buffer.from(headerRegion(layout)));
    }
  } finally {
    await dir.remove();
  }
});

test("a partition keeps its layout when one of its blobs has to be created", async () => {
  for (const [existing, configured] of [
    ["v0", "v1"],
    ["v1", "v0"],
  ] as const) {
    for (const present of [LEFT, RIGHT]) {
      const what = `${existing} ${Buffer.from(present).toString()} present, ${configured} configured`;
      const memory = new MemoryStorage();
      // One blob holding {1: one} at version 1, written as a store of that layout writes it.
      const seed = await openMetadata(memory, {
        partition: "seed",
        keyCodec: fixedKeys(8),
        blobLayout: existing,
      });
      seed.put(u64(1), utf8("one"));
      await seed.sync(); // the first sync writes the right blob
      await seed.close();
      const written = memory.fileBytes("seed", RIGHT);
      assert.ok(written !== undefined);
      memory.setFileBytes("p", present, written);
      const store = await openMetadata(memory, {
        partition: "p",
        keyCodec: fixedKeys(8),
        blobLayout: configured,
      });
      assert.equal(store.blobLayout, existing, what);
      assert.deepEqual(store.get(u64(1)), utf8("one"), what);
      await store.close();
      for (const name of [LEFT, RIGHT]) {
        const magic = Buffer.from(memory.fileBytes("p", name) ?? [])
          .subarray(0, 4)
          .toString();
        assert.equal(magic, existing === "v0" ? "CWIC" : "CWIK", `${what}: ${Buffer.from(name).toString()}`);
      }
    }
  }
});
