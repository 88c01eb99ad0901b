/**
 * SIGHUP reload of the tokens file, on the server as a child process: a revoked token is refused
 * on its next call (and on the next request of its open Write stream), while an open Write
 * stream of another token carries on; a bad file keeps the previous tokens and the server runs
 * on. The audit lines never hold a token.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { ServerProcess } from "../e2e/server-process.js";
import { utf8 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";
import { openWriteStream } from "../support/write-stream-client.js";

const hash = (token: string) => createHash("sha256").update(token).digest("hex");
const WRITER = "reload-writer-token";
const ADMIN = "reload-admin-token";
const entry = (name: string, token: string, access: string) => ({
  name,
  sha256: hash(token),
  grants: [{ partitions: "*", access }],
});

let dir: { path: string; remove(): Promise<void> };
let tokensFile: string;
let server: ServerProcess;

before(async () => {
  dir = await tempDir("metadata-reload-");
  tokensFile = join(dir.path, "tokens.json");
  writeFileSync(
    tokensFile,
    JSON.stringify({ tokens: [entry("writer", WRITER, "write"), entry("admin", ADMIN, "admin")] }),
  );
  server = await ServerProcess.start({
    dataDir: join(dir.path, "data"),
    flags: ["--auth-tokens", tokensFile],
  });
});
after(async () => {
  await server?.stop();
  await dir?.remove();
});

/** Resolves once the server's output matches `pattern` (at most 10 s). */
async function logged(pattern: RegExp): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!pattern.test(server.output())) {
    if (Date.now() > deadline) assert.fail(`no ${pattern} in the server output:\n${server.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function bearer(token: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

const put = (id: bigint, key: string) => ({
  id,
  request: { case: "put" as const, value: { partition: "p", key: utf8(key), value: utf8("v") } },
});

test("SIGHUP: a revoked token is refused next time; other open streams carry on; a bad file is ignored", async () => {
  const raw = new grpc.Client(server.address, grpc.credentials.createInsecure());
  const writer = new MetadataClient(server.address, { token: WRITER });
  const admin = new MetadataClient(server.address, { token: ADMIN });
  try {
    const adminStream = openWriteStream(raw, bearer(ADMIN), 30_000);
    const writerStream = openWriteStream(raw, bearer(WRITER), 30_000);
    adminStream.send(put(1n, "a1"));
    writerStream.send(put(1n, "w1"));
    assert.equal((await adminStream.nextAnswer()).status?.code, grpc.status.OK);
    assert.equal((await writerStream.nextAnswer()).status?.code, grpc.status.OK);
    await writer.put(utf8("w"), utf8("1"), { partition: "p" });

    writeFileSync(tokensFile, JSON.stringify({ tokens: [entry("admin", ADMIN, "admin")] }));
    server.signal("SIGHUP");
    await logged(/auth: reloaded 1 token/);

    await assert.rejects(writer.put(utf8("w"), utf8("2"), { partition: "p" }), {
      code: grpc.status.UNAUTHENTICATED,
    });
    writerStream.send(put(2n, "w2"));
    const refused = await writerStream.nextAnswer();
    assert.equal(refused.id, 2n);
    assert.equal(refused.status?.code, grpc.status.UNAUTHENTICATED);
    adminStream.send(put(2n, "a2"));
    assert.equal((await adminStream.nextAnswer()).status?.code, grpc.status.OK);
    const adminEnd = await adminStream.finish();
    assert.equal(adminEnd.status, "OK");
    assert.equal((await writerStream.finish()).status, "OK");

    // A bad file: the previous tokens stay, the server keeps serving.
    writeFileSync(tokensFile, "{ broken");
    server.signal("SIGHUP");
    await logged(/auth: keeping the previous tokens: .*tokens\.json: not JSON/);
    assert.equal(Buffer.from((await admin.get(utf8("a2"), { partition: "p" })) ?? []).toString(), "v");
    assert.equal(Buffer.from((await admin.get(utf8("w2"), { partition: "p" })) ?? []).toString(), "");

    assert.match(
      server.output(),
      /auth: refused method=Put partition="p" who=unknown-token .*reason=unknown_token/,
    );
    assert.match(
      server.output(),
      /auth: refused method=Write partition="p" who=token "writer" .*reason=revoked/,
    );
    assert.ok(!server.output().includes(WRITER) && !server.output().includes(ADMIN), "tokens in the log");
    assert.deepEqual(await server.kill("SIGTERM"), { code: 0, signal: null });
  } finally {
    writer.close();
    admin.close();
    raw.close();
  }
});
