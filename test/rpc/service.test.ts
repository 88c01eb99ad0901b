/**
 * MetadataService over real grpc-js on loopback: every RPC with its answers (previous values,
 * versions, counts), Keys filters and chunking, Commit preconditions (all or nothing),
 * partitions (default name, reads that create nothing, key codecs per partition), buffered
 * writes (invisible until the next sync) and a restart on the same data directory.
 */
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { MetadataService } from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { Durability, type MetadataClient } from "../../clients/ts/metadata-client.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { RawClient } from "../support/raw-client.js";
import { Rng, testSeed } from "../support/rng.js";
import { startDirServer, waitUntil } from "../support/rpc-helpers.js";
import { u64, utf8 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";

const BUFFERED = { durability: Durability.BUFFERED };

/** Bytes as text (undefined stays undefined), so assertions print readably. */
function text(bytes: Uint8Array | undefined): string | undefined {
  return bytes === undefined ? undefined : Buffer.from(bytes).toString("utf8");
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("hex");
}

/** Every committed (key, value) of a partition, as text, in listing order. */
async function listing(client: MetadataClient, partition: string): Promise<[string, string][]> {
  const out: [string, string][] = [];
  for await (const entry of client.keys({ partition, includeValues: true })) {
    out.push([text(entry.key) as string, text(entry.value) as string]);
  }
  return out;
}

/** Puts every entry durably with one Commit. */
async function commitAll(
  client: MetadataClient,
  partition: string,
  entries: [string, string][],
): Promise<bigint> {
  const response = await client.commit(
    entries.map(([key, value]) => ({ put: { key: utf8(key), value: utf8(value) } })),
    [],
    { partition },
  );
  return response.version;
}

describe("every RPC", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  test("put returns the previous value and the committing version; get reads it at that version", async () => {
    const { client } = server;
    const first = await client.put(utf8("k"), utf8("v1"), { partition: "put" });
    assert.equal(first.previous, undefined);
    assert.ok(first.version >= 1n, `version ${first.version}`);
    const read = await client.getWithVersion(utf8("k"), { partition: "put" });
    assert.equal(text(read.value), "v1");
    assert.equal(read.version, first.version);

    const second = await client.put(utf8("k"), utf8("v2"), {
      partition: "put",
      durability: Durability.UNSPECIFIED,
    });
    assert.equal(text(second.previous), "v1");
    assert.equal(second.version, first.version + 1n);
    const again = await client.getWithVersion(utf8("k"), { partition: "put" });
    assert.equal(text(again.value), "v2");
    assert.equal(again.version, second.version);

    const empty = await client.put(utf8("empty"), new Uint8Array(), { partition: "put" });
    assert.equal(empty.previous, undefined);
    assert.equal(text(await client.get(utf8("empty"), { partition: "put" })), "");
  });

  test("get of a missing key answers absent at the committed version", async () => {
    const { client } = server;
    const put = await client.put(utf8("present"), utf8("x"), { partition: "get" });
    const read = await client.getWithVersion(utf8("absent"), { partition: "get" });
    assert.equal(read.value, undefined);
    assert.equal(read.version, put.version);
  });

  test("remove returns the removed value, and nothing for a missing key", async () => {
    const { client } = server;
    await client.put(utf8("k"), utf8("v"), { partition: "remove" });
    const removed = await client.remove(utf8("k"), { partition: "remove" });
    assert.equal(text(removed.previous), "v");
    assert.ok(removed.version >= 2n);
    assert.equal(await client.get(utf8("k"), { partition: "remove" }), undefined);
    const missing = await client.remove(utf8("k"), { partition: "remove" });
    assert.equal(missing.previous, undefined);
    assert.ok(missing.version >= removed.version);
  });

  test("retain: drop a prefix (invert), keep a range, keep a prefix, keep everything, keep none", async () => {
    const { client } = server;
    const partition = "retain";
    await commitAll(client, partition, [
      ["a/1", "1"],
      ["a/2", "2"],
      ["ab", "3"],
      ["b/1", "4"],
      ["b/2", "5"],
      ["c/1", "6"],
      ["c/2", "7"],
    ]);
    const keys = async () => (await listing(client, partition)).map(([key]) => key);

    // "Remove every key with prefix a/": the filter selects them, invert removes them.
    const dropped = await client.retain({ prefix: utf8("a/"), invert: true }, { partition });
    assert.equal(dropped.removed, 2n);
    assert.ok(dropped.version >= 2n);
    assert.deepEqual(await keys(), ["ab", "b/1", "b/2", "c/1", "c/2"]);

    // Keep [b/2, c/2): everything else goes.
    const ranged = await client.retain({ start: utf8("b/2"), end: utf8("c/2") }, { partition });
    assert.equal(ranged.removed, 3n);
    assert.equal(ranged.version, dropped.version + 1n);
    assert.deepEqual(await keys(), ["b/2", "c/1"]);

    // Prefix and range together: both must hold for a key to be kept.
    await commitAll(client, partition, [
      ["c/0", "8"],
      ["c/3", "9"],
    ]);
    const both = await client.retain({ prefix: utf8("c/"), start: utf8("c/1") }, { partition });
    assert.equal(both.removed, 2n);
    assert.deepEqual(await keys(), ["c/1", "c/3"]);

    const everything = await client.retain({}, { partition });
    assert.equal(everything.removed, 0n);
    assert.deepEqual(await keys(), ["c/1", "c/3"]);

    // keep_none removes every key, whatever the filter says.
    const none = await client.retain({ prefix: utf8("c/"), keepNone: true }, { partition });
    assert.equal(none.removed, 2n);
    assert.deepEqual(await keys(), []);
    const read = await client.getWithVersion(utf8("c/1"), { partition });
    assert.equal(read.value, undefined);
    assert.equal(read.version, none.version);
  });

  test("keys: ascending byte order in chunks of at most 1000 keys, one version in every chunk", async () => {
    const { client } = server;
    const partition = "keys";
    const seed = testSeed();
    const rng = new Rng(seed);
    // Random binary keys of 1..12 bytes (0x00 and 0xff included): byte order, not text order.
    const model = new Map<string, Buffer>();
    while (model.size < 2500) {
      const key = rng.bytes(1 + rng.int(12));
      model.set(hex(key), rng.bytes(rng.int(40)));
    }
    const entries = [...model].map(([key, value]) => ({ put: { key: Buffer.from(key, "hex"), value } }));
    // Two commits, so the listing spans more than one batch of writes.
    await client.commit(entries.slice(0, 1200), [], { partition });
    const { version } = await client.commit(entries.slice(1200), [], { partition });
    const sorted = [...model.keys()].sort((a, b) =>
      Buffer.compare(Buffer.from(a, "hex"), Buffer.from(b, "hex")),
    );

    const raw = new RawClient(server.address);
    try {
      const chunks = await raw.keyChunks({ partition, includeValues: true });
      assert.ok(chunks.length >= 3, `${chunks.length} chunks`);
      for (const chunk of chunks) {
        assert.ok(chunk.keys.length <= 1000, `chunk of ${chunk.keys.length} keys`);
        assert.equal(chunk.values.length, chunk.keys.length);
        assert.equal(chunk.version, version);
      }
      const listed = chunks.flatMap((chunk) => chunk.keys.map(hex));
      assert.equal(listed.length, sorted.length, `seed ${seed}`);
      assert.deepEqual(listed, sorted, `seed ${seed}: listing out of byte order`);
      const values = chunks.flatMap((chunk) => chunk.values.map(hex));
      assert.deepEqual(
        values,
        sorted.map((key) => (model.get(key) as Buffer).toString("hex")),
      );

      // Without include_values no value is sent.
      const bare = await raw.keyChunks({ partition });
      assert.ok(bare.every((chunk) => chunk.values.length === 0));
      assert.deepEqual(
        bare.flatMap((chunk) => chunk.keys.map(hex)),
        sorted,
      );
    } finally {
      raw.close();
    }

    // The client's iterator gives the same listing.
    const viaClient: string[] = [];
    for await (const entry of client.keys({ partition })) viaClient.push(hex(entry.key));
    assert.deepEqual(viaClient, sorted);
  });

  test("keys: prefix, start, end and limit select what the filter says", async () => {
    const { client } = server;
    const partition = "keys-filter";
    const all = ["a", "a/1", "a/2", "a/3", "b", "b/1", "b/2", "c"];
    await commitAll(
      client,
      partition,
      all.map((key) => [key, `value of ${key}`]),
    );
    const list = async (options: {
      prefix?: string;
      start?: string;
      end?: string;
      limit?: number;
    }): Promise<string[]> => {
      const out: string[] = [];
      for await (const entry of client.keys({
        partition,
        ...(options.prefix === undefined ? {} : { prefix: utf8(options.prefix) }),
        ...(options.start === undefined ? {} : { start: utf8(options.start) }),
        ...(options.end === undefined ? {} : { end: utf8(options.end) }),
        ...(options.limit === undefined ? {} : { limit: options.limit }),
      })) {
        assert.equal(entry.value, undefined);
        out.push(text(entry.key) as string);
      }
      return out;
    };
    assert.deepEqual(await list({}), all);
    assert.deepEqual(await list({ prefix: "a/" }), ["a/1", "a/2", "a/3"]);
    assert.deepEqual(await list({ start: "a/2" }), ["a/2", "a/3", "b", "b/1", "b/2", "c"]);
    assert.deepEqual(await list({ end: "b" }), ["a", "a/1", "a/2", "a/3"]);
    assert.deepEqual(await list({ start: "a/2", end: "b/2" }), ["a/2", "a/3", "b", "b/1"]);
    assert.deepEqual(await list({ prefix: "a", start: "a/2" }), ["a/2", "a/3"]);
    assert.deepEqual(await list({ prefix: "b", end: "b/2" }), ["b", "b/1"]);
    assert.deepEqual(await list({ limit: 3 }), ["a", "a/1", "a/2"]);
    assert.deepEqual(await list({ prefix: "b", limit: 2 }), ["b", "b/1"]);
    assert.deepEqual(await list({ limit: 100 }), all);
    assert.deepEqual(await list({ prefix: "z" }), []);
    assert.deepEqual(await list({ start: "b", end: "a" }), []);

    const withValues: [string, string][] = [];
    for await (const entry of client.keys({ partition, prefix: utf8("b/"), includeValues: true })) {
      withValues.push([text(entry.key) as string, text(entry.value) as string]);
    }
    assert.deepEqual(withValues, [
      ["b/1", "value of b/1"],
      ["b/2", "value of b/2"],
    ]);
  });

  test("keys: large values are chunked by bytes as well", async () => {
    const { client } = server;
    const partition = "keys-bytes";
    const value = Buffer.alloc(10_000, 7);
    const entries = Array.from({ length: 100 }, (_, i) => ({ put: { key: u64(i), value } }));
    await client.commit(entries, [], { partition });
    const raw = new RawClient(server.address);
    try {
      const chunks = await raw.keyChunks({ partition, includeValues: true });
      // 256 KiB per chunk: 100 values of 10 kB cannot travel in one message.
      assert.ok(chunks.length >= 4, `${chunks.length} chunks`);
      for (const chunk of chunks) {
        const bytes = chunk.keys.reduce(
          (sum, key, i) => sum + key.length + (chunk.values[i]?.length ?? 0),
          0,
        );
        assert.ok(bytes <= 256 * 1024 + 10_008, `chunk of ${bytes} bytes`);
      }
      assert.deepEqual(
        chunks.flatMap((chunk) => chunk.keys.map(hex)),
        entries.map((e) => hex(e.put.key)),
      );
    } finally {
      raw.close();
    }
  });

  test("sync answers the last committed version, and a newer one when something was pending", async () => {
    const { client } = server;
    const partition = "sync";
    const put = await client.put(utf8("k"), utf8("v"), { partition });
    assert.equal((await client.sync({ partition })).version, put.version);
    await client.put(utf8("k2"), utf8("v2"), { partition, ...BUFFERED });
    const synced = await client.sync({ partition });
    assert.equal(synced.version, put.version + 1n);
    assert.equal((await client.getWithVersion(utf8("k2"), { partition })).version, synced.version);
  });

  test("clear removes every key and reports how many", async () => {
    const { client } = server;
    const partition = "clear";
    await commitAll(client, partition, [
      ["a", "1"],
      ["b", "2"],
      ["c", "3"],
    ]);
    const cleared = await client.clear({ partition });
    assert.equal(cleared.removed, 3n);
    assert.ok(cleared.version >= 2n);
    assert.deepEqual(await listing(client, partition), []);
    const read = await client.getWithVersion(utf8("a"), { partition });
    assert.equal(read.value, undefined);
    assert.equal(read.version, cleared.version);
    assert.equal((await client.clear({ partition })).removed, 0n);
  });

  test("commit applies puts and removes together; a later mutation of a key wins", async () => {
    const { client } = server;
    const partition = "commit";
    await commitAll(client, partition, [
      ["gone", "x"],
      ["kept", "y"],
    ]);
    const { version } = await client.commit(
      [
        { put: { key: utf8("a"), value: utf8("1") } },
        { remove: { key: utf8("gone") } },
        { put: { key: utf8("twice"), value: utf8("first") } },
        { put: { key: utf8("twice"), value: utf8("second") } },
        { put: { key: utf8("short-lived"), value: utf8("z") } },
        { remove: { key: utf8("short-lived") } },
      ],
      [],
      { partition },
    );
    assert.deepEqual(await listing(client, partition), [
      ["a", "1"],
      ["kept", "y"],
      ["twice", "second"],
    ]);
    assert.equal((await client.getWithVersion(utf8("a"), { partition })).version, version);
  });

  test("commit preconditions: absent, present and value_equals gate the batch", async () => {
    const { client } = server;
    const partition = "preconditions";
    await commitAll(client, partition, [
      ["lock", "owner-1"],
      ["counter", "1"],
    ]);
    await client.commit(
      [{ put: { key: utf8("counter"), value: utf8("2") } }, { put: { key: utf8("new"), value: utf8("n") } }],
      [
        { key: utf8("new"), absent: true },
        { key: utf8("lock"), present: true },
        { key: utf8("counter"), valueEquals: utf8("1") },
      ],
      { partition },
    );
    assert.deepEqual(await listing(client, partition), [
      ["counter", "2"],
      ["lock", "owner-1"],
      ["new", "n"],
    ]);
  });

  test("a failing precondition answers FAILED_PRECONDITION and nothing of the batch is visible", async () => {
    const { client } = server;
    const partition = "preconditions-fail";
    const before = [
      ["counter", "1"],
      ["lock", "owner-1"],
    ] as [string, string][];
    await commitAll(client, partition, before);
    const committedVersion = (await client.getWithVersion(utf8("lock"), { partition })).version;
    const batch = [
      { put: { key: utf8("counter"), value: utf8("2") } },
      { put: { key: utf8("fresh"), value: utf8("f") } },
      { remove: { key: utf8("lock") } },
    ];
    const cases: { name: string; condition: Parameters<MetadataClient["commit"]>[1]; details: string }[] = [
      {
        name: "absent, but present",
        condition: [{ key: utf8("lock"), absent: true }],
        details: `precondition failed: key ${hex(utf8("lock"))} is present`,
      },
      {
        name: "present, but absent",
        condition: [{ key: utf8("nobody"), present: true }],
        details: `precondition failed: key ${hex(utf8("nobody"))} is absent`,
      },
      {
        name: "value_equals, but another value",
        condition: [{ key: utf8("counter"), valueEquals: utf8("7") }],
        details: `precondition failed: key ${hex(utf8("counter"))} has another value`,
      },
      {
        name: "value_equals, but absent",
        condition: [{ key: utf8("nobody"), valueEquals: utf8("1") }],
        details: `precondition failed: key ${hex(utf8("nobody"))} is absent`,
      },
      {
        name: "the last of several fails",
        condition: [
          { key: utf8("lock"), present: true },
          { key: utf8("counter"), valueEquals: utf8("1") },
          { key: utf8("fresh"), present: true },
        ],
        details: `precondition failed: key ${hex(utf8("fresh"))} is absent`,
      },
    ];
    for (const { name, condition, details } of cases) {
      await assert.rejects(
        client.commit(batch, condition, { partition }),
        { code: status.FAILED_PRECONDITION, details },
        name,
      );
      assert.deepEqual(await listing(client, partition), before, name);
    }
    // Nothing was committed by the refused batches: the version did not move.
    assert.equal((await client.sync({ partition })).version, committedVersion);
    assert.equal((await client.getWithVersion(utf8("fresh"), { partition })).version, committedVersion);
  });

  test("a commit without mutations still checks its preconditions", {}, async () => {
    const { client } = server;
    const partition = "preconditions-only";
    await client.put(utf8("present"), utf8("p"), { partition });
    const failing = () => client.commit([], [{ key: utf8("absent"), present: true }], { partition });
    const details = `precondition failed: key ${hex(utf8("absent"))} is absent`;
    // Nothing pending in the partition.
    await assert.rejects(failing(), { code: status.FAILED_PRECONDITION, details });
    // Something pending (buffered) in the partition.
    await client.put(utf8("pending"), utf8("x"), { partition, ...BUFFERED });
    await assert.rejects(failing(), { code: status.FAILED_PRECONDITION, details });
    // Preconditions that hold answer OK.
    await client.commit([], [{ key: utf8("present"), valueEquals: utf8("p") }], { partition });
  });

  test("preconditions see mutations applied but not yet committed", async () => {
    const { client } = server;
    const partition = "preconditions-pending";
    // Buffered: applied at once, committed by a later sync. The precondition sees it.
    await client.put(utf8("pending"), utf8("p"), { partition, ...BUFFERED });
    await client.commit(
      [{ put: { key: utf8("after"), value: utf8("a") } }],
      [{ key: utf8("pending"), valueEquals: utf8("p") }],
      { partition },
    );
    assert.deepEqual(await listing(client, partition), [
      ["after", "a"],
      ["pending", "p"],
    ]);
  });

  test("list partitions names every partition written, sorted", async () => {
    const { client } = server;
    // Written here, in an order other than the sorted one, so the test needs no other test's data.
    for (const partition of ["zz-last", "put", "AA-first", "retain", "keys"]) {
      await client.put(utf8("k"), utf8("v"), { partition });
    }
    const names = await client.listPartitions();
    assert.deepEqual(names, [...names].sort());
    for (const name of ["AA-first", "put", "retain", "keys", "zz-last"])
      assert.ok(names.includes(name), name);
    assert.deepEqual((await readdir(server.dataDir)).sort(), names);
  });
});

