/**
 * MetadataClient: a small promise-based client of MetadataService over @grpc/grpc-js, on top of
 * the buf-generated schemas in ./gen.
 *
 * - Every call takes an optional per-call deadline (`deadlineMs`, relative) and metadata.
 * - `keys()` is an async iterable of entries; leaving the loop early cancels the stream.
 * - `watch()` is an async iterable of committed changes, one batch per sync; `keysWithVersion()`
 *   and `watch({ startVersion: version + 1n })` give every change after a listing exactly once.
 *   An OUT_OF_RANGE error ends a watch that cannot go on without a gap:
 *   `oldestAvailableVersion(err)` reads the oldest version the server can still give.
 * - `commit()` sends an atomic batch of puts and removes with optional preconditions.
 * - `writer()` pipelines many puts, removes and commits over one Write stream.
 * - Errors are grpc-js `ServiceError`s (`code`, `details`); see the proto for which codes each
 *   RPC returns. A DEADLINE_EXCEEDED or UNKNOWN on a write means its outcome is unknown; an
 *   UNAVAILABLE means it was not committed.
 *
 * - Authentication: `token` sends `authorization: Bearer <token>` on every call (a call
 *   credentials plugin over TLS; over plaintext, which only suits loopback, a client
 *   interceptor, since grpc-js attaches call credentials to secure channels only); `tls` takes
 *   the CA to trust and a client certificate and key for mutual TLS.
 *
 * Usage:
 *   const client = new MetadataClient("127.0.0.1:50051");
 *   const secure = new MetadataClient("db.example.com:50051", {
 *     token: process.env.METADATA_TOKEN,
 *     tls: { ca: readFileSync("ca.pem"), cert: readFileSync("me.pem"), key: readFileSync("me.key") },
 *   });
 *   await client.put(key, value);              // durable when it resolves
 *   const value = await client.get(key);       // Uint8Array | undefined
 *   for await (const { key } of client.keys({ prefix })) ...
 *   for await (const { version, events } of client.watch({ prefix })) ...
 *   client.close();
 */
import { create, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type ClearResponse,
  type CommitResponse,
  Durability,
  type GetResponse,
  type KeysResponse,
  type ListPartitionsResponse,
  MetadataService,
  type MutationSchema,
  type PreconditionSchema,
  type PutResponse,
  type RemoveResponse,
  type RetainResponse,
  type SyncResponse,
} from "./gen/commonware/metadata/v1/metadata_pb.js";

import { MetadataWriter, type WriterOptions } from "./metadata-writer.js";

export { Durability };

/** Options of every call. */
export interface CallOptions {
  /** Deadline relative to now, in milliseconds. */
  deadlineMs?: number;
  /** Extra request metadata. */
  metadata?: grpc.Metadata;
}

/** Options of a mutation. */
export interface WriteOptions extends CallOptions {
  /** Partition; the server's default when absent. */
  partition?: string;
  /** DURABLE (default): answered after the fsync; BUFFERED: answered once applied. */
  durability?: Durability;
}

/** Options of a read. */
export interface ReadOptions extends CallOptions {
  partition?: string;
}

/** Options of `keys()`. */
export interface KeysOptions extends ReadOptions {
  prefix?: Uint8Array;
  start?: Uint8Array;
  end?: Uint8Array;
  limit?: number;
  includeValues?: boolean;
}

/** One entry of a listing (`value` only with `includeValues`). */
export interface KeyEntry {
  key: Uint8Array;
  value?: Uint8Array;
}

/** Options of `watch()`. */
export interface WatchOptions extends ReadOptions {
  /** Only keys starting with these bytes. */
  prefix?: Uint8Array;
  /** First version sent; 0 or absent: from the next committed sync. */
  startVersion?: bigint;
  /** Send the new value of every put (otherwise a put carries an empty value). */
  includeValues?: boolean;
}

/** The change of one key: `value` for a put, absent for a removal. */
export interface WatchChange {
  key: Uint8Array;
  value?: Uint8Array;
}

/** The changes of one committed sync under the watched prefix, in key order. */
export interface WatchBatch {
  version: bigint;
  events: WatchChange[];
}

/**
 * The oldest version the server could still give, read from the OUT_OF_RANGE error that ended a
 * watch; undefined for any other error.
 */
