/**
 * Keys as a stream over real grpc-js: 200,000 keys listed by a deliberately slow reader arrive
 * complete and in ascending order while the server's memory stays far below the size of the
 * listing (flow control, not buffering); a write during a listing does not tear it (one
 * snapshot); leaving a listing early cancels the server's stream.
 *
 * The slow reader runs in its own process (test/support/slow-keys-reader.ts), so the memory
 * sampled here, `heapUsed + arrayBuffers` after a forced GC, is the server's alone.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import v8 from "node:v8";
import vm from "node:vm";
import type { KeysResponse } from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { RawClient } from "../support/raw-client.js";
import { serverCallStats, waitUntil } from "../support/rpc-helpers.js";
import { hashEntry, type SlowReadSummary } from "../support/slow-keys-reader.js";

const KEYS = 200_000;
const VALUE_BYTES = 100;
const COMMIT_KEYS = 50_000;
/** Pause of the slow reader after each chunk: about 200 chunks, so about 12 s of reading. */
const SLEEP_MS = 40;

const READER = fileURLToPath(new URL("../support/slow-keys-reader.ts", import.meta.url));
const ROOT = fileURLToPath(new URL("../..", import.meta.url));

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc") as () => void;

/** Live bytes of this process after a full collection: heap plus array buffers. */
function liveBytes(): number {
  gc();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

/** Lets closed calls release their buffers, then measures (a few collections apart). */
async function settledLiveBytes(): Promise<number> {
  let bytes = liveBytes();
  for (let i = 0; i < 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    bytes = liveBytes();
  }
  return bytes;
}

/** Key i: 8 bytes, a bijective scramble of i then i, so write order differs from byte order. */
function key(i: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeUInt32BE(Math.imul(i, 2654435761) >>> 0, 0);
  out.writeUInt32BE(i, 4);
  return out;
}

function value(i: number): Buffer {
  const out = Buffer.alloc(VALUE_BYTES, i & 0xff);
  out.writeUInt32BE(i, 0);
  return out;
}

const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

describe("keys stream of 200,000 keys", () => {
  let server: TestServer;
  /** Key indexes in ascending key order. */
  let order: number[];
  let listingBytes: number;
  let listingSha256: string;

  before(async () => {
    server = await startTestServer(["--batch-max-mutations", String(COMMIT_KEYS)]);
    for (let start = 0; start < KEYS; start += COMMIT_KEYS) {
      const batch = Array.from({ length: COMMIT_KEYS }, (_, j) => ({
        put: { key: key(start + j), value: value(start + j) },
      }));
      await server.client.commit(batch);
    }
    // The first four bytes of a key are unique, so they alone give the order: sort
    // (prefix * 2^18 + i) as numbers, exact below 2^53.
    const scale = 2 ** 18;
    const sortable = Float64Array.from({ length: KEYS }, (_, i) => key(i).readUInt32BE(0) * scale + i);
    sortable.sort();
    order = Array.from(sortable, (n) => n % scale);
    const hash = createHash("sha256");
    for (const i of order) hashEntry(hash, key(i), value(i));
    listingSha256 = hash.digest("hex");
    listingBytes = KEYS * (8 + VALUE_BYTES);
  });
  after(async () => {
    await server.stop();
  });

  test("a slow reader gets every key in order while server memory stays bounded", async () => {
    const baseline = await settledLiveBytes();
    const child = spawn(
      process.execPath,
      ["--import", "tsx", READER, server.address, "default", String(SLEEP_MS)],
      {
        cwd: ROOT,
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    const exited = once(child, "close");
    const samples: number[] = [];
    let summary: SlowReadSummary | undefined;
    for await (const line of createInterface({ input: child.stdout })) {
      const message = JSON.parse(line) as { chunks: number } | SlowReadSummary;
      if ("sha256" in message) summary = message;
      else if (message.chunks % 10 === 0) samples.push(liveBytes() - baseline);
    }
    const [code] = (await exited) as [number | null];
    assert.equal(code, 0);
    assert.ok(summary !== undefined, "the reader printed no summary");

    const growth = Math.max(...samples);
    console.log(
      `keys stream: ${summary.keys} keys, ${summary.chunks} chunks, listing ${mb(listingBytes)}, ` +
        `read in ${(summary.durationMs / 1000).toFixed(1)} s; server baseline ${mb(baseline)}, ` +
        `growth max ${mb(growth)} (${((100 * growth) / listingBytes).toFixed(1)}% of the listing), ` +
        `samples ${samples.map((s) => (s / 1e6).toFixed(1)).join(" ")} MB`,
    );
    assert.equal(summary.keys, KEYS);
    assert.equal(summary.bytes, listingBytes);
    assert.ok(summary.ascending, "keys out of order");
    assert.ok(summary.oneVersion, "chunks of different versions");
    assert.equal(summary.sha256, listingSha256);
    assert.ok(summary.chunks >= KEYS / 1000, `${summary.chunks} chunks`);
    assert.ok(samples.length >= 10, `${samples.length} samples`);
    // Buffering the listing would cost at least its size; flow control keeps a few chunks.
    assert.ok(growth < listingBytes / 4, `server grew by ${mb(growth)} for a ${mb(listingBytes)} listing`);
  });

  test("a write during a listing does not tear it: keys added later are absent, removed ones present", async () => {
    const raw = new RawClient(server.address);
    try {
      const stream = raw.keys({ includeValues: true });
      const chunks = (stream as AsyncIterable<KeysResponse>)[Symbol.asyncIterator]();
      const first = await chunks.next();
      assert.equal(first.done, false);
      const version = (first.value as KeysResponse).version;

      // One commit, after the listing started: a key that sorts last, a key removed and a value
      // changed near the end of the listing (not yet sent).
      const added = Buffer.alloc(8, 0xff);
      const removed = key(order[KEYS - 10] as number);
      const changed = key(order[KEYS - 20] as number);
      const { version: committed } = await server.client.commit([
        { put: { key: added, value: Buffer.from("added during the listing") } },
        { remove: { key: removed } },
        { put: { key: changed, value: Buffer.from("changed during the listing") } },
      ]);
      assert.ok(committed > version);
      assert.equal(await server.client.get(removed), undefined);

      const hash = createHash("sha256");
      let count = 0;
      const take = (chunk: KeysResponse) => {
        assert.equal(chunk.version, version);
        for (const [i, k] of chunk.keys.entries()) {
          hashEntry(hash, k, chunk.values[i] ?? new Uint8Array());
          count++;
        }
      };
      take(first.value as KeysResponse);
      for (let next = await chunks.next(); next.done !== true; next = await chunks.next()) take(next.value);
      assert.equal(count, KEYS);
      assert.equal(hash.digest("hex"), listingSha256);

      // A new listing sees the commit.
      const tail: string[] = [];
      for await (const entry of server.client.keys({ start: changed, includeValues: true })) {
        tail.push(Buffer.from(entry.key).equals(changed) ? Buffer.from(entry.value ?? []).toString() : "");
      }
      assert.equal(tail[0], "changed during the listing");
      assert.equal(tail.length, 20);
    } finally {
      raw.close();
    }
  });

  test("breaking out of a listing early cancels the server's stream", async () => {
    const port = server.service.port;
    const before = serverCallStats(port);
    let seen = 0;
    for await (const _ of server.client.keys({ includeValues: true })) {
      if (++seen === 1500) break;
    }
    await waitUntil(
      () => serverCallStats(port).callsFailed > before.callsFailed,
      "the server to end the call",
    );
    const ended = serverCallStats(port);
    assert.equal(ended.callsStarted, before.callsStarted + 1);
    assert.equal(ended.callsSucceeded, before.callsSucceeded);
    assert.equal(ended.callsFailed, before.callsFailed + 1);
    // The server stopped at what flow control let through, far from the 200 chunks of the listing.
    const sent = ended.messagesSent - before.messagesSent;
    assert.ok(sent < 100, `${sent} chunks sent`);
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(serverCallStats(port).messagesSent, ended.messagesSent);

    // The server serves on.
    let listed = 0;
    for await (const _ of server.client.keys({ limit: 10 })) listed++;
    assert.equal(listed, 10);
  });
});
