/**
 * MetadataService handlers: decode -> engine call -> encode. Translation only: every rule
 * (validation, limits, preconditions, group commit, durability) lives in the engine.
 *
 * Invariants:
 * - Handlers never throw: every error is answered through `toStatus`, the one status table.
 * - Keys streams from one committed snapshot, in chunks of at most 64 KiB, one chunk at a time
 *   through the transport (flow control) and within the server-wide stream buffer, so a reader
 *   that does not read holds at most one chunk of the server's memory.
 * - Streaming calls (Keys, Write, Watch) are admitted up to the server-wide --max-streams; beyond, they are
 *   refused with RESOURCE_EXHAUSTED naming the limit.
 * - Write (the bidirectional stream) is served by write-stream.ts through the same engine calls,
 *   Watch (committed changes, streamed) by watch-stream.ts; a Watch needs `read` access.
 * - Every call is authenticated and authorized (AccessControl) before anything else: before its
 *   partition name is validated and before the engine sees it, so a refused call changes nothing
 *   and creates nothing. ListPartitions answers only the names the caller may read. A Write
 *   stream is authenticated when it opens (refused at once without credentials) and each of its
 *   requests is authorized on its own partition (a refused request is answered with its status
 *   and the stream goes on).
 */
import { create } from "@bufbuild/protobuf";
import type { ServerWritableStream, sendUnaryData } from "@grpc/grpc-js";
import { Registry } from "prom-client";
import {
  ClearResponseSchema,
  GetResponseSchema,
  type KeysRequest,
  type KeysResponse,
  KeysResponseSchema,
  ListPartitionsResponseSchema,
  type MetadataService,
  RetainResponseSchema,
  SyncResponseSchema,
} from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import {
  AccessControl,
  AuthError,
  type CallCredentialsSource,
  type Principal,
} from "../auth/access-control.js";
import type { Access } from "../auth/policy.js";
import type { Engine } from "../engine/operations.js";
import type { ServiceImpl } from "./service-definition.js";
import { type ErrorLog, type StatusError, toStatus } from "./status.js";
import { type Reservation, StreamLimits } from "./stream-limits.js";
import {
  commitInput,
  commitResponse,
  isDurable,
  putInput,
  putResponse,
  rangeOf,
  removeInput,
  removeResponse,
} from "./translate.js";
import { createWatchMetrics, serveWatch, type WatchMetrics } from "./watch-stream.js";
import { serveWriteStream, type WriteStreamOptions } from "./write-stream.js";

/** Most keys in one Keys response message. */
const KEYS_CHUNK_MAX_KEYS = 1000;
/**
 * Most key and value bytes in one Keys response message: one chunk is what a reader that does not
 * read holds of the server's memory (see streamKeys).
 */
const KEYS_CHUNK_MAX_BYTES = 64 * 1024;

/** What the handlers need besides the engine. */
export interface MetadataServiceOptions {
  /** Limits of each Write stream. */
  writeStream: WriteStreamOptions;
  /** Server-wide limits on streaming calls (none when absent). */
  streams?: StreamLimits;
  /** Checks every call (everything allowed when absent). */
  access?: AccessControl;
  /** Where internal errors are logged (stderr by default). */
  log?: ErrorLog;
  /** Metrics of Watch streams (an unregistered set when absent). */
  watch?: WatchMetrics;
}

