/**
 * Quarantine: where recovery keeps the bytes of a blob before cutting it, on the filesystem.
 *
 * Layout: `<data-dir>/.quarantine/<partition>/<blob file>.<reason>.<version>.<time>.<random>`,
 * for example `.quarantine/default/7269676874.checksum_mismatch.v7.20261130T123456Z.3f9a1c2e`,
 * each an exact copy of the blob file (header included) as it was before recovery cut it.
 *
 * Invariants:
 * - The quarantine lies outside every partition directory (".quarantine" is not a valid
 *   partition name), so a partition's directory holds exactly the files the crate writes.
 * - A copy never replaces another: names carry the time and a random suffix, and the copy is
 *   made with COPYFILE_EXCL. Several quarantines of the same blob all stay.
 * - The copy and its directories are fsynced before `quarantine` resolves, so the blob is cut
 *   only once its bytes are durable elsewhere. Any failure rejects, and recovery then cuts nothing.
 * - Nothing here ever deletes a file: clearing the quarantine is the operator's decision.
 */
import { randomBytes } from "node:crypto";
import { constants, copyFile, mkdir, open } from "node:fs/promises";
import { join } from "node:path";
import { asIoError } from "./errors.js";
import type { DiscardedBlob } from "./metadata.js";

/** Name of the quarantine directory inside the data directory. */
export const QUARANTINE_DIRECTORY = ".quarantine";

/**
 * A `MetadataConfig.quarantine` for a FilesystemStorage rooted at `root`: copies the blob's file
 * into `<root>/.quarantine/<partition>/` and resolves with the copy's path relative to `root`.
 * @throws StoreError Io, DiskFull, FileLimit, NotWritable
 */
export function createFileQuarantine(root: string): (discarded: DiscardedBlob) => Promise<string> {
  return async (discarded) => {
    const top = join(root, QUARANTINE_DIRECTORY);
    const directory = join(top, discarded.partition);
    const stamp = new Date()
      .toISOString()
      .replace(/[-:]/g, "")
      .replace(/\.\d+Z$/, "Z");
    const version = discarded.claimedVersion === undefined ? "vunknown" : `v${discarded.claimedVersion}`;
    const name = `${discarded.fileName}.${discarded.reason}.${version}.${stamp}.${randomBytes(4).toString("hex")}`;
    const relative = join(QUARANTINE_DIRECTORY, discarded.partition, name);
    try {
      const createdTop = await makeDirectory(top);
      const createdPartition = await makeDirectory(directory);
      const target = join(directory, name);
      await copyFile(join(root, discarded.partition, discarded.fileName), target, constants.COPYFILE_EXCL);
      await syncPath(target);
      await syncPath(directory);
      if (createdPartition) await syncPath(top);
      if (createdTop) await syncPath(root);
    } catch (err) {
      throw asIoError(err, `quarantine ${discarded.partition}/${discarded.fileName} to ${relative}`);
    }
    return relative;
  };
}

/** Creates one directory level; true when it was created, false when it existed. */
async function makeDirectory(path: string): Promise<boolean> {
  try {
    await mkdir(path);
    return true;
  } catch (err) {
    if ((err as { code?: unknown }).code === "EEXIST") return false;
    throw err;
  }
}

async function syncPath(path: string): Promise<void> {
  const handle = await open(path, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
