/**
 * Watch: one watcher of a partition's committed changes, through the partition's ChangeFeed
 * (change-feed.ts), including the wait for a partition that does not exist yet.
 *
 * Invariants:
 * - Input is validated when the watch is made (partition name), before anything is opened.
 * - A watch of a partition that does not exist creates nothing; once a mutation creates the
 *   partition, the watch sees every change from its first sync on (start version 0 included).
 * - `take()` gives change sets in strictly increasing version order, each holding only the
 *   changes under the prefix and never empty; a version is never given twice and never skipped
 *   silently: a watch that cannot go on without a gap fails with OutOfRangeError.
 * - `ended` resolves when the watch is ended from outside (behind the history, shutdown), so a
 *   consumer blocked on its transport learns of it at once.
 */
import type { ChangeSet, Watcher } from "./change-feed.js";
import type { EngineError } from "./errors.js";
import type { Partitions } from "./partitions.js";

/** What to watch. */
export interface WatchInput {
  /** Partition name ("" means the default partition). */
  partition: string;
  /** Only keys starting with these bytes (empty: every key). */
  prefix: Uint8Array;
  /** First version to give (0: the next committed sync). */
  fromVersion: bigint;
}

/** See the module comment. Built by `Engine.watch`. */
export class Watch {
  private watcher: Watcher | undefined;
  private readonly attached: Promise<Watcher>;
  private readonly cancelWait: () => void;
  private closed = false;
  private signalEnd!: (err: EngineError) => void;
  /** Resolves (never rejects) with the error that ended the watch from outside. */
  readonly ended: Promise<EngineError>;

  /** @internal use Engine.watch */
  constructor(
    partitions: Partitions,
    /** The resolved partition name. */
    readonly partition: string,
    input: WatchInput,
  ) {
    this.ended = new Promise((resolve) => {
      this.signalEnd = resolve;
    });
    const ready = partitions.openNow(partition);
    if (ready !== undefined) {
      this.watcher = ready.changes.watch(input);
      this.attached = Promise.resolve(this.watcher);
      this.cancelWait = () => undefined;
    } else {
      const { opened, cancel } = partitions.forWatch(partition);
      this.cancelWait = cancel;
      this.attached = opened.then((group) => {
        // A partition found only now may have been created by the mutation that opened it:
        // from 0 then means from its first sync (the oldest version the feed can give).
        const fromVersion = input.fromVersion === 0n ? group.changes.oldestVersion : input.fromVersion;
        const watcher = group.changes.watch({ prefix: input.prefix, fromVersion });
        if (this.closed) watcher.close();
        this.watcher = watcher;
        return watcher;
      });
    }
    this.attached.then(
      (watcher) => void watcher.ended.then((err) => this.signalEnd(err)),
      (err: unknown) => this.signalEnd(err as EngineError),
    );
  }

  /**
   * The next change set under the prefix; waits for the partition and for the next sync.
   * @throws OutOfRangeError, EngineError ShuttingDown, or the error of opening the partition
   */
  take(): Promise<ChangeSet> {
    // Once attached, straight to the watcher: one promise per change set, not three.
    if (this.watcher !== undefined) return this.watcher.take();
    return this.attached.then((watcher) => watcher.take());
  }

  /** Stops watching; a pending `take` never settles. */
  close(): void {
    this.closed = true;
    this.cancelWait();
    this.watcher?.close();
  }
}
