/**
 * Engine: the typed operations of the service (put, remove, retain, clear, commit, sync, get,
 * keys, list) on plain TypeScript values, over the partitions and their group commit. It knows no
 * gRPC and no protobuf: server/rpc translates messages into these calls, unary or streamed alike.
 *
 * Invariants:
 * - Every input is validated here, once, before any partition is opened or created: partition
 *   name, key width or emptiness, value size, batch limits. Bad input changes nothing.
 * - A partition is created only by a mutation that can change something: a removal, retain,
 *   clear or sync of a partition that does not exist, a Commit without mutations, and a Commit
 *   whose preconditions fail against the empty state of a missing partition all answer without
 *   creating it (version 0 for the successful ones).
 * - Mutations of one partition are applied in call order (one FIFO queue per partition, entered
 *   synchronously when the partition is open), so the versions answered to one caller's
 *   sequence of calls never decrease.
 * - Durable mutations resolve after the fsync of the sync that holds them, with its version;
 *   buffered ones once applied, with version 0.
 * - Reads see the last committed state (`get`, `snapshot`); nothing of a failed sync ever shows.
 * - Watches (`watch`) see committed changes only, sync by sync (change-feed.ts, watch.ts).
 * - Keys and values handed in are copied before the store keeps them, so callers may reuse their
 *   buffers (request buffers of a transport, for instance).
 */
import { type KeyCodec, validateKey, validateValue } from "../store/codec.js";
import type { KeyRange, Metadata, Snapshot } from "../store/metadata.js";
import { EngineError } from "./errors.js";
import type { GroupCommit, Operation, Outcome } from "./group-commit.js";
import type { Partitions } from "./partitions.js";
import { Watch, type WatchInput } from "./watch.js";

/** A mutation of the partition `partition` ("" means the default partition). */
export interface WriteTarget {
  partition: string;
  /** Answer after the fsync of the sync that holds it (true) or once applied (false). */
  durable: boolean;
}

export interface PutInput extends WriteTarget {
  key: Uint8Array;
  value: Uint8Array;
}

export interface RemoveInput extends WriteTarget {
  key: Uint8Array;
}

/** Keeps the keys selected by `filter` (or, with `invert`, the others); `keepNone` keeps none. */
export interface RetainInput extends WriteTarget {
  filter: KeyRange;
  invert: boolean;
  keepNone: boolean;
}

/** One mutation of a batch: a put when `value` is given, else a removal. */
export interface BatchMutation {
  key: Uint8Array;
  value: Uint8Array | undefined;
}

/** A condition a batch needs on one key, checked when the batch is applied. */
export type Condition =
  | { key: Uint8Array; require: "absent" }
  | { key: Uint8Array; require: "present" }
  | { key: Uint8Array; require: "equals"; value: Uint8Array };

export interface CommitInput extends WriteTarget {
  mutations: BatchMutation[];
  preconditions: Condition[];
}

/** The answer to a put or a removal: the value before, and the committing version. */
export interface ChangeResult {
  previous: Uint8Array | undefined;
  /** Synced version holding the change (0 for buffered, or when nothing was created). */
  version: bigint;
}

/** The answer to a retain or a clear. */
export interface RemovedResult {
  removed: number;
  version: bigint;
}

/** The answer to a commit or a sync. */
export interface VersionResult {
  version: bigint;
}

/** A committed value, and the version it was read at. */
export interface ReadResult {
  value: Uint8Array | undefined;
  version: bigint;
}

/** Limits the engine enforces on its inputs (defaults and units: server/config.ts). */
export interface EngineLimits {
  /** Most mutations in one commit. */
  maxBatchMutations: number;
  /** Most key and value bytes in one commit. */
  maxBatchBytes: number;
}

/** Longest run of key bytes shown (as hex) in an error message. */
const MESSAGE_KEY_BYTES = 32;

/** A bounded hex rendering of a key for messages. */
export function describeKey(key: Uint8Array): string {
  const shown = Buffer.from(key.buffer, key.byteOffset, Math.min(key.byteLength, MESSAGE_KEY_BYTES));
  const hex = shown.toString("hex");
  return key.byteLength > MESSAGE_KEY_BYTES ? `${hex}... (${key.byteLength} bytes)` : hex;
}