export function oldestAvailableVersion(err: unknown): bigint | undefined {
  const e = err as { code?: unknown; details?: unknown };
  if (e?.code !== grpc.status.OUT_OF_RANGE || typeof e.details !== "string") return undefined;
  const match = /oldest available version (\d+)/.exec(e.details);
  return match === null ? undefined : BigInt(match[1] as string);
}

/** A mutation of a batch. */
export type BatchMutation = { put: { key: Uint8Array; value: Uint8Array } } | { remove: { key: Uint8Array } };

/** A precondition of a batch. */
export type BatchPrecondition =
  | { key: Uint8Array; absent: true }
  | { key: Uint8Array; present: true }
  | { key: Uint8Array; valueEquals: Uint8Array };

/** TLS of the channel: PEM bytes. */
export interface ClientTlsOptions {
  /** CA certificates to trust; the system's roots when absent. */
  ca?: Buffer | undefined;
  /** Client certificate chain, for servers that require one (mutual TLS); needs `key`. */
  cert?: Buffer | undefined;
  /** Private key of `cert`. */
  key?: Buffer | undefined;
}

/** Options of the channel. */
export interface ClientOptions {
  /**
   * Channel credentials; insecure by default. Use `grpc.credentials.createSsl(...)` for TLS, or
   * give `tls` instead.
   */
  credentials?: grpc.ChannelCredentials;
  /** TLS from PEM bytes; ignored when `credentials` is given. */
  tls?: ClientTlsOptions;
  /** Bearer token sent as `authorization: Bearer <token>` metadata on every call. */
  token?: string | undefined;
  /** grpc-js channel options (keepalive, message sizes, ...). */
  channelOptions?: grpc.ChannelOptions;
}

/**
 * Channel credentials and client options for `options`: the token rides on call credentials
 * over TLS, or on an interceptor over plaintext. @throws Error for a cert without a key
 */
function channelOf(options: ClientOptions): {
  credentials: grpc.ChannelCredentials;
  clientOptions: grpc.ClientOptions;
} {
  const { tls, token } = options;
  if (tls !== undefined && (tls.cert === undefined) !== (tls.key === undefined)) {
    throw new Error("tls.cert and tls.key go together");
  }
  let credentials =
    options.credentials ??
    (tls === undefined
      ? grpc.credentials.createInsecure()
      : grpc.credentials.createSsl(tls.ca ?? null, tls.key ?? null, tls.cert ?? null));
  const clientOptions: grpc.ClientOptions = { ...(options.channelOptions ?? {}) };
  if (token !== undefined) {
    if (!/^[\x21-\x7e]+$/.test(token)) throw new Error("token must be printable ASCII without spaces");
    const header = `Bearer ${token}`;
    if (credentials._isSecure()) {
      credentials = credentials.compose(
        grpc.credentials.createFromMetadataGenerator((_params, callback) => {
          const metadata = new grpc.Metadata();
          metadata.set("authorization", header);
          callback(null, metadata);
        }),
      );
    } else {
      const addToken: grpc.Interceptor = (callOptions, next) =>
        new grpc.InterceptingCall(next(callOptions), {
          start: (metadata, listener, nextStart) => {
            metadata.set("authorization", header);
            nextStart(metadata, listener);
          },
        });
      clientOptions.interceptors = [...(clientOptions.interceptors ?? []), addToken];
    }
  }
  return { credentials, clientOptions };
}

type Method = (typeof MetadataService.method)[keyof typeof MetadataService.method];
/** The server-streaming methods. */
type StreamMethod = typeof MetadataService.method.keys | typeof MetadataService.method.watch;

function path(method: Method): string {
  return `/${MetadataService.typeName}/${method.name}`;
}

/** See the module comment. */
export class MetadataClient {
  private readonly client: grpc.Client;

  /** Connects lazily to `address`. @throws Error for inconsistent `tls` or a malformed `token` */
  constructor(address: string, options: ClientOptions = {}) {
    const { credentials, clientOptions } = channelOf(options);
    this.client = new grpc.Client(address, credentials, clientOptions);
  }

  /** Closes the channel. */
  close(): void {
    this.client.close();
  }

