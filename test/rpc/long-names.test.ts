/**
 * Request content that is large where it should be small: partition names are limited to 255
 * bytes (INVALID_ARGUMENT naming the limit, never ENAMETOOLONG answered INTERNAL), and neither
 * answers nor log lines echo a long name or key in full.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { utf8 } from "../support/store-helpers.js";

let server: TestServer;

before(async () => {
  server = await startTestServer();
});

after(async () => {
  await server.stop();
});

/** Everything written to console.error and console.warn while `body` runs. */
async function logged(body: () => Promise<void>): Promise<string> {
  let text = "";
  const error = console.error;
  const warn = console.warn;
  console.error = (...args: unknown[]) => {
    text += `${args.map(String).join(" ")}\n`;
  };
  console.warn = console.error;
  try {
    await body();
  } finally {
    console.error = error;
    console.warn = warn;
  }
  return text;
}

test("a partition name of 255 bytes is served; 256 bytes is INVALID_ARGUMENT naming the limit", async () => {
  const longest = "p".repeat(255);
  await server.client.put(utf8("k"), utf8("v"), { partition: longest });
  assert.equal(
    Buffer.from((await server.client.get(utf8("k"), { partition: longest })) ?? []).toString(),
    "v",
  );
  assert.ok((await server.client.listPartitions()).includes(longest));

  for (const call of [
    () => server.client.put(utf8("k"), utf8("v"), { partition: "p".repeat(256) }),
    () => server.client.get(utf8("k"), { partition: "p".repeat(256) }),
    () => server.client.keys({ partition: "p".repeat(256) }).next(),
  ]) {
    await assert.rejects(call(), (err: { code: number; details: string }) => {
      assert.equal(err.code, status.INVALID_ARGUMENT);
      assert.match(
        err.details,
        /^invalid partition name "p{64}"\.\.\. \(256 characters\): longer than 255 bytes$/,
      );
      return true;
    });
  }
});

test("a 4 MiB partition name, a 4 KiB key: short answers, short logs", async () => {
  const huge = "x".repeat(4 * 1024 * 1024);
  const text = await logged(async () => {
    await assert.rejects(
      server.client.put(utf8("k"), utf8("v"), { partition: huge }),
      (err: { code: number; details: string }) => {
        assert.equal(err.code, status.INVALID_ARGUMENT);
        assert.ok(err.details.length < 200, `details of ${err.details.length} characters`);
        return true;
      },
    );
    const key = Buffer.alloc(4096, 0xab);
    await assert.rejects(
      server.client.commit([{ put: { key: utf8("a"), value: utf8("b") } }], [{ key, present: true }]),
      (err: { code: number; details: string }) => {
        assert.equal(err.code, status.FAILED_PRECONDITION);
        assert.match(err.details, /^precondition failed: key (ab){32}\.\.\. \(4096 bytes\) is absent$/);
        return true;
      },
    );
  });
  assert.ok(text.length < 1024, `logged ${text.length} characters`);
});
