/**
 * Bad input over gRPC: every case answers its status code and a message naming the value and
 * the limit, and changes nothing (no partition created, no file written, earlier values intact,
 * no new version committed).
 */
import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { Client, credentials, status } from "@grpc/grpc-js";
import { MetadataService } from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { Durability, type MetadataClient } from "../../clients/ts/metadata-client.js";
import { GatedStorage } from "../support/gated-storage.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { RawClient } from "../support/raw-client.js";
import { track, waitUntil } from "../support/rpc-helpers.js";
import { u64, utf8 } from "../support/store-helpers.js";

interface Case {
  name: string;
  /** Makes the call through the server's client or, for what it cannot send, the raw client. */
  call: (client: MetadataClient, raw: RawClient) => Promise<unknown>;
  code: status;
  details: string;
}

/** Drains a Keys listing, so that a stream error surfaces as a rejection. */
async function drainKeys(client: MetadataClient, partition: string): Promise<void> {
  for await (const _ of client.keys({ partition })) {
    // Only the error matters.
  }
}

/** Every committed entry of a partition as hex pairs, in listing order. */
async function snapshot(client: MetadataClient, partition: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of client.keys({ partition, includeValues: true })) {
    out.push(`${Buffer.from(entry.key).toString("hex")}=${Buffer.from(entry.value ?? []).toString("hex")}`);
  }
  return out;
}

const MAX_VALUE_BYTES = 64;
const BATCH_MAX_MUTATIONS = 4;
const BATCH_MAX_BYTES = 1024;

