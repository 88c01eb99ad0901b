/**
 * HeaderedBlob: the logical view of a blob file whose first 8 bytes are the runtime header.
 *
 * Backends implement `RawFile` (physical offsets, whole file) and hand it to `openHeadered`,
 * which applies the header rules once for every backend:
 * - physical length 0..7: set the length to 8, write a fresh header, sync; logical length 0;
 * - physical length >= 8: check magic and versions (typed errors, nothing modified).
 *
 * Invariants:
 * - Logical offset o is physical offset o + 8; the header is never written after creation.
 * - Reads past the logical end throw `StoreError("Io")`.
 */
import { asIoError, StoreError } from "../errors.js";
import {
  type Blob,
  type BlobWrite,
  checkHeader,
  freshHeader,
  HEADER_BYTES,
  type OpenedBlob,
} from "./storage.js";

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

/** Applies the header rules to `file` and returns its logical view. */
export async function openHeadered(file: RawFile, where: string): Promise<OpenedBlob> {
  try {
    if (file.length() < HEADER_BYTES) {
      await file.truncate(HEADER_BYTES);
      await file.write(0, freshHeader());
      await file.sync();
    } else {
      checkHeader(await file.read(0, HEADER_BYTES), where);
    }
  } catch (err) {
    await file.close().catch(() => undefined);
    throw asIoError(err, `open ${where}`);
  }
  const blob = new HeaderedBlob(file, where);
  return { blob, length: blob.length() };
}

class HeaderedBlob implements Blob {
  constructor(
    private readonly file: RawFile,
    private readonly where: string,
  ) {}

  async read(offset: number, length: number): Promise<Uint8Array> {
    if (offset < 0 || length < 0 || offset + length > this.length()) {
      throw new StoreError(
        "Io",
        `i/o error: read ${this.where}: ${length} bytes at ${offset} past the end (${this.length()})`,
      );
    }
    try {
      return await this.file.read(offset + HEADER_BYTES, length);
    } catch (err) {
      throw asIoError(err, `read ${this.where}`);
    }
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    try {
      await this.file.write(offset + HEADER_BYTES, data);
    } catch (err) {
      throw asIoError(err, `write ${this.where}`);
    }
  }

  async writeAll(writes: readonly BlobWrite[]): Promise<void> {
    try {
      await this.file.writeAll(writes.map(([offset, data]) => [offset + HEADER_BYTES, data] as const));
    } catch (err) {
      throw asIoError(err, `write ${this.where}`);
    }
  }

  async resize(length: number): Promise<void> {
    try {
      await this.file.truncate(length + HEADER_BYTES);
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
    return Math.max(0, this.file.length() - HEADER_BYTES);
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}
