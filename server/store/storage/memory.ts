/**
 * MemoryStorage: blobs in memory, with live bytes and durable bytes kept apart (for tests).
 *
 * Each file keeps the bytes a reader sees now ("live") and the bytes that survived its last
 * `sync` ("durable"), plus the writes and resizes made since. `crash()` models a process or
 * machine crash: every file goes back to its durable bytes, optionally keeping a random prefix of
 * the operations since (the last one possibly torn), as a disk may have written some of them.
 *
 * Invariants:
 * - Creating a file (open) and removing a file or partition are durable at once, as the
 *   filesystem backend makes them with directory fsyncs.
 * - Files hold physical bytes, header included, so test vectors compare whole files.
 * - A handle opened before a crash fails every later call: the process that held it is gone.
 */
import { StoreError } from "../errors.js";
import { DEFAULT_BLOB_LAYOUT } from "./blob-header.js";
import { openHeadered, type RawFile } from "./headered-blob.js";
import {
  blobFileName,
  describeBlob,
  type OpenedBlob,
  type OpenOptions,
  type Storage,
  validatePartitionName,
} from "./storage.js";

type Operation = { kind: "write"; position: number; data: Uint8Array } | { kind: "truncate"; length: number };

class MemoryFile {
  live = Buffer.alloc(0);
  liveLength = 0;
  durable: Uint8Array = new Uint8Array(0);
  pending: Operation[] = [];

  apply(op: Operation): void {
    if (op.kind === "write") {
      const end = op.position + op.data.length;
      this.ensureCapacity(end);
      if (op.position > this.liveLength) this.live.fill(0, this.liveLength, op.position);
      this.live.set(op.data, op.position);
      this.liveLength = Math.max(this.liveLength, end);
    } else {
      this.ensureCapacity(op.length);
      if (op.length > this.liveLength) this.live.fill(0, this.liveLength, op.length);
      this.liveLength = op.length;
    }
  }

  private ensureCapacity(length: number): void {
    if (length <= this.live.length) return;
    const grown = Buffer.alloc(Math.max(length, this.live.length * 2, 64));
    this.live.copy(grown, 0, 0, this.liveLength);
    this.live = grown;
  }

  bytes(): Uint8Array {
    return Uint8Array.prototype.slice.call(this.live, 0, this.liveLength);
  }

  reset(bytes: Uint8Array): void {
    this.live = Buffer.alloc(0);
    this.liveLength = 0;
    this.apply({ kind: "write", position: 0, data: bytes });
    this.pending = [];
  }
}

/** Options of `MemoryStorage.crash`. */
export interface CrashOptions {
  /**
   * Source of randomness in [0, 1). Given, each file keeps a random prefix of its unsynced
   * operations, the last kept write possibly torn to a prefix of its bytes. Absent, every
   * unsynced operation is lost.
   */
  random?: () => number;
}

/** In-memory storage for tests; see the module comment. */
export class MemoryStorage implements Storage {
  private readonly partitions = new Map<string, Map<string, MemoryFile>>();
  private epoch = 0;

  async open(partition: string, name: Uint8Array, options: OpenOptions = {}): Promise<OpenedBlob> {
    validatePartitionName(partition);
    let files = this.partitions.get(partition);
    if (files === undefined) {
      files = new Map();
      this.partitions.set(partition, files);
    }
    const fileName = blobFileName(name);
    let file = files.get(fileName);
    if (file === undefined) {
      file = new MemoryFile();
      files.set(fileName, file);
    }
    return openHeadered(this.handle(file), describeBlob(partition, name), {
      layout: options.layout ?? DEFAULT_BLOB_LAYOUT,
      ...(options.creationFile === undefined ? {} : { creationFile: options.creationFile }),
    });
  }

  async remove(partition: string, name?: Uint8Array): Promise<void> {
    validatePartitionName(partition);
    const files = this.partitions.get(partition);
    if (name === undefined) {
      if (files === undefined) throw new StoreError("PartitionMissing", `partition missing: ${partition}`);
      this.partitions.delete(partition);
      return;
    }
    if (files === undefined || !files.delete(blobFileName(name))) {
      throw new StoreError("BlobMissing", `blob missing: ${describeBlob(partition, name)}`);
    }
  }

  async scan(partition: string): Promise<Uint8Array[]> {
    validatePartitionName(partition);
    const files = this.partitions.get(partition);
    if (files === undefined) throw new StoreError("PartitionMissing", `partition missing: ${partition}`);
    return [...files.keys()].sort().map((hex) => Buffer.from(hex, "hex"));
  }

  async listPartitions(): Promise<string[]> {
    return [...this.partitions.keys()].sort();
  }

  /** Simulates a crash; see `CrashOptions`. Handles opened before it fail from now on. */
  crash(options: CrashOptions = {}): void {
    this.epoch++;
    for (const files of this.partitions.values()) {
      for (const file of files.values()) {
        const pending = file.pending;
        file.reset(file.durable);
        if (options.random === undefined || pending.length === 0) continue;
        const keep = Math.floor(options.random() * (pending.length + 1));
        for (let i = 0; i < keep; i++) {
          const op = pending[i] as Operation;
          if (i === keep - 1 && op.kind === "write" && options.random() < 0.5) {
            const torn = Math.floor(options.random() * op.data.length);
            file.apply({ kind: "write", position: op.position, data: op.data.subarray(0, torn) });
          } else {
            file.apply(op);
          }
        }
        // What the crash left on the medium is now the durable state.
        file.durable = file.bytes();
        file.pending = [];
      }
    }
  }

  /** @internal Whole physical bytes of a file (header included), or undefined if missing. */
  fileBytes(partition: string, name: Uint8Array): Uint8Array | undefined {
    return this.partitions.get(partition)?.get(blobFileName(name))?.bytes();
  }

  /** @internal Replaces a file's bytes, durably (as a test writing files before an open). */
  setFileBytes(partition: string, name: Uint8Array, bytes: Uint8Array): void {
    let files = this.partitions.get(partition);
    if (files === undefined) {
      files = new Map();
      this.partitions.set(partition, files);
    }
    const file = new MemoryFile();
    file.reset(bytes);
    file.durable = file.bytes();
    files.set(blobFileName(name), file);
  }

  private handle(file: MemoryFile): RawFile {
    const epoch = this.epoch;
    const alive = (): void => {
      if (epoch !== this.epoch)
        throw new StoreError("Io", "i/o error: storage crashed since this blob was opened");
    };
    return {
      length: () => file.liveLength,
      read: async (position, length) => {
        alive();
        if (position + length > file.liveLength) throw new StoreError("Io", "i/o error: read past the end");
        return Uint8Array.prototype.slice.call(file.live, position, position + length);
      },
      write: async (position, data) => {
        alive();
        const op: Operation = { kind: "write", position, data: Uint8Array.prototype.slice.call(data) };
        file.apply(op);
        file.pending.push(op);
      },
      writeAll: async (writes) => {
        alive();
        for (const [position, data] of writes) {
          const op: Operation = { kind: "write", position, data: Uint8Array.prototype.slice.call(data) };
          file.apply(op);
          file.pending.push(op);
        }
      },
      truncate: async (length) => {
        alive();
        const op: Operation = { kind: "truncate", length };
        file.apply(op);
        file.pending.push(op);
      },
      sync: async () => {
        alive();
        file.durable = file.bytes();
        file.pending = [];
      },
      close: async () => undefined,
    };
  }
}