  /** Stores `value` under `key`; resolves with the previous value and the committing version. */
  put(key: Uint8Array, value: Uint8Array, options: WriteOptions = {}): Promise<PutResponse> {
    return this.unary(
      MetadataService.method.put,
      {
        partition: options.partition ?? "",
        key,
        value,
        durability: options.durability ?? Durability.DURABLE,
      },
      options,
    );
  }

  /** The committed value of `key`, or undefined. */
  async get(key: Uint8Array, options: ReadOptions = {}): Promise<Uint8Array | undefined> {
    return (await this.getWithVersion(key, options)).value;
  }

  /** The committed value of `key` and the version it was read at. */
  getWithVersion(key: Uint8Array, options: ReadOptions = {}): Promise<GetResponse> {
    return this.unary(MetadataService.method.get, { partition: options.partition ?? "", key }, options);
  }

  /** Removes `key`; resolves with the removed value and the committing version. */
  remove(key: Uint8Array, options: WriteOptions = {}): Promise<RemoveResponse> {
    return this.unary(
      MetadataService.method.remove,
      {
        partition: options.partition ?? "",
        key,
        durability: options.durability ?? Durability.DURABLE,
      },
      options,
    );
  }

  /**
   * Keeps the keys selected by `filter` (or, with `invert`, removes them); `keepNone` removes
   * every key. Resolves with the number removed.
   */
  retain(
    filter: {
      prefix?: Uint8Array;
      start?: Uint8Array;
      end?: Uint8Array;
      invert?: boolean;
      keepNone?: boolean;
    },
    options: WriteOptions = {},
  ): Promise<RetainResponse> {
    return this.unary(
      MetadataService.method.retain,
      {
        partition: options.partition ?? "",
        filter: {
          prefix: filter.prefix ?? new Uint8Array(),
          start: filter.start ?? new Uint8Array(),
          end: filter.end ?? new Uint8Array(),
        },
        invert: filter.invert ?? false,
        keepNone: filter.keepNone ?? false,
        durability: options.durability ?? Durability.DURABLE,
      },
      options,
    );
  }

  /** Commits every pending mutation of the partition; resolves after the fsync. */
  sync(options: ReadOptions = {}): Promise<SyncResponse> {
    return this.unary(MetadataService.method.sync, { partition: options.partition ?? "" }, options);
  }

  /** Removes every key of the partition. */
  clear(options: WriteOptions = {}): Promise<ClearResponse> {
    return this.unary(
      MetadataService.method.clear,
      {
        partition: options.partition ?? "",
        durability: options.durability ?? Durability.DURABLE,
      },
      options,
    );
  }

  /** Applies `mutations` atomically if every precondition holds (FAILED_PRECONDITION otherwise). */
  commit(
    mutations: BatchMutation[],
    preconditions: BatchPrecondition[] = [],
    options: WriteOptions = {},
  ): Promise<CommitResponse> {
    return this.unary(
      MetadataService.method.commit,
      {
        partition: options.partition ?? "",
        mutations: mutations.map(toMutation),
        preconditions: preconditions.map(toPrecondition),
        durability: options.durability ?? Durability.DURABLE,
      },
      options,
    );
  }

  /**
   * A pipelined writer over one Write stream: the cheapest way to send many mutations (see
   * metadata-writer.ts for its ordering, durability and failure promises). Close it when done.
   */
  writer(options: WriterOptions = {}): MetadataWriter {
    return new MetadataWriter(this.client, options);
  }

  /** Names of the partitions that exist. */
  async listPartitions(options: CallOptions = {}): Promise<string[]> {
    const response: ListPartitionsResponse = await this.unary(
      MetadataService.method.listPartitions,
      {},
      options,
    );
    return response.partitions;
  }

  /**
   * Streams committed entries in ascending key order from one snapshot. Breaking out of the loop
   * cancels the stream on the server.
   */
  async *keys(options: KeysOptions = {}): AsyncGenerator<KeyEntry> {
    for await (const chunk of this.keysChunks(options)) yield* entriesOf(chunk);
  }

