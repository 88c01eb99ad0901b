/**
 * GatedStorage: wraps any Storage (MemoryStorage by default) so that a test decides when each
 * blob `sync()` (fsync) completes, and counts syncs per partition.
 *
 * While the gate is closed (`hold()`), every sync waits in a FIFO until the test calls
 * `release()`; the wrapped sync runs only then, so nothing of it is durable before. With the gate
 * open (the default, or after `releaseAll()`), syncs pass straight through. `syncStarted(n)` resolves
 * once n syncs of a partition have started, so tests wait for events instead of sleeping.
 *
 * Invariants:
 * - `started` counts every sync call, `completed` every sync that resolved or threw; `maxInFlight`
 *   is the most syncs of one partition that were started and not yet completed at the same time.
 * - `releaseAll()` releases every held sync and lets later ones through: call it before stopping a
 *   server, or its shutdown waits for a sync that never completes.
 *
 * Usage:
 *   const gate = new GatedStorage();
 *   gate.hold();
 *   const put = client.put(key, value);
 *   await gate.syncStarted("default", 1); // the put's sync is now held
 *   gate.release();                       // ...and now it completes
 */
import { MemoryStorage } from "../../server/store/storage/memory.js";
import {
  type Blob,
  type BlobWrite,
  type OpenedBlob,
  type OpenOptions,
  type Storage,
  StorageWrapper,
} from "../../server/store/storage/storage.js";

/** Sync counts of one partition. */
export interface SyncCounts {
  started: number;
  completed: number;
  inFlight: number;
  maxInFlight: number;
}

interface Held {
  partition: string;
  release(): void;
}

interface Waiter {
  partition: string;
  count: number;
  resolve(): void;
}

/** See the module comment. */
export class GatedStorage extends StorageWrapper {
  private holding = false;
  private readonly held: Held[] = [];
  private readonly counts = new Map<string, SyncCounts>();
  private waiters: Waiter[] = [];

  constructor(inner: Storage = new MemoryStorage()) {
    super(inner);
  }

  /** Closes the gate: syncs from now on wait for `release()`. */
  hold(): void {
    this.holding = true;
  }

  /** Opens the gate: releases every held sync and lets later ones through. */
  releaseAll(): void {
    this.holding = false;
    for (const held of this.held.splice(0)) held.release();
  }

  /** Releases the `count` oldest held syncs (of `partition` when given). @throws when fewer are held */
  release(count = 1, partition?: string): void {
    for (let i = 0; i < count; i++) {
      const index = this.held.findIndex((h) => partition === undefined || h.partition === partition);
      if (index === -1)
        throw new Error(`release: no held sync${partition === undefined ? "" : ` of ${partition}`}`);
      const [held] = this.held.splice(index, 1);
      held?.release();
    }
  }

  /** Number of syncs waiting at the gate (of `partition` when given). */
  heldCount(partition?: string): number {
    return this.held.filter((h) => partition === undefined || h.partition === partition).length;
  }

  /** Sync counts of `partition` (zeros when it never synced). */
  syncs(partition: string): SyncCounts {
    return { ...(this.counts.get(partition) ?? { started: 0, completed: 0, inFlight: 0, maxInFlight: 0 }) };
  }

  /** Resolves once at least `count` syncs of `partition` have started (held or not). */
  syncStarted(partition: string, count: number): Promise<void> {
    if (this.syncs(partition).started >= count) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ partition, count, resolve }));
  }

  /** Storage.open: the wrapped blob with a gated `sync`. */
  async open(partition: string, name: Uint8Array, options?: OpenOptions): Promise<OpenedBlob> {
    const opened = await this.inner.open(partition, name, options);
    return { ...opened, blob: new GatedBlob(opened.blob, partition, this) };
  }

  /** @internal Called by a blob: waits at the gate, then runs `sync`. */
  async gatedSync(partition: string, sync: () => Promise<void>): Promise<void> {
    const counts = this.counts.get(partition) ?? { started: 0, completed: 0, inFlight: 0, maxInFlight: 0 };
    this.counts.set(partition, counts);
    counts.started++;
    counts.inFlight++;
    counts.maxInFlight = Math.max(counts.maxInFlight, counts.inFlight);
    try {
      if (this.holding) {
        const gate = new Promise<void>((release) => this.held.push({ partition, release }));
        this.notify();
        await gate;
      } else {
        this.notify();
      }
      await sync();
    } finally {
      counts.inFlight--;
      counts.completed++;
    }
  }

  private notify(): void {
    const ready = this.waiters.filter((w) => this.syncs(w.partition).started >= w.count);
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const waiter of ready) waiter.resolve();
  }
}

class GatedBlob implements Blob {
  constructor(
    private readonly inner: Blob,
    private readonly partition: string,
    private readonly gate: GatedStorage,
  ) {}

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.inner.read(offset, length);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    return this.inner.write(offset, data);
  }

  writeAll(writes: readonly BlobWrite[]): Promise<void> {
    return this.inner.writeAll(writes);
  }

  resize(length: number): Promise<void> {
    return this.inner.resize(length);
  }

  sync(): Promise<void> {
    return this.gate.gatedSync(this.partition, () => this.inner.sync());
  }

  length(): number {
    return this.inner.length();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
