/**
 * Partitions: partition name -> open store with its group commit, opened on demand.
 *
 * Invariants:
 * - An empty name means the server's default partition; any other name must be a valid
 *   partition name (`InvalidPartitionName` otherwise, before anything is touched).
 * - A partition is created (its blobs written) only by `forWrite`, for a mutation that can change
 *   something. A read, or a removal, of a partition that exists neither in memory nor on disk
 *   finds nothing and creates nothing (`ifExists`, `committed`).
 * - A partition is opened at most once, however many calls race to open it.
 * - Each partition has one key codec for its life: the one configured for its name, else the
 *   server default. A partition created here gets the blob layout configured for its name, else
 *   the default; an existing one keeps the layout on disk.
 * - At most `maxOpenPartitions` partitions stay open (file handles, memory, metric series): when
 *   one more opens, the least recently used idle ones (nothing queued, applied or syncing) are
 *   retired: closed, their metric series removed (every series of the registry labelled with the
 *   partition, its watch series included). A retired partition reopens from disk on its next
 *   use, through the usual recovery; nothing committed is lost and nothing pending is dropped
 *   (a partition with pending work is never retired). Busy partitions may keep the count above
 *   the limit for a while.
 * - At most `maxPartitions` partitions exist: a mutation that would create one more is refused
 *   with `LimitExceeded` naming the limit, and creates nothing.
 * - A watch (`forWatch`) of a partition that does not exist creates nothing: it is handed the
 *   partition in the same turn as the open that creates it, before any sync of it can complete.
 *   A partition with watchers is not idle, so it is never retired under them.
 * - Once shutdown begins (`expedite`), every watch ends (ShuttingDown) and no new one starts.
 * - A failed open is forgotten (the next call tries again), except DataLoss: that partition
 *   answers the same error until the server restarts after an operator accepted the loss.
 * - A stray entry in a partition directory (anything but the two blob files) is left alone and
 *   warned about once; the partition counts as existing.
 * - `recover` opens a partition that exists and is not open exactly as its first call would
 *   (the same single open, the same recovery), for the check at start (recovery-at-start.ts). A
 *   partition so opened counts as the least recently used, so beyond `maxOpenPartitions` it is
 *   the first retired (when idle, after the turn of its open, as any retirement), and the check
 *   never makes the partitions in use give way.
 */
import type { Registry } from "prom-client";
import { type KeyCodec, MAX_VALUE_BYTES } from "../store/codec.js";
import { isStoreError, StoreError } from "../store/errors.js";
import {
  emptySnapshot,
  type MetadataConfig,
  type NoChangeSync,
  openMetadata,
  type Snapshot,
} from "../store/metadata.js";
import { removePartitionMetrics } from "../store/metrics.js";
import { type BlobLayout, type Storage, validatePartitionName } from "../store/storage/storage.js";
import type { ChangeFeedOptions } from "./change-feed.js";
import { EngineError } from "./errors.js";
import { GroupCommit, type GroupCommitMetrics, type GroupCommitOptions, watchEnded } from "./group-commit.js";

/** Configuration of the partitions of a server. */
export interface PartitionsConfig {
  /** Partition used when a request names none. */
  defaultPartition: string;
  /** Key codec of partitions not listed in `keyCodecs`. */
  defaultKeyCodec: KeyCodec;
  /** Key codec per partition name. */
  keyCodecs: ReadonlyMap<string, KeyCodec>;
  /** Largest value accepted. */
  maxValueBytes: number;
  /** Most partitions kept open; the least recently used idle ones are closed beyond it. */
  maxOpenPartitions: number;
  /** Most partitions that may exist (on disk or open); creating one more is refused. */
  maxPartitions: number;
  groupCommit: GroupCommitOptions;
  /**
   * Blob layout of partitions created from now on ("v1" unless given), per partition name
   * (`layouts`) else `default`; an existing partition keeps its own. `noChangeSync` overrides
   * the per-layout default of the store (V1 skip, V0 bump).
   */
  blobLayouts?: {
    default: BlobLayout;
    layouts: ReadonlyMap<string, BlobLayout>;
    noChangeSync?: NoChangeSync;
  };
  /** Bounds of each partition's watch history (defaults: DEFAULT_CHANGE_FEED_OPTIONS). */
  watchHistory?: ChangeFeedOptions;
  /** Where recovery keeps damaged blobs and reports what it discards (see openMetadata). */
  recovery?: Pick<MetadataConfig, "quarantine" | "warn">;
}

