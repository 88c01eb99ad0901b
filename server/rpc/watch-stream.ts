/**
 * Watch stream: serves MetadataService.Watch by translating the engine's change sets (watch.ts)
 * into WatchResponse messages. Translation and flow control only: what is sent, and when a
 * watcher is ended, is decided by the engine.
 *
 * Invariants:
 * - One WatchResponse per change set, in version order, holding its changes in key order: a put
 *   carries its value (empty unless `include_values`), a removal carries none.
 * - Flow control: messages are written while grpc-js accepts more and the bytes it has not yet
 *   handed to HTTP/2 (write callbacks pending) stay under MAX_UNFLUSHED_BYTES; then nothing more
 *   is taken until the transport took them all, so a watcher that does not read holds at most
 *   that plus one message here. Each message also holds its bytes of the server-wide stream
 *   buffer (stream-limits.ts) until the transport takes it, waiting for room when it is full. The engine keeps no buffer per watcher either, and ends one whose
 *   next change left the history: the stream then ends with OUT_OF_RANGE naming the oldest
 *   version available.
 * - The stream ends with the status of the engine's error (OUT_OF_RANGE, UNAVAILABLE at
 *   shutdown); when the client cancels, the watch is closed and nothing more is written.
 * - Metrics: `metadata_watchers{partition}` (open), `metadata_watch_events_sent_total{partition}`,
 *   `metadata_watchers_ended_behind_total{partition}` (ended with OUT_OF_RANGE after they started).
 *   A partition's three series live as long as the partition is open or watched: retiring a
 *   partition removes them with its other series (removePartitionMetrics), and when the last
 *   watcher of a partition that is not open ends (one that does not exist, or was retired), they
 *   are removed here. A partition with a watcher open always shows its series with the right
 *   count, even when a retirement racing with the watch's start removed them (restored at scrape).
 */
import { create } from "@bufbuild/protobuf";
import type { ServerWritableStream } from "@grpc/grpc-js";
import { Counter, Gauge, type Registry } from "prom-client";
import {
  type WatchEvent,
  WatchEventSchema,
  type WatchRequest,
  type WatchResponse,
  WatchResponseSchema,
} from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import type { ChangeSet } from "../engine/change-feed.js";
import { isEngineError } from "../engine/errors.js";
import type { Engine } from "../engine/operations.js";
import type { Reservation, StreamLimits } from "./stream-limits.js";

/** The metrics of Watch streams, per partition. */
export interface WatchMetrics {
  /** Counts one more watcher of `partition` open. */
  opened(partition: string): void;
  /** Counts `events` key changes sent to a watcher of `partition`. */
  sent(partition: string, events: number): void;
  /** Counts one watcher of `partition` ended with OUT_OF_RANGE. */
  endedBehind(partition: string): void;
  /**
   * Counts one watcher of `partition` closed. When it was the last one and the partition is not
   * open (`partitionOpen` false), the partition's watch series are removed from the registry.
   */
  closed(partition: string, partitionOpen: boolean): void;
}

/** One WatchMetrics per registry: its collectors read that instance's counts of open watchers. */
const metricsOf = new WeakMap<Registry, WatchMetrics>();

/** Registers (once per registry) and returns the Watch metrics. */
export function createWatchMetrics(registry: Registry): WatchMetrics {
  const existing = metricsOf.get(registry);
  if (existing !== undefined) return existing;
  /** Watchers open, per partition; a partition without any has no entry. */
  const watching = new Map<string, number>();
  // A removal of a partition's series (its retirement) may race with a watch that is starting on
  // it: the collectors put back the series of every partition watched, so a scrape never misses
  // one that has a watcher open, nor shows a count other than the number open.
  const open: Gauge<"partition"> = new Gauge({
    name: "metadata_watchers",
    help: "Watch streams open.",
    labelNames: ["partition"],
    registers: [registry],
    collect() {
      for (const [partition, count] of watching) open.set({ partition }, count);
    },
  });
  const counter = (name: string, help: string): Counter<"partition"> => {
    const metric: Counter<"partition"> = new Counter({
      name,
      help,
      labelNames: ["partition"],
      registers: [registry],
      collect() {
        for (const partition of watching.keys()) metric.inc({ partition }, 0);
      },
    });
    return metric;
  };
  /**
   * Events sent and not yet added to the counter, per watched partition: a message to each of
   * many watchers would otherwise cost a labelled counter update each. Added at every scrape and
   * when a partition's last watcher ends, so a scrape always shows every event sent before it.
   */
  const unsent = new Map<string, number>();
  const flush = (partition: string): void => {
    const events = unsent.get(partition);
    if (events === undefined) return;
    unsent.delete(partition);
    eventsSent.inc({ partition }, events);
  };
  const eventsSent: Counter<"partition"> = new Counter({
    name: "metadata_watch_events_sent_total",
    help: "Changes of keys sent to Watch streams.",
    labelNames: ["partition"],
    registers: [registry],
    collect() {
      for (const partition of [...unsent.keys()]) flush(partition);
      for (const partition of watching.keys()) eventsSent.inc({ partition }, 0);
    },
  });
  const endedBehind = counter(
    "metadata_watchers_ended_behind_total",
    "Watch streams ended with OUT_OF_RANGE because the changes still to send them left the history.",
  );
  const metrics: WatchMetrics = {
    opened(partition) {
      const count = (watching.get(partition) ?? 0) + 1;
      watching.set(partition, count);
      open.set({ partition }, count);
      eventsSent.inc({ partition }, 0);
      endedBehind.inc({ partition }, 0);
    },
    sent(partition, events) {
      unsent.set(partition, (unsent.get(partition) ?? 0) + events);
    },
    endedBehind(partition) {
      endedBehind.inc({ partition });
    },
    closed(partition, partitionOpen) {
      flush(partition);
      const count = (watching.get(partition) ?? 1) - 1;
      if (count > 0) {
        watching.set(partition, count);
        open.set({ partition }, count);
        return;
      }
      watching.delete(partition);
      if (partitionOpen) {
        open.set({ partition }, 0);
        return;
      }
      // Nothing else will remove them: the partition's retirement, if any, is behind us.
      for (const metric of [open, eventsSent, endedBehind]) metric.remove({ partition });
    },
  };
  metricsOf.set(registry, metrics);
  return metrics;
}

