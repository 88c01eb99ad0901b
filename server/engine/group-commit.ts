/**
 * GroupCommit: one partition's store, fed by many concurrent writers, committed by few syncs.
 *
 * Operations arrive with `submit` and wait in a FIFO queue. They are applied to the store's
 * in-memory map in arrival order, as many at a time as the current batch has room for
 * (`batchMaxMutations`, `batchMaxBytes`). A sync commits everything applied before it started;
 * at most one sync runs at a time, and the operations applied while it runs form the next batch,
 * committed by the next single sync.
 *
 * Invariants:
 * - A durable operation is answered only after the fsync of a sync that started after the
 *   operation was applied; its answer carries that sync's version.
 * - A buffered operation is answered once applied; a sync follows within `flushIntervalMs`.
 * - Readers use `committed()`, the state of the last completed sync: nothing shows before it
 *   is durable, and nothing of a failed sync ever shows.
 * - If a sync fails, every operation applied since the last completed sync is failed
 *   (`NotCommitted`) and the partition reopens from its last durable state on disk.
 *   Operations still queued (not applied) go on against the reopened store.
 * - "Not committed" is answered only when true for good: if the store could not cut the failed
 *   sync's target blob (its cleanup failed, `unsafeVersionsFrom`), that sync's bytes may still be
 *   on disk and would surface after a crash, so its waiters are answered only after the reopen
 *   that discards them durably: `NotCommitted` once it succeeded, `OutcomeUnknown` if it failed.
 * - An operation whose `apply` throws (bad input, failed precondition) changes nothing and is
 *   answered with that error at once.
 * - `changes` (change-feed.ts) records the changes of each completed sync, before its waiters
 *   are answered, and nothing of a failed one; a reopen only rebases it. Closing ends its
 *   watchers.
 */
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { StoreError } from "../store/errors.js";
import type { Metadata, Snapshot } from "../store/metadata.js";
import { ChangeFeed, type ChangeFeedOptions } from "./change-feed.js";
import { EngineError } from "./errors.js";

/** Tunables of group commit (defaults and units: server/config.ts). */
export interface GroupCommitOptions {
  /** Most mutations applied into one batch (one sync); an operation is never split. */
  batchMaxMutations: number;
  /** Most value and key bytes applied into one batch. */
  batchMaxBytes: number;
  /** Wait this long for more writers before starting a sync when none is running (0: none). */
  batchMaxDelayMs: number;
  /** A buffered mutation is committed no later than this after it was applied. */
  flushIntervalMs: number;
  /**
   * Most operations waiting for an answer (queued, or applied and waiting for their sync); more
   * are refused with `LimitExceeded`.
   */
  maxQueuedOperations: number;
}

/** One operation: a change to apply to the store, and how to answer it. */
export interface Operation<T> {
  /** Applies the change to the live store; throws (changing nothing) to refuse it. */
  apply(store: Metadata): T;
  /** Mutations it counts for in a batch (0 for a bare sync request). */
  mutations: number;
  /** Key and value bytes it counts for in a batch. */
  bytes: number;
  /** Answer after the sync that holds it (true) or once applied (false). */
  durable: boolean;
}

/** The answer to an operation. */
export interface Outcome<T> {
  result: T;
  /** Synced version that holds the operation (0 for buffered). */
  version: bigint;
}

/** Metrics of group commit, shared by every partition of a server. */
export interface GroupCommitMetrics {
  syncDurationSeconds: Histogram<"partition">;
  mutationsPerSync: Histogram<"partition">;
  syncFailures: Counter<"partition">;
  reopens: Counter<"partition" | "result">;
  available: Gauge<"partition">;
  /** Group commits whose waiting operations the `metadata_operations_waiting` gauge reports. */
  groups: Set<GroupCommit>;
}

/** The group commits of each registry, read by its `metadata_operations_waiting` gauge. */
const groupsByRegistry = new WeakMap<Registry, Set<GroupCommit>>();

function groupsOf(registry: Registry): Set<GroupCommit> {
  let groups = groupsByRegistry.get(registry);
  if (groups === undefined) {
    groups = new Set();
    groupsByRegistry.set(registry, groups);
  }
  return groups;
}

