/**
 * Watch over real grpc-js: events for put, overwrite, remove, Commit (one message per sync),
 * Retain and Clear; prefix filtering; a watch of a partition that does not exist waits without
 * creating it; list-then-watch with concurrent writers (10,000 writes, several watchers, some from
 * random versions) misses and repeats nothing; OUT_OF_RANGE for a version older than the history
 * and for a watcher that never reads (the server keeps only its bounded history); nothing is sent
 * for a failed sync.
 *
 * "Nothing was sent" is never asserted by waiting: a later write is made, and the next message
 * received must be that one.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { after, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import {
  type MetadataClient,
  oldestAvailableVersion,
  type WatchBatch,
  type WatchOptions,
} from "../../clients/ts/metadata-client.js";
import { removePartitionMetrics } from "../../server/store/metrics.js";
import { FaultyStorage } from "../../server/store/storage/faulty.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { GatedStorage } from "../support/gated-storage.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { RawClient } from "../support/raw-client.js";
import { Rng, testSeed } from "../support/rng.js";
import { metricValue, waitUntil } from "../support/rpc-helpers.js";
import { utf8 } from "../support/store-helpers.js";

/**
 * A watch read one batch at a time, with a bound on how long a batch may take to come. The call
 * starts at once (the first batch is asked for in the constructor).
 */
class Watching {
  private readonly iterator: AsyncGenerator<WatchBatch>;
  private prefetched: Promise<IteratorResult<WatchBatch>> | undefined;

  constructor(client: MetadataClient, options: WatchOptions) {
    this.iterator = client.watch(options);
    this.prefetched = this.iterator.next();
    this.prefetched.catch(() => undefined);
  }

  async next(timeoutMs = 10_000): Promise<WatchBatch> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no watch message within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const pending = this.prefetched ?? this.iterator.next();
      this.prefetched = undefined;
      const result = await Promise.race([pending, timeout]);
      if (result.done === true) throw new Error("the watch ended");
      return result.value;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The error the watch ends with (after any batches still in transit). */
  async error(timeoutMs = 10_000): Promise<{ code?: number; details?: string }> {
    for (;;) {
      try {
        await this.next(timeoutMs);
      } catch (err) {
        return err as { code?: number; details?: string };
      }
    }
  }

  close(): void {
    void this.iterator.return(undefined);
  }
}

/** A batch as text: "v: a=1 b- c=" (`-` a removal). */
function show(batch: WatchBatch): string {
  const events = batch.events.map(({ key, value }) =>
    value === undefined ? `${Buffer.from(key)}-` : `${Buffer.from(key)}=${Buffer.from(value)}`,
  );
  return `${batch.version}: ${events.join(" ")}`;
}

