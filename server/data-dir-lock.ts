/**
 * DataDirLock: at most one server process per data directory.
 *
 * Two servers on the same partitions would each alternate between the two blobs on its own, so
 * one could overwrite the blob holding the other's newest acknowledged version: the store's
 * central invariant (a sync never writes the blob with the newest committed version) holds only
 * for a single writer. A second server on a directory in use therefore refuses to start.
 *
 * How: the lock is a listening Unix socket in Linux's abstract namespace, named after a hash of
 * the directory's real path (so a symlink or a relative path names the same lock).
 * - The kernel releases it when the process ends, however it ends: no stale lock after a crash
 *   or a SIGKILL, and a restart takes it at once.
 * - Binding is atomic: of two servers starting together, exactly one gets it.
 * - It creates no file in the data directory.
 *
 * Limits: Linux only (elsewhere `lockDataDir` takes no lock and says so in `DataDirLock.held`);
 * processes in different network namespaces (separate containers sharing a volume) do not see
 * each other's lock; a commonware Rust node using the same storage root takes no lock.
 */
import { createHash } from "node:crypto";
import { mkdir, realpath } from "node:fs/promises";
import { createServer, type Server } from "node:net";

/** A held (or, off Linux, merely requested) data-directory lock. */
export interface DataDirLock {
  /** Real path of the directory. */
  readonly path: string;
  /** False when the platform has no abstract Unix sockets and nothing was locked. */
  readonly held: boolean;
  /** Releases the lock; safe to call twice. */
  release(): Promise<void>;
}

/** Thrown when another process holds the directory. */
export class DataDirLockedError extends Error {
  constructor(readonly path: string) {
    super(`data directory ${path} is in use by another metadata server process`);
    this.name = "DataDirLockedError";
  }
}

/** Socket name of the lock of the directory whose real path is `path`. */
function lockName(path: string): string {
  const digest = createHash("sha256").update(path).digest("hex").slice(0, 40);
  return `\0commonware-metadata/${digest}`;
}

/**
 * Creates `dataDir` if needed and locks it for this process.
 * @throws DataDirLockedError when another process holds it
 */
export async function lockDataDir(dataDir: string): Promise<DataDirLock> {
  await mkdir(dataDir, { recursive: true });
  const path = await realpath(dataDir);
  if (process.platform !== "linux") {
    return { path, held: false, release: async () => undefined };
  }
  const server: Server = createServer((socket) => socket.destroy());
  server.maxConnections = 0;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) =>
      reject(err.code === "EADDRINUSE" ? new DataDirLockedError(path) : err),
    );
    server.listen({ path: lockName(path), exclusive: true }, () => resolve());
  });
  // The lock must not keep the process alive on its own.
  server.unref();
  let released: Promise<void> | undefined;
  return {
    path,
    held: true,
    release: () => {
      released ??= new Promise<void>((resolve) => server.close(() => resolve()));
      return released;
    },
  };
}
