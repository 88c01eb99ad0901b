/**
 * Helpers shared by the store tests: U64 keys, metric reads, an auditing storage wrapper.
 */
import { createHash, type Hash } from "node:crypto";
import type { Registry } from "prom-client";
import type { Blob, OpenedBlob, Storage } from "../../server/store/storage/storage.js";

/** The 8-byte big-endian encoding of `n`, as commonware's U64 key. */
export function u64(n: number | bigint): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64BE(BigInt(n));
  return out;
}

/** UTF-8 bytes of `text`. */
export function utf8(text: string): Buffer {
  return Buffer.from(text, "utf8");
}

/**
 * Value of metric `name` with label partition=`partition` in `registry`; throws if absent, so a
 * missing metric fails the test rather than reading as 0.
 */
export async function metricValue(registry: Registry, name: string, partition = "test"): Promise<number> {
  const text = await registry.metrics();
  const line = `${name}{partition="${partition}"} `;
  for (const row of text.split("\n")) {
    if (row.startsWith(line)) return Number(row.slice(line.length));
  }
  throw new Error(`metric ${line.trim()} not found in:\n${text}`);
}

/** (sync_rewrites, sync_overwrites) of `partition`. */
export async function syncCounters(registry: Registry, partition = "test"): Promise<[number, number]> {
  return [
    await metricValue(registry, "metadata_sync_rewrites_total", partition),
    await metricValue(registry, "metadata_sync_overwrites_total", partition),
  ];
}

/**
 * Storage wrapper that hashes every blob operation (open, write with its bytes, resize, sync,
 * remove) in order: two runs that do the same I/O give the same `state()`.
 */
export class AuditedStorage implements Storage {
  private readonly hash: Hash = createHash("sha256");

  constructor(private readonly inner: Storage) {}

  state(): string {
    return this.hash.copy().digest("hex");
  }

  record(...parts: (string | number | Uint8Array)[]): void {
    for (const part of parts) {
      this.hash.update(typeof part === "number" ? String(part) : part);
      this.hash.update("|");
    }
    this.hash.update("\n");
  }

  async open(partition: string, name: Uint8Array): Promise<OpenedBlob> {
    const opened = await this.inner.open(partition, name);
    this.record("open", partition, name, opened.length);
    const label = `${partition}/${Buffer.from(name).toString("hex")}`;
    const inner = opened.blob;
    const blob: Blob = {
      read: (offset, length) => {
        this.record("read", label, offset, length);
        return inner.read(offset, length);
      },
      write: (offset, data) => {
        this.record("write", label, offset, data);
        return inner.write(offset, data);
      },
      resize: (length) => {
        this.record("resize", label, length);
        return inner.resize(length);
      },
      sync: () => {
        this.record("sync", label);
        return inner.sync();
      },
      length: () => inner.length(),
      close: () => inner.close(),
    };
    return { blob, length: opened.length };
  }

  remove(partition: string, name?: Uint8Array): Promise<void> {
    this.record("remove", partition, name ?? "");
    return this.inner.remove(partition, name);
  }

  scan(partition: string): Promise<Uint8Array[]> {
    return this.inner.scan(partition);
  }

  listPartitions(): Promise<string[]> {
    return this.inner.listPartitions();
  }
}
