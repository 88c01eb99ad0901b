/**
 * MetadataWriter: a pipelined writer over one Write stream. Each `put`, `remove` and `commit`
 * returns a promise settled by the server's answer to that request; up to `window` requests are
 * in flight at once, and more wait in the writer until an answer frees a slot.
 *
 * Promises the server keeps (see the proto's Write):
 * - Requests are applied in the order they are called, so the versions of their answers never
 *   decrease in that order. Answers may arrive out of order; each settles its own promise.
 * - A durable request resolves after the fsync of the sync that holds it, with its version.
 * - A failed request rejects with a `ServiceError` (`code`, `details`) and the stream goes on.
 * - If the stream itself ends first (server shutdown, broken connection, `cancel()`), every
 *   request not yet answered rejects with the stream's error: its outcome is unknown (it may or
 *   may not have been committed), as for a unary call whose deadline passed.
 *
 * Usage:
 *   const writer = client.writer({ window: 256 });
 *   const answers = keys.map((key) => writer.put(key, value));
 *   await Promise.all(answers);   // every put durable
 *   await writer.close();         // half-close, then wait for the stream's end
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type CommitResponse,
  Durability,
  MetadataService,
  type PutResponse,
  type RemoveResponse,
  type WriteRequest,
  WriteRequestSchema,
  type WriteResponse,
} from "./gen/commonware/metadata/v1/metadata_pb.js";

/** Options of one request of a writer. */
export interface WriterRequestOptions {
  /** Partition; the writer's default (else the server's) when absent. */
  partition?: string;
  /** DURABLE (default): answered after the fsync; BUFFERED: answered once applied. */
  durability?: Durability;
}

/** Options of `client.writer()`. */
export interface WriterOptions extends WriterRequestOptions {
  /** Most requests sent and not yet answered (default 256). */
  window?: number;
  /** Extra metadata of the stream. */
  metadata?: grpc.Metadata;
  /** Deadline of the whole stream, relative to now, in milliseconds (none by default). */
  deadlineMs?: number;
}

/** A put or remove of a batch, as `MetadataClient.commit` takes it. */
export type WriterMutation =
  | { put: { key: Uint8Array; value: Uint8Array } }
  | { remove: { key: Uint8Array } };

/** A precondition of a batch, as `MetadataClient.commit` takes it. */
export type WriterPrecondition =
  | { key: Uint8Array; absent: true }
  | { key: Uint8Array; present: true }
  | { key: Uint8Array; valueEquals: Uint8Array };

interface Pending {
  request: WriteRequest;
  resolve(response: WriteResponse): void;
  reject(err: grpc.ServiceError): void;
}

const method = MetadataService.method.write;
const PATH = `/${MetadataService.typeName}/${method.name}`;

function serviceError(code: grpc.status, details: string, metadata = new grpc.Metadata()): grpc.ServiceError {
  const error = new Error(`${code} ${grpc.status[code] ?? ""}: ${details}`) as grpc.ServiceError;
  error.code = code;
  error.details = details;
  error.metadata = metadata;
  return error;
}

/** See the module comment. Build it with `MetadataClient.writer()`. */
export class MetadataWriter {
  private readonly call: grpc.ClientDuplexStream<WriteRequest, WriteResponse>;
  private readonly window: number;
  private readonly defaults: WriterRequestOptions;
  /** Requests sent and not yet answered, by id. */
  private readonly inFlight = new Map<bigint, Pending>();
  /** Requests waiting for a slot in the window, in call order. */
  private readonly waiting: Pending[] = [];
  private nextId = 1n;
  /** The transport's write buffer is full: send more only after "drain". */
  private blocked = false;
  private closing = false;
  /** The stream's end: undefined while it is open. */
  private ended: grpc.ServiceError | null | undefined;
  private readonly done: Promise<void>;

