/**
 * On-disk interop with the reference: commonware-storage `metadata` on the tokio runtime, driven
 * through test/interop/rust (2026.4.0) and test/interop/rust-2026.10 (2026.10.0) (rust-driver.ts),
 * with U64 keys (our `fixedKeys(8)`). Every check runs once per profile, our store configured as
 * that release writes (`PROFILES`): 2026.4.0 with V0 blobs and no-change syncs that bump the
 * version; 2026.10.0 with its defaults, V1 blobs and no-change syncs that write nothing; and
 * 2026.10.0 restricted to V0 blobs (V0 files, 2026.10.0 sync rules).
 *
 * For every op sequence (each golden vector's ops, a hand-written sequence of edge cases and two
 * seeded random sequences), this file proves:
 * 1. Rust writes, we read: after the reference replays the ops into a storage directory, our
 *    FilesystemStorage store opened on that directory holds exactly the entries it printed.
 * 2. We write, Rust reads: after our store replays the ops, the reference opens the directory and
 *    lists exactly our final entries.
 * 3. Byte-identical: both files (6c656674, 7269676874) are identical byte for byte, and so are
 *    the counters of the last open instance (sync rewrites, sync overwrites, keys), the bytes
 *    passed to blob writes over the whole run and the number of absent get_mut keys. For the
 *    golden vectors, the reference's files and counters also equal the vector's expected ones.
 * 4. Mixed: the ops are cut at each `reopen` and the pieces alternate between the reference and
 *    us on one directory; at every hand-over the next side reads the committed state, each
 *    piece's counters equal those of the same instance in a pure run, and the final files equal
 *    the pure runs' files.
 * 5. The settings matter: under the other release's layout or no-change-sync rule, our files
 *    differ from the reference's.
 * An independent model (a map replayed from the ops: syncs commit, reopens roll back to the last
 * commit) is the oracle for the entries. Set TEST_SEED to change the random sequences.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Registry } from "prom-client";
import { fixedKeys } from "../../server/store/codec.js";
import { type Metadata, type NoChangeSync, openMetadata } from "../../server/store/metadata.js";
import type { BlobLayout } from "../../server/store/storage/blob-header.js";
import { FilesystemStorage } from "../../server/store/storage/filesystem.js";
import { MeteredStorage } from "../../server/store/storage/metered.js";
import { Rng, testSeed } from "../support/rng.js";
import { metricValue, syncCounters, u64 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";
import {
  buildRustInterop,
  type RustEntry,
  type RustLayouts,
  type RustOptions,
  type RustRelease,
  type RustStoreResult,
  rustDump,
  rustReplay,
} from "./rust-driver.js";

/** A release of the reference (and its layout range), and how our store writes as it does. */
interface Profile {
  /** Names the profile in test names and directories. */
  name: string;
  release: RustRelease;
  /** The driver's blob layout range (2026.10.0 only; default its own). */
  layouts?: RustLayouts;
  blobLayout: BlobLayout;
  noChangeSync: NoChangeSync;
  /** The golden vectors are that release's files and figures. */
  vectors: boolean;
}

const PROFILES: readonly Profile[] = [
  { name: "2026.4.0", release: "2026.4.0", blobLayout: "v0", noChangeSync: "bump", vectors: true },
  { name: "2026.10.0", release: "2026.10.0", blobLayout: "v1", noChangeSync: "skip", vectors: false },
  // A 2026.10.0 node restricted to V0 blobs: V0 files under the 2026.10.0 sync rules.
  {
    name: "2026.10.0 (V0 only)",
    release: "2026.10.0",
    layouts: "v0",
    blobLayout: "v0",
    noChangeSync: "skip",
    vectors: false,
  },
];

/** Driver options of a profile. */
function driverOptions(profile: Profile): RustOptions {
  return profile.layouts === undefined
    ? { release: profile.release }
    : { release: profile.release, layouts: profile.layouts };
}

// ---------------------------------------------------------------------------------------------
// Op format (docs/FORMAT.md section 17, as understood by test/interop/rust/src/main.rs)
// ---------------------------------------------------------------------------------------------