describe("watch events", () => {
  let server: TestServer;
  const opened: Watching[] = [];
  const watch = (options: WatchOptions) => {
    const watching = new Watching(server.client, options);
    opened.push(watching);
    return watching;
  };
  after(async () => {
    for (const watching of opened) watching.close();
    await server?.stop();
  });

  test("put, overwrite and remove, each committed sync once, on a partition created after the watch began", async () => {
    server = await startTestServer();
    const { client } = server;
    const values = watch({ partition: "events", includeValues: true });
    const bare = watch({ partition: "events" });
    await waitUntil(
      async () => (await server.metrics()).includes('metadata_watchers{partition="events"} 2'),
      "both watchers to be open",
    );
    // The watch creates nothing.
    assert.deepEqual(await client.listPartitions(), []);

    const v1 = (await client.put(utf8("a"), utf8("1"), { partition: "events" })).version;
    const v2 = (await client.put(utf8("a"), utf8("2"), { partition: "events" })).version;
    const v3 = (await client.remove(utf8("a"), { partition: "events" })).version;
    assert.equal(show(await values.next()), `${v1}: a=1`);
    assert.equal(show(await values.next()), `${v2}: a=2`);
    assert.equal(show(await values.next()), `${v3}: a-`);
    // Without include_values a put carries an empty value, a removal none.
    const first = await bare.next();
    assert.equal(show(first), `${v1}: a=`);
    assert.notEqual(first.events[0]?.value, undefined);
    assert.equal(show(await bare.next()), `${v2}: a=`);
    assert.equal(show(await bare.next()), `${v3}: a-`);
  });

  test("a Commit is one message holding every change of its sync, in key order", async () => {
    const { client } = server;
    await client.put(utf8("c/x"), utf8("old"), { partition: "commit" });
    const since = (await client.sync({ partition: "commit" })).version;
    const w = watch({ partition: "commit", startVersion: since + 1n, includeValues: true });
    const { version } = await client.commit(
      [
        { put: { key: utf8("c/z"), value: utf8("26") } },
        { remove: { key: utf8("c/x") } },
        { put: { key: utf8("c/a"), value: utf8("1") } },
        { remove: { key: utf8("c/never") } },
      ],
      [],
      { partition: "commit" },
    );
    assert.equal(show(await w.next()), `${version}: c/a=1 c/x- c/z=26`);
  });

  test("Retain and Clear send a removal for every key they removed", async () => {
    const { client } = server;
    const p = { partition: "retain" };
    await client.commit(
      ["k1", "k2", "j1", "j2", "j3"].map((k) => ({ put: { key: utf8(k), value: utf8("v") } })),
      [],
      p,
    );
    const since = (await client.sync(p)).version;
    const w = watch({ ...p, startVersion: since + 1n });
    const retained = await client.retain({ prefix: utf8("k") }, p);
    assert.equal(retained.removed, 3n);
    assert.equal(show(await w.next()), `${retained.version}: j1- j2- j3-`);
    const cleared = await client.clear(p);
    assert.equal(show(await w.next()), `${cleared.version}: k1- k2-`);
  });

  test("a prefix selects the keys: a sync changing none of them sends nothing", async () => {
    const { client } = server;
    const p = { partition: "prefix" };
    const w = watch({ ...p, prefix: utf8("a/"), includeValues: true });
    await waitUntil(
      async () => (await server.metrics()).includes('metadata_watchers{partition="prefix"} 1'),
      "the watcher to be open",
    );
    const both = await client.commit(
      [
        { put: { key: utf8("a/1"), value: utf8("x") } },
        { put: { key: utf8("b/1"), value: utf8("y") } },
        { put: { key: utf8("a"), value: utf8("z") } },
      ],
      [],
      p,
    );
    await client.put(utf8("b/2"), utf8("only b"), p);
    const later = await client.remove(utf8("a/1"), p);
    assert.equal(show(await w.next()), `${both.version}: a/1=x`);
    assert.equal(show(await w.next()), `${later.version}: a/1-`);
  });

  test("a watch needs read access and a valid partition name", async () => {
    const w = watch({ partition: "bad name" });
    const err = await w.error();
    assert.equal(err.code, status.INVALID_ARGUMENT);
  });
});

describe("the history", () => {
  const servers: TestServer[] = [];
  after(async () => {
    for (const server of servers) await server.stop();
  });

  test("a version older than the history ends with OUT_OF_RANGE naming the oldest available", async () => {
    const server = await startTestServer(["--watch-history-syncs", "3"]);
    servers.push(server);
    const { client } = server;
    const versions: bigint[] = [];
    for (let i = 0; i < 6; i++) versions.push((await client.put(utf8(`k${i}`), utf8("v"))).version);
    const oldest = versions[3] as bigint;

    const tooOld = new Watching(client, { startVersion: versions[1] as bigint });
    const err = await tooOld.error();
    assert.equal(err.code, status.OUT_OF_RANGE);
    assert.match(err.details ?? "", new RegExp(`oldest available version ${oldest}$`));
    assert.equal(oldestAvailableVersion(err), oldest);

    // From the oldest available version: the three syncs still held, replayed in order, then live.
    const replay = new Watching(client, { startVersion: oldest });
    assert.equal(show(await replay.next()), `${oldest}: k3=`);
    assert.equal(show(await replay.next()), `${versions[4]}: k4=`);
    assert.equal(show(await replay.next()), `${versions[5]}: k5=`);
    const live = await client.put(utf8("k6"), utf8("v"));
    assert.equal(show(await replay.next()), `${live.version}: k6=`);
    replay.close();
  });

  test("a watcher that never reads is ended with OUT_OF_RANGE; the server holds only its history", async () => {
    const historyBytes = 1024 * 1024;
    const server = await startTestServer([
      "--watch-history-syncs",
      "1000",
      "--watch-history-bytes",
      String(historyBytes),
    ]);
    servers.push(server);
    const { client } = server;
    const value = Buffer.alloc(64 * 1024, 7);
    const first = await client.put(utf8("k"), value);
    const stalled = new Watching(client, { startVersion: first.version, includeValues: true });
    assert.equal((await stalled.next()).version, first.version);
    await waitUntil(
      async () => metricValue(await server.metrics(), "metadata_watchers", 'partition="default"') === 1,
      "the watcher to be counted",
    );
    // The watcher reads nothing more while 20 MB of changes are committed.
    let last = first.version;
    for (let i = 0; i < 320; i++) last = (await client.put(utf8(`k${i % 10}`), value)).version;

    const metrics = await server.metrics();
    assert.equal(metricValue(metrics, "metadata_watchers_ended_behind_total", 'partition="default"'), 1);
    assert.equal(metricValue(metrics, "metadata_watchers", 'partition="default"'), 0);
    const feed = server.service.partitions.openNow("default")?.changes;
    assert.ok(feed !== undefined);
    assert.ok(feed.historyBytes <= historyBytes, `history holds ${feed.historyBytes} bytes`);
    assert.equal(feed.watcherCount, 0);

    // Reading again: what was in transit, then OUT_OF_RANGE with a version to resume from.
    const err = await stalled.error();
    assert.equal(err.code, status.OUT_OF_RANGE, err.details);
    const oldest = oldestAvailableVersion(err);
    assert.ok(oldest !== undefined && oldest > first.version + 1n && oldest <= last, `${oldest}`);
  });
});