describe("partitions", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer(["--partition-key-codec", "ids=fixed:8"]);
  });
  after(async () => {
    await server.stop();
  });

  test("an empty partition name means the default partition", async () => {
    const { client } = server;
    const put = await client.put(utf8("k"), utf8("via empty name"));
    const read = await client.getWithVersion(utf8("k"), { partition: "default" });
    assert.equal(text(read.value), "via empty name");
    assert.equal(read.version, put.version);
    await client.put(utf8("k2"), utf8("via name"), { partition: "default" });
    assert.equal(text(await client.get(utf8("k2"))), "via name");
    assert.deepEqual(await listing(client, ""), [
      ["k", "via empty name"],
      ["k2", "via name"],
    ]);
    assert.ok((await client.listPartitions()).includes("default"));
    const raw = new RawClient(server.address);
    try {
      const synced = await raw.unary(MetadataService.method.sync, { partition: "" });
      assert.equal(synced.version, (await client.sync({ partition: "default" })).version);
    } finally {
      raw.close();
    }
  });

  test("a read of a partition that does not exist answers empty and creates nothing", async () => {
    const { client } = server;
    await client.put(utf8("k"), utf8("v"), { partition: "exists" });
    const partitionsBefore = await client.listPartitions();
    const filesBefore = (await readdir(server.dataDir)).sort();

    const read = await client.getWithVersion(utf8("k"), { partition: "nowhere" });
    assert.equal(read.value, undefined);
    assert.equal(read.version, 0n);
    assert.equal(await client.get(u64(1), { partition: "ids" }), undefined);
    assert.deepEqual(await listing(client, "nowhere"), []);
    const raw = new RawClient(server.address);
    try {
      const chunks = await raw.keyChunks({ partition: "nowhere-either", includeValues: true });
      assert.equal(
        chunks.reduce((n, chunk) => n + chunk.keys.length, 0),
        0,
      );
      for (const chunk of chunks) assert.equal(chunk.version, 0n);
    } finally {
      raw.close();
    }

    assert.deepEqual(await client.listPartitions(), partitionsBefore);
    assert.deepEqual((await readdir(server.dataDir)).sort(), filesBefore);
    assert.ok(!partitionsBefore.includes("nowhere"));
  });

  test("removals and syncs of a partition that does not exist change nothing and create nothing", async () => {
    const { client } = server;
    const partitionsBefore = await client.listPartitions();
    const filesBefore = (await readdir(server.dataDir)).sort();

    const removed = await client.remove(utf8("k"), { partition: "absent-remove" });
    assert.equal(removed.previous, undefined);
    assert.equal(removed.version, 0n);
    assert.equal((await client.retain({ keepNone: true }, { partition: "absent-retain" })).removed, 0n);
    assert.equal((await client.clear({ partition: "absent-clear" })).removed, 0n);
    assert.equal((await client.sync({ partition: "absent-sync" })).version, 0n);

    assert.deepEqual(await client.listPartitions(), partitionsBefore);
    assert.deepEqual((await readdir(server.dataDir)).sort(), filesBefore);
  });

  test("a partition's key codec comes from --partition-key-codec; others keep the default", async () => {
    const { client } = server;
    // ids: fixed 8-byte keys, listed in numeric order of their big-endian value.
    for (const n of [300, 2, 70_000, 1]) await client.put(u64(n), utf8(`id ${n}`), { partition: "ids" });
    const listed: bigint[] = [];
    for await (const entry of client.keys({ partition: "ids" }))
      listed.push(Buffer.from(entry.key).readBigUInt64BE());
    assert.deepEqual(listed, [1n, 2n, 300n, 70_000n]);
    await assert.rejects(client.put(utf8("abc"), utf8("x"), { partition: "ids" }), {
      code: status.INVALID_ARGUMENT,
      details: "key width 3 bytes != 8",
    });
    // The default partition takes variable keys: 3 bytes and 9 bytes alike.
    await client.put(utf8("abc"), utf8("x"));
    await client.put(Buffer.alloc(9, 1), utf8("y"));
    assert.equal(text(await client.get(utf8("abc"))), "x");
  });
});

