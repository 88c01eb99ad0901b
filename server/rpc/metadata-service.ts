/**
 * MetadataService handlers: validate -> partition / group commit -> answer.
 *
 * Invariants:
 * - Every input is validated (partition name, key width or emptiness, value size, batch shape)
 *   before any partition is opened or created; bad input changes nothing.
 * - Mutations go through the partition's GroupCommit; reads (Get, Keys) use the committed view.
 * - Handlers never throw: every error is answered through `toStatus`.
 * - Keys streams from one snapshot, in chunks, writing only while the transport accepts more
 *   (flow control), so a slow reader never makes the server buffer the whole listing.
 * - Values are copied out of request buffers before the store keeps them.
 */
import { once } from "node:events";
import { create } from "@bufbuild/protobuf";
import type { ServerWritableStream, sendUnaryData } from "@grpc/grpc-js";
import {
  ClearResponseSchema,
  CommitResponseSchema,
  Durability,
  GetResponseSchema,
  type KeyFilter,
  type KeysRequest,
  type KeysResponse,
  KeysResponseSchema,
  ListPartitionsResponseSchema,
  type MetadataService,
  type Mutation,
  type Precondition,
  PutResponseSchema,
  RemoveResponseSchema,
  RetainResponseSchema,
  SyncResponseSchema,
} from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { type KeyCodec, validateKey, validateValue } from "../store/codec.js";
import { StoreError } from "../store/errors.js";
import type { KeyRange, Metadata } from "../store/metadata.js";
import type { Partitions } from "./partitions.js";
import type { ServiceImpl } from "./service-definition.js";
import { invalidArgument, type StatusError, toStatus } from "./status.js";

/** Most keys in one Keys response message. */
const KEYS_CHUNK_MAX_KEYS = 1000;
/** Most key and value bytes in one Keys response message. */
const KEYS_CHUNK_MAX_BYTES = 256 * 1024;

/** A request that fails validation before reaching the store. */
class BadRequest extends Error {}

function isDurable(durability: Durability): boolean {
  return durability !== Durability.BUFFERED;
}