/** A u64 key: a JSON number, or a decimal string (needed above 2^53 - 1). */
type Key = number | string;

interface Op {
  op: "put" | "remove" | "clear" | "sync" | "get_mut" | "retain_keys" | "reopen";
  key?: Key;
  /** UTF-8 text value. */
  value?: string;
  value_hex?: string;
  keys?: Key[];
}

type Side = "left" | "right";

const SIDES: readonly Side[] = ["left", "right"];
const FILE_NAMES: Record<Side, string> = { left: "6c656674", right: "7269676874" };
const U64_MAX = (1n << 64n) - 1n;

function opKey(op: Op): bigint {
  if (op.key === undefined) throw new Error(`op ${op.op} has no key`);
  return BigInt(op.key);
}

function opValue(op: Op): Buffer {
  if (op.value_hex !== undefined) return Buffer.from(op.value_hex, "hex");
  if (op.value !== undefined) return Buffer.from(op.value, "utf8");
  throw new Error(`op ${op.op} has no value`);
}

/** The ops between `reopen`s: each piece runs on one open instance. */
function splitAtReopen(ops: Op[]): Op[][] {
  const pieces: Op[][] = [[]];
  for (const op of ops) {
    if (op.op === "reopen") pieces.push([]);
    else pieces[pieces.length - 1]?.push(op);
  }
  return pieces;
}

// ---------------------------------------------------------------------------------------------
// The model (oracle for entries)
// ---------------------------------------------------------------------------------------------

/** Entries in the driver's form, ascending by key. */
function sortedEntries(map: Map<bigint, string>): RustEntry[] {
  return [...map]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([key, value_hex]) => ({ key: key.toString(), value_hex }));
}

/** Replays `ops` from `initial` on a plain map; returns the committed entries at the end. */
function modelCommitted(ops: Op[], initial: RustEntry[] = []): RustEntry[] {
  let committed = new Map(initial.map((e) => [BigInt(e.key), e.value_hex] as const));
  let live = new Map(committed);
  for (const op of ops) {
    switch (op.op) {
      case "put":
        live.set(opKey(op), opValue(op).toString("hex"));
        break;
      case "remove":
        live.delete(opKey(op));
        break;
      case "clear":
        live.clear();
        break;
      case "get_mut":
        if (live.has(opKey(op))) live.set(opKey(op), opValue(op).toString("hex"));
        break;
      case "retain_keys": {
        const keep = new Set((op.keys ?? []).map((k) => BigInt(k)));
        for (const k of [...live.keys()]) if (!keep.has(k)) live.delete(k);
        break;
      }
      case "sync":
        committed = new Map(live);
        break;
      case "reopen":
        live = new Map(committed);
        break;
    }
  }
  return sortedEntries(committed);
}

// ---------------------------------------------------------------------------------------------
// Our replayer: the same ops on openMetadata(FilesystemStorage, fixedKeys(8))
// ---------------------------------------------------------------------------------------------

/** What one open instance of our store did (the reference reports the same for its last one). */
interface InstanceCounters {
  sync_rewrites: number;
  sync_overwrites: number;
  keys: number;
  /** Bytes passed to blob writes by this instance (headers excluded, as the reference counts). */
  write_bytes: number;
}

interface TsResult {
  /** Final in-memory entries (unsynced mutations included), like the driver's `entries`. */
  entries: RustEntry[];
  /** Entries seen right after each open. */
  entriesAtOpen: RustEntry[][];
  instances: InstanceCounters[];
  storage_write_bytes: number;
  get_mut_missing: number;
}

function storeEntries(store: Metadata): RustEntry[] {
  return [...store.entries()].map(([k, v]) => ({
    key: k.readBigUInt64BE(0).toString(),
    value_hex: Buffer.from(v).toString("hex"),
  }));
}

/**
 * Applies `ops` to our store in `partition` under `dir` and reports entries and counters. Nothing
 * is synced implicitly: unsynced changes are dropped at `reopen` and at the end, as in the driver.
 */
