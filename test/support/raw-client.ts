/**
 * RawClient: MetadataService over plain grpc-js with the generated schemas, for what the
 * hand-written client cannot send or does not show: a Commit mutation without a kind, a
 * precondition without a condition, the chunks of a Keys stream with their versions, a Watch
 * cancelled while it waits for its first message.
 *
 * Usage:
 *   const raw = new RawClient(address);
 *   await raw.unary(MetadataService.method.commit, { mutations: [{}] });
 *   for await (const chunk of raw.keys({ includeValues: true })) ...
 *   raw.close();
 */
import { create, fromBinary, type MessageInitShape, type MessageShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  type KeysRequestSchema,
  type KeysResponse,
  MetadataService,
  type WatchRequestSchema,
  type WatchResponse,
} from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";

type Method = (typeof MetadataService.method)[keyof typeof MetadataService.method];
type StreamMethod = typeof MetadataService.method.keys | typeof MetadataService.method.watch;

function path(method: Method): string {
  return `/${MetadataService.typeName}/${method.name}`;
}

/** See the module comment. */
export class RawClient {
  readonly client: grpc.Client;

  constructor(address: string) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure());
  }

  /** Closes the channel. */
  close(): void {
    this.client.close();
  }

  /** One unary call of `method` with the request built from `input`; rejects with a ServiceError. */
  unary<M extends Method>(
    method: M,
    input: MessageInitShape<M["input"]>,
  ): Promise<MessageShape<M["output"]>> {
    const request = create(method.input, input);
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        path(method),
        (message: typeof request) => Buffer.from(toBinary(method.input, message)),
        (bytes: Buffer) => fromBinary(method.output, bytes) as MessageShape<M["output"]>,
        request,
        new grpc.Metadata(),
        {},
        (err, response) => (err || response === undefined ? reject(err) : resolve(response)),
      );
    });
  }

  /** The Keys stream itself: one KeysResponse per chunk the server sent. Cancel it to stop early. */
  keys(input: MessageInitShape<typeof KeysRequestSchema>): grpc.ClientReadableStream<KeysResponse> {
    return this.serverStream(MetadataService.method.keys, input);
  }

  /** The Watch stream itself; cancel it to end the watch (at once, whether a message is due or not). */
  watch(input: MessageInitShape<typeof WatchRequestSchema>): grpc.ClientReadableStream<WatchResponse> {
    return this.serverStream(MetadataService.method.watch, input);
  }

  /** A server-streaming call of `method` with the request `input`. */
  private serverStream<M extends StreamMethod>(
    method: M,
    input: MessageInitShape<M["input"]>,
  ): grpc.ClientReadableStream<MessageShape<M["output"]>> {
    const request = create(method.input, input) as MessageShape<M["input"]>;
    return this.client.makeServerStreamRequest(
      path(method),
      (message: MessageShape<M["input"]>) => Buffer.from(toBinary(method.input, message)),
      (bytes: Buffer) => fromBinary(method.output, bytes) as MessageShape<M["output"]>,
      request,
      new grpc.Metadata(),
      {},
    );
  }

  /** Every chunk of a Keys listing, in order. */
  async keyChunks(input: MessageInitShape<typeof KeysRequestSchema>): Promise<KeysResponse[]> {
    const chunks: KeysResponse[] = [];
    for await (const chunk of this.keys(input) as AsyncIterable<KeysResponse>) chunks.push(chunk);
    return chunks;
  }
}
