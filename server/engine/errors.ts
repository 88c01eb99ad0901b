/**
 * EngineError: the errors of the engine layer (limits, preconditions, availability), beside the
 * store's own `StoreError` (input, format and I/O errors of one store).
 *
 * Invariants:
 * - `kind` comes from the closed union `EngineErrorKind`; callers branch on it, never on messages.
 * - Messages are lower-case, name the value and the limit, and never echo unbounded input.
 * - `NotCommitted` and `ShuttingDown` always mean that the write was not committed (the client
 *   may retry it); their messages say so.
 * - `OutcomeUnknown` is the only failure of a write that may still be committed (after a
 *   restart); its message says so, and it is never mapped to a status a client retries blindly.
 */

/** Every kind of failure the engine itself reports. */
export type EngineErrorKind =
  /** A request whose shape is invalid (e.g. a batch mutation with neither put nor remove). */
  | "InvalidRequest"
  /** A configured limit was exceeded (queue, batch, stream). */
  | "LimitExceeded"
  /** A precondition of a batch did not hold when it was applied. */
  | "PreconditionFailed"
  /** The server is shutting down: the write was not committed. */
  | "ShuttingDown"
  /** A sync failed, or the partition is reopening after one: the write was not committed. */
  | "NotCommitted"
  /**
   * A sync failed and its bytes could not be discarded from the storage (its cleanup and the
   * reopen after it failed too): the write may appear after a restart.
   */
  | "OutcomeUnknown"
  /**
   * A watch asked for (or fell behind to) changes the history no longer holds; the error is an
   * `OutOfRangeError` naming the oldest version still available.
   */
  | "OutOfRange";

/** Error thrown (or rejected with) by the engine. */
export class EngineError extends Error {
  override readonly name = "EngineError";

  constructor(
    readonly kind: EngineErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/**
 * A watch cannot go on without a gap: the changes from its next version on are no longer held.
 * `oldestVersion` is the oldest version a new watch can start from.
 */
export class OutOfRangeError extends EngineError {
  constructor(
    message: string,
    readonly oldestVersion: bigint,
  ) {
    super("OutOfRange", message);
  }
}

/** True when `err` is an EngineError, optionally of the given kind. */
export function isEngineError(err: unknown, kind?: EngineErrorKind): err is EngineError {
  return err instanceof EngineError && (kind === undefined || err.kind === kind);
}
