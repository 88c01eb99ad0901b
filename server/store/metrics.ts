/**
 * Store metrics, registered in a prom-client Registry under the prefix `metadata_` with a
 * `partition` label, so any number of stores (and storages) share one registry.
 *
 *   metadata_sync_rewrites_total{partition}    successful full-rewrite syncs of this open instance
 *   metadata_sync_overwrites_total{partition}  successful delta (overwrite) syncs of this instance
 *   metadata_keys{partition}                   keys in the store, as of the last mutation
 *   metadata_storage_write_bytes_total{partition}  bytes passed to blob writes (header excluded)
 *   metadata_storage_writes_total{partition}   blob writes
 *   metadata_storage_syncs_total{partition}    blob fsyncs
 *   metadata_storage_read_bytes_total{partition}   bytes read from blobs
 *
 * Invariants:
 * - The sync counters and the keys gauge of a partition restart at 0 / the loaded key count
 *   each time a store instance opens it (as in the reference, counters are per instance).
 * - Storage counters are cumulative for the life of the registry.
 * - A metric family is registered once per registry, whoever asks first.
 */
import { Counter, Gauge, type Registry } from "prom-client";

const PREFIX = "metadata_";

/** Counter `name` of `registry` with a `partition` label, created on first use. */
export function partitionCounter(registry: Registry, name: string, help: string): Counter<"partition"> {
  const existing = registry.getSingleMetric(PREFIX + name);
  if (existing !== undefined) return existing as Counter<"partition">;
  return new Counter({ name: PREFIX + name, help, labelNames: ["partition"], registers: [registry] });
}

/** Gauge `name` of `registry` with a `partition` label, created on first use. */
export function partitionGauge(registry: Registry, name: string, help: string): Gauge<"partition"> {
  const existing = registry.getSingleMetric(PREFIX + name);
  if (existing !== undefined) return existing as Gauge<"partition">;
  return new Gauge({ name: PREFIX + name, help, labelNames: ["partition"], registers: [registry] });
}

/** The metrics of one open store instance. */
export interface StoreMetrics {
  syncRewrites: { inc(): void };
  syncOverwrites: { inc(): void };
  keys: { set(value: number): void };
}

/** Metrics for a store instance of `partition`, reset to zero. */
export function createStoreMetrics(registry: Registry | undefined, partition: string): StoreMetrics {
  if (registry === undefined) {
    const noop = { inc() {}, set() {} };
    return { syncRewrites: noop, syncOverwrites: noop, keys: noop };
  }
  const labels = { partition };
  const rewrites = partitionCounter(registry, "sync_rewrites_total", "Syncs that rewrote a whole blob.");
  const overwrites = partitionCounter(
    registry,
    "sync_overwrites_total",
    "Syncs that wrote only changed values, the version and the checksum.",
  );
  const keys = partitionGauge(registry, "keys", "Keys in the store.");
  for (const metric of [rewrites, overwrites]) {
    metric.remove(labels);
    metric.inc(labels, 0);
  }
  keys.remove(labels);
  keys.set(labels, 0);
  return {
    syncRewrites: rewrites.labels(labels),
    syncOverwrites: overwrites.labels(labels),
    keys: keys.labels(labels),
  };
}

/** Storage I/O counters of one partition. */
export interface StorageMetrics {
  writeBytes: { inc(value: number): void };
  writes: { inc(): void };
  syncs: { inc(): void };
  readBytes: { inc(value: number): void };
}

/** Storage I/O counters for `partition` in `registry` (cumulative). */
export function createStorageMetrics(registry: Registry, partition: string): StorageMetrics {
  const labels = { partition };
  const child = (name: string, help: string) => {
    const counter = partitionCounter(registry, name, help);
    counter.inc(labels, 0);
    return counter.labels(labels);
  };
  return {
    writeBytes: child("storage_write_bytes_total", "Bytes passed to blob writes (headers excluded)."),
    writes: child("storage_writes_total", "Blob writes."),
    syncs: child("storage_syncs_total", "Blob fsyncs."),
    readBytes: child("storage_read_bytes_total", "Bytes read from blobs."),
  };
}
