/**
 * Storage: partitions of named blobs, the abstract store under Metadata.
 *
 * Model (the same as commonware-runtime's blob storage):
 * - A storage holds partitions; a partition holds blobs named by arbitrary bytes.
 * - Every blob starts with a header region that the storage owns, in one of two layouts
 *   (blob-header.ts, docs/FORMAT.md §2): V0, 8 bytes ("CWIC"), or V1, one 4096-byte page
 *   ("CWIK", with a CRC). Offsets and lengths seen through `Blob` are logical: they exclude the
 *   header region, so logical offset o is physical offset o + 8 (V0) or o + 4096 (V1).
 * - Opening a blob with no header yet (missing, new, shorter than 8 bytes, or left by an
 *   interrupted creation) creates it in the layout asked for (`OpenOptions.layout`, default V1)
 *   with a logical length of 0; an existing blob keeps its layout. Any other bad header is a
 *   typed error and nothing is modified.
 * - `Blob.write` and `Blob.resize` change the live bytes; only `Blob.sync` makes them durable.
 *   Creating a blob (open) and removing a blob or partition are durable when they resolve.
 *
 * Invariants:
 * - A partition name is non-empty, at most 255 bytes (a directory name every filesystem takes)
 *   and made only of ASCII letters, digits, '-' and '_'; any other name is refused with
 *   `StoreError("InvalidPartitionName")` before the backend is touched, so no name can escape the
 *   storage root. The message quotes at most a short prefix of the name.
 *
 * Usage:
 *   const { blob, length, layout } = await storage.open("meta", BLOB_LEFT, { layout: "v0" });
 *   await blob.write(0, bytes); await blob.sync();
 */
import { preview, StoreError } from "../errors.js";
import type { BlobLayout } from "./blob-header.js";
import type { RawFile } from "./headered-blob.js";

export type { BlobLayout } from "./blob-header.js";

/** Options of `Storage.open`. */
export interface OpenOptions {
  /** Layout of the blob if it has to be created (default "v1"); an existing blob keeps its own. */
  layout?: BlobLayout;
  /** @internal Wraps the raw file for the creation steps only (fault injection in tests). */
  creationFile?: (file: RawFile) => RawFile;
}

/** One write of a batch: logical offset and bytes. */
export type BlobWrite = readonly [offset: number, data: Uint8Array];

/** One blob of a partition, seen through its logical (header-less) offsets. */
export interface Blob {
  /** Reads exactly `length` bytes at logical `offset`; throws `StoreError("Io")` past the end. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /** Writes `data` at logical `offset`, extending the blob if needed. Not durable until `sync`. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /**
   * Every write of `writes`, as if each were passed to `write` at once: resolves when all are
   * done; rejects with the first failure once every write has been attempted. Backends batch
   * them where that is cheaper (one call per sync instead of one per changed value).
   */
  writeAll(writes: readonly BlobWrite[]): Promise<void>;
  /** Sets the logical length, zero-filling when growing. Not durable until `sync`. */
  resize(length: number): Promise<void>;
  /**
   * Makes every previous write and resize of this blob durable (an fsync or fdatasync of the
   * file). On failure, any of them may be durable, unless the StoreError is `voided`.
   */
  sync(): Promise<void>;
  /** Current logical length. */
  length(): number;
  /** Releases the handle. Does not sync. */
  close(): Promise<void>;
}

/** A blob handle together with its logical length and its layout at open. */
export interface OpenedBlob {
  blob: Blob;
  length: number;
  /** Layout of the blob's header region (the one it had, or the one it was created in). */
  layout: BlobLayout;
  /** True when this open created the blob (it had no header, or an interrupted creation's). */
  created: boolean;
}

/** Partitions of named blobs. */
export interface Storage {
  /**
   * Opens blob `name` of `partition`, creating the partition and the blob if missing (never
   * truncating data). A created blob is durable, header included, when this resolves; a blob
   * left without a whole header by an interrupted creation is created again.
   * @throws StoreError InvalidPartitionName, BlobCorrupt, BlobVersionMismatch, Io
   */
  open(partition: string, name: Uint8Array, options?: OpenOptions): Promise<OpenedBlob>;
  /**
   * Removes one blob (`name` given) or the whole partition with everything in it. Durable when it
   * resolves. @throws StoreError BlobMissing, PartitionMissing, InvalidPartitionName, Io
   */
  remove(partition: string, name?: Uint8Array): Promise<void>;
  /** Names of the blobs of `partition`. @throws StoreError PartitionMissing, PartitionCorrupt */
  scan(partition: string): Promise<Uint8Array[]>;
  /** Names of every partition, sorted. */
  listPartitions(): Promise<string[]>;
}

/**
 * A storage wrapping another one: removing, scanning and listing pass straight through;
 * subclasses decide what `open` hands out (typically the inner blob, wrapped).
 */
export abstract class StorageWrapper implements Storage {
  constructor(readonly inner: Storage) {}

  abstract open(partition: string, name: Uint8Array, options?: OpenOptions): Promise<OpenedBlob>;

  remove(partition: string, name?: Uint8Array): Promise<void> {
    return this.inner.remove(partition, name);
  }

  scan(partition: string): Promise<Uint8Array[]> {
    return this.inner.scan(partition);
  }

  listPartitions(): Promise<string[]> {
    return this.inner.listPartitions();
  }
}

const PARTITION_NAME = /^[A-Za-z0-9_-]+$/;

/** Longest partition name, in bytes (NAME_MAX of common filesystems). */
export const MAX_PARTITION_NAME_BYTES = 255;

/** True when `name` is a valid partition name. */
export function isValidPartitionName(name: string): boolean {
  return name.length <= MAX_PARTITION_NAME_BYTES && PARTITION_NAME.test(name);
}

/** Throws `StoreError("InvalidPartitionName")` unless `name` is a valid partition name. */
export function validatePartitionName(name: string): void {
  if (name.length > MAX_PARTITION_NAME_BYTES) {
    throw new StoreError(
      "InvalidPartitionName",
      `invalid partition name ${preview(name)}: longer than ${MAX_PARTITION_NAME_BYTES} bytes`,
    );
  }
  if (!PARTITION_NAME.test(name)) {
    throw new StoreError(
      "InvalidPartitionName",
      `invalid partition name ${preview(name)}: use 1 or more ASCII letters, digits, '-' or '_'`,
    );
  }
}

/** Lowercase hex spelling of a blob name: the file name of the blob. */
export function blobFileName(name: Uint8Array): string {
  return Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString("hex");
}

/** Display form of a blob location for messages. */
export function describeBlob(partition: string, name: Uint8Array): string {
  return `${partition}/${blobFileName(name)}`;
}

/** `Blob.writeAll` by way of `write`, for blobs with nothing faster (fault injection, tests). */
export async function writeEach(blob: Pick<Blob, "write">, writes: readonly BlobWrite[]): Promise<void> {
  const results = await Promise.allSettled(writes.map(([offset, data]) => blob.write(offset, data)));
  for (const result of results) if (result.status === "rejected") throw result.reason;
}
