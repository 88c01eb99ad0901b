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
 */
import type { Registry } from "prom-client";
import { type KeyCodec, MAX_VALUE_BYTES } from "../store/codec.js";
import { StoreError } from "../store/errors.js";
import { emptySnapshot, type NoChangeSync, openMetadata, type Snapshot } from "../store/metadata.js";
import { type BlobLayout, type Storage, validatePartitionName } from "../store/storage/storage.js";
import { EngineError } from "./errors.js";
import { GroupCommit, type GroupCommitMetrics, type GroupCommitOptions } from "./group-commit.js";

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
}

/** The committed view of every partition that does not exist. */
const EMPTY_SNAPSHOT = emptySnapshot();

/** See the module comment. */
export class Partitions {
  private readonly open = new Map<string, Promise<GroupCommit>>();
  /** The partitions whose open has completed, for callers that must not wait a turn. */
  private readonly ready = new Map<string, GroupCommit>();
  private closed = false;
  private expedited = false;

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

  /** The partition's group commit if it is open now, else undefined. */
  openNow(partition: string): GroupCommit | undefined {
    return this.closed ? undefined : this.ready.get(partition);
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
      // A failed open is forgotten, so that a later call tries again.
      opening.catch(() => this.open.delete(partition));
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

  /** Names of every partition on disk or open, sorted. */
  async list(): Promise<string[]> {
    const names = new Set(await this.storage.listPartitions());
    for (const name of this.open.keys()) names.add(name);
    return [...names].sort();
  }

  /** Makes every open partition commit at once from now on (shutdown has begun). */
  async expedite(): Promise<void> {
    this.expedited = true;
    await Promise.allSettled([...this.open.values()].map(async (opening) => (await opening).expedite()));
  }

  /** Commits everything pending in every partition and closes them. */
  async close(): Promise<void> {
    this.closed = true;
    this.ready.clear();
    const all = [...this.open.values()];
    await Promise.allSettled(all.map(async (opening) => (await opening).close()));
  }

  private async existsOnDisk(partition: string): Promise<boolean> {
    try {
      return (await this.storage.scan(partition)).length > 0;
    } catch (err) {
      if (err instanceof StoreError && err.kind === "PartitionMissing") return false;
      throw err;
    }
  }

  private async openPartition(partition: string): Promise<GroupCommit> {
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
      });
    const store = await openStore(undefined);
    const group = new GroupCommit(store, openStore, this.config.groupCommit, this.metrics);
    if (this.expedited) group.expedite();
    // Set before the open resolves, so that later callers find it before earlier ones resume.
    this.ready.set(partition, group);
    return group;
  }
}
