/**
 * Status: the only table from error kinds (the store's and the engine's) to gRPC status codes.
 *
 *   StoreError InvalidPartitionName, KeyWidth, EmptyKey, KeyTooLarge, ValueTooLarge
 *   EngineError InvalidRequest                                   -> INVALID_ARGUMENT
 *   EngineError LimitExceeded                                    -> RESOURCE_EXHAUSTED
 *   EngineError PreconditionFailed                               -> FAILED_PRECONDITION
 *   EngineError OutOfRange (a watch's history is gone)           -> OUT_OF_RANGE
 *   EngineError ShuttingDown, NotCommitted; StoreError Closed,
 *   SyncFailed, Failed                                           -> UNAVAILABLE (not committed)
 *   StoreError DiskFull ("disk full", "etcd out of space"),
 *   FileLimit                                                    -> RESOURCE_EXHAUSTED
 *   StoreError NotWritable (names the path)                      -> UNAVAILABLE
 *   EngineError OutcomeUnknown (a failed sync's bytes may remain)  -> UNKNOWN (may be committed)
 *   StoreError DataLoss, BlobCorrupt, Corrupt                    -> DATA_LOSS
 *   every other StoreError (format, recovery, I/O)               -> INTERNAL, cause logged
 *   AuthError Unauthenticated                                    -> UNAUTHENTICATED
 *   AuthError PermissionDenied                                   -> PERMISSION_DENIED
 *
 * A NotCommitted, SyncFailed or Failed caused by a full disk or the file limit answers
 * RESOURCE_EXHAUSTED instead of UNAVAILABLE; its message still says the write was not committed.
 *
 * Invariants:
 * - Both switches are exhaustive: adding an error kind fails to compile until it is mapped here.
 * - Input and availability errors carry the error's message, which names the value and limit.
 * - UNAVAILABLE messages say that the write was not committed, so a client knows it may retry.
 * - An INTERNAL answer never carries internal details: the error goes to the log with an id,
 *   and the client gets that id. No error leaves as INTERNAL without a logged cause.
 */
import { randomUUID } from "node:crypto";
import { Metadata as GrpcMetadata, type StatusObject, status } from "@grpc/grpc-js";
import { AuthError } from "../auth/access-control.js";
import { EngineError, type EngineErrorKind } from "../engine/errors.js";
import { environmentKindOf, StoreError, type StoreErrorKind } from "../store/errors.js";

/** A grpc-js error answer. */
export type StatusError = Partial<StatusObject> & { code: status; details: string };

/** Logs an internal error under an id. */
export type ErrorLog = (message: string, err: unknown) => void;

function answer(code: status, details: string): StatusError {
  return { code, details, metadata: new GrpcMetadata() };
}

/** Error for a request that is malformed before the engine sees it. */
export function invalidArgument(details: string): StatusError {
  return answer(status.INVALID_ARGUMENT, details);
}

const NOT_COMMITTED = /not committed/;

/** The code of an engine error kind. */
function engineCode(kind: EngineErrorKind): status {
  switch (kind) {
    case "InvalidRequest":
      return status.INVALID_ARGUMENT;
    case "LimitExceeded":
      return status.RESOURCE_EXHAUSTED;
    case "PreconditionFailed":
      return status.FAILED_PRECONDITION;
    case "OutOfRange":
      return status.OUT_OF_RANGE;
    case "ShuttingDown":
    case "NotCommitted":
      return status.UNAVAILABLE;
    case "OutcomeUnknown":
      return status.UNKNOWN;
    default:
      return unmapped(kind);
  }
}

/** The code of a store error kind, or undefined for the kinds answered INTERNAL. */
function storeCode(kind: StoreErrorKind): status | undefined {
  switch (kind) {
    case "InvalidPartitionName":
    case "KeyWidth":
    case "EmptyKey":
    case "KeyTooLarge":
    case "ValueTooLarge":
      return status.INVALID_ARGUMENT;
    case "Closed":
    case "SyncFailed":
    case "Failed":
    case "NotWritable":
      return status.UNAVAILABLE;
    case "DiskFull":
    case "FileLimit":
      return status.RESOURCE_EXHAUSTED;
    case "DataLoss":
    case "BlobCorrupt":
    case "Corrupt":
      return status.DATA_LOSS;
    case "BlobVersionMismatch":
    case "BlobMissing":
    case "PartitionMissing":
    case "PartitionCorrupt":
    case "InvalidConfig":
    case "VersionOverflow":
    case "Io":
      return undefined;
    default:
      return unmapped(kind);
  }
}

/** The code of an authentication or authorization refusal. */
function authCode(kind: AuthError["kind"]): status {
  switch (kind) {
    case "Unauthenticated":
      return status.UNAUTHENTICATED;
    case "PermissionDenied":
      return status.PERMISSION_DENIED;
    default:
      return unmapped(kind);
  }
}

function unmapped(kind: never): never {
  throw new Error(`unmapped error kind ${String(kind)}`);
}

/** Maps any error thrown while serving a call to the status the client gets. */
export function toStatus(err: unknown, log: ErrorLog = defaultLog): StatusError {
  if (err instanceof AuthError) return answer(authCode(err.kind), err.message);
  if (err instanceof EngineError) {
    const code = engineCode(err.kind);
    return answer(
      code === status.UNAVAILABLE && exhausted(err.cause) ? status.RESOURCE_EXHAUSTED : code,
      err.message,
    );
  }
  if (err instanceof StoreError) {
    const code = storeCode(err.kind);
    if (code !== undefined) {
      if (err.kind !== "Closed" && err.kind !== "SyncFailed" && err.kind !== "Failed") {
        return answer(code, err.message);
      }
      const details = NOT_COMMITTED.test(err.message)
        ? err.message
        : `${err.message}: the write was not committed`;
      return answer(exhausted(err.cause) ? status.RESOURCE_EXHAUSTED : code, details);
    }
  }
  const id = randomUUID();
  log(`internal error ${id}`, err);
  return answer(status.INTERNAL, `internal error (id ${id})`);
}

/** True when `cause` comes from a full disk or the file limit. */
function exhausted(cause: unknown): boolean {
  const kind = environmentKindOf(cause);
  return kind === "DiskFull" || kind === "FileLimit";
}

function defaultLog(message: string, err: unknown): void {
  console.error(message, err);
}
