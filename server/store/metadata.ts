/**
 * Metadata: a sorted map of byte keys to byte values, committed atomically to one of two blobs.
 *
 * A port of commonware-storage `metadata` (releases 2026.4.0 and 2026.10.0), byte for byte.
 * Format of one blob body (big-endian; the storage adds its header region in front, V0 or V1,
 * see storage/blob-header.ts and docs/FORMAT.md):
 *   +--------------+------------------------------------------+--------------+
 *   | version: u64 | (key || varint(len) || value)*, ascending | crc32c: u32  |
 *   +--------------+------------------------------------------+--------------+
 *
 * Sync (docs/FORMAT.md §10): every sync writes version V = nextVersion to the blob that does NOT hold
 * the newest committed version, then fsyncs it. When no key was added or removed since both blobs
 * were last rewritten (KOC < version of the newest blob) and every value marked modified for the
 * target kept its encoded size, the sync overwrites just those values, the version and the CRC;
 * otherwise it rewrites the whole body (and cuts the blob when the body shrank). Counters,
 * written bytes and file bytes equal the reference's.
 *
 * No-change syncs (`noChangeSync`): when no key was added or removed since both blobs were
 * rewritten and the target blob has no value left to receive, the target already equals the
 * newest blob. "bump" (2026.4.0) still writes a new version there (version and CRC only);
 * "skip" (2026.7 and later) writes nothing and keeps the version; with "skip" an overwrite of a
 * body of at most 4096 bytes also writes it whole, as 2026.10.0 does (same bytes on disk, one
 * write). Default: "skip" for a partition whose blobs are V1, "bump" for V0, so each matches the
 * release that writes it.
 *
 * Invariants:
 * - A sync never writes the blob holding the newest committed version, so a torn or failed sync
 *   leaves the last committed state intact on disk; recovery picks the newest valid blob.
 * - Syncs run one at a time, in call order. Mutations may run while a sync's I/O is in flight:
 *   they belong to the next version. Reads never wait.
 * - A sync resolves only after the fsync that holds it. `committed()` changes only then.
 * - Unlike the reference, a failed sync cannot lose or resurrect data (docs/FORMAT.md §11.3): the
 *   target blob is cut to empty and fsynced, the cursor goes back to the last committed blob and
 *   the next sync rewrites the target in full. If even that cleanup fails, the store refuses all
 *   further mutations and syncs (`StoreError("Failed")`) until reopened, and `unsafeVersionsFrom`
 *   names the versions a reopen must discard (none when the backend voided the failed sync).
 * - Recovery destroys no evidence: a damaged blob (too short, bad CRC) is handed to
 *   `config.quarantine` and logged with the reason and both versions before it is cut; when both
 *   blobs held a body and neither is valid, the open fails with `DataLoss` and changes nothing,
 *   instead of serving an empty store (see `openMetadata`).
 * - Values handed to `put` are owned by the store afterwards and must not be changed by the
 *   caller; values returned are shared and must not be changed either (use `update`).
 * - Input errors (key width, empty key, oversize value) are thrown before anything changes.
 *
 * Usage:
 *   const store = await openMetadata(new FilesystemStorage("data"), {
 *     partition: "p", keyCodec: fixedKeys(8), blobLayout: "v0", // shared with a 2026.4.0 node
 *   });
 *   store.put(key, value);
 *   await store.sync(); // durable now
 */

import type { Registry } from "prom-client";
import type BTreeModule from "sorted-btree";
import { bulkLoad } from "sorted-btree/extended/bulkLoad.js";
import diffAgainstModule from "sorted-btree/extended/diffAgainst.js";
import { crc32c, crc32cPatch } from "./checksum.js";
import {
  CRC_BYTES,
  type DecodedBody,
  decodeBody,
  encodeBody,
  encodedKeySize,
  encodedValueSize,
  fromKeyString,
  type KeyCodec,
  type KeyString,
  MAX_VALUE_BYTES,
  MIN_BODY_BYTES,
  readVarint,
  type Spans,
  toKeyString,
  VERSION_BYTES,
  validateKey,
  validateValue,
  variableKeys,
} from "./codec.js";
import { asIoError, StoreError } from "./errors.js";
import { createRecoveryMetrics, createStoreMetrics, type StoreMetrics } from "./metrics.js";
import { type BlobLayout, DEFAULT_BLOB_LAYOUT } from "./storage/blob-header.js";
import { type Blob, blobFileName, describeBlob, type Storage } from "./storage/storage.js";

/** Names of the two blobs of a store. */
export const BLOB_NAMES = [Buffer.from("left"), Buffer.from("right")] as const;

const MAX_VERSION = 0xffffffffffffffffn;
/** commonware-runtime's blob page: a V1 blob's data starts on one. */
const BLOB_PAGE_BYTES = 4096;
const EMPTY = Buffer.alloc(0);

