/**
 * FilesystemStorage: the default backend, with the same files as commonware-runtime's storage.
 *
 * Layout: `<root>/<partition>/<lowercase hex of the blob name>`, each file starting with its
 * header region (V0 or V1, see blob-header.ts). A partition written here opens in a Rust node
 * using commonware-storage 2026.10.0 with the same storage root (2026.4.0: V0 blobs only), and
 * the other way round.
 *
 * Durability:
 * - `Blob.sync` is an fdatasync of the file: its data and the metadata needed to read them back
 *   (the size after a resize), not its timestamps. An overwrite sync thus flushes only the pages
 *   it wrote. (commonware-runtime fsyncs; the bytes on disk are the same.)
 * - Creating a blob fsyncs its partition directory and the root before the header is written,
 *   then the file; removing a file fsyncs the partition directory; removing a partition fsyncs
 *   the root. Each is durable when its promise resolves.
 *
 * Writes of up to 64 KiB are issued synchronously: they only copy into the page cache, which takes
 * microseconds, less than the round trip through libuv's thread pool that an asynchronous write
 * costs (an overwrite sync issues one write per changed value, all in one `writeAll`). Larger
 * writes, reads and every fsync and fdatasync run on the thread pool, so the event loop never
 * waits for the disk.
 *
 * Invariants:
 * - Partition names are validated before any path is built, so every path stays under `root`.
 * - A file is never truncated at open.
 */
import { writeSync } from "node:fs";
import { constants, type FileHandle, mkdir, open, readdir, rm, stat, unlink } from "node:fs/promises";
import { dirname, join } from "node:path";
import { asIoError, StoreError } from "../errors.js";
import { DEFAULT_BLOB_LAYOUT } from "./blob-header.js";
import { openHeadered, type RawFile } from "./headered-blob.js";
import {
  type BlobWrite,
  blobFileName,
  describeBlob,
  isValidPartitionName,
  type OpenedBlob,
  type OpenOptions,
  type Storage,
  validatePartitionName,
} from "./storage.js";

/** Storage in a directory of the local filesystem; see the module comment. */
export class FilesystemStorage implements Storage {
  constructor(readonly root: string) {}

  async open(partition: string, name: Uint8Array, options: OpenOptions = {}): Promise<OpenedBlob> {
    validatePartitionName(partition);
    const where = describeBlob(partition, name);
    const directory = join(this.root, partition);
    const path = join(directory, blobFileName(name));
    let handle: FileHandle;
    try {
      if (!(await exists(directory))) await makeDirectory(directory);
      handle = await open(path, constants.O_RDWR | constants.O_CREAT);
      const { size } = await handle.stat();
      return await openHeadered(new FileRaw(handle, size), where, {
        layout: options.layout ?? DEFAULT_BLOB_LAYOUT,
        // The file's name and its partition must be durable before a header says the blob exists.
        beforeCreate: async () => {
          await syncDirectory(directory);
          await syncDirectory(this.root);
        },
        ...(options.creationFile === undefined ? {} : { creationFile: options.creationFile }),
      });
    } catch (err) {
      throw asIoError(err, `open ${where}`);
    }
  }

  async remove(partition: string, name?: Uint8Array): Promise<void> {
    validatePartitionName(partition);
    const directory = join(this.root, partition);
    if (name === undefined) {
      if (!(await exists(directory)))
        throw new StoreError("PartitionMissing", `partition missing: ${partition}`);
      try {
        await rm(directory, { recursive: true, force: true });
        await syncDirectory(this.root);
      } catch (err) {
        throw asIoError(err, `remove partition ${partition}`);
      }
      return;
    }
    const where = describeBlob(partition, name);
    try {
      await unlink(join(directory, blobFileName(name)));
    } catch (err) {
      if (isErrno(err, "ENOENT"))
        throw new StoreError("BlobMissing", `blob missing: ${where}`, { cause: err });
      throw asIoError(err, `remove ${where}`);
    }
    try {
      await syncDirectory(directory);
    } catch (err) {
      throw asIoError(err, `remove ${where}`);
    }
  }