describe("open partition limit", () => {
  test("a watched partition is not retired while other partitions come and go", async () => {
    const server = await startTestServer(["--max-open-partitions", "1"]);
    try {
      const { client } = server;
      const base = await client.put(utf8("a"), utf8("1"), { partition: "watched" });
      const w = new Watching(client, { partition: "watched", startVersion: base.version });
      assert.equal((await w.next()).version, base.version);
      for (const name of ["p1", "p2", "p3"]) await client.put(utf8("k"), utf8("v"), { partition: name });
      await waitUntil(() => server.service.partitions.openCount <= 2, "idle partitions to be retired");
      assert.ok(server.service.partitions.openNow("watched") !== undefined, "the watched partition is open");
      const later = await client.put(utf8("b"), utf8("2"), { partition: "watched" });
      assert.equal(show(await w.next()), `${later.version}: b=`);
      w.close();
    } finally {
      await server.stop();
    }
  });
});

/** The watch series of `partition` in a scrape, as "name value" lines. */
function watchSeries(text: string, partition: string): string[] {
  const labels = `{partition="${partition}"}`;
  return text
    .split("\n")
    .filter((line) => line.startsWith("metadata_watch") && line.includes(labels))
    .map((line) => line.replace(labels, ""));
}

describe("watch metrics", () => {
  test("a partition's watch series go when its last watcher ends while it is not open, and when it is retired", async () => {
    const server = await startTestServer(["--max-open-partitions", "1"]);
    const raw = new RawClient(server.address);
    try {
      const { client } = server;
      // A watch of a partition that does not exist: its series exist while it waits, then go.
      const waiting = raw.watch({ partition: "absent" });
      waiting.on("error", () => undefined);
      await waitUntil(
        async () => watchSeries(await server.metrics(), "absent").includes("metadata_watchers 1"),
        "the watch of a partition that does not exist",
      );
      assert.deepEqual(watchSeries(await server.metrics(), "absent").sort(), [
        "metadata_watch_events_sent_total 0",
        "metadata_watchers 1",
        "metadata_watchers_ended_behind_total 0",
      ]);
      waiting.cancel();
      await waitUntil(
        async () => watchSeries(await server.metrics(), "absent").length === 0,
        "the series of a partition that is not open to go with its last watcher",
      );
      assert.equal(server.service.partitions.isOpen("absent"), false, "the watch created nothing");

      // A watched partition keeps its series (at 0 watchers) while open, and loses them retired.
      const base = await client.put(utf8("a"), utf8("1"), { partition: "watched" });
      const watching = raw.watch({ partition: "watched", startVersion: base.version });
      watching.on("error", () => undefined);
      await once(watching, "data");
      assert.equal(
        metricValue(await server.metrics(), "metadata_watch_events_sent_total", 'partition="watched"'),
        1,
      );
      watching.cancel();
      await waitUntil(
        async () => watchSeries(await server.metrics(), "watched").includes("metadata_watchers 0"),
        "the watcher of an open partition to end",
      );
      for (const name of ["p1", "p2"]) await client.put(utf8("k"), utf8("v"), { partition: name });
      await waitUntil(
        async () => watchSeries(await server.metrics(), "watched").length === 0,
        "the series of the retired partition to go",
      );
    } finally {
      raw.close();
      await server.stop();
    }
  });

  test("a removal of a partition's series, as its retirement racing with a watch's start, leaves an open watcher's series right", async () => {
    const server = await startTestServer();
    const raw = new RawClient(server.address);
    try {
      const waiting = raw.watch({ partition: "raced" });
      waiting.on("error", () => undefined);
      await waitUntil(
        async () => watchSeries(await server.metrics(), "raced").includes("metadata_watchers 1"),
        "the watch to start",
      );
      await removePartitionMetrics(server.service.registry, "raced");
      assert.deepEqual(watchSeries(await server.metrics(), "raced").sort(), [
        "metadata_watch_events_sent_total 0",
        "metadata_watchers 1",
        "metadata_watchers_ended_behind_total 0",
      ]);
      // Its end neither leaves a series behind nor counts below zero.
      waiting.cancel();
      await waitUntil(
        async () => watchSeries(await server.metrics(), "raced").length === 0,
        "the series to go with the watcher",
      );
    } finally {
      raw.close();
      await server.stop();
    }
  });
});