/** Configuration of a store. */
export interface MetadataConfig {
  /** Partition holding the two blobs. */
  partition: string;
  /** Key framing; default `variableKeys()`. A Rust node's U64 keys are `fixedKeys(8)`. */
  keyCodec?: KeyCodec;
  /** Largest value accepted by mutations, at most and by default 2^32 - 1 bytes. */
  maxValueBytes?: number;
  /** Registry for the store metrics (see metrics.ts); none by default. */
  registry?: Registry;
  /** Blobs holding this version or newer are cut to empty at open (after a failed cleanup). */
  discardVersionsFrom?: bigint;
  /**
   * Layout of the blobs of a partition created by this open (default "v1", as
   * commonware-runtime 2026.10.0; "v0" for a partition shared with a 2026.4.0 node). An existing
   * partition keeps its layout: the second blob follows the first.
   */
  blobLayout?: BlobLayout;
  /**
   * Sync rules of a release: "bump" (2026.4.0) writes a new version even when nothing changed;
   * "skip" (2026.7 and later) writes nothing then, and writes an overwrite of a body of at most
   * 4096 bytes whole (2026.10.0). Default by the partition's layout: V1 "skip", V0 "bump".
   */
  noChangeSync?: NoChangeSync;
  /**
   * Keeps a damaged blob's bytes somewhere safe before recovery cuts it, and resolves with where
   * (for the warning). If it throws, the open fails and nothing is cut. None by default.
   */
  quarantine?: (discarded: DiscardedBlob) => Promise<string>;
  /** Receives recovery warnings (a discarded blob, data loss); default `console.warn`. */
  warn?: (message: string) => void;
  /**
   * Open even when both blobs are damaged (see `openMetadata`): quarantine and cut both, and
   * start empty. Only for an operator who accepted the loss.
   */
  acceptDataLoss?: boolean;
}

/** What a sync with nothing to write does; see `MetadataConfig.noChangeSync`. */
export type NoChangeSync = "bump" | "skip";

/** The no-change-sync behaviour of the release that writes blobs of `layout`. */
export function defaultNoChangeSync(layout: BlobLayout): NoChangeSync {
  return layout === "v0" ? "bump" : "skip";
}

/** Selects keys; every given part must hold. Bounds compare raw key bytes. */
export interface KeyRange {
  /** Keys starting with these bytes. */
  prefix?: Uint8Array;
  /** Keys >= start. */
  start?: Uint8Array;
  /** Keys < end. */
  end?: Uint8Array;
}

type Tree = BTreeModule.default<KeyString, Uint8Array>;

function compareKeys(a: KeyString, b: KeyString): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Smallest key string greater than every key starting with `prefix`, or undefined if none. */
function prefixEnd(prefix: KeyString): KeyString | undefined {
  for (let i = prefix.length - 1; i >= 0; i--) {
    const code = prefix.charCodeAt(i);
    if (code < 0xff) return prefix.slice(0, i) + String.fromCharCode(code + 1);
  }
  return undefined;
}

/** Key-string bounds [low, high) of a range; high undefined means unbounded. */
function bounds(range: KeyRange | undefined): { low: KeyString; high: KeyString | undefined } {
  let low = "";
  let high: KeyString | undefined;
  if (range?.prefix !== undefined && range.prefix.length > 0) {
    low = toKeyString(range.prefix);
    high = prefixEnd(low);
  }
  if (range?.start !== undefined && range.start.length > 0) {
    const start = toKeyString(range.start);
    if (start > low) low = start;
  }
  if (range?.end !== undefined && range.end.length > 0) {
    const end = toKeyString(range.end);
    if (high === undefined || end < high) high = end;
  }
  return { low, high };
}

function* rangeEntries(tree: Tree, range: KeyRange | undefined): Generator<[KeyString, Uint8Array]> {
  const { low, high } = bounds(range);
  if (high !== undefined && !(low < high)) return;
  for (const entry of tree.entries(low)) {
    if (high !== undefined && !(entry[0] < high)) return;
    yield entry;
  }
}

/**
 * A read-only view of a store at one moment; later mutations do not show through. Cheap to take
 * (copy-on-write).
 */
export class Snapshot {
  /** @internal */
  constructor(
    private readonly tree: Tree,
    /** The committed version this view was taken at (0 if nothing was ever committed). */
    readonly version: bigint,
    /** The store instance that committed this view (undefined for a view of nothing). */
    private readonly origin?: object,
    /**
     * For a view committed by a sync: the version committed before it by the same store, and
     * every key put, changed or removed in between (a superset of the keys that differ).
     */
    private readonly delta?: { since: bigint; keys: ReadonlySet<KeyString> },
  ) {}

  /** Number of keys. */
  get size(): number {
    return this.tree.size;
  }

  /** Value of `key`, or undefined. The returned bytes must not be modified. */
  get(key: Uint8Array): Uint8Array | undefined {
    return this.tree.get(toKeyString(key));
  }

  /** Keys in ascending byte order, restricted to `range`. */
  *keys(range?: KeyRange): Generator<Buffer> {
    for (const [key] of rangeEntries(this.tree, range)) yield fromKeyString(key);
  }