  async scan(partition: string): Promise<Uint8Array[]> {
    validatePartitionName(partition);
    const directory = join(this.root, partition);
    let entries: import("node:fs").Dirent[];
    try {
      entries = await readdir(directory, { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, "ENOENT")) throw new StoreError("PartitionMissing", `partition missing: ${partition}`);
      throw asIoError(err, `scan ${partition}`);
    }
    const names: Uint8Array[] = [];
    for (const entry of entries) {
      if (!entry.isFile() || !/^([0-9a-f]{2})*$/.test(entry.name)) {
        throw new StoreError(
          "PartitionCorrupt",
          `partition corrupt: ${partition}: unexpected entry ${entry.name}`,
        );
      }
      names.push(Buffer.from(entry.name, "hex"));
    }
    return names.sort(Buffer.compare);
  }

  async listPartitions(): Promise<string[]> {
    let entries: import("node:fs").Dirent[];
    try {
      entries = await readdir(this.root, { withFileTypes: true });
    } catch (err) {
      if (isErrno(err, "ENOENT")) return [];
      throw asIoError(err, "list partitions");
    }
    return entries
      .filter((e) => e.isDirectory() && isValidPartitionName(e.name))
      .map((e) => e.name)
      .sort();
  }
}

/** Largest write issued synchronously (see the module comment). */
const SYNC_WRITE_MAX_BYTES = 64 * 1024;

class FileRaw implements RawFile {
  constructor(
    private readonly handle: FileHandle,
    private size: number,
  ) {}

  length(): number {
    return this.size;
  }

  async read(position: number, length: number): Promise<Uint8Array> {
    // Unpooled: callers may keep views into the result for a long time.
    const out = Buffer.allocUnsafeSlow(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.handle.read(out, done, length - done, position + done);
      if (bytesRead === 0) throw new StoreError("Io", `i/o error: short read at ${position + done}`);
      done += bytesRead;
    }
    return out;
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    if (data.length <= SYNC_WRITE_MAX_BYTES) {
      this.writeInline(position, data);
      return;
    }
    let done = 0;
    while (done < data.length) {
      done += (await this.handle.write(data, done, data.length - done, position + done)).bytesWritten;
    }
    this.size = Math.max(this.size, position + data.length);
  }

  async writeAll(writes: readonly BlobWrite[]): Promise<void> {
    let failure: { error: unknown } | undefined;
    for (const [position, data] of writes) {
      try {
        if (data.length <= SYNC_WRITE_MAX_BYTES) this.writeInline(position, data);
        else await this.write(position, data);
      } catch (error) {
        failure ??= { error };
      }
    }
    if (failure !== undefined) throw failure.error;
  }

  /** Writes `data` (at most SYNC_WRITE_MAX_BYTES) into the page cache before returning. */
  private writeInline(position: number, data: Uint8Array): void {
    let done = 0;
    while (done < data.length) {
      done += writeSync(this.handle.fd, data, done, data.length - done, position + done);
    }
    this.size = Math.max(this.size, position + data.length);
  }

  async truncate(length: number): Promise<void> {
    await this.handle.truncate(length);
    this.size = length;
  }

  async sync(): Promise<void> {
    await this.handle.datasync();
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if (isErrno(err, "ENOENT")) return false;
    throw err;
  }
}

/**
 * Creates `path`, and its missing parents first (each tried once, so this ends under /proc).
 * Not `mkdir(..., { recursive })`: that answers ENOENT for EROFS (or loops) where a plain mkdir
 * names the real cause.
 */
async function makeDirectory(path: string): Promise<void> {
  try {
    await mkdir(path);
  } catch (err) {
    if (isErrno(err, "EEXIST")) return;
    if (!isErrno(err, "ENOENT") || dirname(path) === path) throw err;
    await makeDirectory(dirname(path));
    try {
      await mkdir(path);
    } catch (again) {
      if (!isErrno(again, "EEXIST")) throw again;
    }
  }
}

async function syncDirectory(path: string): Promise<void> {
  const handle = await open(path, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function isErrno(err: unknown, code: string): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === code;
}
