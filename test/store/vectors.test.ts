/**
 * Golden vectors (test/fixtures/vectors, from the format spec), checked both ways on the memory,
 * the filesystem and the etcd backend (a real etcd started here; skipped when not installed):
 * - produce: replay the ops from the initial files and compare every planned write of every
 *   sync, the exact bytes of both files, the counters and the internal state;
 * - decode: open the expected final files in a fresh store and read the expected entries.
 */
import assert from "node:assert/strict";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { Registry } from "prom-client";
import { fixedKeys } from "../../server/store/codec.js";
import { type Metadata, openMetadata } from "../../server/store/metadata.js";
import { EtcdStorage } from "../../server/store/storage/etcd.js";
import { FilesystemStorage } from "../../server/store/storage/filesystem.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { MeteredStorage } from "../../server/store/storage/metered.js";
import type { Storage } from "../../server/store/storage/storage.js";
import {
  type EtcdCluster,
  etcdBlobBytes,
  etcdMissing,
  etcdSeedBlob,
  startEtcdCluster,
} from "../support/etcd-cluster.js";
import { AuditedStorage, metricValue, syncCounters, u64 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";

interface VectorOp {
  op: "put" | "remove" | "clear" | "sync" | "get_mut" | "retain_keys" | "reopen";
  key?: number | string;
  value?: string;
  value_hex?: string;
  keys?: (number | string)[];
}

interface Vector {
  name: string;
  partition: string;
  initial_files: { left: string | null; right: string | null };
  ops: VectorOp[];
  syncs: {
    version: number;
    target: "left" | "right";
    kind: "rewrite" | "overwrite";
    writes: { offset: number; len: number }[];
    resize_to: number | null;
    write_bytes: number;
  }[];
  expected: {
    files_after_open: { left: string; right: string };
    files: Record<"left" | "right", { file_name: string; hex: string }>;
    counters: { sync_rewrites: number; sync_overwrites: number; keys: number; storage_write_bytes: number };
    state: {
      cursor: "left" | "right";
      next_version: number;
      key_order_changed: number;
      versions: { left: number; right: number };
    };
    entries: { key: string; value_hex: string }[];
  };
}

const VECTOR_DIR = new URL("../fixtures/vectors/", import.meta.url);
const NAMES = [
  "01_worked_example",
  "02_two_syncs",
  "03_overwrite_sync",
  "04_shrinking_rewrite",
  "05_clear_and_sync",
  "06_recover_fallback",
];
const FILE_NAMES = { left: "6c656674", right: "7269676874" } as const;

async function loadVector(name: string): Promise<Vector> {
  return JSON.parse(await readFile(new URL(`${name}.json`, VECTOR_DIR), "utf8")) as Vector;
}

function opValue(op: VectorOp): Buffer {
  if (op.value_hex !== undefined) return Buffer.from(op.value_hex, "hex");
  return Buffer.from(op.value ?? "", "utf8");
}

/** A backend under test: a way to seed files before the open and read them back. */
interface Backend {
  storage: Storage;
  readFile(partition: string, side: "left" | "right"): Promise<string>;
  writeFile(partition: string, side: "left" | "right", hex: string): Promise<void>;
}

function memoryBackend(): Backend {
  const memory = new MemoryStorage();
  return {
    storage: memory,
    readFile: async (partition, side) =>
      Buffer.from(memory.fileBytes(partition, Buffer.from(side)) ?? new Uint8Array()).toString("hex"),
    writeFile: async (partition, side, hex) =>
      memory.setFileBytes(partition, Buffer.from(side), Buffer.from(hex, "hex")),
  };
}

const dirs: { remove(): Promise<void> }[] = [];
after(async () => {
  for (const dir of dirs) await dir.remove();
});

async function filesystemBackend(): Promise<Backend> {
  const dir = await tempDir();
  dirs.push(dir);
  const path = (partition: string, side: "left" | "right") => join(dir.path, partition, FILE_NAMES[side]);
  return {
    storage: new FilesystemStorage(dir.path),
    readFile: async (partition, side) => (await readFile(path(partition, side))).toString("hex"),
    writeFile: async (partition, side, hex) => {
      await mkdir(join(dir.path, partition), { recursive: true });
      await writeFile(path(partition, side), Buffer.from(hex, "hex"));
    },
  };
}

let etcd: EtcdCluster | undefined;
let etcdPrefixes = 0;
const ETCD_MISSING = etcdMissing();
after(async () => {
  await etcd?.stop();
});

async function etcdBackend(): Promise<Backend> {
  etcd ??= await startEtcdCluster(1);
  const client = etcd.client();
  const prefix = `vectors${etcdPrefixes++}`;
  // Small pages, so a blob spans several and overwrites touch some of them only.
  const pageBytes = 16;
  const storage = new EtcdStorage({ client, prefix, pageBytes });
  const base = (partition: string, side: "left" | "right") => storage.blobBase(partition, Buffer.from(side));
  return {
    storage,
    readFile: async (partition, side) =>
      ((await etcdBlobBytes(client, base(partition, side), pageBytes)) ?? Buffer.alloc(0)).toString("hex"),
    writeFile: (partition, side, hex) =>
      etcdSeedBlob(client, prefix, partition, base(partition, side), pageBytes, Buffer.from(hex, "hex")),
  };
}

async function produce(vector: Vector, backend: Backend): Promise<void> {
  const partition = vector.partition;
  for (const side of ["left", "right"] as const) {
    const initial = vector.initial_files[side];
    if (initial !== null) await backend.writeFile(partition, side, initial);
  }
  const registry = new Registry();
  const audited = new AuditedStorage(new MeteredStorage(backend.storage, registry));
  // The vectors are files of commonware-storage 2026.4.0: V0 blobs, no-change syncs bump.
  const open = () => openMetadata(audited, { partition, keyCodec: fixedKeys(8), registry, blobLayout: "v0" });
  let store: Metadata = await open();

  for (const side of ["left", "right"] as const) {
    assert.equal(
      await backend.readFile(partition, side),
      vector.expected.files_after_open[side],
      `${side} after open`,
    );
  }

  let syncIndex = 0;
  for (const op of vector.ops) {
    switch (op.op) {
      case "put":
        store.put(u64(BigInt(op.key as number | string)), opValue(op));
        break;
      case "remove":
        store.remove(u64(BigInt(op.key as number | string)));
        break;
      case "clear":
        store.clear();
        break;
      case "get_mut":
        store.update(u64(BigInt(op.key as number | string)), () => opValue(op));
        break;
      case "retain_keys": {
        const keep = new Set((op.keys ?? []).map((k) => u64(BigInt(k)).toString("hex")));
        store.retain((k) => keep.has(k.toString("hex")));
        break;
      }
      case "reopen":
        await store.close();
        store = await open();
        break;
      case "sync": {
        const expected = vector.syncs[syncIndex++];
        assert.ok(expected, "more syncs than the vector lists");
        const logStart = audited.log.length;
        const version = await store.sync();
        assert.equal(version, BigInt(expected.version));
        const io = audited.log.slice(logStart);
        const target = `${partition}/${expected.target}`;
        assert.ok(
          io.every((e) => e.blob === target),
          `sync ${expected.version} touched only ${target}`,
        );
        assert.deepEqual(
          io.filter((e) => e.op === "write").map((e) => ({ offset: e.offset, len: e.length })),
          expected.writes,
          `writes of sync ${expected.version}`,
        );
        assert.deepEqual(
          io.filter((e) => e.op === "resize").map((e) => e.length),
          expected.resize_to === null ? [] : [expected.resize_to],
          `resize of sync ${expected.version}`,
        );
        assert.equal(io.at(-1)?.op, "sync", "the fsync comes last");
        break;
      }
    }
  }
  assert.equal(syncIndex, vector.syncs.length);

  for (const side of ["left", "right"] as const) {
    assert.equal(vector.expected.files[side].file_name, FILE_NAMES[side]);
    assert.equal(
      await backend.readFile(partition, side),
      vector.expected.files[side].hex,
      `${side} file bytes`,
    );
  }
  const counters = vector.expected.counters;
  assert.deepEqual(await syncCounters(registry, partition), [
    counters.sync_rewrites,
    counters.sync_overwrites,
  ]);
  assert.equal(await metricValue(registry, "metadata_keys", partition), counters.keys);
  assert.equal(
    await metricValue(registry, "metadata_storage_write_bytes_total", partition),
    counters.storage_write_bytes,
  );

  const state = store.debugState();
  assert.equal(state.cursor, vector.expected.state.cursor);
  assert.equal(state.nextVersion, BigInt(vector.expected.state.next_version));
  assert.equal(state.keyOrderChanged, BigInt(vector.expected.state.key_order_changed));
  assert.deepEqual(state.versions, [
    BigInt(vector.expected.state.versions.left),
    BigInt(vector.expected.state.versions.right),
  ]);
  assertEntries(store, vector);
  await store.close();
}

function assertEntries(store: Metadata, vector: Vector): void {
  assert.deepEqual(
    [...store.entries()].map(([k, v]) => ({
      key: k.readBigUInt64BE(0).toString(),
      value_hex: Buffer.from(v).toString("hex"),
    })),
    vector.expected.entries.map((e) => ({ key: e.key, value_hex: e.value_hex })),
  );
}

async function decode(vector: Vector, backend: Backend): Promise<void> {
  const partition = vector.partition;
  for (const side of ["left", "right"] as const) {
    await backend.writeFile(partition, side, vector.expected.files[side].hex);
  }
  const store = await openMetadata(backend.storage, { partition, keyCodec: fixedKeys(8) });
  assertEntries(store, vector);
  assert.deepEqual([...store.committed().entries()].length, vector.expected.entries.length);
  const state = store.debugState();
  assert.equal(state.cursor, vector.expected.state.cursor);
  assert.deepEqual(state.versions, [
    BigInt(vector.expected.state.versions.left),
    BigInt(vector.expected.state.versions.right),
  ]);
  // Opening valid files changes nothing on disk.
  for (const side of ["left", "right"] as const) {
    assert.equal(await backend.readFile(partition, side), vector.expected.files[side].hex);
  }
  await store.close();
}

for (const name of NAMES) {
  describe(name, () => {
    test("produce on memory", async () => produce(await loadVector(name), memoryBackend()));
    test("produce on filesystem", async () => produce(await loadVector(name), await filesystemBackend()));
    test("decode on memory", async () => decode(await loadVector(name), memoryBackend()));
    test("decode on filesystem", async () => decode(await loadVector(name), await filesystemBackend()));
    const skip = ETCD_MISSING ?? false;
    test("produce on etcd", { skip }, async () => produce(await loadVector(name), await etcdBackend()));
    test("decode on etcd", { skip }, async () => decode(await loadVector(name), await etcdBackend()));
  });
}

test("filesystem layout: one directory per partition, files named by hex", async () => {
  const backend = await filesystemBackend();
  const store = await openMetadata(backend.storage, {
    partition: "layout",
    keyCodec: fixedKeys(8),
    blobLayout: "v0",
  });
  await store.close();
  const root = (backend.storage as FilesystemStorage).root;
  for (const file of Object.values(FILE_NAMES)) {
    assert.equal((await stat(join(root, "layout", file))).size, 8);
  }
});