interface CreationWaiter {
  resolve(group: GroupCommit): void;
  reject(err: unknown): void;
}

/** The committed view of every partition that does not exist. */
const EMPTY_SNAPSHOT = emptySnapshot();

/** See the module comment. */
export class Partitions {
  private readonly open = new Map<string, Promise<GroupCommit>>();
  /**
   * The partitions whose open has completed, for callers that must not wait a turn; in order of
   * last use (the first is the least recently used).
   */
  private readonly ready = new Map<string, GroupCommit>();
  /** Partitions being retired: their close, which a reopen waits for. */
  private readonly retiring = new Map<string, Promise<void>>();
  /** Names of the partitions that exist, loaded at the first creation (for `maxPartitions`). */
  private known: Promise<Set<string>> | undefined;
  private retirementScheduled = false;
  private readonly lost = new Set<string>();
  private readonly strayWarned = new Set<string>();
  private closed = false;
  private expedited = false;
  /** Watches waiting for a partition that does not exist yet, by name. */
  private readonly creations = new Map<string, Set<CreationWaiter>>();

  constructor(
    private readonly storage: Storage,
    readonly config: PartitionsConfig,
    private readonly registry?: Registry,
    private readonly metrics?: GroupCommitMetrics,
  ) {
    if (config.maxValueBytes > MAX_VALUE_BYTES) {
      throw new StoreError(
        "InvalidConfig",
        `maximum value size ${config.maxValueBytes} > ${MAX_VALUE_BYTES}`,
      );
    }
    validatePartitionName(config.defaultPartition);
    for (const name of config.keyCodecs.keys()) validatePartitionName(name);
    for (const name of config.blobLayouts?.layouts.keys() ?? []) validatePartitionName(name);
  }

  /** The partition a request means: `name`, or the default when empty. @throws InvalidPartitionName */
  resolve(name: string): string {
    const resolved = name === "" ? this.config.defaultPartition : name;
    validatePartitionName(resolved);
    return resolved;
  }

  /** Key codec of a (resolved) partition name. */
  keyCodec(partition: string): KeyCodec {
    return this.config.keyCodecs.get(partition) ?? this.config.defaultKeyCodec;
  }

  /** The partition's group commit if it is open now (counting as a use), else undefined. */
  openNow(partition: string): GroupCommit | undefined {
    if (this.closed) return undefined;
    const group = this.ready.get(partition);
    if (group !== undefined && this.ready.size > 1) {
      this.ready.delete(partition);
      this.ready.set(partition, group);
    }
    return group;
  }

  /**
   * Whether the partition is open, or being opened, now; unlike `openNow`, not counting as a use.
   * A partition whose open failed with DataLoss is not open.
   */
  isOpen(partition: string): boolean {
    return this.ready.has(partition) || (this.open.has(partition) && !this.lost.has(partition));
  }

  /** True once `close` was called. */
  get closing(): boolean {
    return this.closed;
  }

  /** Number of partitions open now. */
  get openCount(): number {
    return this.ready.size;
  }

  /**
   * The partition's group commit: itself when open (so that a caller can submit in the same
   * turn, keeping call order), else a promise of it, opening (and creating) the partition.
   */
  forWriteNow(partition: string): GroupCommit | Promise<GroupCommit> {
    return this.openNow(partition) ?? this.forWrite(partition);
  }

  /** The partition's group commit, opening (and creating) it if needed. */
  forWrite(partition: string): Promise<GroupCommit> {
    if (this.closed) {
      return Promise.reject(
        new EngineError("ShuttingDown", "server is shutting down: the write was not committed"),
      );
    }
    let opening = this.open.get(partition);
    if (opening === undefined) {
      opening = this.openPartition(partition);
      this.open.set(partition, opening);
      // A failed open is forgotten, so that a later call tries again; data loss is kept, as
      // nothing changes on disk until an operator accepts it.
      opening.catch((err: unknown) => {
        if (isStoreError(err, "DataLoss")) this.lost.add(partition);
        else this.open.delete(partition);
      });
    }
    return opening;
  }