  /** @internal Use `MetadataClient.writer()`. */
  constructor(client: grpc.Client, options: WriterOptions = {}) {
    this.window = Math.max(1, options.window ?? 256);
    this.defaults = {
      ...(options.partition === undefined ? {} : { partition: options.partition }),
      ...(options.durability === undefined ? {} : { durability: options.durability }),
    };
    this.call = client.makeBidiStreamRequest(
      PATH,
      (message: WriteRequest) => Buffer.from(toBinary(method.input, message)),
      (bytes: Buffer) => fromBinary(method.output, bytes),
      options.metadata ?? new grpc.Metadata(),
      options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs },
    );
    this.done = new Promise<void>((resolve, reject) => {
      this.call.on("data", (response: WriteResponse) => this.answer(response));
      this.call.on("drain", () => {
        this.blocked = false;
        this.pump();
      });
      this.call.on("error", (err: grpc.ServiceError) => {
        this.end(err);
        reject(err);
      });
      this.call.on("status", (status: grpc.StatusObject) => {
        if (status.code === grpc.status.OK) {
          this.end(null);
          resolve();
        }
      });
    });
    // A caller that never awaits close() must not see an unhandled rejection.
    this.done.catch(() => undefined);
  }

  /** True once the stream has ended (closed, cancelled or broken): later requests fail at once. */
  get streamEnded(): boolean {
    return this.ended !== undefined;
  }

  /** Requests sent or waiting, not yet answered. */
  get pending(): number {
    return this.inFlight.size + this.waiting.length;
  }

  /** Stores `value` under `key`; resolves with the answer to this request. */
  async put(key: Uint8Array, value: Uint8Array, options: WriterRequestOptions = {}): Promise<PutResponse> {
    const response = await this.send({
      case: "put",
      value: { partition: this.partitionOf(options), key, value, durability: this.durabilityOf(options) },
    });
    return response.response.value as PutResponse;
  }

  /** Removes `key`; resolves with the answer to this request. */
  async remove(key: Uint8Array, options: WriterRequestOptions = {}): Promise<RemoveResponse> {
    const response = await this.send({
      case: "remove",
      value: { partition: this.partitionOf(options), key, durability: this.durabilityOf(options) },
    });
    return response.response.value as RemoveResponse;
  }

  /** Applies a batch atomically if every precondition holds (as `MetadataClient.commit`). */
  async commit(
    mutations: WriterMutation[],
    preconditions: WriterPrecondition[] = [],
    options: WriterRequestOptions = {},
  ): Promise<CommitResponse> {
    const response = await this.send({
      case: "commit",
      value: {
        partition: this.partitionOf(options),
        mutations: mutations.map((mutation) =>
          "put" in mutation
            ? { kind: { case: "put" as const, value: mutation.put } }
            : { kind: { case: "remove" as const, value: mutation.remove } },
        ),
        preconditions: preconditions.map((condition) => {
          if ("absent" in condition)
            return { key: condition.key, condition: { case: "absent" as const, value: true } };
          if ("present" in condition)
            return { key: condition.key, condition: { case: "present" as const, value: true } };
          return {
            key: condition.key,
            condition: { case: "valueEquals" as const, value: condition.valueEquals },
          };
        }),
        durability: this.durabilityOf(options),
      },
    });
    return response.response.value as CommitResponse;
  }

  /**
   * Sends what waits, half-closes the stream and resolves once every request is answered and the
   * server ended the stream with OK; rejects with the stream's error otherwise.
   */
  close(): Promise<void> {
    this.closing = true;
    this.pump();
    return this.done;
  }

  /** Cancels the stream: every request not yet answered rejects (outcome unknown). */
  cancel(): void {
    this.call.cancel();
  }

  private partitionOf(options: WriterRequestOptions): string {
    return options.partition ?? this.defaults.partition ?? "";
  }

  private durabilityOf(options: WriterRequestOptions): Durability {
    return options.durability ?? this.defaults.durability ?? Durability.DURABLE;
  }

  private send(body: MessageInitShape<typeof WriteRequestSchema>["request"]): Promise<WriteResponse> {
    if (this.ended !== undefined) {
      return Promise.reject(
        this.ended ?? serviceError(grpc.status.FAILED_PRECONDITION, "the writer is closed"),
      );
    }
    if (this.closing)
      return Promise.reject(serviceError(grpc.status.FAILED_PRECONDITION, "the writer is closing"));
    const request = create(WriteRequestSchema, {
      id: this.nextId++,
      ...(body === undefined ? {} : { request: body }),
    });
    return new Promise<WriteResponse>((resolve, reject) => {
      this.waiting.push({ request, resolve, reject });
      this.pump();
    });
  }

  /** Sends waiting requests while the window and the transport allow; half-closes when asked. */
  private pump(): void {
    if (this.ended !== undefined) return;
    while (!this.blocked && this.waiting.length > 0 && this.inFlight.size < this.window) {
      const next = this.waiting.shift() as Pending;
      this.inFlight.set(next.request.id, next);
      if (!this.call.write(next.request)) this.blocked = true;
    }
    if (this.closing && this.waiting.length === 0) {
      this.closing = false;
      this.call.end();
    }
  }

  private answer(response: WriteResponse): void {
    const pending = this.inFlight.get(response.id);
    if (pending === undefined) return;
    this.inFlight.delete(response.id);
    const code = response.status?.code ?? grpc.status.OK;
    if (code === grpc.status.OK) pending.resolve(response);
    else pending.reject(serviceError(code, response.status?.message ?? ""));
    this.pump();
  }

  /** The stream ended: whatever was not answered has an unknown outcome. */
  private end(err: grpc.ServiceError | null): void {
    if (this.ended !== undefined) return;
    this.ended = err;
    const reason =
      err === null
        ? serviceError(
            grpc.status.UNAVAILABLE,
            "the stream ended before this request was answered: outcome unknown",
          )
        : serviceError(err.code, `${err.details}: outcome unknown`, err.metadata);
    for (const pending of this.inFlight.values()) pending.reject(reason);
    this.inFlight.clear();
    const unsent = serviceError(
      err?.code ?? grpc.status.UNAVAILABLE,
      "the stream ended before this request was sent: not committed",
    );
    for (const pending of this.waiting.splice(0)) pending.reject(unsent);
  }
}
