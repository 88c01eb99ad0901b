/**
 * The Write stream over real grpc-js on loopback: every request answered once with its id and
 * its own status (10,000 mixed requests checked against a model), failures that do not end the
 * stream, the order of one stream, durable answers only after the fsync (gated storage), bounded
 * server memory for a client that never reads its answers, cancel and shutdown mid-stream, and
 * bytes that do not decode.
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import { after, before, describe, test } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  Durability,
  MetadataService,
  type WriteRequest,
  WriteRequestSchema,
  type WriteResponse,
} from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { FaultyStorage } from "../../server/store/storage/faulty.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { GatedStorage } from "../support/gated-storage.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { Rng, testSeed } from "../support/rng.js";
import { track, waitUntil } from "../support/rpc-helpers.js";
import { utf8 } from "../support/store-helpers.js";

const WRITE_PATH = `/${MetadataService.typeName}/${MetadataService.method.write.name}`;
const method = MetadataService.method.write;

function text(bytes: Uint8Array | undefined): string | undefined {
  return bytes === undefined ? undefined : Buffer.from(bytes).toString("utf8");
}

/** A raw Write stream: requests as built by the test, answers as they arrive. */
function rawStream(client: grpc.Client): grpc.ClientDuplexStream<WriteRequest, WriteResponse> {
  return client.makeBidiStreamRequest(
    WRITE_PATH,
    (message: WriteRequest) => Buffer.from(toBinary(method.input, message)),
    (bytes: Buffer) => fromBinary(method.output, bytes),
  );
}

/** Every committed (key, value) of a partition, as text. */
async function listing(client: MetadataClient, partition = ""): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const entry of client.keys({ partition, includeValues: true })) {
    out.set(text(entry.key) as string, text(entry.value) as string);
  }
  return out;
}