describe("--default-key-codec", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer([
      "--default-key-codec",
      "fixed:8",
      "--partition-key-codec",
      "names=variable",
      "--default-partition",
      "main",
    ]);
  });
  after(async () => {
    await server.stop();
  });

  test("every partition takes the default codec unless named otherwise", async () => {
    const { client } = server;
    await client.put(u64(5), utf8("five"));
    assert.equal(text(await client.get(u64(5), { partition: "main" })), "five");
    await client.put(u64(6), utf8("six"), { partition: "other" });
    for (const partition of ["", "main", "other"]) {
      await assert.rejects(client.put(utf8("name"), utf8("x"), { partition }), {
        code: status.INVALID_ARGUMENT,
        details: "key width 4 bytes != 8",
      });
    }
    await client.put(utf8("name"), utf8("x"), { partition: "names" });
    await client.put(utf8("a-much-longer-name"), utf8("y"), { partition: "names" });
    assert.deepEqual(await listing(client, "names"), [
      ["a-much-longer-name", "y"],
      ["name", "x"],
    ]);
    assert.deepEqual(await client.listPartitions(), ["main", "names", "other"]);
  });
});

describe("buffered writes", () => {
  let server: TestServer;
  before(async () => {
    // A flush interval of an hour: only an explicit sync (or a durable write) commits.
    server = await startTestServer(["--flush-interval-ms", "3600000"]);
  });
  after(async () => {
    await server.stop();
  });

  test("are answered with version 0 and are not visible until the next sync", async () => {
    const { client } = server;
    const partition = "buffered";
    const durable = await client.put(utf8("k"), utf8("old"), { partition });
    const buffered = await client.put(utf8("k"), utf8("new"), { partition, ...BUFFERED });
    assert.equal(buffered.version, 0n);
    assert.equal(text(buffered.previous), "old");
    const removed = await client.remove(utf8("gone-soon"), { partition, ...BUFFERED });
    assert.equal(removed.version, 0n);
    const committed = await client.commit([{ put: { key: utf8("batch"), value: utf8("b") } }], [], {
      partition,
      ...BUFFERED,
    });
    assert.equal(committed.version, 0n);

    // Reads see the committed state only.
    const read = await client.getWithVersion(utf8("k"), { partition });
    assert.equal(text(read.value), "old");
    assert.equal(read.version, durable.version);
    assert.equal(await client.get(utf8("batch"), { partition }), undefined);
    assert.deepEqual(await listing(client, partition), [["k", "old"]]);

    const synced = await client.sync({ partition });
    assert.equal(synced.version, durable.version + 1n);
    assert.deepEqual(await listing(client, partition), [
      ["batch", "b"],
      ["k", "new"],
    ]);
  });

  test("buffered puts followed by a sync become visible together, at one version", async () => {
    const { client } = server;
    const partition = "buffered-together";
    const keys = Array.from({ length: 20 }, (_, i) => utf8(`key-${String(i).padStart(2, "0")}`));
    for (const key of keys) {
      assert.equal((await client.put(key, utf8("v"), { partition, ...BUFFERED })).version, 0n);
    }
    for (const key of keys) assert.equal(await client.get(key, { partition }), undefined);
    const { version } = await client.sync({ partition });
    assert.equal(version, 1n);
    for (const key of keys) {
      const read = await client.getWithVersion(key, { partition });
      assert.equal(text(read.value), "v");
      assert.equal(read.version, version);
    }
  });

  test("a durable write commits the buffered writes applied before it", async () => {
    const { client } = server;
    const partition = "buffered-then-durable";
    await client.put(utf8("a"), utf8("buffered"), { partition, ...BUFFERED });
    const durable = await client.put(utf8("b"), utf8("durable"), { partition });
    const read = await client.getWithVersion(utf8("a"), { partition });
    assert.equal(text(read.value), "buffered");
    assert.equal(read.version, durable.version);
  });
});

