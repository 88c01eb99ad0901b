/**
 * Store metrics, registered in a prom-client Registry under the prefix `metadata_` with a
 * `partition` label, so any number of stores (and storages) share one registry.
 *
 *   metadata_sync_rewrites_total{partition}    successful full-rewrite syncs of this open instance
 *   metadata_sync_overwrites_total{partition}  successful delta (overwrite) syncs of this instance
 *   metadata_keys{partition}                   keys in the store (mutations not yet synced included)
 *   metadata_storage_write_bytes_total{partition}  bytes passed to blob writes (header excluded)
 *   metadata_storage_writes_total{partition}   blob writes
 *   metadata_storage_syncs_total{partition}    blob fsyncs
 *   metadata_storage_read_bytes_total{partition}   bytes read from blobs
 *   metadata_storage_errors_total{partition}   blob opens, reads, writes, resizes, fsyncs that failed
 *   metadata_blobs_discarded_total{partition,reason}  blobs recovery cut (reason: too_short,
 *                                              checksum_mismatch, failed_sync)
 *   metadata_partition_data_loss{partition}    1 while opening the partition fails with DataLoss
 *                                              (absent otherwise)
 *
 * Invariants:
 * - The sync counters of a partition restart at 0 each time a store instance opens it (as in the
 *   reference, counters are per instance).
 * - The keys gauge is read from the open store when the registry is scraped, so mutations pay
 *   nothing for it; it always shows the key count of the instance opened last.
 * - Storage counters are cumulative for the life of the registry.
 * - A metric family is registered once per registry, whoever asks first.
 */
import { Counter, Gauge, type Metric, type Registry } from "prom-client";

const PREFIX = "metadata_";

/** Counter `name` of `registry` with a `partition` label, created on first use. */
function partitionCounter(registry: Registry, name: string, help: string): Counter<"partition"> {
  const existing = registry.getSingleMetric(PREFIX + name);
  if (existing !== undefined) return existing as Counter<"partition">;
  return new Counter({ name: PREFIX + name, help, labelNames: ["partition"], registers: [registry] });
}

/** The metrics of one open store instance. */
export interface StoreMetrics {
  syncRewrites: { inc(): void };
  syncOverwrites: { inc(): void };
}

/** Key counts read at scrape time, per keys gauge (one gauge per registry). */
const keyCounts = new WeakMap<Gauge<"partition">, Map<string, () => number>>();

function keysGauge(registry: Registry): Gauge<"partition"> {
  const name = `${PREFIX}keys`;
  const existing = registry.getSingleMetric(name);
  if (existing !== undefined) return existing as Gauge<"partition">;
  const gauge: Gauge<"partition"> = new Gauge({
    name,
    help: "Keys in the store.",
    labelNames: ["partition"],
    registers: [registry],
    collect() {
      for (const [partition, count] of keyCounts.get(gauge) ?? []) gauge.set({ partition }, count());
    },
  });
  keyCounts.set(gauge, new Map());
  return gauge;
}

/**
 * Metrics for a store instance of `partition`, its counters reset to zero; `keyCount` is read
 * when the registry is scraped.
 */
export function createStoreMetrics(
  registry: Registry | undefined,
  partition: string,
  keyCount: () => number,
): StoreMetrics {
  if (registry === undefined) {
    const noop = { inc() {} };
    return { syncRewrites: noop, syncOverwrites: noop };
  }
  const labels = { partition };
  const rewrites = partitionCounter(registry, "sync_rewrites_total", "Syncs that rewrote a whole blob.");
  const overwrites = partitionCounter(
    registry,
    "sync_overwrites_total",
    "Syncs that wrote only changed values, the version and the checksum.",
  );
  for (const metric of [rewrites, overwrites]) {
    metric.remove(labels);
    metric.inc(labels, 0);
  }
  const keys = keysGauge(registry);
  keyCounts.get(keys)?.set(partition, keyCount);
  return { syncRewrites: rewrites.labels(labels), syncOverwrites: overwrites.labels(labels) };
}

/** Storage I/O counters of one partition. */
export interface StorageMetrics {
  writeBytes: { inc(value: number): void };
  writes: { inc(value: number): void };
  syncs: { inc(): void };
  readBytes: { inc(value: number): void };
  errors: { inc(): void };
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
    errors: child(
      "storage_errors_total",
      "Blob opens, reads, writes, resizes and fsyncs that failed (disk errors).",
    ),
  };
}

/**
 * Removes every series of `partition` from the metrics of `registry` that have a `partition`
 * label (its store, storage, group commit and watch series), so that a closed partition leaves nothing
 * behind in a scrape. Counters of a partition opened again start from 0 (a counter reset, which
 * Prometheus' rate() handles).
 */
export async function removePartitionMetrics(registry: Registry, partition: string): Promise<void> {
  const gauge = registry.getSingleMetric(`${PREFIX}keys`);
  if (gauge !== undefined) keyCounts.get(gauge as Gauge<"partition">)?.delete(partition);
  for (const metric of registry.getMetricsAsArray() as unknown as Metric<string>[]) {
    const { values } = await metric.get();
    const seen = new Set<string>();
    for (const { labels } of values) {
      if (labels.partition !== partition) continue;
      // A histogram's series differ by `le` only; remove() takes the metric's own labels.
      const { le: _bucket, ...own } = labels;
      const key = JSON.stringify(own);
      if (seen.has(key)) continue;
      seen.add(key);
      metric.remove(own as Record<string, string | number>);
    }
  }
}

/** Recovery metrics of one partition: what `openMetadata` discarded and whether data was lost. */
export interface RecoveryMetrics {
  /** Counts one blob cut by recovery. */
  discarded(reason: string): void;
  /** Reports whether opening the partition failed with DataLoss (absent from the scrape when not). */
  dataLoss(lost: boolean): void;
}

/** Recovery metrics for `partition` in `registry`, or undefined without a registry. */
export function createRecoveryMetrics(
  registry: Registry | undefined,
  partition: string,
): RecoveryMetrics | undefined {
  if (registry === undefined) return undefined;
  const discardedName = `${PREFIX}blobs_discarded_total`;
  const discarded =
    (registry.getSingleMetric(discardedName) as Counter<"partition" | "reason"> | undefined) ??
    new Counter({
      name: discardedName,
      help: "Blobs cut by recovery at open, by reason (too_short, checksum_mismatch, failed_sync).",
      labelNames: ["partition", "reason"],
      registers: [registry],
    });
  const lossName = `${PREFIX}partition_data_loss`;
  const loss =
    (registry.getSingleMetric(lossName) as Gauge<"partition"> | undefined) ??
    new Gauge({
      name: lossName,
      help: "1 while the partition is not served because both blobs are damaged (DataLoss).",
      labelNames: ["partition"],
      registers: [registry],
    });
  return {
    discarded: (reason) => discarded.inc({ partition, reason }),
    dataLoss: (lost) => {
      if (lost) loss.set({ partition }, 1);
      else loss.remove({ partition });
    },
  };
}