describe("bad input", () => {
  let server: TestServer;
  let raw: RawClient;
  before(async () => {
    server = await startTestServer([
      "--partition-key-codec",
      "ids=fixed:8",
      "--max-value-bytes",
      String(MAX_VALUE_BYTES),
      "--batch-max-mutations",
      String(BATCH_MAX_MUTATIONS),
      "--batch-max-bytes",
      String(BATCH_MAX_BYTES),
    ]);
    raw = new RawClient(server.address);
  });
  after(async () => {
    raw.close();
    await server.stop();
  });

  const invalidNames = ["a/b", "..", "../escape", "with space", "dot.ted", "é", "tab\t", "nul\u0000"];

  /** The table. */
  const cases = (): Case[] => {
    const out: Case[] = [];
    const ok = utf8("ok");
    for (const name of invalidNames) {
      const details = `invalid partition name ${JSON.stringify(name)}: use 1 or more ASCII letters, digits, '-' or '_'`;
      const partition = { partition: name };
      const calls: [string, Case["call"]][] = [
        ["put", (client) => client.put(ok, ok, partition)],
        ["buffered put", (client) => client.put(ok, ok, { ...partition, durability: Durability.BUFFERED })],
        ["get", (client) => client.get(ok, partition)],
        ["remove", (client) => client.remove(ok, partition)],
        ["retain", (client) => client.retain({ keepNone: true }, partition)],
        ["keys", (client) => drainKeys(client, name)],
        ["sync", (client) => client.sync(partition)],
        ["clear", (client) => client.clear(partition)],
        ["commit", (client) => client.commit([{ put: { key: ok, value: ok } }], [], partition)],
      ];
      for (const [rpc, call] of calls) {
        out.push({
          name: `${rpc} in partition ${JSON.stringify(name)}`,
          call,
          code: status.INVALID_ARGUMENT,
          details,
        });
      }
    }

    const ids = { partition: "ids" };
    for (const width of [0, 1, 7, 9, 16]) {
      const key = Buffer.alloc(width, 1);
      const details = `key width ${width} bytes != 8`;
      out.push(
        {
          name: `put of a ${width}-byte key (fixed:8)`,
          call: (client) => client.put(key, ok, ids),
          code: status.INVALID_ARGUMENT,
          details,
        },
        {
          name: `get of a ${width}-byte key (fixed:8)`,
          call: (client) => client.get(key, ids),
          code: status.INVALID_ARGUMENT,
          details,
        },
        {
          name: `remove of a ${width}-byte key (fixed:8)`,
          call: (client) => client.remove(key, ids),
          code: status.INVALID_ARGUMENT,
          details,
        },
      );
    }
    out.push(
      {
        name: "commit put of a 7-byte key (fixed:8), after a valid one",
        call: (client) =>
          client.commit(
            [{ put: { key: u64(9), value: ok } }, { put: { key: Buffer.alloc(7), value: ok } }],
            [],
            ids,
          ),
        code: status.INVALID_ARGUMENT,
        details: "key width 7 bytes != 8",
      },
      {
        name: "commit remove of a 9-byte key (fixed:8)",
        call: (client) => client.commit([{ remove: { key: Buffer.alloc(9) } }], [], ids),
        code: status.INVALID_ARGUMENT,
        details: "key width 9 bytes != 8",
      },
      {
        name: "commit precondition on a 3-byte key (fixed:8)",
        call: (client) =>
          client.commit([{ put: { key: u64(9), value: ok } }], [{ key: utf8("abc"), absent: true }], ids),
        code: status.INVALID_ARGUMENT,
        details: "key width 3 bytes != 8",
      },
    );

    const empty = new Uint8Array();
    for (const partition of ["", "fresh"]) {
      const where = { partition };
      const label = partition === "" ? "default" : partition;
      out.push(
        {
          name: `put of an empty key (${label})`,
          call: (client) => client.put(empty, ok, where),
          code: status.INVALID_ARGUMENT,
          details: "empty key",
        },
        {
          name: `get of an empty key (${label})`,
          call: (client) => client.get(empty, where),
          code: status.INVALID_ARGUMENT,
          details: "empty key",
        },
        {
          name: `remove of an empty key (${label})`,
          call: (client) => client.remove(empty, where),
          code: status.INVALID_ARGUMENT,
          details: "empty key",
        },
        {
          name: `commit put of an empty key (${label})`,
          call: (client) =>
            client.commit([{ put: { key: ok, value: ok } }, { put: { key: empty, value: ok } }], [], where),
          code: status.INVALID_ARGUMENT,
          details: "empty key",
        },
        {
          name: `commit precondition on an empty key (${label})`,
          call: (client) =>
            client.commit([{ put: { key: ok, value: ok } }], [{ key: empty, present: true }], where),
          code: status.INVALID_ARGUMENT,
          details: "empty key",
        },
      );
    }

    const long = Buffer.alloc(4097, 0x61);
    const longDetails = "key too large: 4097 bytes > 4096";
    out.push(
      {
        name: "put of a 4097-byte key",
        call: (client) => client.put(long, ok),
        code: status.INVALID_ARGUMENT,
        details: longDetails,
      },
      {
        name: "get of a 4097-byte key",
        call: (client) => client.get(long),
        code: status.INVALID_ARGUMENT,
        details: longDetails,
      },
      {
        name: "remove of a 4097-byte key",
        call: (client) => client.remove(long),
        code: status.INVALID_ARGUMENT,
        details: longDetails,
      },
      {
        name: "commit remove of a 4097-byte key",
        call: (client) => client.commit([{ remove: { key: long } }], [], { partition: "fresh" }),
        code: status.INVALID_ARGUMENT,
        details: longDetails,
      },
    );

    const big = Buffer.alloc(MAX_VALUE_BYTES + 1, 0x62);
    const bigDetails = `value too large: ${MAX_VALUE_BYTES + 1} bytes > ${MAX_VALUE_BYTES}`;
    out.push(
      {
        name: "put of an oversize value",
        call: (client) => client.put(utf8("k"), big),
        code: status.INVALID_ARGUMENT,
        details: bigDetails,
      },
      {
        name: "buffered put of an oversize value in a new partition",
        call: (client) => client.put(utf8("k"), big, { partition: "fresh", durability: Durability.BUFFERED }),
        code: status.INVALID_ARGUMENT,
        details: bigDetails,
      },
      {
        name: "put of an oversize value (fixed:8)",
        call: (client) => client.put(u64(1), Buffer.alloc(1000), ids),
        code: status.INVALID_ARGUMENT,
        details: `value too large: 1000 bytes > ${MAX_VALUE_BYTES}`,
      },
      {
        name: "commit of an oversize value",
        call: (client) =>
          client.commit([
            { put: { key: utf8("small"), value: ok } },
            { put: { key: utf8("k"), value: big } },
          ]),
        code: status.INVALID_ARGUMENT,
        details: bigDetails,
      },
    );

    out.push(
      {
        name: "commit mutation without a kind",
        call: (_client, raw) =>
          raw.unary(MetadataService.method.commit, {
            mutations: [{ kind: { case: "put", value: { key: ok, value: ok } } }, {}],
          }),
        code: status.INVALID_ARGUMENT,
        details: "mutation 1 has neither put nor remove",
      },
      {
        name: "commit mutation without a kind, in a new partition",
        call: (_client, raw) =>
          raw.unary(MetadataService.method.commit, { partition: "fresh", mutations: [{}] }),
        code: status.INVALID_ARGUMENT,
        details: "mutation 0 has neither put nor remove",
      },
      {
        name: "commit precondition without a condition",
        call: (_client, raw) =>
          raw.unary(MetadataService.method.commit, {
            mutations: [{ kind: { case: "put", value: { key: ok, value: ok } } }],
            preconditions: [{ key: ok, condition: { case: "absent", value: true } }, { key: ok }],
          }),
        code: status.INVALID_ARGUMENT,
        details: "precondition 1 has no condition",
      },
      {
        name: "commit precondition without a condition, in a new partition",
        call: (_client, raw) =>
          raw.unary(MetadataService.method.commit, {
            partition: "fresh",
            mutations: [{ kind: { case: "remove", value: { key: ok } } }],
            preconditions: [{ key: ok }],
          }),
        code: status.INVALID_ARGUMENT,
        details: "precondition 0 has no condition",
      },
    );

    const tooMany = Array.from({ length: BATCH_MAX_MUTATIONS + 1 }, (_, i) => ({
      put: { key: utf8(`many-${i}`), value: ok },
    }));
    out.push(
      {
        name: "too many mutations in one commit",
        call: (client) => client.commit(tooMany),
        code: status.RESOURCE_EXHAUSTED,
        details: `too many mutations in one commit: ${BATCH_MAX_MUTATIONS + 1} > ${BATCH_MAX_MUTATIONS}`,
      },
      {
        name: "too many mutations in one commit, in a new partition",
        call: (client) => client.commit(tooMany, [], { partition: "fresh" }),
        code: status.RESOURCE_EXHAUSTED,
        details: `too many mutations in one commit: ${BATCH_MAX_MUTATIONS + 1} > ${BATCH_MAX_MUTATIONS}`,
      },
      {
        name: "too many bytes in one commit",
        call: (client) => client.commit([{ put: { key: Buffer.alloc(2000, 0x63), value: utf8("v") } }]),
        code: status.RESOURCE_EXHAUSTED,
        details: `commit too large: 2001 bytes > ${BATCH_MAX_BYTES}`,
      },
    );
    return out;
  };

  let partitionsBefore: string[];
  let filesBefore: string[];
  let defaultBefore: string[];
  let idsBefore: string[];
  let versionsBefore: bigint[];

  // State that no bad call may touch, recorded before any test runs.
  before(async () => {
    const { client } = server;
    await client.put(utf8("k"), utf8("before"));
    await client.put(utf8("ok"), utf8("before too"));
    await client.put(u64(1), utf8("one"), { partition: "ids" });
    partitionsBefore = await client.listPartitions();
    assert.deepEqual(partitionsBefore, ["default", "ids"]);
    filesBefore = (await readdir(server.dataDir)).sort();
    defaultBefore = await snapshot(client, "");
    idsBefore = await snapshot(client, "ids");
    versionsBefore = [(await client.sync()).version, (await client.sync({ partition: "ids" })).version];
  });

  for (const { name, call, code, details } of cases()) {
    test(`${name}: ${status[code]}`, async () => {
      await assert.rejects(call(server.client, raw), { code, details });
    });
  }

  test("no bad call changed anything", async () => {
    const { client } = server;
    // Every bad call once more, here, so this test holds whichever tests ran before it.
    for (const { name, call, code } of cases()) {
      await assert.rejects(call(client, raw), { code }, name);
    }
    assert.deepEqual(await client.listPartitions(), partitionsBefore);
    assert.deepEqual((await readdir(server.dataDir)).sort(), filesBefore);
    assert.deepEqual(await snapshot(client, ""), defaultBefore);
    assert.deepEqual(await snapshot(client, "ids"), idsBefore);
    assert.deepEqual(
      [(await client.sync()).version, (await client.sync({ partition: "ids" })).version],
      versionsBefore,
    );
    assert.equal(Buffer.from((await client.get(utf8("k"))) ?? []).toString(), "before");
    // The partitions still take good input.
    await client.put(utf8("k"), utf8("after"));
    await client.put(u64(2), utf8("two"), { partition: "ids" });
    assert.equal(Buffer.from((await client.get(utf8("k"))) ?? []).toString(), "after");
  });
});