  /** The partition's group commit if the partition exists (open or on disk), else undefined. */
  async ifExists(partition: string): Promise<GroupCommit | undefined> {
    const ready = this.openNow(partition);
    if (ready !== undefined) return ready;
    if (!this.open.has(partition) && !(await this.existsOnDisk(partition))) return undefined;
    return this.forWrite(partition);
  }

  /** The committed view of a partition; empty (and nothing created) when it does not exist. */
  async committed(partition: string): Promise<Snapshot> {
    const ready = this.openNow(partition);
    if (ready !== undefined) return ready.committed();
    return (await this.ifExists(partition))?.committed() ?? EMPTY_SNAPSHOT;
  }

  /**
   * The partition's group commit for a watch: at once when open, after opening it when it exists
   * on disk, else once a mutation creates it (never creating it). `cancel` stops waiting (the
   * promise is then left unsettled).
   * @throws EngineError ShuttingDown once shutdown has begun
   */
  forWatch(partition: string): { opened: Promise<GroupCommit>; cancel(): void } {
    let cancelled = false;
    let cancel = () => {
      cancelled = true;
    };
    const opened = (async () => {
      if (this.expedited || this.closed) throw watchEnded();
      const existing = this.openNow(partition) ?? (await this.ifExists(partition));
      if (existing !== undefined) return existing;
      // Checked again in this turn: an open may have started or ended during the disk check.
      const now = this.openNow(partition) ?? this.open.get(partition);
      if (now !== undefined) return now;
      if (this.expedited || this.closed) throw watchEnded();
      return new Promise<GroupCommit>((resolve, reject) => {
        if (cancelled) return;
        let waiters = this.creations.get(partition);
        if (waiters === undefined) {
          waiters = new Set();
          this.creations.set(partition, waiters);
        }
        const waiter = { resolve, reject };
        waiters.add(waiter);
        cancel = () => {
          waiters.delete(waiter);
          if (waiters.size === 0 && this.creations.get(partition) === waiters)
            this.creations.delete(partition);
        };
      });
    })();
    return { opened, cancel: () => cancel() };
  }

  /**
   * Opens `partition` if it exists and is not open or opening (see the module comment).
   * @returns "opened" when this call opened it (or joined an open that began meanwhile),
   *   "open" when it was open or opening already, "absent" when it does not exist
   * @throws EngineError ShuttingDown once shutdown has begun; what the open throws (StoreError
   *   DataLoss, Corrupt, Io, ...)
   */
  async recover(partition: string): Promise<"opened" | "open" | "absent"> {
    if (this.closed || this.expedited) {
      throw new EngineError("ShuttingDown", "server is shutting down: recovery at start stopped");
    }
    if (this.isOpen(partition)) return "open";
    const group = await this.ifExists(partition);
    if (group === undefined) return "absent";
    // Runs before the retirement its open scheduled (a later turn), which then takes it first.
    if (this.ready.get(partition) === group && this.ready.size > 1) {
      const others = [...this.ready].filter(([name]) => name !== partition);
      this.ready.clear();
      this.ready.set(partition, group);
      for (const [name, other] of others) this.ready.set(name, other);
    }
    return "opened";
  }

  /** Names of every partition on disk or open, sorted. */
  async list(): Promise<string[]> {
    const names = new Set(await this.storage.listPartitions());
    for (const name of this.open.keys()) names.add(name);
    return [...names].sort();
  }

  /** Partitions not served because their data was lost (DataLoss), sorted. */
  dataLoss(): string[] {
    return [...this.lost].sort();
  }

  /**
   * Makes every open partition commit at once from now on, and ends every watch (shutdown has
   * begun: a watch would otherwise hold the shutdown for its whole grace period).
   */
  async expedite(): Promise<void> {
    this.expedited = true;
    this.endWatches();
    await Promise.allSettled([...this.open.values()].map(async (opening) => (await opening).expedite()));
  }

  /** Commits everything pending in every partition and closes them. */
  async close(): Promise<void> {
    this.closed = true;
    this.endWatches();
    this.ready.clear();
    const all = [...this.open.values()];
    await Promise.allSettled([
      ...all.map(async (opening) => (await opening).close()),
      ...this.retiring.values(),
    ]);
  }