describe("buffered writes with a short flush interval", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer(["--flush-interval-ms", "20"]);
  });
  after(async () => {
    await server.stop();
  });

  test("become visible after the flush interval without any sync call", async () => {
    const { client } = server;
    const partition = "flushed";
    const started = Date.now();
    const keys = [utf8("x"), utf8("y"), utf8("z")];
    for (const key of keys) await client.put(key, utf8("v"), { partition, ...BUFFERED });
    await waitUntil(
      async () => (await client.get(utf8("z"), { partition })) !== undefined,
      "the buffered put to be flushed",
      5000,
    );
    const elapsed = Date.now() - started;
    const versions = new Set<bigint>();
    for (const key of keys) {
      const read = await client.getWithVersion(key, { partition });
      assert.equal(text(read.value), "v");
      versions.add(read.version);
    }
    assert.ok(elapsed < 5000, `flushed after ${elapsed} ms`);
    assert.equal(versions.size, 1);
  });
});

describe("restart", () => {
  test("durable writes, and buffered writes committed by stop(), are all there on the same data dir", async () => {
    const dir = await tempDir("metadata-restart-");
    const flags = ["--partition-key-codec", "ids=fixed:8", "--flush-interval-ms", "3600000"];
    try {
      const first = await startDirServer(dir.path, flags);
      const expected = new Map<string, [string, string][]>();
      try {
        const { client } = first;
        await client.put(utf8("a"), utf8("1"));
        await client.put(utf8("b"), utf8("2"));
        await client.remove(utf8("a"));
        await client.commit(
          Array.from({ length: 50 }, (_, i) => ({ put: { key: utf8(`c${i}`), value: utf8(`v${i}`) } })),
          [],
          { partition: "batch" },
        );
        await client.retain({ prefix: utf8("c1"), invert: true }, { partition: "batch" });
        for (const n of [3, 1, 2]) await client.put(u64(n), utf8(`id ${n}`), { partition: "ids" });
        await client.put(utf8("late"), utf8("buffered"), { partition: "buffered", ...BUFFERED });
        await client.put(utf8("gone"), utf8("x"), { partition: "cleared" });
        await client.clear({ partition: "cleared" });
        for (const partition of ["default", "batch", "cleared"]) {
          expected.set(partition, await listing(client, partition));
        }
        assert.equal(expected.get("default")?.length, 1);
        assert.equal(expected.get("batch")?.length, 39);
        assert.equal(await client.get(utf8("late"), { partition: "buffered" }), undefined);
      } finally {
        await first.stop();
      }

      const second = await startDirServer(dir.path, flags);
      try {
        const { client } = second;
        for (const [partition, entries] of expected) {
          assert.deepEqual(await listing(client, partition), entries, partition);
        }
        const ids: string[] = [];
        for await (const entry of client.keys({ partition: "ids", includeValues: true })) {
          ids.push(text(entry.value) as string);
        }
        assert.deepEqual(ids, ["id 1", "id 2", "id 3"]);
        assert.equal(text(await client.get(utf8("late"), { partition: "buffered" })), "buffered");
        assert.deepEqual(await client.listPartitions(), ["batch", "buffered", "cleared", "default", "ids"]);
        // Versions go on from where the first server stopped.
        const before = (await client.getWithVersion(utf8("b"))).version;
        assert.equal((await client.put(utf8("d"), utf8("4"))).version, before + 1n);
      } finally {
        await second.stop();
      }
    } finally {
      await dir.remove();
    }
  });
});
