/**
 * One suite every storage backend must pass: memory, filesystem, etcd (against a real etcd started
 * here; skipped with the reason when etcd is not installed), and the faulty and metered wrappers
 * (with no fault scheduled they must behave exactly like what they wrap).
 */
import assert from "node:assert/strict";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Registry } from "prom-client";
import { crc32c } from "../../../server/store/checksum.js";
import { isStoreError } from "../../../server/store/errors.js";
import { BLOB_LAYOUTS, headerRegion } from "../../../server/store/storage/blob-header.js";
import { EtcdStorage } from "../../../server/store/storage/etcd.js";
import { FaultyStorage } from "../../../server/store/storage/faulty.js";
import { FilesystemStorage } from "../../../server/store/storage/filesystem.js";
import { MemoryStorage } from "../../../server/store/storage/memory.js";
import { MeteredStorage } from "../../../server/store/storage/metered.js";
import { blobFileName, type Storage } from "../../../server/store/storage/storage.js";
import {
  type EtcdCluster,
  etcdBlobBytes,
  etcdMissing,
  etcdSeedBlob,
  startEtcdCluster,
} from "../../support/etcd-cluster.js";
import { tempDir } from "../../support/temp-dir.js";

const NAME = Buffer.from("left");

/** A whole V1 header region with blob version `version` (and a valid CRC), changed by `edit`. */
function v1Header(version: number, edit: (region: Buffer) => void = () => undefined): Buffer {
  const region = Buffer.from(headerRegion("v1"));
  region.writeUInt16BE(version, 6);
  region.writeUInt32BE(crc32c(region.subarray(0, 8)), 8);
  edit(region);
  return region;
}

interface Backend {
  storage: Storage;
  /** Physical bytes of a file, or undefined when missing. */
  fileBytes(partition: string, name: Uint8Array): Promise<Buffer | undefined>;
  /** Writes a file's physical bytes directly, as a damaged or foreign file. */
  seedFile(partition: string, name: Uint8Array, bytes: Uint8Array): Promise<void>;
  /** Everything in the backend's root, for "nothing was created" checks. */
  listing(): Promise<string[]>;
}

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups) await cleanup();
});

function memoryBackend(wrap: (s: MemoryStorage) => Storage = (s) => s): Backend {
  const memory = new MemoryStorage();
  return {
    storage: wrap(memory),
    fileBytes: async (p, n) => {
      const bytes = memory.fileBytes(p, n);
      return bytes === undefined ? undefined : Buffer.from(bytes);
    },
    seedFile: async (p, n, b) => memory.setFileBytes(p, n, b),
    listing: async () => memory.listPartitions(),
  };
}

async function filesystemBackend(wrap: (s: FilesystemStorage) => Storage = (s) => s): Promise<Backend> {
  const dir = await tempDir();
  cleanups.push(dir.remove);
  const fs = new FilesystemStorage(join(dir.path, "root"));
  return {
    storage: wrap(fs),
    fileBytes: async (p, n) => readFile(join(fs.root, p, blobFileName(n))).catch(() => undefined),
    seedFile: async (p, n, b) => {
      await mkdir(join(fs.root, p), { recursive: true });
      await writeFile(join(fs.root, p, blobFileName(n)), b);
    },
    listing: async () => (await readdir(dir.path, { recursive: true })).map(String).sort(),
  };
}

let etcd: EtcdCluster | undefined;
let etcdPrefixes = 0;
const ETCD_MISSING = etcdMissing();

/** EtcdStorage on a fresh prefix of one etcd started for this file; small pages, so blobs span several. */
async function etcdBackend(): Promise<Backend> {
  if (etcd === undefined) {
    etcd = await startEtcdCluster(1);
    const cluster = etcd;
    cleanups.push(() => cluster.stop());
  }
  const client = etcd.client();
  const prefix = `suite${etcdPrefixes++}`;
  const pageBytes = 64;
  const storage = new EtcdStorage({ client, prefix, pageBytes });
  return {
    storage,
    fileBytes: (p, n) => etcdBlobBytes(client, storage.blobBase(p, n), pageBytes),
    seedFile: (p, n, b) => etcdSeedBlob(client, prefix, p, storage.blobBase(p, n), pageBytes, b),
    listing: async () => (await client.getAll().prefix(`${prefix}/`).keys()).sort(),
  };
}