describe("server-wide stream limits", () => {
  test("a watch counts as an open stream: beyond --max-streams it is refused with RESOURCE_EXHAUSTED", async () => {
    const server = await startTestServer(["--max-streams", "2"]);
    const watches: Watching[] = [];
    try {
      const { client } = server;
      watches.push(new Watching(client, {}), new Watching(client, {}));
      await waitUntil(
        async () => metricValue(await server.metrics(), "metadata_streams_open") === 2,
        "two open streams",
      );
      const refused = new Watching(client, {});
      const err = await refused.error();
      assert.equal(err.code, status.RESOURCE_EXHAUSTED, err.details);
      assert.match(err.details ?? "", /too many open streams/);
      // The open ones still work.
      const put = await client.put(utf8("k"), utf8("v"));
      assert.equal((await watches[0]?.next())?.version, put.version);
    } finally {
      for (const w of watches) w.close();
      await server.stop();
    }
  });
});

describe("shutdown", () => {
  test("ends every watch with UNAVAILABLE at once, without waiting out the grace period", async () => {
    const server = await startTestServer(["--shutdown-grace-ms", "20000"]);
    const { client } = server;
    const base = await client.put(utf8("a"), utf8("1"));
    const live = new Watching(client, { startVersion: base.version });
    assert.equal((await live.next()).version, base.version);
    const waiting = new Watching(client, { partition: "not-yet" });
    await waitUntil(
      async () => (await server.metrics()).includes('metadata_watchers{partition="not-yet"} 1'),
      "the watch of a partition that does not exist",
    );
    const started = Date.now();
    const stopping = server.service.stop();
    const [liveErr, waitingErr] = await Promise.all([live.error(), waiting.error()]);
    await stopping;
    await server.stop();
    assert.equal(liveErr.code, status.UNAVAILABLE, liveErr.details);
    assert.match(liveErr.details ?? "", /shutting down: the watch ended/);
    assert.equal(waitingErr.code, status.UNAVAILABLE, waitingErr.details);
    assert.ok(Date.now() - started < 10_000, `shutdown took ${Date.now() - started} ms`);
  });
});

describe("a failed sync", () => {
  const faulty = new FaultyStorage(new MemoryStorage());
  const gate = new GatedStorage(faulty);
  let server: TestServer | undefined;
  after(async () => {
    gate.releaseAll();
    await server?.stop();
  });

  test("sends nothing, and the watch goes on with the next committed sync", async () => {
    server = await startTestServer([], gate);
    const { client } = server;
    const base = await client.put(utf8("ok"), utf8("1"));
    const w = new Watching(client, { startVersion: base.version, includeValues: true });
    assert.equal(show(await w.next()), `${base.version}: ok=1`);

    const before = gate.syncs("default").started;
    gate.hold();
    const failed = client.put(utf8("lost"), utf8("x")).then(
      () => assert.fail("the put should fail"),
      (err: { code?: number }) => err.code,
    );
    await gate.syncStarted("default", before + 1);
    faulty.inject({ op: "sync" });
    gate.releaseAll();
    assert.equal(await failed, status.UNAVAILABLE);

    const next = await client.put(utf8("after"), utf8("2"));
    assert.equal(show(await w.next()), `${next.version}: after=2`);
    assert.equal(await client.get(utf8("lost")), undefined);
    w.close();
  });
});