describe("too many queued operations", () => {
  const gate = new GatedStorage();
  let server: TestServer;
  before(async () => {
    // One call may wait for its answer at a time.
    server = await startTestServer(["--max-queued-operations", "1"], gate);
  });
  after(async () => {
    gate.releaseAll();
    await server.stop();
  });

  test("are refused with RESOURCE_EXHAUSTED while a sync is held, and change nothing", async () => {
    const { client } = server;
    await client.put(utf8("k"), utf8("before"));
    const synced = gate.syncs("default").started;

    gate.hold();
    // a: applied, waiting for the held sync; it uses the one place.
    const a = track(client.put(utf8("a"), utf8("a")));
    await gate.syncStarted("default", synced + 1);
    const details = "too many queued operations for partition default: 1";
    const refused = [
      client.put(utf8("b"), utf8("b")),
      client.put(utf8("c"), utf8("c"), { durability: Durability.BUFFERED }),
      client.remove(utf8("k")),
      client.commit([{ put: { key: utf8("d"), value: utf8("d") } }]),
      client.sync(),
      client.clear(),
    ];
    for (const call of refused) await assert.rejects(call, { code: status.RESOURCE_EXHAUSTED, details });
    assert.ok(!a.settled());

    gate.releaseAll();
    assert.ok((await a.promise).version >= 2n);
    for (const key of ["b", "c", "d"]) assert.equal(await client.get(utf8(key)), undefined, key);
    assert.equal(Buffer.from((await client.get(utf8("k"))) ?? []).toString(), "before");
  });
});