describe("Write stream", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer();
  });
  after(async () => {
    await server.stop();
  });

  test("10,000 mixed requests: each answered once with its id and the right status, state as the model", async () => {
    const rng = new Rng(testSeed());
    const partition = "mixed";
    const model = new Map<string, string>();
    const writer = server.client.writer({ partition, window: 128 });
    type Expect = { code: grpc.status; previous?: string | undefined };
    const expected: Expect[] = [];
    const answers: Promise<{ code: grpc.status; previous?: string | undefined }>[] = [];
    const settle = <T extends { previous?: Uint8Array | undefined }>(p: Promise<T>) =>
      p.then(
        (response) => ({ code: grpc.status.OK, previous: text(response.previous) }),
        (err: grpc.ServiceError) => ({ code: err.code }),
      );
    const settleCommit = (p: Promise<unknown>) =>
      p.then(
        () => ({ code: grpc.status.OK }),
        (err: grpc.ServiceError) => ({ code: err.code }),
      );
    for (let i = 0; i < 10_000; i++) {
      const key = `k${rng.int(300)}`;
      const roll = rng.int(100);
      if (roll < 55) {
        const value = `v${i}`;
        expected.push({ code: grpc.status.OK, previous: model.get(key) });
        model.set(key, value);
        answers.push(settle(writer.put(utf8(key), utf8(value))));
      } else if (roll < 75) {
        expected.push({ code: grpc.status.OK, previous: model.get(key) });
        model.delete(key);
        answers.push(settle(writer.remove(utf8(key))));
      } else if (roll < 90) {
        // Compare-and-set: holds exactly when the model says it does.
        const other = `k${rng.int(300)}`;
        const holds = model.has(key);
        expected.push({ code: holds ? grpc.status.OK : grpc.status.FAILED_PRECONDITION });
        if (holds) {
          model.set(other, `c${i}`);
          model.delete(key);
        }
        answers.push(
          settleCommit(
            writer.commit(
              [{ put: { key: utf8(other), value: utf8(`c${i}`) } }, { remove: { key: utf8(key) } }],
              [{ key: utf8(key), present: true }],
            ),
          ),
        );
      } else if (roll < 95) {
        expected.push({ code: grpc.status.INVALID_ARGUMENT });
        answers.push(settle(writer.put(new Uint8Array(0), utf8("empty key"))));
      } else {
        expected.push({ code: grpc.status.INVALID_ARGUMENT });
        answers.push(settle(writer.put(utf8(key), utf8("x"), { partition: "bad name!" })));
      }
    }
    const got = await Promise.all(answers);
    await writer.close();
    for (let i = 0; i < got.length; i++) {
      const want = expected[i] as Expect;
      const have = got[i] as Expect;
      assert.equal(have.code, want.code, `request ${i + 1}: status`);
      if (want.code === grpc.status.OK && "previous" in want) {
        assert.equal(have.previous, want.previous, `request ${i + 1}: previous value`);
      }
    }
    assert.deepEqual(await listing(server.client, partition), model);
  });

  test("a failed precondition and bad input are answered with their status; the stream goes on", async () => {
    const writer = server.client.writer({ partition: "goes-on" });
    await writer.put(utf8("a"), utf8("1"));
    await assert.rejects(
      writer.commit([{ put: { key: utf8("a"), value: utf8("2") } }], [{ key: utf8("a"), absent: true }]),
      {
        code: grpc.status.FAILED_PRECONDITION,
        details: /^precondition failed: key 61 is present$/,
      },
    );
    await assert.rejects(writer.put(utf8("b"), new Uint8Array(2 * 1024 * 1024)), {
      code: grpc.status.INVALID_ARGUMENT,
      details: /^value too large: 2097152 bytes > 1048576$/,
    });
    const after = await writer.put(utf8("a"), utf8("3"));
    assert.equal(text(after.previous), "1");
    await writer.close();
    assert.equal(await server.client.get(utf8("a"), { partition: "goes-on" }).then(text), "3");
  });

  test("a request with no body, and ids as the client chose them (repeated, out of order)", async () => {
    const raw = new grpc.Client(server.address, grpc.credentials.createInsecure());
    const call = rawStream(raw);
    const answers: WriteResponse[] = [];
    call.on("data", (response: WriteResponse) => answers.push(response));
    const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
    call.write(create(WriteRequestSchema, { id: 7n }));
    call.write(
      create(WriteRequestSchema, {
        id: 7n,
        request: { case: "put", value: { partition: "ids", key: utf8("k"), value: utf8("v") } },
      }),
    );
    call.write(
      create(WriteRequestSchema, {
        id: 3n,
        request: { case: "remove", value: { partition: "ids", key: utf8("k") } },
      }),
    );
    call.end();
    const status = await ended;
    raw.close();
    assert.equal(status.code, grpc.status.OK);
    assert.equal(answers.length, 3);
    const noBody = answers.find((a) => a.status?.code === grpc.status.INVALID_ARGUMENT);
    assert.equal(noBody?.id, 7n);
    assert.match(noBody?.status?.message ?? "", /^request 7 has neither put, remove nor commit$/);
    const put = answers.find((a) => a.response.case === "put");
    assert.equal(put?.id, 7n);
    assert.equal(put?.status?.code, 0);
    const remove = answers.find((a) => a.response.case === "remove");
    assert.equal(remove?.id, 3n);
    assert.equal(text(remove?.response.case === "remove" ? remove.response.value.previous : undefined), "v");
  });

  test("one stream's requests apply in the order sent: versions never decrease, later requests see earlier ones", async () => {
    const writer = server.client.writer({ partition: "order", window: 64 });
    const answers: Promise<{ version: bigint }>[] = [];
    for (let i = 0; i < 2000; i++) {
      const key = utf8(`k${i % 17}`);
      answers.push(writer.put(key, utf8(`${i}`)));
      // Needs the put just before it in the same stream, even while it is not yet committed.
      answers.push(
        writer.commit([{ put: { key, value: utf8(`c${i}`) } }], [{ key, valueEquals: utf8(`${i}`) }]),
      );
    }
    const versions = (await Promise.all(answers)).map((answer) => answer.version);
    await writer.close();
    for (let i = 1; i < versions.length; i++) {
      assert.ok((versions[i] as bigint) >= (versions[i - 1] as bigint), `version ${i} decreased`);
    }
    assert.ok((versions.at(-1) as bigint) > (versions[0] as bigint), "group commit still made several syncs");
  });

  test("half-close: every pending request is answered, then the stream ends with OK", async () => {
    const writer = server.client.writer({ partition: "half-close" });
    const puts = Array.from({ length: 300 }, (_, i) => writer.put(utf8(`k${i}`), utf8("v")));
    await writer.close();
    const answered = await Promise.all(puts);
    assert.equal(answered.length, 300);
    assert.equal((await listing(server.client, "half-close")).size, 300);
  });
});