const backends: [string, () => Promise<Backend>][] = [
  ["memory", async () => memoryBackend()],
  ["filesystem", () => filesystemBackend()],
  ["faulty(memory)", async () => memoryBackend((s) => new FaultyStorage(s))],
  ["metered(memory)", async () => memoryBackend((s) => new MeteredStorage(s, new Registry()))],
  ["metered(filesystem)", () => filesystemBackend((s) => new MeteredStorage(s, new Registry()))],
  ["etcd", etcdBackend],
];

for (const [label, make] of backends) {
  const skip = label === "etcd" && ETCD_MISSING !== undefined ? ETCD_MISSING : false;
  describe(`storage suite: ${label}`, { skip }, () => {
    for (const layout of BLOB_LAYOUTS) {
      const HEADER = Buffer.from(headerRegion(layout)).toString("hex");
      test(`${layout}: open creates a blob holding only the header`, async () => {
        const backend = await make();
        const { blob, length } = await backend.storage.open("p", NAME, { layout });
        assert.equal(length, 0);
        assert.equal(blob.length(), 0);
        assert.equal((await backend.fileBytes("p", NAME))?.toString("hex"), HEADER);
        await blob.close();
        const again = await backend.storage.open("p", NAME, { layout: layout === "v0" ? "v1" : "v0" });
        assert.equal(again.layout, layout);
        await again.blob.close();
      });

      test(`${layout}: write, read, resize and sync work on logical offsets`, async () => {
        const backend = await make();
        const { blob } = await backend.storage.open("p", NAME, { layout });
        await blob.write(0, Buffer.from("hello world"));
        await blob.write(6, Buffer.from("WORLD"));
        assert.equal(blob.length(), 11);
        assert.equal(Buffer.from(await blob.read(0, 11)).toString(), "hello WORLD");
        await blob.write(15, Buffer.from("!"));
        assert.deepEqual(Buffer.from(await blob.read(11, 5)), Buffer.from([0, 0, 0, 0, 0x21]));
        await blob.resize(5);
        assert.equal(blob.length(), 5);
        await blob.resize(7);
        assert.deepEqual(Buffer.from(await blob.read(0, 7)), Buffer.from("hello\0\0"));
        await blob.sync();
        assert.equal(
          (await backend.fileBytes("p", NAME))?.toString("hex"),
          `${HEADER}${Buffer.from("hello\0\0").toString("hex")}`,
        );
        await assert.rejects(blob.read(5, 3), (err: unknown) => isStoreError(err, "Io"));
        await blob.close();

        const reopened = await backend.storage.open("p", NAME, { layout });
        assert.equal(reopened.length, 7);
        await reopened.blob.close();
      });

      test(`${layout}: writeAll applies every write of a batch in order, as write does`, async () => {
        const backend = await make();
        const { blob } = await backend.storage.open("p", NAME, { layout });
        await blob.write(0, Buffer.from("0123456789"));
        await blob.writeAll([
          [2, Buffer.from("ab")],
          [8, Buffer.from("XYZ")],
          [3, Buffer.from("c")],
          [14, Buffer.from("!")],
        ]);
        assert.equal(blob.length(), 15);
        await blob.sync();
        assert.equal(
          (await backend.fileBytes("p", NAME))?.toString("hex"),
          `${HEADER}${Buffer.from("01ac4567XYZ\0\0\0!").toString("hex")}`,
        );
        await blob.writeAll([]);
        assert.equal(blob.length(), 15);
        await blob.close();
      });

      test(`${layout}: a file shorter than 8 bytes gets a fresh header`, async () => {
        const backend = await make();
        await backend.seedFile("p", NAME, Buffer.from([0x43, 0x57, 0x49]));
        const { blob, length } = await backend.storage.open("p", NAME, { layout });
        assert.equal(length, 0);
        assert.equal((await backend.fileBytes("p", NAME))?.toString("hex"), HEADER);
        await blob.close();
      });
    }

    test("an existing blob keeps its layout whatever layout the open asks for", async () => {
      const backend = await make();
      for (const [created, asked] of [
        ["v0", "v1"],
        ["v1", "v0"],
      ] as const) {
        const name = Buffer.from(created);
        const first = await backend.storage.open("p", name, { layout: created });
        await first.blob.write(0, Buffer.from("data"));
        await first.blob.sync();
        await first.blob.close();
        const again = await backend.storage.open("p", name, { layout: asked });
        assert.equal(again.layout, created);
        assert.equal(Buffer.from(await again.blob.read(0, again.length)).toString(), "data");
        await again.blob.close();
      }
    });

    for (const [what, header, kind] of [
      ["bad magic", "4357494400000000aa", "BlobCorrupt"],
      ["V0 magic, layout version 1", "4357494300010000aa", "BlobCorrupt"],
      ["blob version 1", "4357494300000001aa", "BlobVersionMismatch"],
      ["V1 magic, layout version 0", "4357494b00000000aa", "BlobCorrupt"],
      [
        "V1, a CRC that does not match",
        v1Header(0, (r) => r.writeUInt8((r.readUInt8(9) + 1) % 256 || 1, 9)).toString("hex"),
        "BlobCorrupt",
      ],
      ["V1, nonzero padding", v1Header(0, (r) => r.fill(1, 100, 101)).toString("hex"), "BlobCorrupt"],
      ["V1, blob version 1", v1Header(1).toString("hex"), "BlobVersionMismatch"],
      [
        "V1, data past a torn header",
        `${v1Header(0).subarray(0, 10).toString("hex")}${"00".repeat(4086)}01`,
        "BlobCorrupt",
      ],
    ] as const) {
      test(`a header with ${what} is refused and left as it is`, async () => {
        const backend = await make();
        await backend.seedFile("p", NAME, Buffer.from(header, "hex"));
        await assert.rejects(backend.storage.open("p", NAME), (err: unknown) => isStoreError(err, kind));
        assert.equal((await backend.fileBytes("p", NAME))?.toString("hex"), header);
      });
    }

    test("remove a blob, a partition; scan and list", async () => {
      const backend = await make();
      for (const name of ["left", "right"])
        await (await backend.storage.open("p", Buffer.from(name))).blob.close();
      await (await backend.storage.open("q", NAME)).blob.close();
      assert.deepEqual(await backend.storage.listPartitions(), ["p", "q"]);
      assert.deepEqual(
        (await backend.storage.scan("p")).map((n) => Buffer.from(n).toString()),
        ["left", "right"],
      );
      await backend.storage.remove("p", NAME);
      assert.equal(await backend.fileBytes("p", NAME), undefined);
      await assert.rejects(backend.storage.remove("p", NAME), (err: unknown) =>
        isStoreError(err, "BlobMissing"),
      );
      await backend.storage.remove("p");
      assert.deepEqual(await backend.storage.listPartitions(), ["q"]);
      await assert.rejects(backend.storage.remove("p"), (err: unknown) =>
        isStoreError(err, "PartitionMissing"),
      );
      await assert.rejects(backend.storage.scan("p"), (err: unknown) =>
        isStoreError(err, "PartitionMissing"),
      );
    });

    for (const name of ["", "a/b", "..", ".", "a b", "a.b", "caf\u00e9", "../escape", "a\0b"]) {
      test(`partition name ${JSON.stringify(name)} is refused before touching anything`, async () => {
        const backend = await make();
        const before = await backend.listing();
        const invalid = (err: unknown) => isStoreError(err, "InvalidPartitionName");
        await assert.rejects(backend.storage.open(name, NAME), invalid);
        await assert.rejects(backend.storage.remove(name), invalid);
        await assert.rejects(backend.storage.remove(name, NAME), invalid);
        await assert.rejects(backend.storage.scan(name), invalid);
        assert.deepEqual(await backend.listing(), before);
      });
    }

    test("valid partition names use letters, digits, '-' and '_'", async () => {
      const backend = await make();
      const { blob } = await backend.storage.open("Az09-_", NAME);
      await blob.close();
      assert.deepEqual(await backend.storage.listPartitions(), ["Az09-_"]);
    });
  });
}