/** A private copy of caller bytes, so the store never keeps a view into a caller's buffer. */
function own(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

function startsWith(key: Uint8Array, prefix: Uint8Array): boolean {
  if (key.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
  return true;
}

/** True when `key` is selected by `range` (every given part must hold). */
export function inRange(range: KeyRange, key: Uint8Array): boolean {
  if (range.prefix !== undefined && range.prefix.length > 0 && !startsWith(key, range.prefix)) return false;
  if (range.start !== undefined && range.start.length > 0 && Buffer.compare(key, range.start) < 0)
    return false;
  if (range.end !== undefined && range.end.length > 0 && Buffer.compare(key, range.end) >= 0) return false;
  return true;
}

/** Throws PreconditionFailed unless `condition` holds for `current`, the key's value. */
function check(condition: Condition, current: Uint8Array | undefined): void {
  const fail = (what: string): never => {
    throw new EngineError(
      "PreconditionFailed",
      `precondition failed: key ${describeKey(condition.key)} ${what}`,
    );
  };
  switch (condition.require) {
    case "absent":
      if (current !== undefined) fail("is present");
      return;
    case "present":
      if (current === undefined) fail("is absent");
      return;
    case "equals":
      if (current === undefined) fail("is absent");
      else if (Buffer.compare(current, condition.value) !== 0) fail("has another value");
      return;
  }
}

function changeResult(outcome: Outcome<Uint8Array | undefined>): ChangeResult {
  return { previous: outcome.result, version: outcome.version };
}

/** See the module comment. */
export class Engine {
  private readonly limits: EngineLimits;
  /** Per partition not yet open: the calls waiting for it, as the tail of their chain. */
  private readonly waiting = new Map<string, Promise<void>>();

  constructor(readonly partitions: Partitions) {
    this.limits = {
      maxBatchMutations: partitions.config.groupCommit.batchMaxMutations,
      maxBatchBytes: partitions.config.groupCommit.batchMaxBytes,
    };
  }

  /** Stores `value` under `key`; resolves with the previous value and the committing version. */
  put(input: PutInput): Promise<ChangeResult> {
    const partition = this.partitions.resolve(input.partition);
    validateKey(this.partitions.keyCodec(partition), input.key);
    validateValue(input.value, this.partitions.config.maxValueBytes);
    const key = own(input.key);
    const value = own(input.value);
    const op: Operation<Uint8Array | undefined> = {
      apply: (store) => store.put(key, value),
      mutations: 1,
      bytes: key.length + value.length,
      durable: input.durable,
    };
    // With `create`, the group is always there, so the outcome is too.
    return this.inOrder(partition, true, (group) => group?.submit(op)).then((outcome) =>
      changeResult(outcome as Outcome<Uint8Array | undefined>),
    );
  }

  /** Removes `key`; resolves with the removed value and the committing version. */
  remove(input: RemoveInput): Promise<ChangeResult> {
    const partition = this.partitions.resolve(input.partition);
    validateKey(this.partitions.keyCodec(partition), input.key);
    const key = own(input.key);
    const op: Operation<Uint8Array | undefined> = {
      apply: (store) => store.remove(key),
      mutations: 1,
      bytes: key.length,
      durable: input.durable,
    };
    return this.inOrder(partition, false, (group) => group?.submit(op)).then((outcome) =>
      outcome === undefined ? { previous: undefined, version: 0n } : changeResult(outcome),
    );
  }

  /** Keeps the selected keys (see RetainInput); resolves with how many were removed. */
  async retain(input: RetainInput): Promise<RemovedResult> {
    const partition = this.partitions.resolve(input.partition);
    const filter: KeyRange = {
      ...(input.filter.prefix === undefined ? {} : { prefix: own(input.filter.prefix) }),
      ...(input.filter.start === undefined ? {} : { start: own(input.filter.start) }),
      ...(input.filter.end === undefined ? {} : { end: own(input.filter.end) }),
    };
    const keep = (key: Uint8Array) => !input.keepNone && inRange(filter, key) !== input.invert;
    const outcome = await this.inOrder(partition, false, (group) =>
      group?.submit({
        apply: (store) => store.retain((key) => keep(key)),
        mutations: 1,
        bytes: 0,
        durable: input.durable,
      }),
    );
    return outcome === undefined
      ? { removed: 0, version: 0n }
      : { removed: outcome.result, version: outcome.version };
  }

  /** Removes every key of the partition; resolves with how many were removed. */
  async clear(input: WriteTarget): Promise<RemovedResult> {
    const partition = this.partitions.resolve(input.partition);
    const outcome = await this.inOrder(partition, false, (group) =>
      group?.submit({ apply: (store) => store.clear(), mutations: 1, bytes: 0, durable: input.durable }),
    );
    return outcome === undefined
      ? { removed: 0, version: 0n }
      : { removed: outcome.result, version: outcome.version };
  }

  /**
   * Applies a batch atomically when every precondition holds, checked against the latest state
   * (uncommitted mutations included) when the batch is applied.
   * @throws StoreError (bad key or value), EngineError LimitExceeded, PreconditionFailed, ...
   */
  async commit(input: CommitInput): Promise<VersionResult> {
    const partition = this.partitions.resolve(input.partition);
    const codec = this.partitions.keyCodec(partition);
    const mutations = this.validateBatch(input.mutations, codec);
    const preconditions = input.preconditions.map((condition): Condition => {
      validateKey(codec, condition.key);
      return condition.require === "equals"
        ? { key: own(condition.key), require: "equals", value: own(condition.value) }
        : { key: own(condition.key), require: condition.require };
    });
    const op: Operation<undefined> = {
      apply: (store: Metadata) => {
        for (const condition of preconditions) check(condition, store.get(condition.key));
        for (const mutation of mutations.items) {
          if (mutation.value === undefined) store.remove(mutation.key);
          else store.put(mutation.key, mutation.value);
        }
        return undefined;
      },
      mutations: mutations.items.length,
      bytes: mutations.bytes,
      durable: input.durable,
    };
    // Only a batch that puts something, with nothing that can fail, may create the partition:
    // a missing partition is empty, so check the rest against that, creating nothing.
    const creates = mutations.items.length > 0 && preconditions.length === 0;
    const outcome = await this.inOrder(partition, creates, (group) => {
      if (group !== undefined) return group.submit(op);
      for (const condition of preconditions) check(condition, undefined);
      if (mutations.items.length === 0) return undefined;
      return this.partitions.forWrite(partition).then((created) => created.submit(op));
    });
    return { version: outcome?.version ?? 0n };
  }

  /** Commits every pending mutation of the partition; resolves after the fsync. */
  async sync(input: { partition: string }): Promise<VersionResult> {
    const partition = this.partitions.resolve(input.partition);
    const outcome = await this.inOrder(partition, false, (group) =>
      group?.submit({ apply: () => undefined, mutations: 0, bytes: 0, durable: true }),
    );
    return { version: outcome?.version ?? 0n };
  }

  /** The committed value of `key` and the version it was read at. */
  async get(input: { partition: string; key: Uint8Array }): Promise<ReadResult> {
    const partition = this.partitions.resolve(input.partition);
    validateKey(this.partitions.keyCodec(partition), input.key);
    const view =
      this.partitions.openNow(partition)?.committed() ?? (await this.partitions.committed(partition));
    return { value: view.get(input.key), version: view.version };
  }

  /** The committed state of a partition (empty, creating nothing, when it does not exist). */
  snapshot(input: { partition: string }): Promise<Snapshot> {
    return this.partitions.committed(this.partitions.resolve(input.partition));
  }

  /**
   * Watches the committed changes of a partition from `fromVersion` (see watch.ts); creates
   * nothing. @throws StoreError InvalidPartitionName, OutOfRangeError (history no longer holds
   * `fromVersion`), EngineError ShuttingDown
   */
  watch(input: WatchInput): Watch {
    const partition = this.partitions.resolve(input.partition);
    return new Watch(this.partitions, partition, { ...input, prefix: own(input.prefix) });
  }

  /** Names of every partition on disk or open, sorted. */
  listPartitions(): Promise<string[]> {
    return this.partitions.list();
  }

  /**
   * Runs `submit` with the partition's group commit (undefined when the partition does not exist
   * and `create` is false), keeping call order per partition: when the partition is open and
   * nothing waits before this call, `submit` runs now; otherwise it runs after every earlier
   * call of the partition has submitted, once the partition is opened (or known to be missing).
   * `submit` must enter the group's queue synchronously and return the outcome's promise.
   */
  private inOrder<R>(
    partition: string,
    create: boolean,
    submit: (group: GroupCommit | undefined) => Promise<R> | undefined,
  ): Promise<R | undefined> {
    const waiting = this.waiting.get(partition);
    if (waiting === undefined) {
      const open = this.partitions.openNow(partition);
      if (open !== undefined) return submit(open) ?? Promise.resolve(undefined);
    }
    const submitted = (waiting ?? Promise.resolve()).then(async () => {
      for (;;) {
        const group = create
          ? await this.partitions.forWrite(partition)
          : await this.partitions.ifExists(partition);
        // A partition retired (closed for being idle) meanwhile reopens: look it up again.
        if (group === undefined || !group.retired || this.partitions.closing)
          return { outcome: submit(group) };
      }
    });
    const tail = submitted.then(
      () => undefined,
      () => undefined,
    );
    this.waiting.set(partition, tail);
    void tail.then(() => {
      if (this.waiting.get(partition) === tail) this.waiting.delete(partition);
    });
    return submitted.then(({ outcome }) => outcome);
  }

  private validateBatch(batch: BatchMutation[], codec: KeyCodec): { items: BatchMutation[]; bytes: number } {
    if (batch.length > this.limits.maxBatchMutations) {
      throw new EngineError(
        "LimitExceeded",
        `too many mutations in one commit: ${batch.length} > ${this.limits.maxBatchMutations}`,
      );
    }
    const maxValueBytes = this.partitions.config.maxValueBytes;
    const items: BatchMutation[] = [];
    let bytes = 0;
    for (const mutation of batch) {
      validateKey(codec, mutation.key);
      if (mutation.value === undefined) {
        items.push({ key: own(mutation.key), value: undefined });
        bytes += mutation.key.length;
      } else {
        validateValue(mutation.value, maxValueBytes);
        items.push({ key: own(mutation.key), value: own(mutation.value) });
        bytes += mutation.key.length + mutation.value.length;
      }
    }
    if (bytes > this.limits.maxBatchBytes) {
      throw new EngineError(
        "LimitExceeded",
        `commit too large: ${bytes} bytes > ${this.limits.maxBatchBytes}`,
      );
    }
    return { items, bytes };
  }
}
