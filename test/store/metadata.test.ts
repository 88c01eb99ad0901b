/**
 * The reference test-suite of commonware-storage 2026.4.0 `metadata` (test/store/reference-suite.ts)
 * on memory storage: a crash keeps only what was synced.
 */
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { referenceSuite } from "./reference-suite.js";

referenceSuite({
  create: async () => new MemoryStorage(),
  crash: async (storage) => {
    (storage as MemoryStorage).crash();
    return storage;
  },
  fileLength: async (storage, partition, name) =>
    (storage as MemoryStorage).fileBytes(partition, name)?.length,
});