describe("list-then-watch with concurrent writers", () => {
  let server: TestServer | undefined;
  after(async () => server?.stop());

  test("10,000 writes: every watcher sees every change after its start exactly once", async () => {
    const seed = testSeed();
    const rng = new Rng(seed);
    server = await startTestServer([
      "--watch-history-syncs",
      "1000000",
      "--watch-history-bytes",
      "1073741824",
    ]);
    const { client } = server;
    const p = { partition: "busy" };
    const WRITES = 10_000;
    const LANES = 64;
    const KEYS = 300;

    // The full log: a watcher from version 1 of a partition that does not exist yet.
    const full = new Watching(client, { ...p, startVersion: 1n, includeValues: true });
    type Listed = { version: bigint; state: Map<string, string> };
    const listings: Promise<Listed>[] = [];
    const fromVersions: { from: bigint; watching: Watching }[] = [];
    let done = 0;
    const lane = async (id: number) => {
      const laneRng = new Rng(seed + id + 1);
      for (let i = id; i < WRITES; i += LANES) {
        const key = utf8(`k${String(laneRng.int(KEYS)).padStart(3, "0")}`);
        if (laneRng.chance(0.2)) await client.remove(key, p);
        else await client.put(key, utf8(`${i}`), p);
        done++;
      }
    };
    const checkpoints = [500, 2500, 5000, 7500, 9500].map((n) => n + rng.int(400));
    const starter = (async () => {
      for (const at of checkpoints) {
        await waitUntil(() => done >= at, `${at} writes`, 60_000);
        // list, then watch from the listing's version + 1
        listings.push(
          (async () => {
            const { version, entries } = await client.keysWithVersion({ ...p, includeValues: true });
            const state = new Map(
              entries.map(({ key, value }) => [
                Buffer.from(key).toString(),
                Buffer.from(value ?? []).toString(),
              ]),
            );
            const watching = new Watching(client, { ...p, startVersion: version + 1n, includeValues: true });
            return { version, state, watching } as Listed & { watching: Watching };
          })(),
        );
        // and one from a random version already committed
        const committed = (await client.sync(p)).version;
        const from = 1n + BigInt(rng.int(Number(committed)));
        fromVersions.push({
          from,
          watching: new Watching(client, { ...p, startVersion: from, includeValues: true }),
        });
      }
    })();
    await Promise.all([...Array.from({ length: LANES }, (_, id) => lane(id)), starter]);
    const final = await client.keysWithVersion({ ...p, includeValues: true });
    const finalState = new Map(
      final.entries.map(({ key, value }) => [
        Buffer.from(key).toString(),
        Buffer.from(value ?? []).toString(),
      ]),
    );

    /** Reads `w` up to `until` inclusive, checking versions strictly increase. */
    const readUntil = async (w: Watching, until: bigint, after: bigint): Promise<WatchBatch[]> => {
      const batches: WatchBatch[] = [];
      let previous = after;
      while (previous < until) {
        const batch = await w.next();
        assert.ok(batch.version > previous, `version ${batch.version} after ${previous} (seed ${seed})`);
        assert.ok(batch.events.length > 0);
        previous = batch.version;
        batches.push(batch);
      }
      assert.equal(previous, until, `seed ${seed}`);
      return batches;
    };
    const apply = (state: Map<string, string>, batches: WatchBatch[]) => {
      for (const batch of batches) {
        for (const { key, value } of batch.events) {
          const k = Buffer.from(key).toString();
          if (value === undefined) state.delete(k);
          else state.set(k, Buffer.from(value).toString());
        }
      }
      return state;
    };

    const log = await readUntil(full, final.version, 0n);
    assert.deepEqual(apply(new Map(), log), finalState, `full log (seed ${seed})`);
    const events = log.reduce((n, b) => n + b.events.length, 0);
    console.log(
      `watch: ${WRITES} writes in ${log.length} syncs (${events} events), final version ${final.version}, seed ${seed}`,
    );
    for (const listed of await Promise.all(listings)) {
      const { watching } = listed as Listed & { watching: Watching };
      const batches = await readUntil(watching, final.version, listed.version);
      assert.deepEqual(
        apply(listed.state, batches),
        finalState,
        `listing at ${listed.version} (seed ${seed})`,
      );
      watching.close();
    }
    for (const { from, watching } of fromVersions) {
      const batches = await readUntil(watching, final.version, from - 1n);
      assert.deepEqual(
        batches.map(show),
        log.filter((b) => b.version >= from).map(show),
        `watch from ${from} (seed ${seed})`,
      );
      watching.close();
    }
    full.close();
  });
});
