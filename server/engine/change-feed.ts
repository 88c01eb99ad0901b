/**
 * ChangeFeed: the committed changes of one partition, sync by sync, kept in a bounded history and
 * handed to watchers: replayed from a version, then live.
 *
 * A change set is the net change of one committed sync: every key it put (with the new value)
 * or removed, in ascending key order. It is the difference of two committed views of the store,
 * which share their unchanged copy-on-write nodes, so computing it costs in proportion to what
 * the sync changed, not to the size of the partition.
 *
 * Invariants:
 * - A change set is recorded only after the fsync of its sync (GroupCommit calls `record` with
 *   the committed view); a failed sync records nothing. The reopen after a failed sync only moves
 *   the base (`rebase`); should the reopened state not be the last recorded one, every watcher is
 *   ended with OutOfRangeError rather than be left with a gap.
 * - Change sets are recorded in strictly increasing version order. A sync that changed nothing
 *   records nothing (it has nothing to send).
 * - The history holds the newest change sets within `historyMaxSyncs` and `historyMaxBytes`, and
 *   always the newest one. `oldestVersion` is the smallest version v such that every committed
 *   change with version >= v is in the history or still to come.
 * - A watcher is a position (the next version it needs), not a buffer: it holds no change set
 *   of its own. When the history evicts a change set a watcher was still to be given, the watcher
 *   is ended at once with OutOfRangeError naming `oldestVersion`. Memory is bounded by the
 *   history, however many watchers there are and however slowly they read.
 *
 * Usage:
 *   const feed = new ChangeFeed("p", store.committed());
 *   const watcher = feed.watch({ fromVersion: 0n, prefix: new Uint8Array() });
 *   for (;;) send(await watcher.take()); // rejects with OutOfRangeError or ShuttingDown
 */
import type { KeyChange, Snapshot } from "../store/metadata.js";
import { type EngineError, OutOfRangeError } from "./errors.js";

/** The change of one key: its new value, or undefined when it was removed. */
export interface Change {
  readonly key: Buffer;
  readonly value: Uint8Array | undefined;
}

/** The changes of one committed sync, in ascending key order. */
export interface ChangeSet {
  /** The version the sync committed. */
  readonly version: bigint;
  readonly changes: readonly Change[];
  /** Key and value bytes of the changes, plus a fixed overhead per change. */
  readonly bytes: number;
}

/** Bounds of a partition's history (defaults and units: server/config.ts). */
export interface ChangeFeedOptions {
  /** Most change sets (committed syncs that changed something) kept. */
  historyMaxSyncs: number;
  /** Most bytes of change sets kept (keys, values, and CHANGE_OVERHEAD_BYTES per change). */
  historyMaxBytes: number;
}

/** Defaults of ChangeFeedOptions (see server/config.ts). */
export const DEFAULT_CHANGE_FEED_OPTIONS: ChangeFeedOptions = {
  historyMaxSyncs: 4096,
  historyMaxBytes: 4 * 1024 * 1024,
};

/** Memory of one change beside its key and value bytes, as counted against the history. */
export const CHANGE_OVERHEAD_BYTES = 48;

/** Where a watcher starts and what it sees. */
export interface WatchFrom {
  /** First version to give (0: the next committed sync). */
  fromVersion: bigint;
  /** Only changes of keys starting with these bytes (empty: every key). */
  prefix: Uint8Array;
}