/** Builds the handlers of MetadataService over `engine`; see MetadataServiceOptions. */
export function createMetadataService(
  engine: Engine,
  options: MetadataServiceOptions,
): ServiceImpl<typeof MetadataService> {
  const log = options.log ?? console.error;
  const access = options.access ?? AccessControl.open({ registry: new Registry() });
  const streams = options.streams ?? new StreamLimits(Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER);
  const writeStream = options.writeStream;
  const watchMetrics = options.watch ?? createWatchMetrics(new Registry());
  const fail = (err: unknown): StatusError => toStatus(err, log);

  /** Checks `need` on the request's partition for `principal`. @throws AuthError, StoreError */
  const authorize = (
    call: CallCredentialsSource,
    principal: Principal,
    method: string,
    name: string,
    need: Access,
  ): void => {
    const refused = access.authorize(call, principal, method, engine.partitions.resolve(name), need);
    if (refused !== undefined) throw refused;
  };

  /**
   * Authenticates the caller, then checks `need` on the request's partition: an unauthenticated
   * call is refused before its partition name is even looked at.
   * @throws AuthError, StoreError (invalid partition name)
   */
  const allowed = (call: CallCredentialsSource, method: string, name: string, need: Access): void => {
    const principal = access.authenticate(call, method, name);
    if (principal instanceof AuthError) throw principal;
    authorize(call, principal, method, name, need);
  };

  /** Answers the unary call with the result of `run()` or its error (thrown or rejected). */
  const answer = <T>(callback: sendUnaryData<T>, run: () => Promise<T>): void => {
    let pending: Promise<T>;
    try {
      pending = run();
    } catch (err) {
      callback(fail(err));
      return;
    }
    pending.then(
      (response) => callback(null, response),
      (err: unknown) => callback(fail(err)),
    );
  };

  return {
    put(call, callback) {
      answer(callback, () => {
        allowed(call, "Put", call.request.partition, "write");
        return engine.put(putInput(call.request)).then(putResponse);
      });
    },

    get(call, callback) {
      answer(callback, async () => {
        allowed(call, "Get", call.request.partition, "read");
        const { value, version } = await engine.get(call.request);
        return create(GetResponseSchema, { ...(value === undefined ? {} : { value }), version });
      });
    },

    remove(call, callback) {
      answer(callback, () => {
        allowed(call, "Remove", call.request.partition, "write");
        return engine.remove(removeInput(call.request)).then(removeResponse);
      });
    },

    retain(call, callback) {
      answer(callback, async () => {
        const request = call.request;
        allowed(call, "Retain", request.partition, "write");
        const { removed, version } = await engine.retain({
          partition: request.partition,
          filter: rangeOf(request.filter),
          invert: request.invert,
          keepNone: request.keepNone,
          durable: isDurable(request.durability),
        });
        return create(RetainResponseSchema, { removed: BigInt(removed), version });
      });
    },

    keys(call) {
      let end: (() => void) | undefined;
      Promise.resolve()
        .then(() => {
          allowed(call, "Keys", call.request.partition, "read");
          end = streams.admit();
          return streamKeys(engine, call, streams);
        })
        .catch((err: unknown) => {
          if (!call.cancelled) call.emit("error", fail(err));
        })
        .finally(() => end?.());
    },

    watch(call) {
      let end: (() => void) | undefined;
      Promise.resolve()
        .then(() => {
          allowed(call, "Watch", call.request.partition, "read");
          end = streams.admit();
          return serveWatch(engine, call, watchMetrics, streams);
        })
        .catch((err: unknown) => {
          if (!call.cancelled) call.emit("error", fail(err));
        })
        .finally(() => end?.());
    },

    sync(call, callback) {
      answer(callback, async () => {
        allowed(call, "Sync", call.request.partition, "write");
        return create(SyncResponseSchema, { version: (await engine.sync(call.request)).version });
      });
    },

    clear(call, callback) {
      answer(callback, async () => {
        allowed(call, "Clear", call.request.partition, "write");
        const { removed, version } = await engine.clear({
          partition: call.request.partition,
          durable: isDurable(call.request.durability),
        });
        return create(ClearResponseSchema, { removed: BigInt(removed), version });
      });
    },

    commit(call, callback) {
      answer(callback, () => {
        allowed(call, "Commit", call.request.partition, "write");
        return engine.commit(commitInput(call.request)).then(commitResponse);
      });
    },

    listPartitions(call, callback) {
      answer(callback, async () => {
        const principal = access.authenticate(call, "ListPartitions");
        if (principal instanceof AuthError) throw principal;
        return create(ListPartitionsResponseSchema, {
          partitions: access.readable(principal, await engine.listPartitions()),
        });
      });
    },

    write(call) {
      const principal = access.authenticate(call, "Write");
      if (principal instanceof AuthError) {
        call.emit("error", fail(principal));
        return;
      }
      let end: () => void;
      try {
        end = streams.admit();
      } catch (err) {
        call.emit("error", fail(err));
        return;
      }
      for (const event of ["close", "cancelled", "error", "finish"]) call.once(event, end);
      serveWriteStream(engine, call, writeStream, log, (partition) =>
        authorize(call, principal, "Write", partition, "write"),
      );
    },
  };
}

/**
 * Streams a partition's committed keys (and values) in chunks, honouring flow control: a chunk is
 * written only once the transport has taken the previous one, and once the server-wide buffer
 * (`streams`) has room for it; its room is given back when the transport takes it. A reader that
 * does not read thus holds one chunk of the buffer, never more.
 */
async function streamKeys(
  engine: Engine,
  call: ServerWritableStream<KeysRequest, KeysResponse>,
  streams: StreamLimits,
): Promise<void> {
  const request = call.request;
  const view = await engine.snapshot(request);
  const limit = request.limit === 0 ? Number.POSITIVE_INFINITY : request.limit;
  let held: Reservation | undefined;
  let readerGone!: () => void;
  const gone = new Promise<void>((resolve) => {
    readerGone = resolve;
  });
  const stop = new AbortController();
  const abandon = () => {
    stop.abort(new Error("the reader went away"));
    held?.release();
    readerGone();
  };
  call.once("cancelled", abandon);
  call.once("close", abandon);
  /** The previous chunk has been taken by the transport (or the reader went away). */
  let taken: Promise<void> = Promise.resolve();
  let sent = 0;
  let keys: Uint8Array[] = [];
  let values: Uint8Array[] = [];
  let bytes = 0;
  const flush = async (): Promise<void> => {
    const message = create(KeysResponseSchema, { keys, values, version: view.version });
    const size = bytes + 16 * keys.length;
    keys = [];
    values = [];
    bytes = 0;
    await Promise.race([taken, gone]);
    if (stop.signal.aborted) return;
    const reservation = await streams.reserve(size, stop.signal);
    held = reservation;
    taken = new Promise<void>((resolve) => {
      call.write(message, () => {
        reservation.release();
        resolve();
      });
    });
  };
  try {
    for (const [key, value] of view.entries(rangeOf(request))) {
      if (call.cancelled || stop.signal.aborted || sent >= limit) break;
      keys.push(key);
      bytes += key.length;
      if (request.includeValues) {
        values.push(value);
        bytes += value.length;
      }
      sent++;
      if (keys.length >= KEYS_CHUNK_MAX_KEYS || bytes >= KEYS_CHUNK_MAX_BYTES) await flush();
    }
    if (call.cancelled || stop.signal.aborted) return;
    if (keys.length > 0 || sent === 0) await flush();
    if (!stop.signal.aborted) call.end();
  } catch (err) {
    if (stop.signal.aborted) return;
    throw err;
  }
}