/** Registers (once per registry) and returns the group commit metrics. */
export function createGroupCommitMetrics(registry: Registry): GroupCommitMetrics {
  const histogram = (name: string, help: string, buckets: number[]) =>
    (registry.getSingleMetric(name) as Histogram<"partition"> | undefined) ??
    new Histogram({ name, help, labelNames: ["partition"], buckets, registers: [registry] });
  const counter = <L extends string>(name: string, help: string, labelNames: L[]) =>
    (registry.getSingleMetric(name) as Counter<L> | undefined) ??
    new Counter({ name, help, labelNames, registers: [registry] });
  const groups = groupsOf(registry);
  const waiting = "metadata_operations_waiting";
  if (registry.getSingleMetric(waiting) === undefined) {
    new Gauge({
      name: waiting,
      help: "Operations submitted and not yet answered: queued, or applied and waiting for their sync.",
      labelNames: ["partition"],
      registers: [registry],
      collect() {
        this.reset();
        for (const group of groups) this.set({ partition: group.partition }, group.waiting);
      },
    });
  }
  return {
    groups,
    syncFailures: counter("metadata_sync_failures_total", "Syncs that failed (nothing of them committed).", [
      "partition",
    ]),
    reopens: counter(
      "metadata_partition_reopens_total",
      "Reopens of a partition from disk after a failed sync, by result (ok, failed).",
      ["partition", "result"],
    ),
    available:
      (registry.getSingleMetric("metadata_partition_available") as Gauge<"partition"> | undefined) ??
      new Gauge({
        name: "metadata_partition_available",
        help: "1 while the partition takes writes, 0 from a failed sync until its reopen succeeds.",
        labelNames: ["partition"],
        registers: [registry],
      }),
    syncDurationSeconds: histogram(
      "metadata_sync_duration_seconds",
      "Duration of a partition sync, from its start to its fsync.",
      [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    ),
    mutationsPerSync: histogram(
      "metadata_group_commit_mutations",
      "Mutations committed by one sync.",
      [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384],
    ),
  };
}

interface Queued {
  op: Operation<unknown>;
  resolve(outcome: Outcome<unknown>): void;
  reject(err: unknown): void;
}

interface Waiter {
  result: unknown;
  resolve(outcome: Outcome<unknown>): void;
  reject(err: unknown): void;
}

function shuttingDown(): EngineError {
  return new EngineError("ShuttingDown", "server is shutting down: the write was not committed");
}

/** The error that ends the watchers of a partition being closed. */
export function watchEnded(): EngineError {
  return new EngineError(
    "ShuttingDown",
    "server is shutting down: the watch ended (resume from the last version received + 1)",
  );
}

/** Least time between two attempts to reopen a partition whose reopen failed. */
const REOPEN_RETRY_MS = 1000;

/** Reopens the partition's store from disk; `discardVersionsFrom` as in MetadataConfig. */
export type Reopen = (discardVersionsFrom: bigint | undefined) => Promise<Metadata>;

/** See the module comment. */
export class GroupCommit {
  private store: Metadata;
  private readonly queue: Queued[] = [];
  /** Durable operations applied since the last sync started. */
  private batch: Waiter[] = [];
  private batchMutations = 0;
  private batchBytes = 0;
  /** Something was applied since the last sync started. */
  private dirty = false;
  /** Waiters of the sync in flight, and that sync. */
  private inFlight: { waiters: Waiter[]; done: Promise<void> } | undefined;
  private flushTimer: NodeJS.Timeout | undefined;
  private gatherTimer: NodeJS.Timeout | undefined;
  /** The reopen in progress; resolves with its failure, undefined when it succeeded. */
  private reopening: Promise<{ failure: unknown } | undefined> | undefined;
  private lastReopenAt = 0;
  private failure: EngineError | undefined;
  private closing = false;
  /** Operations submitted and not yet answered: queued, or applied and waiting for a sync. */
  private unanswered = 0;
  /** Shutdown has begun: no gathering delay, buffered changes are committed at once. */
  private expedited = false;
  /** The committed changes of this partition, sync by sync, for watchers. */
  readonly changes: ChangeFeed;

  constructor(
    store: Metadata,
    private readonly reopen: Reopen,
    private readonly options: GroupCommitOptions,
    private readonly metrics?: GroupCommitMetrics,
    history?: ChangeFeedOptions,
  ) {
    this.store = store;
    this.changes = new ChangeFeed(store.partition, store.committed(), history);
    metrics?.groups.add(this);
    metrics?.available.set({ partition: store.partition }, 1);
  }

  /** Operations submitted and not yet answered. */
  get waiting(): number {
    return this.unanswered;
  }

  /** True when nothing is queued, applied and uncommitted, syncing or reopening, nor watched. */
  get idle(): boolean {
    return (
      this.unanswered === 0 &&
      this.changes.watcherCount === 0 &&
      !this.dirty &&
      this.inFlight === undefined &&
      this.reopening === undefined &&
      this.failure === undefined &&
      !this.closing
    );
  }

  /** True once the group was retired or closed: it takes no more operations. */
  get retired(): boolean {
    return this.closing;
  }

  /** Closes an idle group to free its resources (see Partitions); like `close`. */
  retire(): Promise<void> {
    return this.close();
  }

  /** The partition name. */
  get partition(): string {
    return this.store.partition;
  }

  /** The state of the last completed sync. */
  committed(): Snapshot {
    return this.store.committed();
  }

  /** The live store (mutations applied but not yet committed included). @internal */
  live(): Metadata {
    return this.store;
  }

  /**
   * Queues `op`; resolves when it is answered (see the module comment).
   * @throws EngineError LimitExceeded (queue full), ShuttingDown, NotCommitted, or what `apply`
   *   throws
   */
  submit<T>(op: Operation<T>): Promise<Outcome<T>> {
    if (this.closing) return Promise.reject(shuttingDown());
    if (this.unanswered >= this.options.maxQueuedOperations) {
      return Promise.reject(
        new EngineError(
          "LimitExceeded",
          `too many queued operations for partition ${this.partition}: ${this.options.maxQueuedOperations}`,
        ),
      );
    }
    this.unanswered++;
    return new Promise<Outcome<T>>((resolve, reject) => {
      this.queue.push({
        op,
        resolve: (outcome) => {
          this.unanswered--;
          resolve(outcome as Outcome<T>);
        },
        reject: (err) => {
          this.unanswered--;
          reject(err);
        },
      });
      this.pump();
    });
  }

  /**
   * Commits without waiting from now on: no gathering delay, and buffered changes right away.
   * Used when shutdown begins, so in-flight calls are answered before the grace period ends.
   */
  expedite(): void {
    this.expedited = true;
    if (this.inFlight === undefined && this.dirty) this.startSync();
  }

  /**
   * Stops taking operations, commits everything queued or applied, and closes the store.
   * Resolves when the store is closed.
   */
  async close(): Promise<void> {
    this.closing = true;
    for (;;) {
      if (this.failure === undefined) this.pump();
      if (this.dirty) this.startSync();
      const pending = this.inFlight?.done ?? this.reopening;
      if (pending !== undefined) {
        await pending;
        continue;
      }
      if (this.failure !== undefined || (this.queue.length === 0 && !this.dirty)) break;
      await new Promise((resolve) => setImmediate(resolve));
    }
    clearTimeout(this.flushTimer);
    clearTimeout(this.gatherTimer);
    for (const queued of this.queue.splice(0)) queued.reject(shuttingDown());
    this.metrics?.groups.delete(this);
    this.changes.close(watchEnded());
    await this.store.close();
  }

  /** Applies queued operations while the batch has room, then arranges the next sync. */
  private pump(): void {
    if (this.reopening !== undefined) return;
    if (this.failure !== undefined) {
      if (!this.closing && Date.now() - this.lastReopenAt >= REOPEN_RETRY_MS) {
        void this.tryReopen();
      } else {
        for (const queued of this.queue.splice(0)) queued.reject(this.failure);
      }
      return;
    }
    this.applyQueued();
    if (this.inFlight !== undefined) return;
    if (this.batch.length > 0 || ((this.closing || this.expedited) && this.dirty)) {
      this.scheduleSync();
      // Operations left queued by a full batch form the next batch while this sync runs.
      if (this.inFlight !== undefined) this.applyQueued();
    } else if (this.dirty && this.flushTimer === undefined) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = undefined;
        if (this.inFlight === undefined && this.dirty) this.startSync();
      }, this.options.flushIntervalMs);
    }
  }

  /** Applies queued operations, in order, while the current batch has room. */
  private applyQueued(): void {
    while (this.queue.length > 0) {
      const next = this.queue[0] as Queued;
      const full =
        this.batchMutations > 0 &&
        (this.batchMutations + next.op.mutations > this.options.batchMaxMutations ||
          this.batchBytes + next.op.bytes > this.options.batchMaxBytes);
      if (full) return;
      this.queue.shift();
      let result: unknown;
      try {
        result = next.op.apply(this.store);
      } catch (err) {
        next.reject(err);
        continue;
      }
      if (next.op.mutations === 0 && next.op.durable && !this.dirty) {
        // Nothing new to commit (a bare sync request, or a batch of preconditions only): the
        // answer is the sync in flight, or the last completed one.
        const waiter = { result, resolve: next.resolve, reject: next.reject };
        if (this.inFlight !== undefined) {
          this.inFlight.waiters.push(waiter);
        } else {
          next.resolve({ result, version: this.store.committed().version });
        }
        continue;
      }
      this.dirty = true;
      this.batchMutations += next.op.mutations;
      this.batchBytes += next.op.bytes;
      if (next.op.durable) {
        this.batch.push({ result, resolve: next.resolve, reject: next.reject });
      } else {
        next.resolve({ result, version: 0n });
      }
    }
  }

  private scheduleSync(): void {
    if (this.options.batchMaxDelayMs <= 0 || this.closing || this.expedited) {
      this.startSync();
      return;
    }
    if (this.gatherTimer !== undefined) return;
    this.gatherTimer = setTimeout(() => {
      this.gatherTimer = undefined;
      if (this.inFlight === undefined) this.startSync();
    }, this.options.batchMaxDelayMs);
  }

  private startSync(): void {
    if (this.inFlight !== undefined || this.reopening !== undefined || this.failure !== undefined) return;
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    clearTimeout(this.gatherTimer);
    this.gatherTimer = undefined;
    const waiters = this.batch;
    const mutations = this.batchMutations;
    this.batch = [];
    this.batchMutations = 0;
    this.batchBytes = 0;
    this.dirty = false;
    const store = this.store;
    const started = process.hrtime.bigint();
    const labels = { partition: store.partition };
    const inFlight = {
      waiters,
      done: store.sync().then(
        (version) => {
          this.metrics?.syncDurationSeconds.observe(labels, Number(process.hrtime.bigint() - started) / 1e9);
          this.metrics?.mutationsPerSync.observe(labels, mutations);
          this.inFlight = undefined;
          // Durable now: watchers learn of it no later than the writers do.
          this.changes.record(store.committed());
          for (const waiter of inFlight.waiters) waiter.resolve({ result: waiter.result, version });
          this.pump();
        },
        (err: unknown) => {
          this.inFlight = undefined;
          this.handleSyncFailure(store, inFlight.waiters, err);
        },
      ),
    };
    this.inFlight = inFlight;
  }

  /** Fails everything applied since the last completed sync and reopens from disk. */
  private handleSyncFailure(store: Metadata, waiters: Waiter[], err: unknown): void {
    // The store's own SyncFailed message names the version and the cause, and says "not committed".
    const failed = new EngineError(
      "NotCommitted",
      err instanceof StoreError && err.kind === "SyncFailed"
        ? err.message
        : `sync of partition ${store.partition} failed: the write was not committed`,
      { cause: err },
    );
    const later = new EngineError(
      "NotCommitted",
      `not committed: a sync of partition ${store.partition} failed before this write could be committed`,
      { cause: err },
    );
    for (const waiter of this.batch) waiter.reject(later);
    this.batch = [];
    this.batchMutations = 0;
    this.batchBytes = 0;
    this.dirty = false;
    clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    this.failure = failed;
    this.metrics?.syncFailures.inc({ partition: store.partition });
    this.metrics?.available.set({ partition: store.partition }, 0);
    const unsafeFrom = store.unsafeVersionsFrom;
    const reopened = this.tryReopen();
    if (unsafeFrom === undefined) {
      for (const waiter of waiters) waiter.reject(failed);
      return;
    }
    // The failed sync's bytes may still be on disk: answer once the reopen has cut them, or not.
    void reopened.then((reopenFailed) => {
      const answer =
        reopenFailed === undefined
          ? failed
          : new EngineError(
              "OutcomeUnknown",
              `sync of partition ${store.partition} failed and its bytes could not be discarded (${errorText(err)}; reopening: ${errorText(reopenFailed.failure)}): the outcome of the write is unknown: it is not visible now, but version ${unsafeFrom} may appear after a restart`,
              { cause: err },
            );
      for (const waiter of waiters) waiter.reject(answer);
    });
  }

  /**
   * Reopens the store from its last durable state (discarding the versions a failed cleanup left
   * unsafe); on failure, retries at the next operation. Resolves with its failure, if it failed.
   */
  private tryReopen(): Promise<{ failure: unknown } | undefined> {
    if (this.reopening !== undefined) return this.reopening;
    this.lastReopenAt = Date.now();
    const old = this.store;
    const reopening = (async () => {
      let failed: { failure: unknown } | undefined;
      try {
        await old.close();
        this.store = await this.reopen(old.unsafeVersionsFrom);
        this.changes.rebase(this.store.committed());
        this.failure = undefined;
        this.metrics?.reopens.inc({ partition: old.partition, result: "ok" });
        this.metrics?.available.set({ partition: old.partition }, 1);
      } catch (err) {
        failed = { failure: err };
        this.metrics?.reopens.inc({ partition: old.partition, result: "failed" });
        this.failure = new EngineError(
          "NotCommitted",
          `partition ${old.partition} is unavailable (reopening it from disk failed): the write was not committed`,
          {
            cause: err,
          },
        );
        // Nothing can be applied until a reopen succeeds: refuse what is queued.
        for (const queued of this.queue.splice(0)) queued.reject(this.failure);
      } finally {
        this.reopening = undefined;
      }
      if (failed === undefined) this.pump();
      return failed;
    })();
    this.reopening = reopening;
    return reopening;
  }
}

/** The message of an error, for a one-line answer. */
function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