test("memory crash drops unsynced writes and kills old handles", async () => {
  const memory = new MemoryStorage();
  const { blob } = await memory.open("p", NAME, { layout: "v0" });
  await blob.write(0, Buffer.from("durable"));
  await blob.sync();
  await blob.write(0, Buffer.from("DURABLE and more"));
  memory.crash();
  assert.equal(
    Buffer.from(memory.fileBytes("p", NAME) ?? [])
      .subarray(8)
      .toString(),
    "durable",
  );
  await assert.rejects(blob.write(0, Buffer.from("x")), (err: unknown) => isStoreError(err, "Io"));
});

test("faulty storage fails the scheduled call and tears writes to a prefix", async () => {
  const memory = new MemoryStorage();
  const faulty = new FaultyStorage(memory);
  const { blob } = await faulty.open("p", NAME);
  faulty.inject({ op: "write", after: 1, tearBytes: 3 });
  await blob.write(0, Buffer.from("first"));
  await assert.rejects(blob.write(0, Buffer.from("SECOND")), /injected write failure/);
  assert.equal(Buffer.from(await blob.read(0, 5)).toString(), "SECst");
  faulty.inject({ op: "sync" });
  await assert.rejects(blob.sync(), /injected sync failure/);
  await blob.sync();
  assert.equal(faulty.faultsFired, 2);
});