/**
 * Most bytes of change sets written to one stream and not yet taken by the transport; past it
 * (or once grpc-js's own buffer is full) nothing more is taken from the engine until all of it
 * was taken. Bounds what a watcher that does not read holds here: this plus one message.
 */
const MAX_UNFLUSHED_BYTES = 64 * 1024;

/** Stands for the client's cancellation in the watch loop. */
const CANCELLED = Symbol("cancelled");

/**
 * The responses built for each change set, with and without values: watchers without a prefix
 * share the engine's change set, and so share one message (serialized once, see
 * service-definition.ts) instead of building one each.
 */
const built = new WeakMap<ChangeSet, { values?: WatchResponse; bare?: WatchResponse }>();

/** The WatchResponse of one change set (shared by every watcher given the same set). */
function watchResponse(set: ChangeSet, includeValues: boolean): WatchResponse {
  let entry = built.get(set);
  if (entry === undefined) {
    entry = {};
    built.set(set, entry);
  }
  const cached = includeValues ? entry.values : entry.bare;
  if (cached !== undefined) return cached;
  const response = buildResponse(set, includeValues);
  if (includeValues) entry.values = response;
  else entry.bare = response;
  return response;
}

function buildResponse(set: ChangeSet, includeValues: boolean): WatchResponse {
  const empty = new Uint8Array(0);
  const events = set.changes.map(
    (change): WatchEvent =>
      create(
        WatchEventSchema,
        change.value === undefined
          ? { key: change.key }
          : { key: change.key, value: includeValues ? change.value : empty },
      ),
  );
  return create(WatchResponseSchema, { version: set.version, events });
}

/**
 * Serves one Watch call until the client cancels (resolves) or the watch ends (rejects with the
 * engine's error, for the caller to answer as a status).
 * @throws StoreError InvalidPartitionName, OutOfRangeError, EngineError ShuttingDown
 */
export async function serveWatch(
  engine: Engine,
  call: ServerWritableStream<WatchRequest, WatchResponse>,
  metrics: WatchMetrics,
  streams: StreamLimits,
): Promise<void> {
  const request = call.request;
  const watch = engine.watch({
    partition: request.partition,
    prefix: request.prefix,
    fromVersion: request.startVersion,
  });
  const partition = watch.partition;
  metrics.opened(partition);
  // Whatever is awaited below is abandoned at once when the client cancels or the engine ends
  // the watch (a watcher blocked on a transport that does not drain, for instance).
  let stoppedWith: unknown;
  let abort: ((reason: unknown) => void) | undefined;
  // Stops a wait for room in the server-wide stream buffer.
  const stopReserving = new AbortController();
  const stop = (reason: unknown) => {
    if (stoppedWith !== undefined) return;
    stoppedWith = reason;
    stopReserving.abort(reason);
    abort?.(reason);
  };
  const guard = <T>(pending: Promise<T>): Promise<T> => {
    if (stoppedWith !== undefined) return Promise.reject(stoppedWith);
    return new Promise<T>((resolve, reject) => {
      abort = reject;
      pending.then(
        (value) => {
          abort = undefined;
          resolve(value);
        },
        (err: unknown) => {
          abort = undefined;
          reject(err);
        },
      );
    });
  };
  call.once("cancelled", () => stop(CANCELLED));
  void watch.ended.then(stop);
  // Writes the transport has not taken yet (their callbacks are pending), and their bytes.
  // Each holds its bytes of the server-wide stream buffer until the transport takes it.
  let unflushed = 0;
  let unflushedBytes = 0;
  let writeError: Error | undefined;
  let onFlushed: (() => void) | undefined;
  const held = new Set<Reservation>();
  try {
    for (;;) {
      const set = await guard(watch.take());
      // The buffer has room nearly always: no await then.
      const reservation =
        streams.tryReserve(set.bytes) ?? (await streams.reserve(set.bytes, stopReserving.signal));
      held.add(reservation);
      if (stoppedWith !== undefined) throw stoppedWith;
      unflushed++;
      unflushedBytes += set.bytes;
      const more = call.write(watchResponse(set, request.includeValues), (err?: Error | null) => {
        reservation.release();
        held.delete(reservation);
        unflushed--;
        if (err) writeError ??= err;
        if (unflushed === 0) onFlushed?.();
      });
      metrics.sent(partition, set.changes.length);
      if (more && unflushedBytes <= MAX_UNFLUSHED_BYTES) continue;
      // The transport holds enough of this watcher's: take nothing more until it took it all.
      await guard(
        new Promise<void>((resolve) => {
          if (unflushed === 0) resolve();
          else onFlushed = resolve;
        }),
      );
      onFlushed = undefined;
      unflushedBytes = 0;
      if (writeError !== undefined) throw writeError;
    }
  } catch (err) {
    if (err === CANCELLED || call.cancelled) return;
    if (isEngineError(err, "OutOfRange")) metrics.endedBehind(partition);
    throw err;
  } finally {
    for (const reservation of held) reservation.release();
    watch.close();
    metrics.closed(partition, engine.partitions.isOpen(partition));
  }
}
