/**
 * TLS: with --tls-cert and --tls-key the server speaks only TLS; the client connects with channel
 * credentials trusting the certificate, and a plaintext client is refused.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { credentials, status } from "@grpc/grpc-js";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { utf8 } from "../support/store-helpers.js";

const CERT = new URL("../fixtures/tls/server.crt", import.meta.url).pathname;
const KEY = new URL("../fixtures/tls/server.key", import.meta.url).pathname;

let server: TestServer;
before(async () => {
  server = await startTestServer(["--tls-cert", CERT, "--tls-key", KEY]);
});
after(async () => {
  await server.stop();
});

test("a client trusting the certificate puts and gets over TLS", async () => {
  const client = new MetadataClient(`localhost:${server.service.port}`, {
    credentials: credentials.createSsl(readFileSync(CERT)),
  });
  try {
    const { version } = await client.put(utf8("secret"), utf8("value"), { deadlineMs: 10_000 });
    assert.ok(version >= 1n);
    assert.equal(Buffer.from((await client.get(utf8("secret"))) ?? []).toString(), "value");
  } finally {
    client.close();
  }
});

test("a plaintext client is refused", async () => {
  // server.client is the in-process helper's plaintext client.
  await assert.rejects(server.client.get(utf8("secret"), { deadlineMs: 2_000 }), (err: { code?: number }) => {
    assert.ok(err.code === status.UNAVAILABLE || err.code === status.DEADLINE_EXCEEDED, String(err.code));
    return true;
  });
});