  /** Entries in ascending key order, restricted to `range`. Values must not be modified. */
  *entries(range?: KeyRange): Generator<[Buffer, Uint8Array]> {
    for (const [key, value] of rangeEntries(this.tree, range)) yield [fromKeyString(key), value];
  }

  /**
   * The changes that lead from `older` to this view, in ascending key order: every key added or
   * given a new value (a put always stores a new value object, so a put of equal bytes counts),
   * with its value here, and every key removed, with undefined. Views of the same store share
   * their unchanged copy-on-write nodes, which are skipped: the cost follows the changed part,
   * not the size of the store.
   */
  changesSince(older: Snapshot): KeyChange[] {
    const delta = this.delta;
    if (delta !== undefined && this.origin === older.origin && delta.since === older.version) {
      // The sync's own record of what it touched: a lookup per touched key, not a walk.
      const changes: KeyChange[] = [];
      for (const key of [...delta.keys].sort()) {
        const value = this.tree.get(key);
        if (!Object.is(value, older.tree.get(key))) changes.push([fromKeyString(key), value]);
      }
      return changes;
    }
    const found: [KeyString, Uint8Array | undefined][] = [];
    const changed = (key: KeyString, value: Uint8Array | undefined) => {
      found.push([key, value]);
    };
    diffAgainst(this.tree, older.tree, changed, (key) => changed(key, undefined), changed);
    // The diff walks the trees from their largest key down; order it ascending whatever it did.
    found.reverse();
    for (let i = 1; i < found.length; i++) {
      if ((found[i - 1] as [KeyString, unknown])[0] > (found[i] as [KeyString, unknown])[0]) {
        found.sort((a, b) => compareKeys(a[0], b[0]));
        break;
      }
    }
    return found.map(([key, value]) => [fromKeyString(key), value]);
  }
}

/** One key's change between two views: its new value, or undefined when it was removed. */
export type KeyChange = [key: Buffer, value: Uint8Array | undefined];

const diffAgainst = diffAgainstModule.default;

/** A view with no keys at version 0: what a partition that does not exist reads as. */
export function emptySnapshot(): Snapshot {
  return new Snapshot(bulkLoad<KeyString, Uint8Array>([], [], 64, compareKeys), 0n);
}

/** One value of an overwrite: its encoding starts at `offset`, its bytes at `start`. */
interface OverwriteChange {
  offset: number;
  start: number;
  value: Uint8Array;
}

/**
 * CPU cost of patching the CRC for one changed value beyond hashing its bytes, in bytes of
 * CRC32C hashed in the same time: 0.65 to 1.2 us a patch against about 0.75 ns a byte (x86-64,
 * a 1.1 MB body with 100 to 700 changes, in a profile and in isolation).
 */
const CRC_PATCH_OVERHEAD_BYTES = 1024;

interface BlobState {
  blob: Blob;
  /** Version of the body in `image` (0: empty). */
  version: bigint;
  /** The body as it is on disk. */
  image: Buffer;
  /** CRC stored at the end of `image` (when it holds a body). */
  crc: number;
  /** Where each key's encoded value starts in `image`. */
  spans: Spans;
  /**
   * Keys whose value changed (or was handed out for change) since `image` was last written, with
   * their current value (the same object as in the map; a key-set change forces two rewrites,
   * which empty this, so an entry never outlives its key).
   */
  modified: Map<KeyString, Uint8Array>;
  /** True when map values may be views into `image` (loaded at open): never patch it in place. */
  shared: boolean;
}

/** The store; see the module comment. Build it with `openMetadata`. */
export class Metadata {
  private readonly map: Tree;
  /** Blob holding the newest committed version. */
  private cursor: 0 | 1;
  private nextVersion: bigint;
  /** "Key order changed": the value of nextVersion when the key set last changed. */
  private keyOrderChanged: bigint;
  /** Total encoded size of every entry of `map`. */
  private entriesBytes: number;
  private committedView: Snapshot;
  /** Keys put, changed or removed since the last sync started (committed views carry them). */
  private touched = new Set<KeyString>();
  private syncTail: Promise<unknown> = Promise.resolve();
  private closed = false;
  private failure: StoreError | undefined;
  /** Versions at or above this one may hold a failed sync's bytes: discard them at reopen. */
  unsafeVersionsFrom: bigint | undefined;

  /** @internal Use `openMetadata`. */
  constructor(
    private readonly storage: Storage,
    readonly partition: string,
    readonly keyCodec: KeyCodec,
    readonly maxValueBytes: number,
    private readonly blobs: [BlobState, BlobState],
    cursor: 0 | 1,
    map: Tree,
    entriesBytes: number,
    private readonly metrics: StoreMetrics,
    /** Layout of the partition's blobs (of the left one, should they differ). */
    readonly blobLayout: BlobLayout,
    /** What a sync with nothing to write does. */
    readonly noChangeSync: NoChangeSync,
  ) {
    this.map = map;
    this.cursor = cursor;
    const newest = blobs[cursor].version;
    this.nextVersion = newest + 1n;
    this.keyOrderChanged = this.nextVersion;
    this.entriesBytes = entriesBytes;
    this.committedView = new Snapshot(map.clone(), newest, this);
  }

