/**
 * Storage: partitions of named blobs, the abstract store under Metadata.
 *
 * Model (the same as commonware-runtime's blob storage):
 * - A storage holds partitions; a partition holds blobs named by arbitrary bytes.
 * - Every blob starts with an 8-byte header that the storage owns: magic "CWIC", a u16 runtime
 *   version (0) and a u16 blob version (0). Offsets and lengths seen through `Blob` are logical:
 *   they exclude the header, so logical offset o is physical offset o + 8.
 * - Opening a blob whose physical length is below 8 (missing, new or damaged) gives it a fresh
 *   header and a logical length of 0; a wrong magic, runtime version or blob version is a typed
 *   error and nothing is modified.
 * - `Blob.write` and `Blob.resize` change the live bytes; only `Blob.sync` makes them durable.
 *   Creating a blob (open) and removing a blob or partition are durable when they resolve.
 *
 * Invariants:
 * - A partition name is non-empty and made only of ASCII letters, digits, '-' and '_'; any other
 *   name is refused with `StoreError("InvalidPartitionName")` before the backend is touched, so no
 *   name can escape the storage root.
 *
 * Usage:
 *   const { blob, length } = await storage.open("meta", BLOB_LEFT);
 *   await blob.write(0, bytes); await blob.sync();
 */
import { StoreError } from "../errors.js";

/** Length of the runtime header at the start of every blob file. */
export const HEADER_BYTES = 8;
/** Magic bytes "CWIC" at the start of every blob file. */
export const HEADER_MAGIC = Uint8Array.of(0x43, 0x57, 0x49, 0x43);
/** Runtime header format version written and accepted. */
export const RUNTIME_VERSION = 0;
/** Application blob version written and accepted (metadata blobs use 0). */
export const BLOB_VERSION = 0;

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
  /** Makes every previous write and resize of this blob durable (an fsync or fdatasync of the file). */
  sync(): Promise<void>;
  /** Current logical length. */
  length(): number;
  /** Releases the handle. Does not sync. */
  close(): Promise<void>;
}

/** A blob handle together with its logical length at open. */
export interface OpenedBlob {
  blob: Blob;
  length: number;
}

/** Partitions of named blobs. */
export interface Storage {
  /**
   * Opens blob `name` of `partition`, creating the partition and the blob if missing (never
   * truncating). A created blob is durable, header included, when this resolves.
   * @throws StoreError InvalidPartitionName, BlobCorrupt, BlobVersionMismatch, Io
   */
  open(partition: string, name: Uint8Array): Promise<OpenedBlob>;
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

  abstract open(partition: string, name: Uint8Array): Promise<OpenedBlob>;

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

/** True when `name` is a valid partition name. */
export function isValidPartitionName(name: string): boolean {
  return PARTITION_NAME.test(name);
}

/** Throws `StoreError("InvalidPartitionName")` unless `name` is a valid partition name. */
export function validatePartitionName(name: string): void {
  if (!isValidPartitionName(name)) {
    throw new StoreError(
      "InvalidPartitionName",
      `invalid partition name ${JSON.stringify(name)}: use 1 or more ASCII letters, digits, '-' or '_'`,
    );
  }
}

/** The 8 header bytes of a fresh blob. */
export function freshHeader(): Uint8Array {
  const header = new Uint8Array(HEADER_BYTES);
  header.set(HEADER_MAGIC, 0);
  const view = new DataView(header.buffer);
  view.setUint16(4, RUNTIME_VERSION);
  view.setUint16(6, BLOB_VERSION);
  return header;
}

/**
 * Checks a header read from a blob of physical length >= 8.
 * @throws StoreError BlobCorrupt (magic, runtime version) or BlobVersionMismatch
 */
export function checkHeader(header: Uint8Array, where: string): void {
  for (let i = 0; i < HEADER_MAGIC.length; i++) {
    if (header[i] !== HEADER_MAGIC[i]) {
      throw new StoreError("BlobCorrupt", `blob corrupt: ${where}: invalid magic`);
    }
  }
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const runtimeVersion = view.getUint16(4);
  if (runtimeVersion !== RUNTIME_VERSION) {
    throw new StoreError(
      "BlobCorrupt",
      `blob corrupt: ${where}: unsupported runtime version ${runtimeVersion}`,
    );
  }
  const blobVersion = view.getUint16(6);
  if (blobVersion !== BLOB_VERSION) {
    throw new StoreError(
      "BlobVersionMismatch",
      `blob version mismatch: ${where}: expected ${BLOB_VERSION}..=${BLOB_VERSION}, found ${blobVersion}`,
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