/** A private copy of request bytes, so the store never keeps a view into a request buffer. */
function own(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

function startsWith(key: Uint8Array, prefix: Uint8Array): boolean {
  if (key.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) if (key[i] !== prefix[i]) return false;
  return true;
}

/** A KeyRange with only the parts that are set. */
function rangeOf(filter: { prefix: Uint8Array; start: Uint8Array; end: Uint8Array }): KeyRange {
  return {
    ...(filter.prefix.length > 0 ? { prefix: filter.prefix } : {}),
    ...(filter.start.length > 0 ? { start: filter.start } : {}),
    ...(filter.end.length > 0 ? { end: filter.end } : {}),
  };
}

/** True when `key` is selected by `filter` (every given part must hold). */
function matches(filter: KeyFilter | undefined, key: Uint8Array): boolean {
  if (filter === undefined) return true;
  if (filter.prefix.length > 0 && !startsWith(key, filter.prefix)) return false;
  if (filter.start.length > 0 && compareBytes(key, filter.start) < 0) return false;
  if (filter.end.length > 0 && compareBytes(key, filter.end) >= 0) return false;
  return true;
}

function checkPrecondition(store: Metadata, condition: Precondition): void {
  const current = store.get(condition.key);
  const fail = (what: string) => {
    throw new StoreError("PreconditionFailed", `precondition failed: key ${hex(condition.key)} ${what}`);
  };
  switch (condition.condition.case) {
    case "absent":
      if (current !== undefined) fail("is present");
      return;
    case "present":
      if (current === undefined) fail("is absent");
      return;
    case "valueEquals":
      if (current === undefined) fail("is absent");
      else if (compareBytes(current, condition.condition.value) !== 0) fail("has another value");
      return;
    default:
      return;
  }
}

/** Builds the handlers of MetadataService over `partitions`. */
export function createMetadataService(
  partitions: Partitions,
  log: (message: string, err: unknown) => void = console.error,
): ServiceImpl<typeof MetadataService> {
  const fail = (err: unknown): StatusError =>
    err instanceof BadRequest ? invalidArgument(err.message) : toStatus(err, log);

  /** Runs `body` and answers the unary call with its result or its error. */
  const answer = <T>(callback: sendUnaryData<T>, body: () => Promise<T>): void => {
    body().then(
      (response) => callback(null, response),
      (err: unknown) => callback(fail(err)),
    );
  };

  const partitionOf = (name: string): { partition: string; codec: KeyCodec } => {
    const partition = partitions.resolve(name);
    return { partition, codec: partitions.keyCodec(partition) };
  };

  const maxValueBytes = partitions.config.maxValueBytes;
  const maxBatchMutations = partitions.config.groupCommit.batchMaxMutations;
  const maxBatchBytes = partitions.config.groupCommit.batchMaxBytes;

  return {
    put(call, callback) {
      answer(callback, async () => {
        const request = call.request;
        const { partition, codec } = partitionOf(request.partition);
        validateKey(codec, request.key);
        validateValue(request.value, maxValueBytes);
        const key = own(request.key);
        const value = own(request.value);
        const group = await partitions.forWrite(partition);
        const { result, version } = await group.submit({
          apply: (store) => store.put(key, value),
          mutations: 1,
          bytes: key.length + value.length,
          durable: isDurable(request.durability),
        });
        return create(PutResponseSchema, { ...(result === undefined ? {} : { previous: result }), version });
      });
    },

    get(call, callback) {
      answer(callback, async () => {
        const { partition, codec } = partitionOf(call.request.partition);
        validateKey(codec, call.request.key);
        const view = await partitions.committed(partition);
        const value = view.get(call.request.key);
        return create(GetResponseSchema, {
          ...(value === undefined ? {} : { value }),
          version: view.version,
        });
      });
    },

    remove(call, callback) {
      answer(callback, async () => {
        const request = call.request;
        const { partition, codec } = partitionOf(request.partition);
        validateKey(codec, request.key);
        const key = own(request.key);
        const group = await partitions.ifExists(partition);
        if (group === undefined) return create(RemoveResponseSchema, { version: 0n });
        const { result, version } = await group.submit({
          apply: (store) => store.remove(key),
          mutations: 1,
          bytes: key.length,
          durable: isDurable(request.durability),
        });
        return create(RemoveResponseSchema, {
          ...(result === undefined ? {} : { previous: result }),
          version,
        });
      });
    },

    retain(call, callback) {
      answer(callback, async () => {
        const request = call.request;
        const { partition } = partitionOf(request.partition);
        const filter = request.filter;
        const keep = (key: Uint8Array) => !request.keepNone && matches(filter, key) !== request.invert;
        const group = await partitions.ifExists(partition);
        if (group === undefined) return create(RetainResponseSchema, { removed: 0n, version: 0n });
        const { result, version } = await group.submit({
          apply: (store) => store.retain((key) => keep(key)),
          mutations: 1,
          bytes: 0,
          durable: isDurable(request.durability),
        });
        return create(RetainResponseSchema, { removed: BigInt(result), version });
      });
    },

    keys(call) {
      streamKeys(partitions, call).catch((err: unknown) => {
        if (!call.cancelled) call.emit("error", fail(err));
      });
    },

    sync(call, callback) {
      answer(callback, async () => {
        const { partition } = partitionOf(call.request.partition);
        const group = await partitions.ifExists(partition);
        if (group === undefined) return create(SyncResponseSchema, { version: 0n });
        const { version } = await group.submit({
          apply: () => undefined,
          mutations: 0,
          bytes: 0,
          durable: true,
        });
        return create(SyncResponseSchema, { version });
      });
    },

    clear(call, callback) {
      answer(callback, async () => {
        const { partition } = partitionOf(call.request.partition);
        const group = await partitions.ifExists(partition);
        if (group === undefined) return create(ClearResponseSchema, { removed: 0n, version: 0n });
        const { result, version } = await group.submit({
          apply: (store) => store.clear(),
          mutations: 1,
          bytes: 0,
          durable: isDurable(call.request.durability),
        });
        return create(ClearResponseSchema, { removed: BigInt(result), version });
      });
    },

    commit(call, callback) {
      answer(callback, async () => {
        const request = call.request;
        const { partition, codec } = partitionOf(request.partition);
        const batch = validateBatch(request.mutations, request.preconditions, codec, maxValueBytes);
        if (batch.mutations.length > maxBatchMutations) {
          throw new StoreError(
            "LimitExceeded",
            `too many mutations in one commit: ${batch.mutations.length} > ${maxBatchMutations}`,
          );
        }
        if (batch.bytes > maxBatchBytes) {
          throw new StoreError("LimitExceeded", `commit too large: ${batch.bytes} bytes > ${maxBatchBytes}`);
        }
        const group = await partitions.forWrite(partition);
        const { version } = await group.submit({
          apply: (store) => {
            for (const condition of request.preconditions) checkPrecondition(store, condition);
            for (const mutation of batch.mutations) {
              if (mutation.value === undefined) store.remove(mutation.key);
              else store.put(mutation.key, mutation.value);
            }
          },
          mutations: batch.mutations.length,
          bytes: batch.bytes,
          durable: isDurable(request.durability),
        });
        return create(CommitResponseSchema, { version });
      });
    },

    listPartitions(_call, callback) {
      answer(callback, async () =>
        create(ListPartitionsResponseSchema, { partitions: await partitions.list() }),
      );
    },
  };
}

interface ValidatedBatch {
  /** Puts (with a value) and removes (without), in request order, with private copies. */
  mutations: { key: Uint8Array; value: Uint8Array | undefined }[];
  bytes: number;
}

/** Checks every mutation and precondition of a Commit before anything is applied. */
function validateBatch(
  mutations: Mutation[],
  preconditions: Precondition[],
  codec: KeyCodec,
  maxValueBytes: number,
): ValidatedBatch {
  const out: ValidatedBatch = { mutations: [], bytes: 0 };
  mutations.forEach((mutation, index) => {
    const kind = mutation.kind;
    if (kind.case === "put") {
      validateKey(codec, kind.value.key);
      validateValue(kind.value.value, maxValueBytes);
      out.mutations.push({ key: own(kind.value.key), value: own(kind.value.value) });
      out.bytes += kind.value.key.length + kind.value.value.length;
    } else if (kind.case === "remove") {
      validateKey(codec, kind.value.key);
      out.mutations.push({ key: own(kind.value.key), value: undefined });
      out.bytes += kind.value.key.length;
    } else {
      throw new BadRequest(`mutation ${index} has neither put nor remove`);
    }
  });
  preconditions.forEach((condition, index) => {
    validateKey(codec, condition.key);
    if (condition.condition.case === undefined) {
      throw new BadRequest(`precondition ${index} has no condition`);
    }
  });
  return out;
}

/** Resolves when `call` can take more writes, or when the reader has gone away. */
async function writable(call: ServerWritableStream<KeysRequest, KeysResponse>): Promise<void> {
  const stop = new AbortController();
  try {
    await Promise.race([
      once(call, "drain", { signal: stop.signal }),
      once(call, "cancelled", { signal: stop.signal }),
      once(call, "close", { signal: stop.signal }),
    ]);
  } finally {
    stop.abort();
  }
}

/** Streams a partition's committed keys (and values) in chunks, honouring flow control. */
async function streamKeys(
  partitions: Partitions,
  call: ServerWritableStream<KeysRequest, KeysResponse>,
): Promise<void> {
  const request = call.request;
  const partition = partitions.resolve(request.partition);
  const view = await partitions.committed(partition);
  const limit = request.limit === 0 ? Number.POSITIVE_INFINITY : request.limit;
  let sent = 0;
  let keys: Uint8Array[] = [];
  let values: Uint8Array[] = [];
  let bytes = 0;
  const flush = async (): Promise<void> => {
    const message = create(KeysResponseSchema, { keys, values, version: view.version });
    keys = [];
    values = [];
    bytes = 0;
    if (!call.write(message)) await writable(call);
  };
  for (const [key, value] of view.entries(rangeOf(request))) {
    if (call.cancelled || sent >= limit) break;
    keys.push(key);
    bytes += key.length;
    if (request.includeValues) {
      values.push(value);
      bytes += value.length;
    }
    sent++;
    if (keys.length >= KEYS_CHUNK_MAX_KEYS || bytes >= KEYS_CHUNK_MAX_BYTES) await flush();
  }
  if (call.cancelled) return;
  if (keys.length > 0 || sent === 0) await flush();
  call.end();
}
