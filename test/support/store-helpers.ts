/**
 * Helpers shared by the store tests: U64 keys, metric reads, an auditing storage wrapper.
 */
import { createHash, type Hash } from "node:crypto";
import type { Registry } from "prom-client";
import {
  type Blob,
  type OpenedBlob,
  type OpenOptions,
  type Storage,
  writeEach,
} from "../../server/store/storage/storage.js";

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

/** One blob operation seen by AuditedStorage. */
export interface AuditEntry {
  op: "open" | "read" | "write" | "resize" | "sync" | "remove";
  blob: string;
  offset?: number;
  length?: number;
}

/**
 * Storage wrapper that hashes every blob operation (open, write with its bytes, resize, sync,
 * remove) in order, so two runs that do the same I/O give the same `state()`, and keeps a log of
 * them (`log`) for tests that check which writes a sync issued.
 */
export class AuditedStorage implements Storage {
  private readonly hash: Hash = createHash("sha256");
  readonly log: AuditEntry[] = [];

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

  async open(partition: string, name: Uint8Array, options?: OpenOptions): Promise<OpenedBlob> {
    const opened = await this.inner.open(partition, name, options);
    this.record("open", partition, name, opened.length);
    const label = `${partition}/${Buffer.from(name).toString()}`;
    this.log.push({ op: "open", blob: label, length: opened.length });
    const inner = opened.blob;
    const blob: Blob = {
      read: (offset, length) => {
        this.record("read", label, offset, length);
        this.log.push({ op: "read", blob: label, offset, length });
        return inner.read(offset, length);
      },
      write: (offset, data) => {
        this.record("write", label, offset, data);
        this.log.push({ op: "write", blob: label, offset, length: data.length });
        return inner.write(offset, data);
      },
      writeAll: (writes) => writeEach(blob, writes),
      resize: (length) => {
        this.record("resize", label, length);
        this.log.push({ op: "resize", blob: label, length });
        return inner.resize(length);
      },
      sync: () => {
        this.record("sync", label);
        this.log.push({ op: "sync", blob: label });
        return inner.sync();
      },
      length: () => inner.length(),
      close: () => inner.close(),
    };
    return { ...opened, blob };
  }

  remove(partition: string, name?: Uint8Array): Promise<void> {
    this.record("remove", partition, name ?? "");
    this.log.push({
      op: "remove",
      blob: `${partition}/${name === undefined ? "" : Buffer.from(name).toString()}`,
    });
    return this.inner.remove(partition, name);
  }

  scan(partition: string): Promise<Uint8Array[]> {
    return this.inner.scan(partition);
  }

  listPartitions(): Promise<string[]> {
    return this.inner.listPartitions();
  }
}
