/**
 * The Write stream: many Put, Remove and Commit requests over one bidirectional gRPC stream, each
 * answered once with the client's id and its own status, through the same engine calls as the
 * unary RPCs.
 *
 * Invariants:
 * - Requests are handed to the engine in the order they are read, each in the turn it is read,
 *   so one stream's mutations of a partition are applied in the order sent.
 * - Each request read is answered exactly once, as soon as its own outcome is known (a refusal
 *   does not wait for an earlier request's fsync), unless the stream ends first.
 * - Each request is authorized on its own partition (`authorize`) before the engine sees it; a
 *   refused one is answered with its status (PERMISSION_DENIED, UNAUTHENTICATED) like any failed
 *   request.
 * - A failed request never ends the stream. The stream ends with OK after the client half-closes
 *   and every request read has been answered; with UNAVAILABLE after a shutdown began and every
 *   request read has been answered; at once when the client cancels.
 * - Bounded memory: the stream stops reading (so HTTP/2 flow control holds the client back) while
 *   it holds `maxInFlight` requests or `maxInFlightBytes` key and value bytes not yet answered,
 *   or while answers wait for the client to read them (the transport's write buffer is full).
 *   One stream thus holds at most about those bounds, however the client behaves.
 */
import { create } from "@bufbuild/protobuf";
import { type ServerDuplexStream, status } from "@grpc/grpc-js";
import {
  type WriteRequest,
  type WriteResponse,
  WriteResponseSchema,
} from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { StatusSchema } from "../../clients/ts/gen/google/rpc/status_pb.js";
import type { Engine } from "../engine/operations.js";
import { MalformedRequest } from "./service-definition.js";
import { type ErrorLog, invalidArgument, toStatus } from "./status.js";
import {
  commitInput,
  commitResponse,
  putInput,
  putResponse,
  removeInput,
  removeResponse,
} from "./translate.js";

/** Limits of one Write stream (defaults and units: server/config.ts). */
export interface WriteStreamOptions {
  /** Most requests read and not yet answered on one stream. */
  maxInFlight: number;
  /** Most key and value bytes of requests read and not yet answered on one stream. */
  maxInFlightBytes: number;
  /** The streams open now, so that a shutdown can end them once their answers are out. */
  open: Set<WriteStreamHandle>;
}

/** What a shutdown needs of an open stream. */
export interface WriteStreamHandle {
  /** Stops reading; ends the stream with UNAVAILABLE once every request read is answered. */
  shutdown(): void;
}

type Call = ServerDuplexStream<WriteRequest, WriteResponse>;

const OK_STATUS = create(StatusSchema, { code: status.OK, message: "" });

/** Key and value bytes a request carries (what an unanswered request holds in memory). */
function requestBytes(request: WriteRequest): number {
  const body = request.request;
  switch (body.case) {
    case "put":
      return body.value.key.length + body.value.value.length;
    case "remove":
      return body.value.key.length;
    case "commit": {
      let bytes = 0;
      for (const mutation of body.value.mutations) {
        const kind = mutation.kind;
        if (kind.case === "put") bytes += kind.value.key.length + kind.value.value.length;
        else if (kind.case === "remove") bytes += kind.value.key.length;
      }
      for (const condition of body.value.preconditions) {
        bytes += condition.key.length;
        if (condition.condition.case === "valueEquals") bytes += condition.condition.value.length;
      }
      return bytes;
    }
    default:
      return 0;
  }
}

/** Throws (an AuthError) unless the caller may write to `partition` (as named in the request). */
export type WriteAuthorizer = (partition: string) => void;