  /** Number of keys, including mutations not yet synced. */
  get size(): number {
    return this.map.size;
  }

  /** Current value of `key` (including unsynced mutations), or undefined. Must not be modified. */
  get(key: Uint8Array): Uint8Array | undefined {
    return this.map.get(toKeyString(key));
  }

  /**
   * Stores `value` under `key` and returns the previous value. Applied in memory; durable after
   * the next `sync`. @throws StoreError KeyWidth, EmptyKey, KeyTooLarge, ValueTooLarge, Failed, Closed
   */
  put(key: Uint8Array, value: Uint8Array): Uint8Array | undefined {
    this.assertWritable();
    validateKey(this.keyCodec, key);
    validateValue(value, this.maxValueBytes);
    return this.setValue(toKeyString(key), value);
  }

  /** `put`, then `sync`: resolves with the previous value after the fsync that holds the write. */
  async putSync(key: Uint8Array, value: Uint8Array): Promise<Uint8Array | undefined> {
    const previous = this.put(key, value);
    await this.sync();
    return previous;
  }

  /**
   * Changes the value of `key` in place (the reference's `get_mut`): `change` receives a private
   * copy of the value, which it may modify, or it returns a replacement. The key is marked
   * modified even if nothing changes. Returns false (and calls nothing) when the key is absent.
   * @throws StoreError ValueTooLarge (nothing changed), Failed, Closed
   */
  update(key: Uint8Array, change: (value: Buffer) => Uint8Array | undefined): boolean {
    this.assertWritable();
    const k = toKeyString(key);
    const current = this.map.get(k);
    if (current === undefined) return false;
    const copy = Buffer.from(current);
    const next = change(copy) ?? copy;
    validateValue(next, this.maxValueBytes);
    this.setValue(k, next);
    return true;
  }

  /**
   * Changes the value of `key` with `change` when present (as `update`), or stores
   * `change(empty value)` when absent. @throws as `put`
   */
  upsert(key: Uint8Array, change: (value: Buffer) => Uint8Array | undefined): void {
    if (this.update(key, change)) return;
    const fresh = Buffer.alloc(0);
    this.put(key, change(fresh) ?? fresh);
  }

  /** `upsert`, then `sync`. */
  async upsertSync(key: Uint8Array, change: (value: Buffer) => Uint8Array | undefined): Promise<void> {
    this.upsert(key, change);
    await this.sync();
  }

  /** Removes `key` and returns its value, or undefined if absent. Durable after the next sync. */
  remove(key: Uint8Array): Uint8Array | undefined {
    this.assertWritable();
    const k = toKeyString(key);
    const previous = this.map.get(k);
    if (previous !== undefined) {
      this.map.delete(k);
      this.touched.add(k);
      this.keyOrderChanged = this.nextVersion;
      this.entriesBytes -= encodedKeySize(this.keyCodec, k) + encodedValueSize(previous);
    }
    return previous;
  }

  /** Removes every key; returns how many there were. Durable after the next sync. */
  clear(): number {
    this.assertWritable();
    const removed = this.map.size;
    for (const k of this.map.keys()) this.touched.add(k);
    this.map.clear();
    this.entriesBytes = 0;
    this.keyOrderChanged = this.nextVersion;
    return removed;
  }

  /** Keeps only the entries for which `keep(key, value)` holds; returns how many were removed. */
  retain(keep: (key: Buffer, value: Uint8Array) => boolean): number {
    this.assertWritable();
    let removed = 0;
    let removedBytes = 0;
    this.map.editAll((k, v) => {
      if (keep(fromKeyString(k), v)) return undefined;
      this.touched.add(k);
      removed++;
      removedBytes += encodedKeySize(this.keyCodec, k) + encodedValueSize(v);
      return { delete: true };
    });
    if (removed > 0) {
      this.entriesBytes -= removedBytes;
      this.keyOrderChanged = this.nextVersion;
    }
    return removed;
  }

  /** Keys in ascending byte order (including unsynced mutations), restricted to `range`. */
  keys(range?: KeyRange): Generator<Buffer> {
    return this.snapshot().keys(range);
  }

  /** Entries in ascending key order (including unsynced mutations), restricted to `range`. */
  entries(range?: KeyRange): Generator<[Buffer, Uint8Array]> {
    return this.snapshot().entries(range);
  }

  /** A read-only view of the current state, unsynced mutations included. */
  snapshot(): Snapshot {
    return new Snapshot(this.map.clone(), this.committedView.version);
  }

  /** A read-only view of the state held by the last completed sync (what a restart would see). */
  committed(): Snapshot {
    return this.committedView;
  }

