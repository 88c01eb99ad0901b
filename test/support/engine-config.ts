/**
 * The configuration of the partitions of an engine under test: the server's defaults where a
 * test does not care (no gathering delay, large batches and queues), each field overridable.
 *
 * Usage:
 *   const partitions = new Partitions(storage, partitionsConfig({ maxOpenPartitions: 2 }), registry);
 */
import type { PartitionsConfig } from "../../server/engine/partitions.js";
import { variableKeys } from "../../server/store/codec.js";

/** A PartitionsConfig for tests: `overrides` over defaults (default partition "default"). */
export function partitionsConfig(overrides: Partial<PartitionsConfig> = {}): PartitionsConfig {
  return {
    defaultPartition: "default",
    defaultKeyCodec: variableKeys(),
    keyCodecs: new Map(),
    maxValueBytes: 1024 * 1024,
    maxOpenPartitions: 256,
    maxPartitions: 10_000,
    groupCommit: {
      batchMaxMutations: 10_000,
      batchMaxBytes: 16 * 1024 * 1024,
      batchMaxDelayMs: 0,
      flushIntervalMs: 100,
      maxQueuedOperations: 100_000,
    },
    ...overrides,
  };
}
