/**
 * accept-data-loss: the operator's way out of a partition whose two blobs are both damaged
 * (`DataLoss`, answered DATA_LOSS by the server), run on the data directory while no server
 * uses it: `npm run cli -- accept-data-loss PARTITION [--data-dir DIR] [server flags]`.
 *
 * What it does: takes the data directory's lock (so it refuses while a server runs), opens the
 * partition as the server would; if that fails with DataLoss, opens it again accepting the loss:
 * both blobs are copied into `<data-dir>/.quarantine/<partition>/` (fsynced), then cut to empty,
 * and the partition starts empty at version 0. A partition without data loss is left as it is.
 *
 * Invariants:
 * - Nothing is cut before its bytes are durable in the quarantine; nothing is ever deleted.
 * - Without DataLoss this changes nothing a server start would not change (the same recovery).
 */
import type { ServerConfig } from "./config.js";
import { DataDirLockedError, lockDataDir } from "./data-dir-lock.js";
import { isStoreError } from "./store/errors.js";
import { openMetadata } from "./store/metadata.js";
import { createFileQuarantine } from "./store/quarantine.js";
import { FilesystemStorage } from "./store/storage/filesystem.js";
import { validatePartitionName } from "./store/storage/storage.js";

/** What `acceptDataLoss` did. */
export interface AcceptResult {
  /** True when the partition had data loss and now is empty. */
  accepted: boolean;
  /** Paths (relative to the data directory) of the copies kept in the quarantine. */
  kept: string[];
  /** Committed version of the partition afterwards. */
  version: bigint;
}

/**
 * Accepts the loss of `partition`'s data in `config.dataDir`; see the module comment. `warn`
 * receives recovery warnings.
 * @throws Error when a server holds the data directory, or the partition does not exist;
 *   StoreError for any other failure (nothing cut unless its copy is durable)
 */
export async function acceptDataLoss(
  config: ServerConfig,
  partition: string,
  warn: (message: string) => void,
): Promise<AcceptResult> {
  validatePartitionName(partition);
  let lock: Awaited<ReturnType<typeof lockDataDir>>;
  try {
    lock = await lockDataDir(config.dataDir);
  } catch (err) {
    if (err instanceof DataDirLockedError) {
      throw new Error(`${err.message}: stop the server first`);
    }
    throw err;
  }
  try {
    const storage = new FilesystemStorage(config.dataDir);
    if (!(await storage.listPartitions()).includes(partition)) {
      throw new Error(`no partition ${partition} in ${config.dataDir}`);
    }
    const kept: string[] = [];
    const quarantine = createFileQuarantine(config.dataDir);
    const base = {
      partition,
      keyCodec: config.keyCodecs.get(partition) ?? config.defaultKeyCodec,
      quarantine: async (discarded: Parameters<typeof quarantine>[0]) => {
        const path = await quarantine(discarded);
        kept.push(path);
        return path;
      },
      warn,
    };
    let accepted = false;
    let store: Awaited<ReturnType<typeof openMetadata>>;
    try {
      store = await openMetadata(storage, { ...base, warn: () => undefined });
    } catch (err) {
      if (!isStoreError(err, "DataLoss")) throw err;
      accepted = true;
      store = await openMetadata(storage, { ...base, acceptDataLoss: true });
    }
    const version = store.committed().version;
    await store.close();
    return { accepted, kept, version };
  } finally {
    await lock.release();
  }
}