async function tsReplay(
  dir: string,
  partition: string,
  ops: Op[],
  settings: Pick<Profile, "blobLayout" | "noChangeSync">,
): Promise<TsResult> {
  const registry = new Registry();
  const storage = new MeteredStorage(new FilesystemStorage(dir), registry);
  const { blobLayout, noChangeSync } = settings;
  const open = () =>
    openMetadata(storage, { partition, keyCodec: fixedKeys(8), registry, blobLayout, noChangeSync });
  const instances: InstanceCounters[] = [];
  const entriesAtOpen: RustEntry[][] = [];
  let bytesAtOpen = 0;
  const finishInstance = async (): Promise<void> => {
    const [rewrites, overwrites] = await syncCounters(registry, partition);
    instances.push({
      sync_rewrites: rewrites,
      sync_overwrites: overwrites,
      keys: await metricValue(registry, "metadata_keys", partition),
      write_bytes: storage.totals.writeBytes - bytesAtOpen,
    });
  };
  let store = await open();
  entriesAtOpen.push(storeEntries(store));
  let getMutMissing = 0;
  try {
    for (const op of ops) {
      switch (op.op) {
        case "put":
          store.put(u64(opKey(op)), opValue(op));
          break;
        case "remove":
          store.remove(u64(opKey(op)));
          break;
        case "clear":
          store.clear();
          break;
        case "sync":
          await store.sync();
          break;
        case "get_mut": {
          const value = opValue(op);
          if (!store.update(u64(opKey(op)), () => value)) getMutMissing++;
          break;
        }
        case "retain_keys": {
          const keep = new Set((op.keys ?? []).map((k) => u64(BigInt(k)).toString("hex")));
          store.retain((k) => keep.has(k.toString("hex")));
          break;
        }
        case "reopen":
          await finishInstance();
          await store.close();
          bytesAtOpen = storage.totals.writeBytes;
          store = await open();
          entriesAtOpen.push(storeEntries(store));
          break;
      }
    }
    const entries = storeEntries(store);
    await finishInstance();
    return {
      entries,
      entriesAtOpen,
      instances,
      storage_write_bytes: storage.totals.writeBytes,
      get_mut_missing: getMutMissing,
    };
  } finally {
    await store.close();
  }
}

