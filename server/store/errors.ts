/**
 * StoreError: the one error type thrown by the store and its storage backends.
 *
 * Invariants:
 * - `kind` comes from the closed union `StoreErrorKind`; callers branch on it, never on messages.
 * - Messages are lower-case, name the offending value and the limit, and never contain file
 *   contents. The underlying error, if any, is kept in `cause`.
 * - An error of an input kind (InvalidPartitionName, KeyWidth, EmptyKey, KeyTooLarge,
 *   ValueTooLarge) is thrown before anything changes.
 */

/** Every kind of failure the store reports. */
export type StoreErrorKind =
  /** A partition name with characters outside [A-Za-z0-9_-], or empty. */
  | "InvalidPartitionName"
  /** A key whose length differs from the fixed key width of the store. */
  | "KeyWidth"
  /** An empty key given to a store with variable-length keys. */
  | "EmptyKey"
  /** A key longer than the configured maximum of a variable-length key codec. */
  | "KeyTooLarge"
  /** A value longer than the configured maximum (never more than 2^32 - 1 bytes). */
  | "ValueTooLarge"
  /** The store or service is closed or shutting down. */
  | "Closed"
  /** A sync failed: the mutations it held were not committed. */
  | "SyncFailed"
  /** The store refuses work after a failed sync whose cleanup also failed; reopen it. */
  | "Failed"
  /** A blob header with a wrong magic or runtime version. */
  | "BlobCorrupt"
  /** A blob header with an unexpected application blob version. */
  | "BlobVersionMismatch"
  /** A blob removed that does not exist. */
  | "BlobMissing"
  /** A partition removed or scanned that does not exist. */
  | "PartitionMissing"
  /** A partition holding something that is not a blob. */
  | "PartitionCorrupt"
  /** A blob body whose checksum holds but whose entries cannot be decoded. */
  | "Corrupt"
  /** An invalid configuration. */
  | "InvalidConfig"
  /** The version counter would pass 2^64 - 1. */
  | "VersionOverflow"
  /** An I/O failure of the backend. */
  | "Io";

/** Error thrown by the store and storage backends. */
export class StoreError extends Error {
  override readonly name = "StoreError";

  constructor(
    readonly kind: StoreErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** True when `err` is a StoreError, optionally of the given kind. */
export function isStoreError(err: unknown, kind?: StoreErrorKind): err is StoreError {
  return err instanceof StoreError && (kind === undefined || err.kind === kind);
}

/** Wraps any backend failure as `StoreError("Io")`, keeping StoreErrors as they are. */
export function asIoError(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new StoreError("Io", `i/o error: ${what}: ${detail}`, { cause: err });
}
