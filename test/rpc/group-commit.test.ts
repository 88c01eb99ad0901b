/**
 * Group commit over gRPC: concurrent durable writes share few syncs; a durable write is answered
 * only after the fsync that holds it and is invisible until then; writes arriving during a sync
 * are committed together by the next single sync, one sync in flight per partition; a failed
 * sync fails every call waiting on it (UNAVAILABLE, not committed) and its writes never show; a
 * deadline passing during a held sync answers DEADLINE_EXCEEDED.
 *
 * Syncs are held and released by a gated storage, never ordered with sleeps.
 */
import assert from "node:assert/strict";
import { after, afterEach, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { Durability, type MetadataClient } from "../../clients/ts/metadata-client.js";
import { type Fault, FaultyStorage } from "../../server/store/storage/faulty.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { GatedStorage } from "../support/gated-storage.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import {
  type DirServer,
  metricValue,
  startDirServer,
  type Tracked,
  track,
  waitUntil,
} from "../support/rpc-helpers.js";
import { utf8 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";

function text(bytes: Uint8Array | undefined): string | undefined {
  return bytes === undefined ? undefined : Buffer.from(bytes).toString("utf8");
}

/** True once `key` is applied to the partition's live store (committed or not). */
async function applied(server: TestServer, key: string, partition = "default"): Promise<boolean> {
  const group = await server.service.partitions.forWrite(partition);
  return group.live().get(utf8(key)) !== undefined;
}

/**
 * One round trip through the server, then a turn of the event loop: an answer the server had
 * already sent would have arrived by then.
 */
async function roundTrip(client: MetadataClient): Promise<void> {
  await client.listPartitions();
  await new Promise((resolve) => setImmediate(resolve));
}

describe("500 concurrent durable puts", () => {
  test("complete with far fewer syncs than calls, and are all there after a restart", async () => {
    const dir = await tempDir("metadata-group-commit-");
    const servers: DirServer[] = [];
    try {
      const first = await startDirServer(dir.path);
      servers.push(first);
      const count = 500;
      const key = (i: number) => utf8(`key-${String(i).padStart(4, "0")}`);
      const value = (i: number) => utf8(`value ${i}`);
      const responses = await Promise.all(
        Array.from({ length: count }, (_, i) => first.client.put(key(i), value(i))),
      );
      const metrics = await first.metrics();
      const syncs = metricValue(metrics, "metadata_storage_syncs_total", 'partition="default"');
      const committed = metricValue(metrics, "metadata_group_commit_mutations_sum", 'partition="default"');
      const batches = metricValue(metrics, "metadata_group_commit_mutations_count", 'partition="default"');
      const versions = new Set(responses.map((r) => r.version));
      console.log(
        `group commit: ${count} durable puts, ${syncs} fsyncs, ${batches} syncs, ${versions.size} versions, ` +
          `${(count / batches).toFixed(1)} mutations per sync`,
      );
      assert.ok(syncs <= 100, `${syncs} fsyncs for ${count} puts`);
      assert.equal(committed, count);
      assert.equal(batches, syncs);
      assert.ok(versions.size <= syncs);

      const reads = await Promise.all(responses.map((_, i) => first.client.getWithVersion(key(i))));
      for (const [i, response] of responses.entries()) {
        assert.equal(response.previous, undefined);
        assert.ok(response.version >= 1n, `put ${i}: version ${response.version}`);
        const read = reads[i];
        assert.equal(text(read?.value), `value ${i}`);
        assert.ok(
          read !== undefined && read.version >= response.version,
          `get ${i}: version ${read?.version} < ${response.version}`,
        );
      }
      const last = [...versions].sort((a, b) => (a < b ? -1 : 1)).at(-1);
      await first.stop();

      const second = await startDirServer(dir.path);
      servers.push(second);
      const listed: string[] = [];
      for await (const entry of second.client.keys({ includeValues: true })) {
        listed.push(`${text(entry.key)}=${text(entry.value)}`);
      }
      assert.deepEqual(
        listed,
        Array.from({ length: count }, (_, i) => `${text(key(i))}=${text(value(i))}`),
      );
      assert.equal((await second.client.getWithVersion(key(0))).version, last);
    } finally {
      for (const server of servers) await server.stop();
      await dir.remove();
    }
  });
});

describe("gated sync", () => {
  let gate: GatedStorage;
  let server: TestServer | undefined;
  afterEach(async () => {
    gate.releaseAll();
    await server?.stop();
    server = undefined;
  });

  const start = async (flags: string[] = []): Promise<TestServer> => {
    gate = new GatedStorage(new MemoryStorage());
    server = await startTestServer(flags, gate);
    return server;
  };

  test("a durable put is answered only after its fsync, and no read sees it before", async () => {
    const { client } = await start();
    const old = await client.put(utf8("k"), utf8("old"));
    const synced = gate.syncs("default");
    assert.equal(synced.completed, synced.started);

    gate.hold();
    const put = track(client.put(utf8("k"), utf8("new")));
    await gate.syncStarted("default", synced.started + 1);
    assert.equal(gate.heldCount("default"), 1);

    // The new value is written to the blob but not fsynced: not answered, not visible.
    await roundTrip(client);
    assert.equal(put.settled(), false);
    const waiting = async () =>
      metricValue(
        await (server as TestServer).metrics(),
        "metadata_operations_waiting",
        'partition="default"',
      );
    assert.equal(await waiting(), 1);
    const read = await client.getWithVersion(utf8("k"));
    assert.equal(text(read.value), "old");
    assert.equal(read.version, old.version);
    const listed: string[] = [];
    for await (const entry of client.keys({ includeValues: true })) listed.push(text(entry.value) as string);
    assert.deepEqual(listed, ["old"]);
    assert.equal(put.settled(), false);

    gate.release();
    const answer = await put.promise;
    assert.equal(await waiting(), 0);
    assert.equal(text(answer.previous), "old");
    assert.equal(answer.version, old.version + 1n);
    assert.equal(gate.syncs("default").completed, synced.started + 1);
    const after = await client.getWithVersion(utf8("k"));
    assert.equal(text(after.value), "new");
    assert.equal(after.version, answer.version);
  });

  test("writes arriving during a held sync are committed together by the next single sync", async () => {
    const { client } = await start();
    await client.commit([
      { put: { key: utf8("seed-1"), value: utf8("s") } },
      { put: { key: utf8("seed-2"), value: utf8("s") } },
    ]);
    const before = gate.syncs("default").started;
    const histogram = async () => {
      const exposition = await (server as TestServer).metrics();
      const labels = 'partition="default"';
      return {
        syncs: metricValue(exposition, "metadata_group_commit_mutations_count", labels),
        mutations: metricValue(exposition, "metadata_group_commit_mutations_sum", labels),
      };
    };
    const histogramBefore = await histogram();

    gate.hold();
    const first = track(client.put(utf8("first"), utf8("1")));
    await gate.syncStarted("default", before + 1);

    // 20 puts, a remove, a commit of 3 and a sync, all while the first sync is held.
    const keys = Array.from({ length: 20 }, (_, i) => `during-${String(i).padStart(2, "0")}`);
    const during: Tracked<{ version: bigint }>[] = keys.map((key) => track(client.put(utf8(key), utf8(key))));
    during.push(track(client.remove(utf8("seed-1"))));
    during.push(
      track(
        client.commit([
          { put: { key: utf8("batch-a"), value: utf8("a") } },
          { put: { key: utf8("batch-b"), value: utf8("b") } },
          { remove: { key: utf8("seed-2") } },
        ]),
      ),
    );
    const all = async () => {
      const present = await Promise.all([...keys, "batch-a"].map((k) => applied(server as TestServer, k)));
      const gone =
        !(await applied(server as TestServer, "seed-1")) && !(await applied(server as TestServer, "seed-2"));
      return present.every(Boolean) && gone;
    };
    await waitUntil(all, "the writes to be applied");
    during.push(track(client.sync()));
    await roundTrip(client);

    // Still one sync: nothing else started while it is held.
    assert.equal(gate.syncs("default").started, before + 1);
    assert.equal(first.settled(), false);
    assert.ok(during.every((t) => !t.settled()));

    gate.release();
    const firstVersion = (await first.promise).version;
    // The next sync starts at once with everything gathered meanwhile, and is held in turn.
    await gate.syncStarted("default", before + 2);
    await roundTrip(client);
    assert.ok(during.every((t) => !t.settled()));
    assert.equal(await client.get(utf8("during-05")), undefined);
    assert.equal(text(await client.get(utf8("seed-1"))), "s");
    assert.equal(text(await client.get(utf8("first"))), "1");

    gate.release();
    const versions = new Set<bigint>();
    for (const t of during) versions.add((await t.promise).version);
    assert.deepEqual([...versions], [firstVersion + 1n]);
    const counts = gate.syncs("default");
    assert.equal(counts.started, before + 2);
    assert.equal(counts.maxInFlight, 1);

    const listed: string[] = [];
    for await (const entry of client.keys()) listed.push(text(entry.key) as string);
    assert.deepEqual(listed, ["batch-a", "batch-b", ...keys, "first"]);
    // Two syncs: the held one (1 mutation) and the next (20 puts, 1 remove, a commit of 3).
    assert.deepEqual(await histogram(), {
      syncs: histogramBefore.syncs + 2,
      mutations: histogramBefore.mutations + 1 + 20 + 1 + 3,
    });
  });

  test("at most one sync is in flight per partition; partitions sync independently", async () => {
    const { client } = await start();
    gate.hold();
    const writes: Tracked<{ version: bigint }>[] = [];
    for (let round = 0; round < 5; round++) {
      for (const partition of ["p1", "p2"]) {
        for (let i = 0; i < 10; i++) {
          writes.push(track(client.put(utf8(`${round}-${i}`), utf8("v"), { partition })));
        }
      }
      // Both partitions have a sync held at once; each has only one.
      await gate.syncStarted("p1", round + 1);
      await gate.syncStarted("p2", round + 1);
      await roundTrip(client);
      assert.equal(gate.heldCount("p1"), 1);
      assert.equal(gate.heldCount("p2"), 1);
      assert.equal(gate.syncs("p1").inFlight, 1);
      assert.equal(gate.syncs("p2").inFlight, 1);
      gate.release(1, "p1");
      gate.release(1, "p2");
    }
    gate.releaseAll();
    for (const t of writes) assert.ok((await t.promise).version >= 1n);
    assert.equal(gate.syncs("p1").maxInFlight, 1);
    assert.equal(gate.syncs("p2").maxInFlight, 1);
  });

  test("a deadline that passes while the sync is held answers DEADLINE_EXCEEDED", async () => {
    const { client } = await start();
    await client.put(utf8("k"), utf8("old"));
    const before = gate.syncs("default").started;
    gate.hold();
    const put = track(client.put(utf8("k"), utf8("new"), { deadlineMs: 200 }));
    await gate.syncStarted("default", before + 1);
    await assert.rejects(put.promise, { code: status.DEADLINE_EXCEEDED, details: /deadline exceeded/i });
    const sync = client.sync({ deadlineMs: 100 });
    await assert.rejects(sync, { code: status.DEADLINE_EXCEEDED, details: /deadline exceeded/i });
    // Nothing is visible while the sync is still held.
    assert.equal(text(await client.get(utf8("k"))), "old");

    gate.releaseAll();
    // The outcome of a write that timed out is unknown to its client. This one was applied
    // before its deadline, so the released sync commits it, and the partition serves on.
    await client.put(utf8("later"), utf8("l"));
    assert.equal(text(await client.get(utf8("k"))), "new");
    assert.equal(text(await client.get(utf8("later"))), "l");
  });
});

describe("a failed sync", () => {
  const memory = new MemoryStorage();
  const faulty = new FaultyStorage(memory);
  const gate = new GatedStorage(faulty);
  const servers: TestServer[] = [];
  after(async () => {
    gate.releaseAll();
    for (const server of servers) await server.stop();
  });

  test("fails every call waiting on it with UNAVAILABLE, and its writes never become visible", async () => {
    const server = await startTestServer([], gate);
    servers.push(server);
    const { client } = server;
    await client.put(utf8("base"), utf8("b"));
    await client.put(utf8("b"), utf8("old b"));
    const before = gate.syncs("default").started;

    gate.hold();
    const a = track(client.put(utf8("a"), utf8("a")));
    await gate.syncStarted("default", before + 1);
    // The held sync fails when it reaches the storage.
    faulty.inject({ op: "sync" });

    const waiting: Tracked<unknown>[] = [
      track(client.put(utf8("b"), utf8("new b"))),
      track(client.put(utf8("c"), utf8("c"))),
      track(
        client.commit([{ put: { key: utf8("d"), value: utf8("d") } }, { remove: { key: utf8("base") } }]),
      ),
      track(client.remove(utf8("nobody"))),
    ];
    // A buffered write is answered once applied; it belongs to the failed state all the same.
    const buffered = await client.put(utf8("f"), utf8("f"), { durability: Durability.BUFFERED });
    assert.equal(buffered.version, 0n);
    await waitUntil(
      async () =>
        (await applied(server, "c")) && (await applied(server, "d")) && !(await applied(server, "base")),
      "the batch to be applied",
    );
    waiting.push(track(client.sync()));
    await roundTrip(client);
    assert.equal(a.settled(), false);

    gate.releaseAll();
    await assert.rejects(a.promise, {
      code: status.UNAVAILABLE,
      details: /^sync failed: version \d+ of default was not committed: i\/o error: injected sync failure$/,
    });
    for (const [i, t] of waiting.entries()) {
      await assert.rejects(t.promise, { code: status.UNAVAILABLE, details: /not committed/ }, `call ${i}`);
    }
    assert.equal(faulty.faultsFired, 1);

    const failedKeys = ["a", "c", "d", "f"];
    const check = async (c: MetadataClient, when: string) => {
      for (const key of failedKeys) assert.equal(await c.get(utf8(key)), undefined, `${key} ${when}`);
      assert.equal(text(await c.get(utf8("b"))), "old b", `b ${when}`);
      assert.equal(text(await c.get(utf8("base"))), "b", `base ${when}`);
    };
    await check(client, "after the failure");

    // The partition keeps serving, and later syncs do not resurrect the failed writes.
    const e = await client.put(utf8("e"), utf8("e"));
    assert.ok(e.version >= 1n);
    await client.put(utf8("g"), utf8("g"), { durability: Durability.BUFFERED });
    await client.sync();
    for (let i = 0; i < 5; i++) await client.put(utf8(`more-${i}`), utf8("m"));
    await check(client, "after more writes");
    assert.equal(text(await client.get(utf8("e"))), "e");
    const listed: string[] = [];
    for await (const entry of client.keys()) listed.push(text(entry.key) as string);
    assert.deepEqual(listed, ["b", "base", "e", "g", "more-0", "more-1", "more-2", "more-3", "more-4"]);

    // Restart on what is durable in the storage.
    await server.stop();
    faulty.crash();
    const restarted = await startTestServer([], gate);
    servers.push(restarted);
    await check(restarted.client, "after a restart");
    const relisted: string[] = [];
    for await (const entry of restarted.client.keys()) relisted.push(text(entry.key) as string);
    assert.deepEqual(relisted, listed);
  });
  for (const { name, faults } of [
    { name: "a failed sync whose cleanup fails too", faults: [{ op: "sync" }, { op: "sync" }] as Fault[] },
    { name: "a torn write", faults: [{ op: "write", tearBytes: 5 }] as Fault[] },
    {
      name: "a torn write whose cleanup fails too",
      faults: [{ op: "write", tearBytes: 5 }, { op: "resize" }] as Fault[],
    },
  ]) {
    test(`${name}: the write fails with UNAVAILABLE and never shows, the partition serves on`, async () => {
      const storage = new FaultyStorage(new MemoryStorage());
      const server = await startTestServer([], storage);
      servers.push(server);
      await server.client.put(utf8("base"), utf8("b"));
      for (const fault of faults) storage.inject(fault);
      await assert.rejects(server.client.put(utf8("a"), utf8("a")), {
        code: status.UNAVAILABLE,
        details:
          /^sync failed: version \d+ of default was not committed: i\/o error: injected (sync|write) failure$/,
      });
      assert.equal(storage.faultsFired, faults.length);
      assert.equal(await server.client.get(utf8("a")), undefined);
      await server.client.put(utf8("e"), utf8("e"));
      await server.client.put(utf8("e2"), utf8("e"));
      const keys = async (client: MetadataClient) => {
        const out: string[] = [];
        for await (const entry of client.keys()) out.push(text(entry.key) as string);
        return out;
      };
      assert.deepEqual(await keys(server.client), ["base", "e", "e2"]);
      await server.stop();
      storage.crash();
      const restarted = await startTestServer([], storage);
      servers.push(restarted);
      assert.deepEqual(await keys(restarted.client), ["base", "e", "e2"]);
    });
  }
});

describe("a partition whose reopen fails", () => {
  test("after a failed sync whose cleanup failed too: UNKNOWN, the outcome of the write is unknown", async () => {
    const faulty = new FaultyStorage(new MemoryStorage());
    const server = await startTestServer([], faulty);
    try {
      await server.client.put(utf8("kept"), utf8("v"));
      // The sync fails, its cleanup cannot cut the target blob, and the reopen cannot open it.
      faulty.inject({ op: "sync" });
      faulty.inject({ op: "resize" });
      faulty.inject({ op: "open" });
      await assert.rejects(server.client.put(utf8("maybe"), utf8("x")), {
        code: status.UNKNOWN,
        details:
          /^sync of partition default failed and its bytes could not be discarded \(.+\): the outcome of the write is unknown: it is not visible now, but version \d+ may appear after a restart$/,
      });
      assert.equal(faulty.faultsFired, 3);
      assert.equal(await server.client.get(utf8("maybe")), undefined);
    } finally {
      await server.stop();
    }
  });
  test("answers UNAVAILABLE until a later reopen succeeds, then serves its last durable state", async () => {
    const faulty = new FaultyStorage(new MemoryStorage());
    const server = await startTestServer([], faulty);
    try {
      const { client } = server;
      await client.put(utf8("kept"), utf8("v"));
      // The next sync fails, and so does the reopen that follows it (opening blob "left").
      faulty.inject({ op: "sync" });
      faulty.inject({ op: "open" });
      await assert.rejects(
        client.put(utf8("lost"), utf8("x")),
        (err: { code?: number; details?: string }) => {
          assert.equal(err.code, status.UNAVAILABLE);
          assert.match(err.details ?? "", /not committed/);
          return true;
        },
      );
      const metric = async (name: string, labels = 'partition="default"') =>
        metricValue(await server.metrics(), name, labels);
      assert.equal(await metric("metadata_sync_failures_total"), 1);
      assert.equal(await metric("metadata_partition_available"), 0);
      // The reopen runs after the failed call is answered (its counter appears with its result).
      const failedReopens = 'partition="default",result="failed"';
      await waitUntil(
        async () => (await server.metrics()).includes(`metadata_partition_reopens_total{${failedReopens}}`),
        "the failed reopen to be counted",
      );
      assert.equal(await metric("metadata_partition_reopens_total", failedReopens), 1);
      // Calls right after the failed reopen are refused without touching the store.
      await assert.rejects(
        client.put(utf8("early"), utf8("x")),
        (err: { code?: number; details?: string }) => {
          assert.equal(err.code, status.UNAVAILABLE);
          assert.match(err.details ?? "", /reopening it from disk failed\): the write was not committed/);
          return true;
        },
      );
      // A later call retries the reopen (at most once a second) and then succeeds.
      await waitUntil(async () => {
        try {
          await client.put(utf8("later"), utf8("y"));
          return true;
        } catch {
          return false;
        }
      }, "a put to succeed after the reopen");
      assert.equal(Buffer.from((await client.get(utf8("kept"))) ?? []).toString(), "v");
      assert.equal(await client.get(utf8("lost")), undefined);
      assert.equal(await client.get(utf8("early")), undefined);
      assert.equal(Buffer.from((await client.get(utf8("later"))) ?? []).toString(), "y");
      assert.equal(await metric("metadata_partition_available"), 1);
      assert.equal(await metric("metadata_partition_reopens_total", 'partition="default",result="ok"'), 1);
      assert.equal(await metric("metadata_sync_failures_total"), 1);
    } finally {
      await server.stop();
    }
  });
});