test("metered storage counts written bytes, writes and syncs, not headers", async () => {
  const registry = new Registry();
  const metered = new MeteredStorage(new MemoryStorage(), registry);
  const { blob } = await metered.open("p", NAME);
  await blob.write(0, Buffer.alloc(100));
  await blob.write(10, Buffer.alloc(5));
  await blob.resize(50);
  await blob.sync();
  assert.deepEqual(metered.totals, { writeBytes: 105, writes: 2, syncs: 1, readBytes: 0 });
  const text = await registry.metrics();
  assert.match(text, /^metadata_storage_write_bytes_total\{partition="p"\} 105$/m);
  assert.match(text, /^metadata_storage_writes_total\{partition="p"\} 2$/m);
  assert.match(text, /^metadata_storage_syncs_total\{partition="p"\} 1$/m);
});

test("metered storage counts failed operations as storage errors and rethrows them", async () => {
  const registry = new Registry();
  const faulty = new FaultyStorage(new MemoryStorage());
  const metered = new MeteredStorage(faulty, registry);
  const { blob } = await metered.open("p", NAME);
  assert.match(await registry.metrics(), /^metadata_storage_errors_total\{partition="p"\} 0$/m);
  faulty.inject({ op: "write", errno: "EIO" });
  await assert.rejects(blob.write(0, Buffer.alloc(10)), /injected write failure/);
  faulty.inject({ op: "sync" });
  await assert.rejects(blob.sync(), /injected sync failure/);
  await blob.write(0, Buffer.alloc(10));
  assert.deepEqual(metered.totals, { writeBytes: 10, writes: 1, syncs: 0, readBytes: 0 });
  assert.match(await registry.metrics(), /^metadata_storage_errors_total\{partition="p"\} 2$/m);
});

test("metered storage counts each write of a batch as one write", async () => {
  const metered = new MeteredStorage(new MemoryStorage(), new Registry());
  const { blob } = await metered.open("p", NAME);
  await blob.writeAll([
    [0, Buffer.alloc(100)],
    [200, Buffer.alloc(7)],
    [50, Buffer.alloc(3)],
  ]);
  assert.deepEqual(metered.totals, { writeBytes: 110, writes: 3, syncs: 0, readBytes: 0 });
});