  /**
   * Commits every mutation made before the call: writes a new version and fsyncs it. Resolves
   * with that version after the fsync. Syncs run one at a time in call order.
   * @throws StoreError SyncFailed (nothing of this sync will ever surface), Failed, Closed,
   *   VersionOverflow
   */
  sync(): Promise<bigint> {
    const run = this.syncTail.then(() => this.syncNow());
    this.syncTail = run.catch(() => undefined);
    return run;
  }

  /**
   * Closes the blob handles after any sync in flight. Unsynced mutations are dropped.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.syncTail;
    this.closed = true;
    await Promise.allSettled(this.blobs.map((b) => b.blob.close()));
  }

  /**
   * Closes the store and removes both blobs and the partition. The older blob goes first, so a
   * reopen after an interrupted destroy finds the newest version or nothing, never an older one.
   */
  async destroy(): Promise<void> {
    await this.close();
    const newest = this.cursor;
    for (const index of [newest === 0 ? 1 : 0, newest]) {
      await this.storage.remove(this.partition, BLOB_NAMES[index] as Buffer);
    }
    try {
      await this.storage.remove(this.partition);
    } catch (err) {
      if (!(err instanceof StoreError && err.kind === "PartitionMissing")) throw err;
    }
  }

  /** @internal State for tests: cursor, versions, KOC, next version. */
  debugState(): {
    cursor: "left" | "right";
    nextVersion: bigint;
    keyOrderChanged: bigint;
    versions: [bigint, bigint];
  } {
    return {
      cursor: this.cursor === 0 ? "left" : "right",
      nextVersion: this.nextVersion,
      keyOrderChanged: this.keyOrderChanged,
      versions: [this.blobs[0].version, this.blobs[1].version],
    };
  }

  private setValue(k: KeyString, value: Uint8Array): Uint8Array | undefined {
    const previous = this.map.get(k);
    this.map.set(k, value);
    this.touched.add(k);
    if (previous === undefined) {
      this.keyOrderChanged = this.nextVersion;
      this.entriesBytes += encodedKeySize(this.keyCodec, k) + encodedValueSize(value);
    } else {
      this.blobs[0].modified.set(k, value);
      this.blobs[1].modified.set(k, value);
      this.entriesBytes += encodedValueSize(value) - encodedValueSize(previous);
    }
    return previous;
  }

  private assertWritable(): void {
    if (this.closed) throw new StoreError("Closed", `store ${this.partition} is closed`);
    if (this.failure !== undefined) throw this.failure;
  }

  private async syncNow(): Promise<bigint> {
    this.assertWritable();
    // Prologue: everything up to the first await runs without interleaving.
    const version = this.nextVersion;
    if (version >= MAX_VERSION)
      throw new StoreError("VersionOverflow", `version overflow in ${this.partition}`);
    const previousCursor = this.cursor;
    const newest = this.blobs[previousCursor].version;
    const targetIndex: 0 | 1 = previousCursor === 0 ? 1 : 0;
    const target = this.blobs[targetIndex];
    // Both blobs hold the newest state: a new version would only rotate them.
    if (this.noChangeSync === "skip" && this.keyOrderChanged < newest && target.modified.size === 0) {
      return newest;
    }
    this.cursor = targetIndex;
    this.nextVersion = version + 1n;
    const view = new Snapshot(this.map.clone(), version, this, {
      since: this.committedView.version,
      keys: this.touched,
    });
    this.touched = new Set();

    const writes = this.planOverwrite(target, version, newest);
    let rewritten: { body: Buffer; spans: Spans } | undefined;
    let resizeTo: number | undefined;
    if (writes === undefined) {
      target.modified.clear();
      rewritten = encodeBody(this.keyCodec, version, this.map.entries(), this.entriesBytes, crc32c);
      if (rewritten.body.length < target.image.length) resizeTo = rewritten.body.length;
    }

    try {
      if (rewritten !== undefined) {
        await target.blob.write(0, rewritten.body);
      } else {
        await target.blob.writeAll(writes as [number, Uint8Array][]);
      }
      if (resizeTo !== undefined) await target.blob.resize(resizeTo);
      await target.blob.sync();
    } catch (err) {
      await this.abandonSync(target, previousCursor, version, err);
    }

    // Epilogue: only after the fsync.
    target.version = version;
    if (rewritten !== undefined) {
      target.image = rewritten.body;
      target.spans = rewritten.spans;
      target.crc = rewritten.body.readUInt32BE(rewritten.body.length - CRC_BYTES);
      target.shared = false;
      this.metrics.syncRewrites.inc();
    } else {
      this.metrics.syncOverwrites.inc();
    }
    this.committedView = view;
    return version;
  }