describe("Write stream durability", () => {
  test("a durable answer comes only after the fsync of the sync that holds it; buffered at once", async () => {
    const gate = new GatedStorage(new MemoryStorage());
    const server = await startTestServer([], gate);
    try {
      await server.client.put(utf8("seed"), utf8("0"));
      gate.hold();
      const writer = server.client.writer();
      const durable = track(writer.put(utf8("d"), utf8("1")));
      const buffered = await writer.put(utf8("b"), utf8("2"), { durability: Durability.BUFFERED });
      assert.equal(buffered.version, 0n);
      await gate.syncStarted("default", 2);
      await new Promise((resolve) => setImmediate(resolve));
      assert.equal(durable.settled(), false, "answered before its fsync");
      assert.equal(await server.client.get(utf8("d")), undefined, "visible before its fsync");
      gate.release();
      const answer = await durable.promise;
      assert.equal(answer.version, 2n);
      assert.equal(text(await server.client.get(utf8("d"))), "1");
      gate.releaseAll();
      await writer.close();
    } finally {
      gate.releaseAll();
      await server.stop();
    }
  });

  test("a failed sync answers UNAVAILABLE (not committed) to its requests; the stream goes on", async () => {
    const faulty = new FaultyStorage(new MemoryStorage());
    const server = await startTestServer([], faulty);
    try {
      const writer = server.client.writer();
      await writer.put(utf8("a"), utf8("1"));
      faulty.inject({ op: "sync" });
      await assert.rejects(writer.put(utf8("b"), utf8("2")), {
        code: grpc.status.UNAVAILABLE,
        details: /not committed/,
      });
      await waitUntil(
        () =>
          writer.put(utf8("c"), utf8("3")).then(
            () => true,
            () => false,
          ),
        "the partition to reopen after the failed sync",
      );
      await writer.close();
      assert.equal(await server.client.get(utf8("b")), undefined);
      assert.equal(text(await server.client.get(utf8("c"))), "3");
    } finally {
      await server.stop();
    }
  });
});

