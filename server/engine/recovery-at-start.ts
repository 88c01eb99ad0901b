/**
 * Recovery at start: opens every partition that exists once, in the background, right after the
 * server starts serving, so that damage is found and reported then (the DataLoss warning,
 * `metadata_partition_data_loss`, /healthz, the blobs cut and kept in the quarantine) rather than
 * on each partition's first call, which may come days later.
 *
 * Invariants:
 * - A partition is opened through `Partitions.recover`: the same single open and the same
 *   recovery its first call would run, nothing more. Calls are served meanwhile; a call on a
 *   partition being opened waits for that open, as it would for any open.
 * - One partition at a time, in name order, so the check adds at most one open partition beyond
 *   `--max-open-partitions` at any moment (what it opens is the first retired beyond the limit).
 * - A partition that fails to open is reported (a warning naming it and why) and counted, and the
 *   check goes on with the next one: DataLoss stays refused until an operator accepts it, any
 *   other failure is tried again by the partition's next call, as before.
 * - Shutdown stops the check between partitions; it never delays shutdown beyond the open in
 *   progress, which shutdown waits for anyway.
 * - `metadata_recovery_at_start_remaining` counts the partitions not yet checked (0 once done),
 *   `metadata_recovery_at_start_partitions_total{result}` what the checks found.
 */
import { Counter, Gauge, type Registry } from "prom-client";
import { isStoreError } from "../store/errors.js";
import { isEngineError } from "./errors.js";
import type { Partitions } from "./partitions.js";

/** What one partition's check found (the `result` label). */
export type RecoveryResult = "opened" | "open" | "absent" | "data_loss" | "failed";

/** What `recoverAtStart` did. */
export interface RecoverySummary {
  /** Partitions found at the start of the check. */
  checked: number;
  /** Partitions this check opened (their recovery ran now). */
  opened: number;
  /** Partitions that lost both blobs: not served until the loss is accepted. */
  dataLoss: string[];
  /** Partitions whose open failed otherwise, each with why; their next call tries again. */
  failed: { partition: string; reason: string }[];
  /** True when shutdown stopped the check before its end. */
  stopped: boolean;
  /** Time the check took, in milliseconds. */
  durationMs: number;
}

/** Options of `recoverAtStart`. */
export interface RecoveryOptions {
  registry?: Registry;
  /** Told the summary line at the end, and one warning per partition that failed to open. */
  log?: (message: string) => void;
  warn?: (message: string) => void;
}

/** Opens every existing partition once; see the module comment. Never rejects. */
export async function recoverAtStart(
  partitions: Partitions,
  options: RecoveryOptions = {},
): Promise<RecoverySummary> {
  const started = performance.now();
  const metrics = createRecoveryMetrics(options.registry);
  const warn = options.warn ?? ((message: string) => console.warn(`warning: ${message}`));
  const summary: RecoverySummary = {
    checked: 0,
    opened: 0,
    dataLoss: [],
    failed: [],
    stopped: false,
    durationMs: 0,
  };
  let names: string[];
  try {
    names = await partitions.list();
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    warn(
      `recovery at start: cannot list the partitions (${reason}); each partition recovers on its first call`,
    );
    metrics?.remaining.set(0);
    summary.durationMs = performance.now() - started;
    return summary;
  }
  summary.checked = names.length;
  metrics?.remaining.set(names.length);
  for (const name of names) {
    let result: RecoveryResult;
    try {
      result = await partitions.recover(name);
      if (result === "opened") summary.opened++;
    } catch (err) {
      if (isEngineError(err, "ShuttingDown") || partitions.closing) {
        summary.stopped = true;
        break;
      }
      if (isStoreError(err, "DataLoss")) {
        // openMetadata has logged the loss itself, with what to do.
        result = "data_loss";
        summary.dataLoss.push(name);
      } else {
        result = "failed";
        const reason = err instanceof Error ? err.message : String(err);
        summary.failed.push({ partition: name, reason });
        warn(`recovery at start: partition ${name} did not open (${reason}); its next call tries again`);
      }
    }
    metrics?.results.inc({ result });
    metrics?.remaining.dec();
  }
  if (summary.stopped) metrics?.remaining.set(0);
  summary.durationMs = performance.now() - started;
  (options.log ?? console.log)(describeSummary(summary));
  return summary;
}

/** The summary as one log line. */
export function describeSummary(summary: RecoverySummary): string {
  const parts = [`${summary.opened} opened`];
  if (summary.dataLoss.length > 0) {
    parts.push(`${summary.dataLoss.length} with data loss (${summary.dataLoss.join(", ")})`);
  }
  if (summary.failed.length > 0) {
    parts.push(
      `${summary.failed.length} failed to open (${summary.failed.map((f) => f.partition).join(", ")})`,
    );
  }
  const ending = summary.stopped ? ", stopped by shutdown" : "";
  return `recovery at start: ${summary.checked} partition(s) checked in ${Math.round(summary.durationMs)} ms: ${parts.join(", ")}${ending}`;
}

function createRecoveryMetrics(registry: Registry | undefined) {
  if (registry === undefined) return undefined;
  return {
    remaining: new Gauge({
      name: "metadata_recovery_at_start_remaining",
      help: "Partitions the recovery at start has yet to open (0 once it is done).",
      registers: [registry],
    }),
    results: new Counter({
      name: "metadata_recovery_at_start_partitions_total",
      help: "Partitions checked by the recovery at start, by result: opened, open (already), absent, data_loss, failed.",
      labelNames: ["result"] as const,
      registers: [registry],
    }),
  };
}