  /**
   * Plans an overwrite of `target` (patching its image and CRC), or returns undefined when the
   * sync must rewrite the whole body. Leaves `target.modified` empty when it plans one.
   */
  private planOverwrite(
    target: BlobState,
    version: bigint,
    newest: bigint,
  ): [number, Uint8Array][] | undefined {
    if (!(this.keyOrderChanged < newest)) return undefined;
    const image = target.image;
    if (target.shared || image.length < MIN_BODY_BYTES) return undefined;
    const crcOffset = image.length - CRC_BYTES;
    // Check every modified value first, so that a rewrite leaves the image untouched. A value
    // fits in place when its length is unchanged: the varint in front of it is then unchanged too.
    const changes: OverwriteChange[] = [];
    let patchCost = 0;
    for (const [k, value] of target.modified) {
      const offset = target.spans.get(k);
      if (offset === undefined) return undefined;
      const onDisk = readVarint(image, offset, crcOffset);
      if (onDisk.value !== value.length) return undefined;
      changes.push({ offset, start: onDisk.next, value });
      patchCost += value.length + CRC_PATCH_OVERHEAD_BYTES;
    }
    target.modified.clear();
    // In offset order, which is key order: the reference's order of writes.
    changes.sort((a, b) => a.offset - b.offset);
    // Past the size of the body in patch costs, hashing the patched body once is cheaper.
    const recompute = patchCost > crcOffset;
    let crc = target.crc;
    const writes: [number, Uint8Array][] = [];
    for (const { offset, start, value } of changes) {
      const end = start + value.length;
      if (!recompute) crc = crc32cPatch(crc, crcOffset, start, image.subarray(start, end), value);
      image.set(value, start);
      // Varint and value, as the reference writes them; a view: the image is not touched again
      // before this sync completes.
      writes.push([offset, image.subarray(offset, end)]);
    }
    const versionBytes = Buffer.allocUnsafe(VERSION_BYTES);
    versionBytes.writeBigUInt64BE(version, 0);
    if (!recompute) crc = crc32cPatch(crc, crcOffset, 0, image.subarray(0, VERSION_BYTES), versionBytes);
    image.set(versionBytes, 0);
    if (recompute) crc = crc32c(image.subarray(0, crcOffset));
    image.writeUInt32BE(crc, crcOffset);
    target.crc = crc;
    // Under the 2026.10.0 rules a body of at most one page is written whole: its changes share
    // that page, so one write replaces several (the bytes on disk are the same either way).
    if (this.noChangeSync === "skip" && image.length <= BLOB_PAGE_BYTES) return [[0, image]];
    writes.push([0, versionBytes], [crcOffset, image.subarray(crcOffset)]);
    return writes;
  }

  /**
   * Handles a failed sync (docs/FORMAT.md §11.3): cut the target to empty so nothing of the failed
   * version can surface, point the cursor back at the last committed blob and force a full
   * rewrite next time; if that fails too, refuse all further work. Always throws.
   */
  private async abandonSync(
    target: BlobState,
    previousCursor: 0 | 1,
    version: bigint,
    err: unknown,
  ): Promise<never> {
    const cause = asIoError(err, `sync ${this.partition}`);
    try {
      await target.blob.resize(0);
      await target.blob.sync();
      target.version = 0n;
      target.image = EMPTY;
      target.crc = 0;
      target.spans = new Map();
      target.modified.clear();
      target.shared = false;
      this.cursor = previousCursor;
      this.keyOrderChanged = this.nextVersion;
    } catch (cleanupErr) {
      // A voided sync can never surface: nothing of it needs discarding at reopen.
      if (!(err instanceof StoreError && err.voided)) this.unsafeVersionsFrom = version;
      this.failure = new StoreError(
        "Failed",
        `store ${this.partition} failed: a sync failed and its cleanup failed too (${asIoError(cleanupErr, "cleanup").message}); reopen it`,
        { cause: cleanupErr },
      );
    }
    throw new StoreError(
      "SyncFailed",
      `sync failed: version ${version} of ${this.partition} was not committed: ${cause.message}`,
      {
        cause,
      },
    );
  }
}

/** Why recovery discarded a blob (the `reason` label of `metadata_blobs_discarded_total`). */
export type DiscardReason =
  /** A body shorter than a version and a checksum. */
  | "too_short"
  /** A body whose CRC32C does not match. */
  | "checksum_mismatch"
  /** A body at or above `discardVersionsFrom`: the bytes of a sync that failed (never committed). */
  | "failed_sync";

const REASON_TEXT: Readonly<Record<DiscardReason, string>> = {
  too_short: "too short",
  checksum_mismatch: "checksum mismatch",
  failed_sync: "left by a failed sync",
};

/** A blob recovery is about to cut to empty, as handed to `MetadataConfig.quarantine`. */
export interface DiscardedBlob {
  partition: string;
  /** "left" or "right". */
  blob: "left" | "right";
  /** File name of the blob in its partition (lowercase hex of the blob name). */
  fileName: string;
  reason: DiscardReason;
  /** Version in the body's first 8 bytes (not verified by any checksum), if it has them. */
  claimedVersion: bigint | undefined;
  /** The body (the blob without its header), as read. */
  body: Uint8Array;
}

/** One blob as found at open, before anything is cut. */
interface Inspected {
  state: BlobState;
  /** Layout of the blob, and whether this open created it. */
  layout: BlobLayout;
  created: boolean;
  /** Logical length at open: 0 means the blob never held a body. */
  length: number;
  /** Why the body is not usable, if it is not. */
  discard?: DiscardedBlob;
}

