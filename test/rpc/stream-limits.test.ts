/**
 * Server-wide stream limits over real grpc-js: readers that never read hold at most one chunk each
 * of the server's stream buffer, other clients' Gets and Puts go on meanwhile, streams beyond
 * --max-streams are refused with RESOURCE_EXHAUSTED naming the limit, and everything is given
 * back when the readers go away.
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import { describe, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import {
  KeysRequestSchema,
  MetadataService,
} from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { StreamLimits } from "../../server/rpc/stream-limits.js";
import { startTestServer } from "../support/in-process-server.js";
import { metricValue, waitUntil } from "../support/rpc-helpers.js";
import { utf8 } from "../support/store-helpers.js";

const KEYS_PATH = `/${MetadataService.typeName}/${MetadataService.method.keys.name}`;

/** Opens a Keys stream (with values) on plain node:http2 and never reads it. */
function unreadKeys(session: http2.ClientHttp2Session, partition: string): http2.ClientHttp2Stream {
  const stream = session.request({
    ":method": "POST",
    ":path": KEYS_PATH,
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.pause();
  const message = toBinary(KeysRequestSchema, create(KeysRequestSchema, { partition, includeValues: true }));
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  stream.end(frame);
  return stream;
}

describe("stream limits", () => {
  test("unread Keys streams hold a bounded buffer; Gets and Puts go on; the cap refuses more", async () => {
    const server = await startTestServer(["--max-streams", "24", "--stream-buffer-bytes", "1048576"]);
    const sessions: http2.ClientHttp2Session[] = [];
    try {
      // A 4 MiB partition: every listing is far larger than a stream window and the buffer.
      const value = new Uint8Array(4096).fill(7);
      for (let batch = 0; batch < 8; batch++) {
        await server.client.commit(
          Array.from({ length: 128 }, (_, i) => ({
            put: { key: utf8(`k${String(batch * 128 + i).padStart(5, "0")}`), value },
          })),
          [],
          { partition: "big" },
        );
      }
      for (let i = 0; i < 4; i++) sessions.push(http2.connect(`http://${server.address}`));
      const streams = Array.from({ length: 24 }, (_, i) =>
        unreadKeys(sessions[i % 4] as http2.ClientHttp2Session, "big"),
      );
      await waitUntil(
        async () => metricValue(await server.metrics(), "metadata_streams_open") === 24,
        "24 Keys streams to be open",
      );
      // Let every stream write what it can.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const buffered = metricValue(await server.metrics(), "metadata_stream_buffered_bytes");
      assert.ok(buffered <= 1048576, `${buffered} bytes buffered > the 1 MiB limit`);

      // Other clients are served meanwhile.
      for (let i = 0; i < 50; i++) {
        await server.client.put(utf8(`other${i}`), utf8("v"), { deadlineMs: 5000 });
        assert.equal(
          Buffer.from((await server.client.get(utf8(`other${i}`), { deadlineMs: 5000 })) ?? []).toString(),
          "v",
        );
      }

      // One more stream is refused, naming the limit.
      await assert.rejects(
        (async () => {
          for await (const _ of server.client.keys({ partition: "big" })) {
            // nothing: the stream is refused before its first chunk
          }
        })(),
        { code: status.RESOURCE_EXHAUSTED, details: /^too many open streams: 24 \(--max-streams 24\)/ },
      );

      // The readers go away: their streams and buffer are given back, and listings work again.
      for (const stream of streams) stream.close(http2.constants.NGHTTP2_CANCEL);
      await waitUntil(async () => {
        const text = await server.metrics();
        return (
          metricValue(text, "metadata_streams_open") === 0 &&
          metricValue(text, "metadata_stream_buffered_bytes") === 0
        );
      }, "the streams and their buffer to be released");
      let listed = 0;
      for await (const _ of server.client.keys({ partition: "big", includeValues: true })) listed++;
      assert.equal(listed, 1024);
    } finally {
      for (const session of sessions) session.destroy();
      await server.stop();
    }
  });
});

describe("StreamLimits", () => {
  test("reservations wait in order while the buffer is full, and a waiter can give up", async () => {
    const limits = new StreamLimits(10, 100);
    const first = await limits.reserve(60);
    const order: string[] = [];
    const second = limits.reserve(50).then((r) => {
      order.push("second");
      return r;
    });
    const stop = new AbortController();
    const abandoned = limits.reserve(10, stop.signal).then(
      () => "admitted",
      () => "gave up",
    );
    stop.abort(new Error("gone"));
    assert.equal(await abandoned, "gave up");
    assert.equal(limits.buffered, 60);
    first.release();
    first.release(); // a second release changes nothing
    (await second).release();
    assert.deepEqual(order, ["second"]);
    assert.equal(limits.buffered, 0);
    // One message larger than the whole buffer is admitted alone.
    const huge = await limits.reserve(1000);
    assert.equal(limits.buffered, 1000);
    huge.release();
  });

  test("admit counts open streams and refuses beyond the limit", () => {
    const limits = new StreamLimits(2, 100);
    const a = limits.admit();
    limits.admit();
    assert.throws(() => limits.admit(), /too many open streams: 2 \(--max-streams 2\)/);
    a();
    a();
    assert.equal(limits.open, 1);
    limits.admit();
  });
});

describe("connection limit", () => {
  test("connections beyond --max-connections are closed at once; those admitted serve on", async () => {
    const server = await startTestServer(["--max-connections", "3"]);
    const sessions: http2.ClientHttp2Session[] = [];
    try {
      // The test server's own client holds one connection once it has made a call.
      await server.client.put(utf8("k"), utf8("v"));
      const connect = () =>
        new Promise<"open" | "closed">((resolve) => {
          const session = http2.connect(`http://${server.address}`);
          sessions.push(session);
          let settled = false;
          const settle = (outcome: "open" | "closed") => {
            if (!settled) {
              settled = true;
              resolve(outcome);
            }
          };
          session.once("goaway", () => settle("closed"));
          session.once("close", () => settle("closed"));
          session.once("error", () => settle("closed"));
          // Admitted: a ping is answered.
          session.once("connect", () => session.ping(() => setTimeout(() => settle("open"), 200)));
        });
      const outcomes = [];
      for (let i = 0; i < 4; i++) outcomes.push(await connect());
      assert.deepEqual(outcomes, ["open", "open", "closed", "closed"]);
      const text = await server.metrics();
      assert.equal(metricValue(text, "metadata_connections_open"), 3);
      assert.equal(metricValue(text, "metadata_connections_refused_total"), 2);
      assert.equal(Buffer.from((await server.client.get(utf8("k"))) ?? []).toString(), "v");
      // A connection closed frees its place.
      for (const session of sessions.splice(0)) session.destroy();
      await waitUntil(
        async () => metricValue(await server.metrics(), "metadata_connections_open") === 1,
        "the closed connections to be released",
      );
    } finally {
      for (const session of sessions) session.destroy();
      await server.stop();
    }
  });
});
