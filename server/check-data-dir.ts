/**
 * check-data-dir: the operator's read-only check of a data directory, or of a copy of one (a
 * backup before it is restored): `npm run cli -- check [PARTITION ...] --data-dir DIR [server
 * flags]`. For each partition it says what a server's open would find (store/check.ts): ok,
 * recoverable (one damaged blob), data loss, or corrupt.
 *
 * Invariants:
 * - Nothing is written, created or removed: blob files are only read, whole.
 * - It takes the data directory's lock first (data-dir-lock.ts), so it refuses while a server
 *   uses the directory: a blob being rewritten would read as damaged. Check a copy instead.
 * - Each partition is judged with the key codec the server would use for it (the same key
 *   codec flags as the server's).
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import type { ServerConfig } from "./config.js";
import { DataDirLockedError, lockDataDir } from "./data-dir-lock.js";
import { checkPartition, type PartitionCheck } from "./store/check.js";
import { BLOB_NAMES } from "./store/metadata.js";
import { FilesystemStorage } from "./store/storage/filesystem.js";
import { blobFileName, validatePartitionName } from "./store/storage/storage.js";

/**
 * Checks `partitions` (every partition of the data directory when empty), in name order.
 * @throws Error when a server holds the data directory, or a named partition does not exist
 */
export async function checkDataDir(
  config: ServerConfig,
  partitions: readonly string[],
): Promise<PartitionCheck[]> {
  for (const name of partitions) validatePartitionName(name);
  let lock: Awaited<ReturnType<typeof lockDataDir>>;
  try {
    lock = await lockDataDir(config.dataDir);
  } catch (err) {
    if (err instanceof DataDirLockedError)
      throw new Error(`${err.message}: stop the server, or check a copy`);
    throw err;
  }
  try {
    const existing = await new FilesystemStorage(config.dataDir).listPartitions();
    const missing = partitions.filter((name) => !existing.includes(name));
    if (missing.length > 0) throw new Error(`no partition ${missing.join(", ")} in ${config.dataDir}`);
    const names = partitions.length > 0 ? [...new Set(partitions)].sort() : existing;
    const results: PartitionCheck[] = [];
    for (const partition of names) {
      const directory = join(config.dataDir, partition);
      const [left, right] = await Promise.all(
        BLOB_NAMES.map((name) => readIfPresent(join(directory, blobFileName(name)))),
      );
      const codec = config.keyCodecs.get(partition) ?? config.defaultKeyCodec;
      const check = checkPartition(partition, left, right, codec);
      const blobFiles = new Set(BLOB_NAMES.map((name) => blobFileName(name)));
      const strays = (await readdir(directory)).filter((entry) => !blobFiles.has(entry));
      results.push(
        strays.length === 0
          ? check
          : { ...check, summary: `${check.summary}; other entries left alone: ${strays.sort().join(", ")}` },
      );
    }
    return results;
  } finally {
    await lock.release();
  }
}

async function readIfPresent(path: string): Promise<Uint8Array | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}