/**
 * Opens one blob and checks its body without changing anything: a body too short, failing its
 * CRC or holding a discarded version comes back with a `discard` verdict; a valid body is kept as
 * the blob's image, not decoded yet.
 */
async function inspectBlob(
  storage: Storage,
  config: MetadataConfig,
  index: 0 | 1,
  layout: BlobLayout,
): Promise<Inspected> {
  const name = BLOB_NAMES[index];
  const { blob, length, layout: opened, created } = await storage.open(config.partition, name, { layout });
  const state: BlobState = {
    blob,
    version: 0n,
    image: EMPTY,
    crc: 0,
    spans: new Map(),
    modified: new Map(),
    shared: false,
  };
  try {
    if (length === 0) return { state, length, layout: opened, created };
    const read = await blob.read(0, length);
    const body = Buffer.from(read.buffer, read.byteOffset, read.byteLength);
    const discard = (reason: DiscardReason): Inspected => ({
      state,
      length,
      layout: opened,
      created,
      discard: {
        partition: config.partition,
        blob: index === 0 ? "left" : "right",
        fileName: blobFileName(name),
        reason,
        claimedVersion: length >= VERSION_BYTES ? body.readBigUInt64BE(0) : undefined,
        body,
      },
    });
    if (length < MIN_BODY_BYTES) return discard("too_short");
    const stored = body.readUInt32BE(length - CRC_BYTES);
    if (stored !== crc32c(body.subarray(0, length - CRC_BYTES))) return discard("checksum_mismatch");
    const version = body.readBigUInt64BE(0);
    if (config.discardVersionsFrom !== undefined && version >= config.discardVersionsFrom) {
      return discard("failed_sync");
    }
    // Spans stay empty: the first two syncs after an open rewrite both blobs in full (KOC is
    // set to the next version), so nothing is ever patched into an image loaded here.
    return {
      state: { blob, version, image: body, crc: stored, spans: new Map(), modified: new Map(), shared: true },
      length,
      layout: opened,
      created,
    };
  } catch (err) {
    await blob.close().catch(() => undefined);
    throw asIoError(err, `open ${describeBlob(config.partition, name)}`);
  }
}

function describeVersion(version: bigint | undefined): string {
  return version === undefined ? "no readable version" : `version ${version}`;
}

/**
 * Keeps a discarded blob's bytes aside (when configured and the blob was damaged), says so,
 * counts it, then cuts the blob to empty and fsyncs it. A failed quarantine fails the open with
 * nothing cut.
 */
async function discardBlob(
  config: MetadataConfig,
  found: Inspected & { discard: DiscardedBlob },
  other: Inspected,
  counter: ((reason: DiscardReason) => void) | undefined,
): Promise<void> {
  const { discard } = found;
  let kept = "";
  // The bytes of a failed sync were never committed: they are cut without a copy, so that a
  // reopen after ENOSPC does not need free space.
  if (discard.reason !== "failed_sync" && config.quarantine !== undefined) {
    kept = `; its bytes are kept in ${await config.quarantine(discard)}`;
  }
  const otherName = discard.blob === "left" ? "right" : "left";
  const otherText =
    other.discard !== undefined
      ? `${otherName} is discarded too`
      : `${otherName} holds version ${other.state.version}`;
  (config.warn ?? defaultWarn)(
    `partition ${config.partition}: discarding blob ${discard.blob} (${describeBlob(config.partition, BLOB_NAMES[discard.blob === "left" ? 0 : 1])}): ${REASON_TEXT[discard.reason]}; it claims ${describeVersion(discard.claimedVersion)}, ${otherText}${kept}`,
  );
  counter?.(discard.reason);
  try {
    await found.state.blob.resize(0);
    await found.state.blob.sync();
  } catch (err) {
    throw asIoError(
      err,
      `cut ${describeBlob(config.partition, BLOB_NAMES[discard.blob === "left" ? 0 : 1])}`,
    );
  }
}

function defaultWarn(message: string): void {
  console.warn(`warning: ${message}`);
}

/** True when `found` held a body that failed validation (not merely a failed sync's bytes). */
function damaged(found: Inspected): boolean {
  return found.discard !== undefined && found.discard.reason !== "failed_sync";
}

/**
 * Opens (creating if needed) the store of `config.partition` and recovers its newest valid state:
 * the valid blob with the higher version wins (left on a tie). A blob that is too short, fails
 * its CRC or holds a discarded version is first handed to `config.quarantine`, logged through
 * `config.warn` with the reason and both versions, counted in `metadata_blobs_discarded_total`,
 * then cut to empty.
 *
 * Data loss: when both blobs held a body and neither is valid (at least one damaged), nothing is
 * cut and the open fails with `DataLoss`, unless `config.acceptDataLoss`, which keeps both aside
 * and opens an empty store. When only one blob ever held a body and it is damaged, the state is
 * that of a first sync interrupted by a crash (nothing was ever committed) or of a loss; the
 * store opens empty after keeping it aside.
 * @throws StoreError InvalidPartitionName, InvalidConfig, BlobCorrupt, BlobVersionMismatch,
 *   Corrupt (a body with a valid CRC that does not decode: nothing is modified), DataLoss, Io
 *   and its environment kinds (DiskFull, FileLimit, NotWritable), or what `quarantine` throws
 */