/** Hands one request to the engine; resolves with its answer (never rejects). */
function execute(
  engine: Engine,
  request: WriteRequest,
  log: ErrorLog,
  authorize: WriteAuthorizer,
): Promise<WriteResponse> {
  const id = request.id;
  const failed = (err: unknown): WriteResponse => {
    const { code, details } = toStatus(err, log);
    return create(WriteResponseSchema, { id, status: create(StatusSchema, { code, message: details }) });
  };
  try {
    const body = request.request;
    if (body.case !== undefined) authorize(body.value.partition);
    switch (body.case) {
      case "put":
        return engine.put(putInput(body.value)).then(
          (result) =>
            create(WriteResponseSchema, {
              id,
              status: OK_STATUS,
              response: { case: "put", value: putResponse(result) },
            }),
          failed,
        );
      case "remove":
        return engine.remove(removeInput(body.value)).then(
          (result) =>
            create(WriteResponseSchema, {
              id,
              status: OK_STATUS,
              response: { case: "remove", value: removeResponse(result) },
            }),
          failed,
        );
      case "commit":
        return engine.commit(commitInput(body.value)).then(
          (result) =>
            create(WriteResponseSchema, {
              id,
              status: OK_STATUS,
              response: { case: "commit", value: commitResponse(result) },
            }),
          failed,
        );
      default: {
        const { code, details } = invalidArgument(`request ${id} has neither put, remove nor commit`);
        return Promise.resolve(
          create(WriteResponseSchema, { id, status: create(StatusSchema, { code, message: details }) }),
        );
      }
    }
  } catch (err) {
    return Promise.resolve(failed(err));
  }
}

/** Serves one Write stream until it ends; see the module comment. */
export function serveWriteStream(
  engine: Engine,
  call: Call,
  options: WriteStreamOptions,
  log: ErrorLog,
  authorize: WriteAuthorizer = () => {},
): void {
  let unanswered = 0;
  let unansweredBytes = 0;
  /** Answers wait for the client to read (the transport's buffer is full). */
  let awaitingDrain = false;
  let paused = false;
  let halfClosed = false;
  /** Set when no further answer may be written: the status was sent or the call is gone. */
  let finished = false;
  /** The status to end with once every request read is answered (besides OK on half-close). */
  let endWith: { code: status; details: string } | undefined;

  const handle: WriteStreamHandle = {
    shutdown() {
      if (endWith === undefined) {
        endWith = { code: status.UNAVAILABLE, details: "server is shutting down" };
      }
      settle();
    },
  };
  options.open.add(handle);

  const finish = (): void => {
    finished = true;
    options.open.delete(handle);
  };

  /** Ends the stream when it can, and pauses or resumes reading per the bounds. */
  const settle = (): void => {
    if (finished) return;
    if (unanswered === 0 && (halfClosed || endWith !== undefined)) {
      finish();
      if (endWith === undefined) call.end();
      else call.emit("error", { code: endWith.code, details: endWith.details });
      return;
    }
    const hold =
      endWith !== undefined ||
      awaitingDrain ||
      unanswered >= options.maxInFlight ||
      unansweredBytes >= options.maxInFlightBytes;
    if (hold && !paused) {
      paused = true;
      call.pause();
    } else if (!hold && paused) {
      paused = false;
      call.resume();
    }
  };

  call.on("data", (request: WriteRequest | MalformedRequest) => {
    if (finished || endWith !== undefined) return;
    if (request instanceof MalformedRequest) {
      // Its id cannot be read: answer what is pending, then end the stream with the reason.
      endWith = { code: status.INVALID_ARGUMENT, details: `malformed request: ${request.reason}` };
      settle();
      return;
    }
    const bytes = requestBytes(request);
    unanswered++;
    unansweredBytes += bytes;
    void execute(engine, request, log, authorize).then((response) => {
      unanswered--;
      unansweredBytes -= bytes;
      if (!finished && !call.cancelled && !call.write(response)) awaitingDrain = true;
      settle();
    });
    settle();
  });

  call.on("drain", () => {
    awaitingDrain = false;
    settle();
  });

  call.on("end", () => {
    halfClosed = true;
    settle();
  });

  call.on("cancelled", finish);
  call.on("error", finish);
  call.on("close", finish);
}
