/**
 * A minimal client of the bidirectional Write stream for tests: sends the given requests,
 * half-closes, and resolves with every answer and the stream's final status.
 */
import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  MetadataService,
  type WriteRequestSchema,
  type WriteResponse,
} from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";

const METHOD = MetadataService.method.write;
const PATH = `/${MetadataService.typeName}/${METHOD.name}`;

/** What a Write stream answered. */
export interface WriteStreamResult {
  /** Answers by request id: the status code name of each. */
  answers: Map<bigint, string>;
  /** Final status of the stream, as a code name. */
  status: string;
  details: string;
}

/** An open Write stream on `client`; `send` more, then `finish()` to half-close and collect. */
export function openWriteStream(
  client: grpc.Client,
  metadata: grpc.Metadata = new grpc.Metadata(),
  deadlineMs = 10_000,
): {
  send(request: MessageInitShape<typeof WriteRequestSchema>): void;
  /** Resolves with the first answer to arrive. */
  nextAnswer(): Promise<WriteResponse>;
  finish(): Promise<WriteStreamResult>;
} {
  const call = client.makeBidiStreamRequest(
    PATH,
    (message: MessageInitShape<typeof WriteRequestSchema>) =>
      Buffer.from(toBinary(METHOD.input, create(METHOD.input, message))),
    (bytes: Buffer) => fromBinary(METHOD.output, bytes),
    metadata,
    { deadline: Date.now() + deadlineMs },
  );
  const answers = new Map<bigint, string>();
  const waiting: ((answer: WriteResponse) => void)[] = [];
  const queued: WriteResponse[] = [];
  call.on("data", (answer: WriteResponse) => {
    answers.set(answer.id, grpc.status[answer.status?.code ?? 0] ?? String(answer.status?.code));
    const wake = waiting.shift();
    if (wake === undefined) queued.push(answer);
    else wake(answer);
  });
  const ended = new Promise<{ status: string; details: string }>((resolve) => {
    call.on("status", (s: grpc.StatusObject) =>
      resolve({ status: grpc.status[s.code] ?? String(s.code), details: s.details }),
    );
  });
  // Errors are reported through "status" too.
  call.on("error", () => {});
  return {
    send: (request) => {
      call.write(request);
    },
    nextAnswer: () => {
      const answer = queued.shift();
      return answer !== undefined ? Promise.resolve(answer) : new Promise((resolve) => waiting.push(resolve));
    },
    finish: async () => {
      call.end();
      const { status, details } = await ended;
      return { answers, status, details };
    },
  };
}