/** Opens `partition` under `dir` with our store, lists it and closes it (no sync). */
async function tsDump(dir: string, partition: string): Promise<RustEntry[]> {
  const store = await openMetadata(new FilesystemStorage(dir), { partition, keyCodec: fixedKeys(8) });
  try {
    return storeEntries(store);
  } finally {
    await store.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Sequences
// ---------------------------------------------------------------------------------------------

interface VectorFile {
  name: string;
  partition: string;
  initial_files: Record<Side, string | null>;
  ops: Op[];
  expected: {
    files: Record<Side, { file_name: string; hex: string }>;
    counters: { sync_rewrites: number; sync_overwrites: number; keys: number; storage_write_bytes: number };
    entries: RustEntry[];
  };
}

interface Sequence {
  name: string;
  partition: string;
  ops: Op[];
  /** Files (header included, hex) placed in the partition before the first open. */
  initialFiles?: Record<Side, string | null>;
  /** Committed entries after the ops (the oracle). */
  expected: RustEntry[];
  vector?: VectorFile;
}

const VECTOR_DIR = new URL("../fixtures/vectors/", import.meta.url);

function vectorSequences(): Sequence[] {
  const names = readdirSync(VECTOR_DIR)
    .filter((f) => f.endsWith(".json"))
    .sort();
  return names.map((file) => {
    const vector = JSON.parse(readFileSync(new URL(file, VECTOR_DIR), "utf8")) as VectorFile;
    return {
      name: `vector ${vector.name}`,
      partition: vector.partition,
      ops: vector.ops,
      initialFiles: vector.initial_files,
      expected: vector.expected.entries.map((e) => ({ key: e.key, value_hex: e.value_hex })),
      vector,
    };
  });
}

/** JSON form of a u64 key: decimal strings for large keys (and, at random, for small ones). */
function keyJson(k: bigint, asString: boolean): Key {
  return k > BigInt(Number.MAX_SAFE_INTEGER) || asString ? k.toString() : Number(k);
}

function hexOfLength(rng: Rng, length: number): string {
  return rng.bytes(length).toString("hex");
}

/** Hand-written edge cases: varint boundaries, key extremes, every op, empty values and maps. */
function edgeOps(rng: Rng): Op[] {
  const max = U64_MAX.toString();
  const top = (1n << 63n).toString();
  const unsafe = ((1n << 53n) + 1n).toString();
  const ops: Op[] = [
    { op: "put", key: 0, value_hex: "" },
    { op: "put", key: max, value_hex: hexOfLength(rng, 127) },
    { op: "put", key: top, value_hex: hexOfLength(rng, 128) },
    { op: "put", key: unsafe, value: "h\u00e9llo w\u00f6rld \u2603" },
    { op: "put", key: "1", value_hex: hexOfLength(rng, 16384) },
    { op: "sync" },
    { op: "sync" },
    // No change at all: an overwrite of the version and the CRC only.
    { op: "sync" },
    // Same-size changes through put and get_mut; a get_mut of an absent key; a retain that keeps
    // every key and a remove of an absent key (neither changes the key order).
    { op: "put", key: max, value_hex: hexOfLength(rng, 127) },
    { op: "get_mut", key: top, value_hex: hexOfLength(rng, 128) },
    { op: "get_mut", key: 42, value: "absent" },
    { op: "retain_keys", keys: [0, max, top, unsafe, 1, 77] },
    { op: "remove", key: 999 },
    { op: "sync" },
    { op: "sync" },
    // Put of the same bytes: still marked modified.
    { op: "put", key: 0, value_hex: "" },
    { op: "sync" },
    // Growing across the 1-byte varint boundary (127 -> 128 bytes): a rewrite of each blob.
    { op: "get_mut", key: max, value_hex: hexOfLength(rng, 128) },
    { op: "sync" },
    { op: "sync" },
    // Shrinking across the 2-byte varint boundary (16384 -> 16383 bytes).
    { op: "put", key: 1, value_hex: hexOfLength(rng, 16383) },
    { op: "sync" },
    { op: "sync" },
    // Removing keys: a shrinking rewrite, then the other blob.
    { op: "retain_keys", keys: [0, max, top] },
    { op: "sync" },
    { op: "sync" },
    // A same-size change right after, then one left unsynced and lost at the reopen.
    { op: "put", key: top, value_hex: hexOfLength(rng, 128) },
    { op: "sync" },
    { op: "put", key: 7, value: "lost" },
    { op: "put", key: top, value_hex: hexOfLength(rng, 128) },
    { op: "reopen" },
    { op: "get_mut", key: 7, value: "missing" },
    { op: "sync" },
    { op: "sync" },
    { op: "sync" },
    // Clear, clear of an empty map, then one key again.
    { op: "clear" },
    { op: "sync" },
    { op: "clear" },
    { op: "sync" },
    { op: "sync" },
    { op: "put", key: max, value: "end" },
    { op: "sync" },
  ];
  return ops;
}

/** A value length: mostly small, sometimes at or around varint boundaries, rarely large. */
function randomLength(rng: Rng): number {
  const roll = rng.int(100);
  if (roll < 55) return rng.int(24);
  if (roll < 80) return [0, 1, 8, 126, 127, 128, 129, 255, 256][rng.int(9)] ?? 0;
  if (roll < 97) return 24 + rng.int(400);
  return [16383, 16384, 20000][rng.int(3)] ?? 0;
}

function randomU64(rng: Rng): bigint {
  return (BigInt(Math.floor(rng.next() * 2 ** 32)) << 32n) | BigInt(Math.floor(rng.next() * 2 ** 32));
}

/**
 * A seeded sequence of `rounds` rounds of 1 to `batch` changes. A round either adds and removes
 * keys (`structural` rounds in 10), or changes values in place at the same encoded size, or grows
 * and shrinks values (key set unchanged), then syncs 0 to 3 times. Along the way: a clear,
 * retains (some keeping every key), get_mut of absent keys, reopens with unsynced changes pending.
 * Ends with a sync.
 */
function randomOps(rng: Rng, rounds: number, poolSize: number, structural: number, batch: number): Op[] {
  const pool: bigint[] = [
    0n,
    1n,
    2n,
    255n,
    256n,
    (1n << 32n) - 1n,
    1n << 32n,
    (1n << 53n) + 1n,
    (1n << 63n) - 1n,
    1n << 63n,
    U64_MAX - 1n,
    U64_MAX,
  ];
  while (pool.length < poolSize) pool.push(randomU64(rng));
  const pick = <T>(items: T[]): T => {
    const item = items[rng.int(items.length)];
    if (item === undefined) throw new Error("pick from an empty list");
    return item;
  };
  const ops: Op[] = [];
  // Value lengths by key, in memory and as of the last sync (to model reopen).
  let live = new Map<bigint, number>();
  let committed = new Map<bigint, number>();
  const key = (k: bigint): Key => keyJson(k, rng.chance(0.3));
  const setValue = (k: bigint, length: number, via: "put" | "get_mut"): void => {
    ops.push({ op: via, key: key(k), value_hex: hexOfLength(rng, length) });
    live.set(k, length);
  };
  const reopens = new Set([Math.floor(rounds * 0.45), Math.floor(rounds * 0.75)]);
  const clearAt = Math.floor(rounds / 3);

  for (let round = 0; round < rounds; round++) {
    const mode = rng.int(10);
    const count = 1 + rng.int(batch);
    for (let i = 0; i < count; i++) {
      const existing = [...live.keys()];
      if (mode < structural || existing.length === 0) {
        if (existing.length === 0 || rng.chance(0.7)) {
          setValue(pick(pool), randomLength(rng), "put");
        } else {
          const k = rng.chance(0.85) ? pick(existing) : pick(pool);
          ops.push({ op: "remove", key: key(k) });
          live.delete(k);
        }
      } else if (mode < structural + (10 - structural) * 0.7) {
        const k = pick(existing);
        setValue(k, live.get(k) ?? 0, rng.chance(0.5) ? "put" : "get_mut");
      } else {
        const k = pick(existing);
        const old = live.get(k) ?? 0;
        let length = randomLength(rng);
        if (length === old) length = old === 0 ? 200 : old - 1;
        setValue(k, length, rng.chance(0.5) ? "put" : "get_mut");
      }
    }
    if (round === clearAt) {
      ops.push({ op: "clear" });
      live.clear();
    }
    if (round % 17 === 5) {
      const existing = [...live.keys()];
      // Listing a key that is absent (or already kept) changes nothing.
      const keep = [...(rng.chance(0.5) ? existing : existing.filter(() => rng.chance(0.7))), pick(pool)];
      ops.push({ op: "retain_keys", keys: keep.map(key) });
      const kept = new Set(keep);
      for (const k of existing) if (!kept.has(k)) live.delete(k);
    }
    if (round % 13 === 7) {
      const absent = pool.filter((k) => !live.has(k));
      ops.push({ op: "get_mut", key: key(absent.length > 0 ? pick(absent) : randomU64(rng)), value: "x" });
    }
    if (reopens.has(round)) {
      // Pending changes (this round's) are dropped by the reopen.
      ops.push({ op: "reopen" });
      live = new Map(committed);
      continue;
    }
    const syncs = pick([0, 1, 1, 1, 1, 2, 2, 3]);
    for (let s = 0; s < syncs; s++) ops.push({ op: "sync" });
    if (syncs > 0) committed = new Map(live);
  }
  ops.push({ op: "sync" });
  return ops;
}

const SEED = testSeed();

function generatedSequence(name: string, ops: Op[]): Sequence {
  return { name, partition: "interop", ops, expected: modelCommitted(ops) };
}

const SEQUENCES: Sequence[] = [
  ...vectorSequences(),
  generatedSequence("edge cases", edgeOps(new Rng(SEED))),
  generatedSequence(`random a (seed ${SEED})`, randomOps(new Rng(SEED), 120, 24, 3, 6)),
  generatedSequence(`random b (seed ${SEED + 1})`, randomOps(new Rng(SEED + 1), 80, 160, 5, 12)),
];

// ---------------------------------------------------------------------------------------------
// Runs (each made once and shared by the tests)
// ---------------------------------------------------------------------------------------------

type FileBytes = Record<Side, string>;

interface RustRun {
  dir: string;
  result: RustStoreResult;
  files: FileBytes;
}

interface TsRun {
  dir: string;
  result: TsResult;
  files: FileBytes;
}

let root = "";
let removeRoot: () => Promise<void> = async () => {};
let dirCount = 0;

async function freshDir(label: string): Promise<string> {
  dirCount++;
  const dir = join(root, `${String(dirCount).padStart(2, "0")}-${label.replace(/[^a-z0-9]+/gi, "-")}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

async function seedFiles(dir: string, seq: Sequence): Promise<void> {
  if (seq.initialFiles === undefined) return;
  await mkdir(join(dir, seq.partition), { recursive: true });
  for (const side of SIDES) {
    const hex = seq.initialFiles[side];
    if (hex !== null) await writeFile(join(dir, seq.partition, FILE_NAMES[side]), Buffer.from(hex, "hex"));
  }
}

async function readFiles(dir: string, partition: string): Promise<FileBytes> {
  const names = (await readdir(join(dir, partition))).sort();
  assert.deepEqual(names, [FILE_NAMES.left, FILE_NAMES.right], `files of ${dir}/${partition}`);
  return {
    left: (await readFile(join(dir, partition, FILE_NAMES.left))).toString("hex"),
    right: (await readFile(join(dir, partition, FILE_NAMES.right))).toString("hex"),
  };
}

const rustRuns = new Map<string, Promise<RustRun>>();
const tsRuns = new Map<string, Promise<TsRun>>();

function rustRun(profile: Profile, seq: Sequence): Promise<RustRun> {
  const key = `${profile.name} ${seq.name}`;
  let run = rustRuns.get(key);
  if (run === undefined) {
    run = (async () => {
      const dir = await freshDir(`rust-${key}`);
      await seedFiles(dir, seq);
      const result = await rustReplay(dir, seq.partition, seq.ops, driverOptions(profile));
      return { dir, result, files: await readFiles(dir, seq.partition) };
    })();
    rustRuns.set(key, run);
  }
  return run;
}

function tsRun(profile: Profile, seq: Sequence): Promise<TsRun> {
  const key = `${profile.name} ${seq.name}`;
  let run = tsRuns.get(key);
  if (run === undefined) {
    run = (async () => {
      const dir = await freshDir(`ts-${key}`);
      await seedFiles(dir, seq);
      const result = await tsReplay(dir, seq.partition, seq.ops, profile);
      return { dir, result, files: await readFiles(dir, seq.partition) };
    })();
    tsRuns.set(key, run);
  }
  return run;
}

/** Where two hex strings first differ, for messages that say exactly which bytes differ. */
function firstDifference(a: string, b: string): string {
  if (a === b) return "identical";
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  const byte = Math.floor(i / 2);
  const at = byte * 2;
  return (
    `lengths ${a.length / 2} vs ${b.length / 2} bytes; first difference at file byte ${byte}: ` +
    `${a.slice(at, at + 32) || "(end)"} vs ${b.slice(at, at + 32) || "(end)"}`
  );
}

function assertSameFiles(actual: FileBytes, expected: FileBytes, what: string): void {
  for (const side of SIDES) {
    if (actual[side] !== expected[side]) {
      assert.fail(
        `${what}: ${side} (${FILE_NAMES[side]}) differs: ${firstDifference(actual[side], expected[side])}`,
      );
    }
  }
}

function assertEndsWithSync(seq: Sequence): void {
  // The driver prints in-memory entries; they equal the disk only after a final sync.
  assert.equal(seq.ops.at(-1)?.op, "sync", `${seq.name} ends with a sync`);
}

before(
  async () => {
    for (const profile of PROFILES) buildRustInterop(profile.release);
    const dir = await tempDir("metadata-interop-");
    root = dir.path;
    removeRoot = dir.remove;
  },
  { timeout: 20 * 60 * 1000 },
);

after(async () => {
  await removeRoot();
});

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

for (const profile of PROFILES) {
  const { name: release } = profile;
  const options = driverOptions(profile);
  describe(`${release}: rust writes, we read`, () => {
    for (const seq of SEQUENCES) {
      test(seq.name, async () => {
        assertEndsWithSync(seq);
        const rust = await rustRun(profile, seq);
        assert.deepEqual(rust.result.entries, seq.expected, "reference entries equal the model");
        const ours = await tsDump(rust.dir, seq.partition);
        assert.deepEqual(ours, rust.result.entries, "our store reads the reference's entries");
        assertSameFiles(
          await readFiles(rust.dir, seq.partition),
          rust.files,
          "our open left the files alone",
        );
      });
    }
  });

  describe(`${release}: we write, rust reads`, () => {
    for (const seq of SEQUENCES) {
      test(seq.name, async () => {
        assertEndsWithSync(seq);
        const ours = await tsRun(profile, seq);
        assert.deepEqual(ours.result.entries, seq.expected, "our final entries equal the model");
        const rust = await rustDump(ours.dir, seq.partition, options);
        assert.deepEqual(rust.entries, ours.result.entries, "the reference reads our entries");
        assert.equal(rust.counters.keys, seq.expected.length, "reference keys gauge at open");
        assertSameFiles(
          await readFiles(ours.dir, seq.partition),
          ours.files,
          "the reference's open left the files alone",
        );
      });
    }
  });

  describe(`${release}: byte-identical files and equal counters`, () => {
    for (const seq of SEQUENCES) {
      test(seq.name, async (t) => {
        const rust = await rustRun(profile, seq);
        const ours = await tsRun(profile, seq);
        const syncs = seq.ops.filter((op) => op.op === "sync").length;
        const perInstance = ours.result.instances
          .map((c) => `${c.sync_rewrites}/${c.sync_overwrites}`)
          .join(" ");
        t.diagnostic(
          `${seq.ops.length} ops, ${syncs} syncs, rewrites/overwrites per instance ${perInstance}, ` +
            `${ours.result.storage_write_bytes} bytes written, files ${ours.files.left.length / 2} + ` +
            `${ours.files.right.length / 2} bytes, ${seq.expected.length} keys`,
        );
        assertSameFiles(ours.files, rust.files, "our files vs the reference's");
        if (seq.initialFiles === undefined) {
          const magic = profile.blobLayout === "v1" ? "4357494b" : "43574943";
          for (const side of SIDES)
            assert.equal(ours.files[side].slice(0, 8), magic, `${side}: ${profile.blobLayout}`);
        }
        const last = ours.result.instances.at(-1);
        assert.ok(last !== undefined);
        assert.equal(ours.result.instances.length, rust.result.instances_opened, "instances opened");
        assert.deepEqual(
          {
            sync_rewrites: last.sync_rewrites,
            sync_overwrites: last.sync_overwrites,
            keys: last.keys,
            storage_write_bytes: ours.result.storage_write_bytes,
          },
          rust.result.counters,
          "counters of the last instance, write bytes of the run",
        );
        assert.equal(ours.result.get_mut_missing, rust.result.get_mut_missing ?? 0, "get_mut of absent keys");
        if (seq.vector !== undefined && profile.vectors) {
          const v = seq.vector;
          assertSameFiles(
            rust.files,
            { left: v.expected.files.left.hex, right: v.expected.files.right.hex },
            "reference vs golden vector",
          );
          assert.deepEqual(rust.result.counters, v.expected.counters, "reference counters vs golden vector");
        }
      });
    }
  });

  describe(`${release}: mixed hand-over between the reference and us`, () => {
    const mixed: { seq: Sequence; first: "rust" | "ts" }[] = [];
    for (const seq of SEQUENCES) {
      if (seq.vector !== undefined) continue;
      mixed.push({ seq, first: "rust" });
      mixed.push({ seq, first: "ts" });
    }
    for (const { seq, first } of mixed) {
      const pieces = splitAtReopen(seq.ops);
      const order = pieces.map((_, i) => ((i % 2 === 0) === (first === "rust") ? "rust" : "ts"));
      test(`${seq.name}: ${order.join(" -> ")} -> both read`, async () => {
        assert.ok(pieces.length >= 2, "at least one hand-over");
        const rustPure = await rustRun(profile, seq);
        const tsPure = await tsRun(profile, seq);
        const dir = await freshDir(`mixed-${release}-${first}-${seq.name}`);
        await seedFiles(dir, seq);
        let done: Op[] = [];
        for (const [i, piece] of pieces.entries()) {
          const committed = modelCommitted(done);
          const who = order[i];
          const pureInstance = tsPure.result.instances[i];
          assert.ok(pureInstance !== undefined);
          if (who === "rust") {
            const atOpen = await rustDump(dir, seq.partition, options);
            assert.deepEqual(
              atOpen.entries,
              committed,
              `piece ${i}: the reference opens the committed state`,
            );
            const result = await rustReplay(dir, seq.partition, piece, options);
            assert.deepEqual(
              result.counters,
              {
                sync_rewrites: pureInstance.sync_rewrites,
                sync_overwrites: pureInstance.sync_overwrites,
                keys: pureInstance.keys,
                storage_write_bytes: pureInstance.write_bytes,
              },
              `piece ${i} (reference): counters equal instance ${i} of our pure run`,
            );
          } else {
            const result = await tsReplay(dir, seq.partition, piece, profile);
            assert.deepEqual(result.entriesAtOpen[0], committed, `piece ${i}: we open the committed state`);
            assert.deepEqual(
              result.entriesAtOpen[0],
              tsPure.result.entriesAtOpen[i],
              `piece ${i}: same state at open as our pure run`,
            );
            const counters = result.instances[0];
            assert.deepEqual(
              counters,
              pureInstance,
              `piece ${i} (ours): counters equal instance ${i} of our pure run`,
            );
          }
          done = [...done, ...piece, { op: "reopen" }];
        }
        const files = await readFiles(dir, seq.partition);
        assertSameFiles(files, rustPure.files, "mixed files vs the pure reference run");
        assertSameFiles(files, tsPure.files, "mixed files vs our pure run");
        assert.deepEqual(await tsDump(dir, seq.partition), seq.expected, "we read the final state");
        assert.deepEqual(
          (await rustDump(dir, seq.partition, options)).entries,
          seq.expected,
          "the reference reads it",
        );
      });
    }
  });
}

describe("the settings must match the writer's release", () => {
  // Syncs with nothing to write, after a rewrite of both blobs and after an overwrite of both.
  const ops: Op[] = [
    { op: "put", key: 1, value: "one" },
    { op: "put", key: 2, value: "two" },
    { op: "sync" },
    { op: "sync" },
    { op: "sync" },
    { op: "put", key: 1, value: "uno" },
    { op: "sync" },
    { op: "sync" },
    { op: "sync" },
  ];
  for (const profile of PROFILES) {
    test(`${profile.name}: our files equal the reference's only under its layout and no-change sync`, async () => {
      const rustDir = await freshDir(`settings-rust-${profile.name}`);
      await rustReplay(rustDir, "settings", ops, driverOptions(profile));
      const expected = await readFiles(rustDir, "settings");
      for (const blobLayout of ["v0", "v1"] as const) {
        for (const noChangeSync of ["bump", "skip"] as const) {
          const dir = await freshDir(`settings-ts-${profile.name}-${blobLayout}-${noChangeSync}`);
          await tsReplay(dir, "settings", ops, { blobLayout, noChangeSync });
          const files = await readFiles(dir, "settings");
          const matching = blobLayout === profile.blobLayout && noChangeSync === profile.noChangeSync;
          const what = `${blobLayout} + ${noChangeSync}`;
          if (matching) assertSameFiles(files, expected, what);
          else assert.notDeepEqual(files, expected, `${what} must differ from ${profile.name}'s files`);
        }
      }
    });
  }
});