describe("Write stream flow control", () => {
  test("a client that never reads its answers holds the server to a bounded number of requests", async () => {
    const server = await startTestServer(["--write-stream-max-in-flight", "64"]);
    // Plain node:http2, whose receive window follows what the application reads: this client
    // reads nothing, so the server's answers fill the stream window and stay there.
    const session = http2.connect(`http://${server.address}`);
    try {
      const stream = session.request({
        ":method": "POST",
        ":path": WRITE_PATH,
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.pause();
      const drained = () =>
        new Promise<boolean>((resolve) => {
          const timer = setTimeout(() => resolve(false), 1500);
          stream.once("drain", () => {
            clearTimeout(timer);
            resolve(true);
          });
        });
      const total = 200_000;
      let sent = 0;
      while (sent < total) {
        const message = toBinary(
          WriteRequestSchema,
          create(WriteRequestSchema, {
            id: BigInt(sent),
            request: {
              case: "put",
              value: {
                partition: "unread",
                key: utf8(`k${sent}`),
                value: new Uint8Array(100),
                durability: Durability.BUFFERED,
              },
            },
          }),
        );
        const frame = Buffer.alloc(5 + message.length);
        frame.writeUInt32BE(message.length, 1);
        frame.set(message, 5);
        sent++;
        if (!stream.write(frame) && !(await drained())) break;
      }
      const applied = server.service.partitions.openNow("unread")?.live().size ?? 0;
      assert.ok(sent < total, "the server kept reading a stream whose answers nobody reads");
      assert.ok(applied < 20_000, `the server applied ${applied} requests for a client that reads nothing`);
      stream.close(http2.constants.NGHTTP2_CANCEL);
    } finally {
      session.destroy();
      await server.stop();
    }
  });

  test("a client that reads again after a pause gets every answer", async () => {
    const server = await startTestServer(["--write-stream-max-in-flight", "16"]);
    const raw = new grpc.Client(server.address, grpc.credentials.createInsecure());
    try {
      const call = rawStream(raw);
      let answered = 0;
      const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
      for (let i = 0; i < 5000; i++) {
        const ok = call.write(
          create(WriteRequestSchema, {
            id: BigInt(i),
            request: { case: "put", value: { partition: "resume", key: utf8(`k${i}`), value: utf8("v") } },
          }),
        );
        if (!ok) await new Promise((resolve) => call.once("drain", resolve));
        if (i === 2500) call.on("data", () => answered++);
      }
      call.end();
      assert.equal((await ended).code, grpc.status.OK);
      assert.equal(answered, 5000);
    } finally {
      raw.close();
      await server.stop();
    }
  });

  test("cancel mid-stream: pending requests reject as outcome unknown; the server serves on", async () => {
    const gate = new GatedStorage(new MemoryStorage());
    const server = await startTestServer([], gate);
    try {
      await server.client.put(utf8("seed"), utf8("0"));
      gate.hold();
      const writer = server.client.writer();
      const pending = Array.from({ length: 50 }, (_, i) =>
        writer.put(utf8(`k${i}`), utf8("v")).then(
          () => "ok",
          (e: grpc.ServiceError) => e,
        ),
      );
      await gate.syncStarted("default", 2);
      writer.cancel();
      gate.releaseAll();
      for (const outcome of await Promise.all(pending)) {
        assert.notEqual(outcome, "ok");
        assert.equal((outcome as grpc.ServiceError).code, grpc.status.CANCELLED);
        assert.match((outcome as grpc.ServiceError).details, /outcome unknown/);
      }
      const next = server.client.writer();
      assert.ok((await next.put(utf8("after"), utf8("1"))).version > 0n);
      await next.close();
    } finally {
      gate.releaseAll();
      await server.stop();
    }
  });

  test("shutdown mid-stream: requests read are answered, then the stream ends with UNAVAILABLE", async () => {
    const gate = new GatedStorage(new MemoryStorage());
    const server = await startTestServer([], gate);
    const client = new MetadataClient(server.address);
    try {
      await client.put(utf8("seed"), utf8("0"));
      gate.hold();
      const writer = client.writer();
      const held = writer.put(utf8("held"), utf8("1"));
      await gate.syncStarted("default", 2);
      const stopping = server.service.stop();
      gate.releaseAll();
      assert.ok((await held).version > 0n, "a request read before shutdown is answered");
      await assert.rejects(writer.close(), { code: grpc.status.UNAVAILABLE, details: /shutting down/ });
      await stopping;
    } finally {
      gate.releaseAll();
      client.close();
      await server.stop();
    }
  });

  test("bytes that do not decode end the stream with INVALID_ARGUMENT after answering what is pending", async () => {
    const server = await startTestServer();
    const raw = new grpc.Client(server.address, grpc.credentials.createInsecure());
    try {
      const call = raw.makeBidiStreamRequest(
        WRITE_PATH,
        (bytes: Buffer) => bytes,
        (bytes: Buffer) => fromBinary(method.output, bytes),
      );
      const answers: WriteResponse[] = [];
      call.on("data", (response: WriteResponse) => answers.push(response));
      const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
      call.on("error", () => undefined);
      const good = create(WriteRequestSchema, {
        id: 1n,
        request: { case: "put", value: { key: utf8("k"), value: utf8("v") } },
      });
      call.write(Buffer.from(toBinary(WriteRequestSchema, good)));
      call.write(Buffer.from([0x0a, 0xff])); // field 1 with wire type 2 and a truncated length
      const status = await ended;
      assert.equal(status.code, grpc.status.INVALID_ARGUMENT);
      assert.match(status.details, /^malformed request: /);
      assert.deepEqual(
        answers.map((a) => a.id),
        [1n],
      );
    } finally {
      raw.close();
      await server.stop();
    }
  });
});
