/**
 * MeteredStorage: wraps any Storage and counts blob I/O per partition, in prom-client counters
 * (`metadata_storage_*`, see ../metrics.ts) and in plain totals for tests.
 *
 * Counted: bytes and calls of `Blob.write` (what the caller passed, headers never), `Blob.sync`
 * calls, bytes of `Blob.read`. Not counted: resizes, the header a storage writes at open.
 * Counts are taken when an operation succeeds; an operation that throws (open, read, write,
 * resize, sync) counts one `metadata_storage_errors_total` instead and rethrows.
 */
import type { Registry } from "prom-client";
import { createStorageMetrics, type StorageMetrics } from "../metrics.js";
import {
  type Blob,
  type BlobWrite,
  type OpenedBlob,
  type OpenOptions,
  type Storage,
  StorageWrapper,
} from "./storage.js";

/** Plain totals of a MeteredStorage, over all partitions. */
export interface MeteredTotals {
  writeBytes: number;
  writes: number;
  syncs: number;
  readBytes: number;
}

/** Storage wrapper counting I/O; see the module comment. */
export class MeteredStorage extends StorageWrapper {
  /** Totals since creation, over all partitions. */
  readonly totals: MeteredTotals = { writeBytes: 0, writes: 0, syncs: 0, readBytes: 0 };
  private readonly metrics = new Map<string, StorageMetrics>();

  constructor(
    inner: Storage,
    private readonly registry?: Registry,
  ) {
    super(inner);
  }

  async open(partition: string, name: Uint8Array, options?: OpenOptions): Promise<OpenedBlob> {
    const metrics = this.metricsFor(partition);
    const opened = await failures(metrics, this.inner.open(partition, name, options));
    return { ...opened, blob: new MeteredBlob(opened.blob, this.totals, metrics) };
  }

  private metricsFor(partition: string): StorageMetrics | undefined {
    if (this.registry === undefined) return undefined;
    let metrics = this.metrics.get(partition);
    if (metrics === undefined) {
      metrics = createStorageMetrics(this.registry, partition);
      this.metrics.set(partition, metrics);
    }
    return metrics;
  }
}

/** Resolves as `operation` does; counts one storage error when it rejects. */
async function failures<T>(metrics: StorageMetrics | undefined, operation: Promise<T>): Promise<T> {
  try {
    return await operation;
  } catch (err) {
    metrics?.errors.inc();
    throw err;
  }
}

class MeteredBlob implements Blob {
  constructor(
    private readonly inner: Blob,
    private readonly totals: MeteredTotals,
    private readonly metrics: StorageMetrics | undefined,
  ) {}

  async read(offset: number, length: number): Promise<Uint8Array> {
    const bytes = await failures(this.metrics, this.inner.read(offset, length));
    this.totals.readBytes += length;
    this.metrics?.readBytes.inc(length);
    return bytes;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    await failures(this.metrics, this.inner.write(offset, data));
    this.count(1, data.length);
  }

  /** Counts each write of the batch as one call, once all are done (none when one failed). */
  async writeAll(writes: readonly BlobWrite[]): Promise<void> {
    await failures(this.metrics, this.inner.writeAll(writes));
    let bytes = 0;
    for (const [, data] of writes) bytes += data.length;
    this.count(writes.length, bytes);
  }

  private count(writes: number, bytes: number): void {
    this.totals.writes += writes;
    this.totals.writeBytes += bytes;
    this.metrics?.writes.inc(writes);
    this.metrics?.writeBytes.inc(bytes);
  }

  resize(length: number): Promise<void> {
    return failures(this.metrics, this.inner.resize(length));
  }

  async sync(): Promise<void> {
    await failures(this.metrics, this.inner.sync());
    this.totals.syncs++;
    this.metrics?.syncs.inc();
  }

  length(): number {
    return this.inner.length();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