  private endWatches(): void {
    for (const waiters of this.creations.values()) for (const waiter of waiters) waiter.reject(watchEnded());
    this.creations.clear();
    for (const group of this.ready.values()) group.changes.close(watchEnded());
  }

  private async existsOnDisk(partition: string): Promise<boolean> {
    try {
      return (await this.storage.scan(partition)).length > 0;
    } catch (err) {
      if (err instanceof StoreError && err.kind === "PartitionMissing") return false;
      if (err instanceof StoreError && err.kind === "PartitionCorrupt") {
        if (!this.strayWarned.has(partition)) {
          this.strayWarned.add(partition);
          (this.config.recovery?.warn ?? console.warn)(`${err.message} (ignored, left in place)`);
        }
        return true;
      }
      throw err;
    }
  }

  private async openPartition(partition: string): Promise<GroupCommit> {
    await this.retiring.get(partition);
    await this.admit(partition);
    const keyCodec = this.keyCodec(partition);
    const layouts = this.config.blobLayouts;
    const blobLayout = layouts?.layouts.get(partition) ?? layouts?.default;
    const openStore = (discardVersionsFrom: bigint | undefined) =>
      openMetadata(this.storage, {
        partition,
        keyCodec,
        maxValueBytes: this.config.maxValueBytes,
        ...(blobLayout === undefined ? {} : { blobLayout }),
        ...(layouts?.noChangeSync === undefined ? {} : { noChangeSync: layouts.noChangeSync }),
        ...(this.registry === undefined ? {} : { registry: this.registry }),
        ...(discardVersionsFrom === undefined ? {} : { discardVersionsFrom }),
        ...this.config.recovery,
      });
    const store = await openStore(undefined);
    const group = new GroupCommit(
      store,
      openStore,
      this.config.groupCommit,
      this.metrics,
      this.config.watchHistory,
    );
    if (this.expedited) group.expedite();
    // Set before the open resolves, so that later callers find it before earlier ones resume.
    this.ready.set(partition, group);
    const waiters = this.creations.get(partition);
    this.creations.delete(partition);
    for (const waiter of waiters ?? []) waiter.resolve(group);
    (await this.known)?.add(partition);
    this.scheduleRetirement();
    return group;
  }

  /**
   * Refuses to create a partition beyond `maxPartitions` (an existing one always opens).
   * @throws EngineError LimitExceeded
   */
  private async admit(partition: string): Promise<void> {
    this.known ??= this.storage.listPartitions().then((names) => new Set(names));
    const known = await this.known;
    if (known.has(partition) || known.size < this.config.maxPartitions) return;
    if (await this.existsOnDisk(partition)) {
      known.add(partition);
      return;
    }
    throw new EngineError(
      "LimitExceeded",
      `too many partitions: ${known.size} exist, the limit is ${this.config.maxPartitions} (--max-partitions)`,
    );
  }

  /**
   * Retires idle partitions beyond the limit after the current turn: the calls that opened a
   * partition submit their work in this turn, so a partition is never retired between its open
   * and its first use.
   */
  private scheduleRetirement(): void {
    if (this.retirementScheduled || this.ready.size <= this.config.maxOpenPartitions) return;
    this.retirementScheduled = true;
    setImmediate(() => {
      this.retirementScheduled = false;
      if (!this.closed) this.retireIdle();
    });
  }

  /** Retires the least recently used idle partitions while more than the limit are open. */
  private retireIdle(): void {
    for (const [name, group] of this.ready) {
      if (this.ready.size <= this.config.maxOpenPartitions) return;
      if (group.idle) this.retire(name, group);
    }
  }

  /** Closes an idle open partition and removes its metric series; a reopen waits for the close. */
  private retire(name: string, group: GroupCommit): void {
    this.ready.delete(name);
    this.open.delete(name);
    const retired = group
      .retire()
      .then(() => (this.registry === undefined ? undefined : removePartitionMetrics(this.registry, name)))
      .catch(() => undefined)
      .finally(() => {
        if (this.retiring.get(name) === retired) this.retiring.delete(name);
      });
    this.retiring.set(name, retired);
  }
}
