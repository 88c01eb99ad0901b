/**
 * HeaderedBlob: the logical view of a blob file behind its header region (see blob-header.ts).
 *
 * Backends implement `RawFile` (physical offsets, whole file) and hand it to `openHeadered`,
 * which applies the header rules once for every backend:
 * - a header resolves: logical length = physical length - data offset of its layout;
 * - no header yet, or an interrupted creation: the blob is created in the requested layout:
 *   `beforeCreate` (a backend's directory syncs), cut to 0 bytes if it held any, write the whole
 *   header region, sync; logical length 0;
 * - anything else: a typed error, nothing modified.
 *
 * Creation never sizes the file before writing the header, so a crash or a full disk at any
 * step leaves a file that resolves as "create again" (blob-header.ts), never a broken blob.
 *
 * Invariants:
 * - Logical offset o is physical offset o + dataOffset; the header is never written after creation.
 * - Reads past the logical end throw `StoreError("Io")`.
 */
import { asIoError, StoreError } from "../errors.js";
import { type BlobLayout, dataOffset, headerRegion, resolveHeader, resolveLength } from "./blob-header.js";
import type { Blob, BlobWrite, OpenedBlob } from "./storage.js";

/** A blob file seen with physical offsets, as a backend provides it. */
export interface RawFile {
  /** Physical length in bytes. */
  length(): number;
  read(position: number, length: number): Promise<Uint8Array>;
  write(position: number, data: Uint8Array): Promise<void>;
  /** Every write, as `Blob.writeAll` (physical positions). */
  writeAll(writes: readonly BlobWrite[]): Promise<void>;
  truncate(length: number): Promise<void>;
  sync(): Promise<void>;
  close(): Promise<void>;
}

/** How `openHeadered` creates a blob that has no header yet. */
export interface CreateOptions {
  /** Layout of a created blob. */
  layout: BlobLayout;
  /** Runs before a header is written, e.g. to make the file's directory entry durable. */
  beforeCreate?: () => Promise<void>;
  /** @internal Wraps the file for the creation steps only (fault injection in tests). */
  creationFile?: (file: RawFile) => RawFile;
}

/** Applies the header rules to `file` and returns its logical view. */
export async function openHeadered(
  file: RawFile,
  where: string,
  options: CreateOptions,
): Promise<OpenedBlob> {
  let layout: BlobLayout;
  let created = false;
  try {
    const rawLength = file.length();
    const raw = await file.read(0, resolveLength(rawLength));
    const resolved = resolveHeader(raw, rawLength, where);
    if (resolved !== undefined) {
      layout = resolved.layout;
    } else {
      layout = options.layout;
      await options.beforeCreate?.();
      const creating = options.creationFile?.(file) ?? file;
      // Cut first, so that a torn header write cannot splice old bytes into a valid header.
      if (rawLength > 0) await creating.truncate(0);
      await creating.write(0, headerRegion(layout));
      await creating.sync();
      created = true;
    }
  } catch (err) {
    await file.close().catch(() => undefined);
    throw asIoError(err, `open ${where}`);
  }
  const blob = new HeaderedBlob(file, where, dataOffset(layout));
  return { blob, length: blob.length(), layout, created };
}

class HeaderedBlob implements Blob {
  constructor(
    private readonly file: RawFile,
    private readonly where: string,
    private readonly offset: number,
  ) {}

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < 0 || length < 0 || offset + length > this.length()) {
      throw new StoreError(
        "Io",
        `i/o error: read ${this.where}: ${length} bytes at ${offset} past the end (${this.length()})`,
      );
    }
    try {
      return await this.file.read(offset + this.offset, length);
    } catch (err) {
      throw asIoError(err, `read ${this.where}`);
    }
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    try {
      await this.file.write(offset + this.offset, data);
    } catch (err) {
      throw asIoError(err, `write ${this.where}`);
    }
  }

  async writeAll(writes: readonly BlobWrite[]): Promise<void> {
    try {
      await this.file.writeAll(writes.map(([offset, data]) => [offset + this.offset, data] as const));
    } catch (err) {
      throw asIoError(err, `write ${this.where}`);
    }
  }

  async resize(length: number): Promise<void> {
    try {
      await this.file.truncate(length + this.offset);
    } catch (err) {
      throw asIoError(err, `resize ${this.where}`);
    }
  }

  async sync(): Promise<void> {
    try {
      await this.file.sync();
    } catch (err) {
      throw asIoError(err, `sync ${this.where}`);
    }
  }

  length(): number {
    return Math.max(0, this.file.length() - this.offset);
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}
