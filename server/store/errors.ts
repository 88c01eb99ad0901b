/**
 * StoreError: the one error type thrown by the store and its storage backends.
 *
 * Invariants:
 * - `kind` comes from the closed union `StoreErrorKind`; callers branch on it, never on messages.
 * - Messages are lower-case, name the offending value and the limit, and never contain file
 *   contents. The underlying error, if any, is kept in `cause`.
 * - An error of an input kind (InvalidPartitionName, KeyWidth, EmptyKey, KeyTooLarge,
 *   ValueTooLarge) is thrown before anything changes.
 * - Request content (names, keys) appears in messages only through `preview`, so no message,
 *   and no log line built from one, grows with the request.
 * - A backend failure whose errno says what the environment lacks is classified once, here
 *   (`asIoError`): DiskFull (ENOSPC, EDQUOT), FileLimit (EMFILE, ENFILE), NotWritable (EROFS,
 *   EACCES, EPERM); any other errno is Io. The message keeps the errno text, which names the path.
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
  /**
   * Both blobs of a partition failed validation although one of them held data: the partition
   * is not served until an operator accepts the loss (nothing on disk was changed).
   */
  | "DataLoss"
  /** The filesystem is full (ENOSPC, EDQUOT), or etcd is out of space (storage/etcd.ts). */
  | "DiskFull"
  /** The process or system ran out of file descriptors (EMFILE, ENFILE). */
  | "FileLimit"
  /** The data directory cannot be written (EROFS, EACCES, EPERM). */
  | "NotWritable"
  /** An I/O failure of the backend. */
  | "Io";

/** The kinds that say which resource of the environment an I/O failure lacked. */
export type EnvironmentErrorKind = "DiskFull" | "FileLimit" | "NotWritable";

/** Error thrown by the store and storage backends. */
export class StoreError extends Error {
  override readonly name = "StoreError";

  /**
   * On a failed `Blob.sync`: the backend guarantees that none of that sync's writes can ever
   * become durable (it refused them whole, or fenced them off). A failed sync without it may
   * have made any of them durable, as a failed fsync may.
   */
  readonly voided: boolean;

  constructor(
    readonly kind: StoreErrorKind,
    message: string,
    options?: { cause?: unknown; voided?: boolean },
  ) {
    super(message, options);
    this.voided = options?.voided === true;
  }
}

/** True when `err` is a StoreError, optionally of the given kind. */
export function isStoreError(err: unknown, kind?: StoreErrorKind): err is StoreError {
  return err instanceof StoreError && (kind === undefined || err.kind === kind);
}

const ERRNO_KINDS: Readonly<Record<string, EnvironmentErrorKind>> = {
  ENOSPC: "DiskFull",
  EDQUOT: "DiskFull",
  EMFILE: "FileLimit",
  ENFILE: "FileLimit",
  EROFS: "NotWritable",
  EACCES: "NotWritable",
  EPERM: "NotWritable",
};

const ENVIRONMENT_PREFIX: Readonly<Record<EnvironmentErrorKind, string>> = {
  DiskFull: "disk full",
  FileLimit: "too many open files",
  NotWritable: "data directory not writable",
};

/** The errno code (`ENOSPC`, ...) of `err`, if it is a system error. */
export function errnoOf(err: unknown): string | undefined {
  const code = typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === "string" ? code : undefined;
}

/**
 * Wraps any backend failure as a StoreError, keeping StoreErrors as they are: DiskFull,
 * FileLimit or NotWritable when its errno says so (see the module comment), else Io.
 */
export function asIoError(err: unknown, what: string): StoreError {
  if (err instanceof StoreError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  const code = errnoOf(err);
  const kind = code === undefined ? undefined : ERRNO_KINDS[code];
  if (kind !== undefined) {
    return new StoreError(kind, `${ENVIRONMENT_PREFIX[kind]}: ${what}: ${detail}`, { cause: err });
  }
  return new StoreError("Io", `i/o error: ${what}: ${detail}`, { cause: err });
}

/**
 * The environment kind behind `err`: its own kind, or that of the first StoreError in its cause
 * chain (a SyncFailed caused by ENOSPC is DiskFull). Undefined for anything else.
 */
export function environmentKindOf(err: unknown): EnvironmentErrorKind | undefined {
  let current: unknown = err;
  for (let depth = 0; depth < 8 && current !== undefined && current !== null; depth++) {
    if (current instanceof StoreError) {
      if (current.kind === "DiskFull" || current.kind === "FileLimit" || current.kind === "NotWritable") {
        return current.kind;
      }
    } else {
      const code = errnoOf(current);
      const kind = code === undefined ? undefined : ERRNO_KINDS[code];
      if (kind !== undefined) return kind;
    }
    current = current instanceof Error ? current.cause : undefined;
  }
  return undefined;
}

/** Longest preview of request content in a message or log line, in characters. */
export const PREVIEW_MAX_CHARS = 64;

/**
 * `text` quoted for a message, cut to PREVIEW_MAX_CHARS characters with its full length named
 * when longer: a request can never make a message (or a log line) large.
 */
export function preview(text: string, maxChars = PREVIEW_MAX_CHARS): string {
  if (text.length <= maxChars) return JSON.stringify(text);
  return `${JSON.stringify(text.slice(0, maxChars))}... (${text.length} characters)`;
}

/** Hex of `bytes` for a message, cut like `preview` (the full length named in bytes). */
export function previewHex(bytes: Uint8Array, maxBytes = PREVIEW_MAX_CHARS / 2): string {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer.length <= maxBytes) return buffer.toString("hex");
  return `${buffer.subarray(0, maxBytes).toString("hex")}... (${buffer.length} bytes)`;
}