describe("too many queued operations, the limit alone", () => {
  test("operations waiting for the next sync count against --max-queued-operations", {}, async () => {
    const gate = new GatedStorage();
    const server = await startTestServer(["--max-queued-operations", "1"], gate);
    try {
      const { client } = server;
      await client.put(utf8("k"), utf8("before"));
      const synced = gate.syncs("default").started;
      const group = await server.service.partitions.forWrite("default");
      gate.hold();
      const a = track(client.put(utf8("a"), utf8("a")));
      await gate.syncStarted("default", synced + 1);
      const waiting = Array.from({ length: 10 }, (_, i) => track(client.put(utf8(`w-${i}`), utf8("w"))));
      await waitUntil(
        () => waiting.every((t, i) => t.settled() || group.live().get(utf8(`w-${i}`)) !== undefined),
        "every put to be applied or refused",
      );
      gate.releaseAll();
      await a.promise;
      let refused = 0;
      for (const t of waiting) {
        try {
          await t.promise;
        } catch (err) {
          assert.equal((err as { code?: unknown }).code, status.RESOURCE_EXHAUSTED);
          refused++;
        }
      }
      // One operation may wait; the other nine are over the limit.
      assert.ok(refused >= 9, `${refused} of 10 refused`);
    } finally {
      gate.releaseAll();
      await server.stop();
    }
  });
});

describe("requests whose bytes do not decode", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  // Field 1 (partition) claims 255 bytes; the message ends after the length.
  const garbage = Buffer.from([0x0a, 0xff, 0x01]);

  test("a unary call answers INVALID_ARGUMENT and changes nothing", async () => {
    const raw = new Client(server.address, credentials.createInsecure());
    try {
      const error = await new Promise<{ code?: number; details?: string }>((resolve) =>
        raw.makeUnaryRequest(
          "/commonware.metadata.v1.MetadataService/Put",
          () => garbage,
          (bytes: Buffer) => bytes,
          {},
          (err) => resolve(err ?? {}),
        ),
      );
      assert.equal(error.code, status.INVALID_ARGUMENT);
      assert.match(error.details ?? "", /^malformed request: /);
      assert.deepEqual(await server.client.listPartitions(), []);
    } finally {
      raw.close();
    }
  });

  test("a Keys stream answers INVALID_ARGUMENT", async () => {
    const raw = new Client(server.address, credentials.createInsecure());
    try {
      const call = raw.makeServerStreamRequest(
        "/commonware.metadata.v1.MetadataService/Keys",
        () => garbage,
        (bytes: Buffer) => bytes,
        {},
      );
      const error = await new Promise<{ code?: number; details?: string }>((resolve) => {
        call.on("data", () => undefined);
        call.on("error", resolve);
        call.on("end", () => resolve({}));
      });
      assert.equal(error.code, status.INVALID_ARGUMENT);
      assert.match(error.details ?? "", /^malformed request: /);
    } finally {
      raw.close();
    }
  });
});