  /**
   * A whole listing (as `keys()`) with the committed version it was read at: a `watch()` from
   * that version + 1 sees every later change exactly once.
   */
  async keysWithVersion(options: KeysOptions = {}): Promise<{ version: bigint; entries: KeyEntry[] }> {
    let version = 0n;
    const entries: KeyEntry[] = [];
    for await (const chunk of this.keysChunks(options)) {
      version = chunk.version;
      entries.push(...entriesOf(chunk));
    }
    return { version, entries };
  }

  /**
   * Streams the committed changes of a partition, one batch per committed sync that changed a
   * watched key, in version order; waits for a partition that does not exist yet. It never ends
   * by itself: breaking out of the loop cancels it. It throws OUT_OF_RANGE when the server no
   * longer holds `startVersion` or this watcher fell too far behind (resume with a fresh listing;
   * `oldestAvailableVersion(err)`), UNAVAILABLE when the server shuts down (resume from the last
   * version received + 1).
   */
  async *watch(options: WatchOptions = {}): AsyncGenerator<WatchBatch> {
    const method = MetadataService.method.watch;
    const request = create(method.input, {
      partition: options.partition ?? "",
      prefix: options.prefix ?? new Uint8Array(),
      startVersion: options.startVersion ?? 0n,
      includeValues: options.includeValues ?? false,
    });
    for await (const response of this.serverStream(method, request, options)) {
      yield {
        version: response.version,
        events: response.events.map((event) =>
          event.value === undefined ? { key: event.key } : { key: event.key, value: event.value },
        ),
      };
    }
  }

  private async *keysChunks(options: KeysOptions): AsyncGenerator<KeysResponse> {
    const method = MetadataService.method.keys;
    const request = create(method.input, {
      partition: options.partition ?? "",
      prefix: options.prefix ?? new Uint8Array(),
      start: options.start ?? new Uint8Array(),
      end: options.end ?? new Uint8Array(),
      limit: options.limit ?? 0,
      includeValues: options.includeValues ?? false,
    });
    yield* this.serverStream(method, request, options);
  }

  /** The responses of one server-streaming call; the call is cancelled when the caller stops. */
  private async *serverStream<M extends StreamMethod>(
    method: M,
    request: MessageShape<M["input"]>,
    options: CallOptions,
  ): AsyncGenerator<MessageShape<M["output"]>> {
    const call = this.client.makeServerStreamRequest(
      path(method),
      (message: MessageShape<M["input"]>) => Buffer.from(toBinary(method.input, message)),
      (bytes: Buffer) => fromBinary(method.output, bytes),
      request,
      options.metadata ?? new grpc.Metadata(),
      callOptions(options),
    );
    try {
      yield* call as AsyncIterable<MessageShape<M["output"]>>;
    } finally {
      call.cancel();
    }
  }

  private unary<M extends Method>(
    method: M,
    input: MessageInitShape<M["input"]>,
    options: CallOptions,
  ): Promise<MessageShape<M["output"]>> {
    const request = create(method.input, input);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        path(method),
        (message: typeof request) => Buffer.from(toBinary(method.input, message)),
        (bytes: Buffer) => fromBinary(method.output, bytes) as MessageShape<M["output"]>,
        request,
        options.metadata ?? new grpc.Metadata(),
        callOptions(options),
        (err, response) => (err || response === undefined ? reject(err) : resolve(response)),
      );
    });
  }
}

/** The entries of one chunk of a Keys listing (`value` only when values were asked for). */
function entriesOf(chunk: KeysResponse): KeyEntry[] {
  return chunk.keys.map((key, i) => {
    const value = chunk.values[i];
    return value === undefined ? { key } : { key, value };
  });
}

function callOptions(options: CallOptions): grpc.CallOptions {
  return options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
}

function toMutation(mutation: BatchMutation): MessageInitShape<typeof MutationSchema> {
  if ("put" in mutation) return { kind: { case: "put", value: mutation.put } };
  return { kind: { case: "remove", value: mutation.remove } };
}

function toPrecondition(condition: BatchPrecondition): MessageInitShape<typeof PreconditionSchema> {
  if ("absent" in condition) return { key: condition.key, condition: { case: "absent", value: true } };
  if ("present" in condition) return { key: condition.key, condition: { case: "present", value: true } };
  return { key: condition.key, condition: { case: "valueEquals", value: condition.valueEquals } };
}