export async function openMetadata(storage: Storage, config: MetadataConfig): Promise<Metadata> {
  const codec = config.keyCodec ?? variableKeys();
  const maxValueBytes = config.maxValueBytes ?? MAX_VALUE_BYTES;
  if (!Number.isInteger(maxValueBytes) || maxValueBytes < 0 || maxValueBytes > MAX_VALUE_BYTES) {
    throw new StoreError(
      "InvalidConfig",
      `invalid maximum value size ${maxValueBytes}: use 0..${MAX_VALUE_BYTES}`,
    );
  }
  if (config.noChangeSync !== undefined && config.noChangeSync !== "bump" && config.noChangeSync !== "skip") {
    throw new StoreError(
      "InvalidConfig",
      `invalid no-change sync ${JSON.stringify(config.noChangeSync)}: use bump or skip`,
    );
  }
  // The partition's layout is the one its blobs have: the second blob follows the first, and a
  // first blob created beside an existing second one is created again in the second's layout.
  let inspectedLeft: Inspected | undefined = await inspectBlob(
    storage,
    config,
    0,
    config.blobLayout ?? DEFAULT_BLOB_LAYOUT,
  );
  let inspectedRight: Inspected | undefined;
  try {
    inspectedRight = await inspectBlob(storage, config, 1, inspectedLeft.layout);
    if (inspectedLeft.created && !inspectedRight.created && inspectedRight.layout !== inspectedLeft.layout) {
      const stale = inspectedLeft;
      inspectedLeft = undefined;
      await stale.state.blob.close();
      await storage.remove(config.partition, BLOB_NAMES[0]);
      inspectedLeft = await inspectBlob(storage, config, 0, inspectedRight.layout);
    }
  } catch (err) {
    await Promise.allSettled([inspectedLeft?.state.blob.close(), inspectedRight?.state.blob.close()]);
    throw err;
  }
  const found = [inspectedLeft, inspectedRight] as const;
  const closeBoth = () => Promise.allSettled(found.map((f) => f.state.blob.close()));
  const recovery = createRecoveryMetrics(config.registry, config.partition);
  const lost =
    found.every((f) => f.length > 0 && f.discard !== undefined) && (damaged(found[0]) || damaged(found[1]));
  try {
    if (lost && config.acceptDataLoss !== true) {
      recovery?.dataLoss(true);
      const detail = found
        .map(
          (f) =>
            `${f.discard?.blob} ${REASON_TEXT[f.discard?.reason ?? "checksum_mismatch"]} (claims ${describeVersion(f.discard?.claimedVersion)})`,
        )
        .join(", ");
      const message = `data loss in partition ${config.partition}: no valid blob: ${detail}; nothing was changed on disk; the partition is not served until the loss is accepted (metadata-cli accept-data-loss ${config.partition}, server stopped)`;
      (config.warn ?? defaultWarn)(message);
      throw new StoreError("DataLoss", message);
    }
    for (const [index, f] of found.entries()) {
      if (f.discard !== undefined) {
        await discardBlob(
          config,
          f as Inspected & { discard: DiscardedBlob },
          found[index === 0 ? 1 : 0],
          recovery?.discarded,
        );
      }
    }
    recovery?.dataLoss(false);
  } catch (err) {
    await closeBoth();
    throw err;
  }
  const left = inspectedLeft.state;
  const right = inspectedRight.state;
  const cursor: 0 | 1 = right.version > left.version ? 1 : 0;
  const newest = cursor === 0 ? left : right;
  // Only the newest body is decoded: the older one was checked by its CRC and is rewritten in
  // full by the next sync.
  let decoded: DecodedBody | undefined;
  try {
    if (newest.version >= MAX_VERSION) {
      throw new StoreError("VersionOverflow", `version overflow in ${config.partition}`);
    }
    if (newest.image.length > 0) {
      decoded = decodeBody(codec, newest.image, `${config.partition}/${BLOB_NAMES[cursor].toString()}`);
    }
  } catch (err) {
    await Promise.allSettled([left.blob.close(), right.blob.close()]);
    throw err;
  }
  const map = bulkLoad<KeyString, Uint8Array>(decoded?.keys ?? [], decoded?.values ?? [], 64, compareKeys);
  // The keys gauge reads the size of this instance's map when scraped.
  const metrics = createStoreMetrics(config.registry, config.partition, () => map.size);
  return new Metadata(
    storage,
    config.partition,
    codec,
    maxValueBytes,
    [left, right],
    cursor,
    map,
    decoded?.entriesBytes ?? 0,
    metrics,
    inspectedLeft.layout,
    config.noChangeSync ?? defaultNoChangeSync(inspectedLeft.layout),
  );
}
