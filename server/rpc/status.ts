/**
 * Status: the only table from store errors to gRPC status codes.
 *
 *   InvalidPartitionName, KeyWidth, EmptyKey, KeyTooLarge, ValueTooLarge -> INVALID_ARGUMENT
 *   LimitExceeded                                                         -> RESOURCE_EXHAUSTED
 *   PreconditionFailed                                                    -> FAILED_PRECONDITION
 *   Closed, SyncFailed, Failed                                            -> UNAVAILABLE
 *   anything else                                                         -> INTERNAL
 *
 * Invariants:
 * - Input and availability errors carry the store's message, which names the value and limit.
 * - UNAVAILABLE messages say that the write was not committed, so a client knows it may retry.
 * - An INTERNAL answer never carries internal details: the error goes to the log with an id,
 *   and the client gets that id.
 */
import { randomUUID } from "node:crypto";
import { Metadata as GrpcMetadata, type StatusObject, status } from "@grpc/grpc-js";
import { StoreError } from "../store/errors.js";

/** A grpc-js error answer. */
export type StatusError = Partial<StatusObject> & { code: status; details: string };

/** Error for a request that is malformed before the store sees it. */
export function invalidArgument(details: string): StatusError {
  return { code: status.INVALID_ARGUMENT, details, metadata: new GrpcMetadata() };
}

/** Maps any error thrown while serving a call to the status the client gets. */
export function toStatus(
  err: unknown,
  log: (message: string, err: unknown) => void = defaultLog,
): StatusError {
  if (err instanceof StoreError) {
    switch (err.kind) {
      case "InvalidPartitionName":
      case "KeyWidth":
      case "EmptyKey":
      case "KeyTooLarge":
      case "ValueTooLarge":
        return { code: status.INVALID_ARGUMENT, details: err.message, metadata: new GrpcMetadata() };
      case "LimitExceeded":
        return { code: status.RESOURCE_EXHAUSTED, details: err.message, metadata: new GrpcMetadata() };
      case "PreconditionFailed":
        return { code: status.FAILED_PRECONDITION, details: err.message, metadata: new GrpcMetadata() };
      case "Closed":
      case "Failed":
        return {
          code: status.UNAVAILABLE,
          details: `${err.message}: the write was not committed`,
          metadata: new GrpcMetadata(),
        };
      case "SyncFailed":
        // Its message already says that the write was not committed.
        return { code: status.UNAVAILABLE, details: err.message, metadata: new GrpcMetadata() };
      default:
        break;
    }
  }
  const id = randomUUID();
  log(`internal error ${id}`, err);
  return { code: status.INTERNAL, details: `internal error (id ${id})`, metadata: new GrpcMetadata() };
}

function defaultLog(message: string, err: unknown): void {
  console.error(message, err);
}