function startsWith(key: Uint8Array, prefix: Uint8Array): boolean {
  if (key.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
  return true;
}

/** See the module comment. */
export class ChangeFeed {
  private base: Snapshot;
  /** Change sets, oldest first, from index `head` on. */
  private history: ChangeSet[] = [];
  private head = 0;
  private bytes = 0;
  private oldest: bigint;
  private readonly watchers = new Set<Watcher>();
  private closedWith: EngineError | undefined;

  constructor(
    /** The partition name, for messages. */
    readonly partition: string,
    base: Snapshot,
    private readonly options: ChangeFeedOptions = DEFAULT_CHANGE_FEED_OPTIONS,
  ) {
    this.base = base;
    this.oldest = base.version + 1n;
  }

  /** Smallest version a watch can start from (see the module comment). */
  get oldestVersion(): bigint {
    return this.oldest;
  }

  /** Version of the last committed state the feed knows. */
  get committedVersion(): bigint {
    return this.base.version;
  }

  /** Bytes held by the history. */
  get historyBytes(): number {
    return this.bytes;
  }

  /** Change sets held by the history. */
  get historySyncs(): number {
    return this.history.length - this.head;
  }

  /** Watchers attached. */
  get watcherCount(): number {
    return this.watchers.size;
  }

  /**
   * Records the changes from the previous committed view to `committed`, the view of a sync that
   * just completed (durable), and wakes the watchers. Returns the change set, or undefined when
   * the sync changed nothing.
   */
  record(committed: Snapshot): ChangeSet | undefined {
    if (this.closedWith !== undefined || committed.version <= this.base.version) return undefined;
    const diff: KeyChange[] = committed.changesSince(this.base);
    this.base = committed;
    if (diff.length === 0) return undefined;
    let bytes = 0;
    const changes = diff.map(([key, value]): Change => {
      bytes += key.length + (value?.length ?? 0) + CHANGE_OVERHEAD_BYTES;
      return { key, value };
    });
    const set: ChangeSet = { version: committed.version, changes, bytes };
    this.history.push(set);
    this.bytes += bytes;
    this.evict();
    for (const watcher of [...this.watchers]) watcher.poke();
    return set;
  }

  /**
   * Moves the base to `reopened`, the committed view of a store reopened from disk after a failed
   * sync, recording nothing. Watchers are ended (OutOfRangeError) if it is not the last recorded
   * state, since its changes cannot be told.
   */
  rebase(reopened: Snapshot): void {
    const same = reopened.version === this.base.version;
    this.base = reopened;
    if (same) return;
    this.history = [];
    this.head = 0;
    this.bytes = 0;
    this.oldest = reopened.version + 1n;
    for (const watcher of [...this.watchers]) watcher.end(this.outOfRange(watcher.nextVersion));
  }

  /** Ends every watcher with `err` and refuses new ones with it. */
  close(err: EngineError): void {
    this.closedWith ??= err;
    for (const watcher of [...this.watchers]) watcher.end(err);
  }

  /**
   * Attaches a watcher at `from.fromVersion` (0: the next committed sync).
   * @throws OutOfRangeError when the history no longer holds that version; the feed's close error
   */
  watch(from: WatchFrom): Watcher {
    if (this.closedWith !== undefined) throw this.closedWith;
    const position = from.fromVersion === 0n ? this.base.version + 1n : from.fromVersion;
    if (position < this.oldest) throw this.outOfRange(from.fromVersion);
    const watcher = new Watcher(this, position, from.prefix);
    this.watchers.add(watcher);
    return watcher;
  }

  /** The error for a watch that needs `version`, no longer held. @internal */
  outOfRange(version: bigint): OutOfRangeError {
    return new OutOfRangeError(
      `watch of partition ${this.partition} from version ${version}: the history no longer holds it: oldest available version ${this.oldest}`,
      this.oldest,
    );
  }

  /**
   * The first change set with version >= `position`, or undefined when none is recorded yet.
   * @throws OutOfRangeError when that change set has left the history. @internal
   */
  at(position: bigint): ChangeSet | undefined {
    if (position < this.oldest) throw this.outOfRange(position);
    let low = this.head;
    let high = this.history.length;
    while (low < high) {
      const mid = (low + high) >>> 1;
      if ((this.history[mid] as ChangeSet).version < position) low = mid + 1;
      else high = mid;
    }
    return this.history[low];
  }

  /** @internal */
  detach(watcher: Watcher): void {
    this.watchers.delete(watcher);
  }

  /** Drops the oldest change sets beyond the bounds, keeping the newest one. */
  private evict(): void {
    const { historyMaxSyncs, historyMaxBytes } = this.options;
    while (
      this.history.length - this.head > 1 &&
      (this.history.length - this.head > historyMaxSyncs || this.bytes > historyMaxBytes)
    ) {
      const dropped = this.history[this.head] as ChangeSet;
      this.history[this.head] = undefined as unknown as ChangeSet;
      this.head++;
      this.bytes -= dropped.bytes;
      this.oldest = dropped.version + 1n;
    }
    if (this.head > 1024 && this.head * 2 > this.history.length) {
      this.history = this.history.slice(this.head);
      this.head = 0;
    }
  }
}

/**
 * One watcher of a ChangeFeed: `take()` gives the next change set with changes under its prefix,
 * waiting for one when it has had them all. Ended by the feed when it falls behind the history
 * (OutOfRangeError) or the feed closes; `ended` resolves with that error.
 */
export class Watcher {
  private waiter: { resolve(set: ChangeSet): void; reject(err: unknown): void } | undefined;
  private endedWith: EngineError | undefined;
  private signalEnd!: (err: EngineError) => void;
  /** Resolves (never rejects) with the error that ended this watcher; not when closed by its owner. */
  readonly ended: Promise<EngineError>;

  /** @internal */
  constructor(
    private readonly feed: ChangeFeed,
    /** Next version to give. */
    private position: bigint,
    private readonly prefix: Uint8Array,
  ) {
    this.ended = new Promise((resolve) => {
      this.signalEnd = resolve;
    });
  }

  /** Next version this watcher will give. */
  get nextVersion(): bigint {
    return this.position;
  }

  /**
   * The next change set (version >= the next version) with at least one change under the
   * prefix, holding only those; waits for it when none is recorded yet.
   * @throws OutOfRangeError when it has left the history; the feed's close error
   */
  take(): Promise<ChangeSet> {
    if (this.endedWith !== undefined) return Promise.reject(this.endedWith);
    try {
      const found = this.scan();
      if (found !== undefined) return Promise.resolve(found);
    } catch (err) {
      this.end(err as EngineError);
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }

  /** Detaches from the feed; a pending `take` never settles. */
  close(): void {
    this.waiter = undefined;
    this.feed.detach(this);
  }

  /** The feed recorded, evicted or rebased: answer a waiting take, or end if behind. @internal */
  poke(): void {
    if (this.endedWith !== undefined) return;
    try {
      if (this.waiter === undefined) {
        // Not waiting: the change set it needs next must still be there when it comes back.
        this.feed.at(this.position);
        return;
      }
      const found = this.scan();
      if (found === undefined) return;
      const waiter = this.waiter;
      this.waiter = undefined;
      waiter.resolve(found);
    } catch (err) {
      this.end(err as EngineError);
    }
  }

  /** Ends this watcher with `err`. @internal */
  end(err: EngineError): void {
    if (this.endedWith !== undefined) return;
    this.endedWith = err;
    this.feed.detach(this);
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(err);
    this.signalEnd(err);
  }

  /** The next matching change set, advancing past those without a match. */
  private scan(): ChangeSet | undefined {
    for (;;) {
      const set = this.feed.at(this.position);
      if (set === undefined) return undefined;
      this.position = set.version + 1n;
      if (this.prefix.length === 0) return set;
      let bytes = 0;
      const changes = set.changes.filter((change) => {
        if (!startsWith(change.key, this.prefix)) return false;
        bytes += change.key.length + (change.value?.length ?? 0) + CHANGE_OVERHEAD_BYTES;
        return true;
      });
      if (changes.length > 0) return { version: set.version, changes, bytes };
    }
  }
}
