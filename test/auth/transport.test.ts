/**
 * Transport security of a real server: mutual TLS on the gRPC port (a certificate from another
 * CA, or none, is refused at the handshake), HTTPS and a bearer token on /metrics (/healthz
 * open), reflection switched off, and SIGHUP-style reload of the metrics token.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { request } from "node:https";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { credentials, status } from "@grpc/grpc-js";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { utf8 } from "../support/store-helpers.js";
import { createTestPki, type TestPki } from "../support/test-pki.js";

let pki: TestPki;
let server: TestServer;
let metricsTokenFile: string;
const METRICS_TOKEN = "scrape-token-9876";
const hash = (token: string) => createHash("sha256").update(token).digest("hex");

before(async () => {
  pki = await createTestPki();
  metricsTokenFile = join(pki.dir, "metrics.sha256");
  writeFileSync(metricsTokenFile, `${hash(METRICS_TOKEN)}  -\n`);
  server = await startTestServer([
    "--tls-cert",
    pki.server.cert,
    "--tls-key",
    pki.server.key,
    "--tls-client-ca",
    pki.ca.cert,
    "--metrics-tls-cert",
    pki.server.cert,
    "--metrics-tls-key",
    pki.server.key,
    "--metrics-token-file",
    metricsTokenFile,
    "--reflection",
    "off",
  ]);
});
after(async () => {
  await server?.stop();
  await pki?.remove();
});

function clientWith(cert?: { certPem: Buffer; keyPem: Buffer }): MetadataClient {
  return new MetadataClient(`localhost:${server.service.port}`, {
    credentials: credentials.createSsl(pki.ca.certPem, cert?.keyPem ?? null, cert?.certPem ?? null),
  });
}

test("a client certificate from the trusted CA is served", async () => {
  const client = clientWith(pki.issueClient("good", "/CN=good-client", pki.ca));
  try {
    assert.ok((await client.put(utf8("k"), utf8("v"), { deadlineMs: 10_000 })).version >= 1n);
  } finally {
    client.close();
  }
});

test("a client certificate signed by another CA is refused at the handshake", async () => {
  const client = clientWith(pki.issueClient("foreign", "/CN=good-client", pki.otherCa));
  try {
    await assert.rejects(
      client.get(utf8("k"), { deadlineMs: 5_000 }),
      (err: { code?: number; details?: string }) => {
        // grpc-js reports a failed handshake as UNAVAILABLE; no call reached the service.
        assert.equal(err.code, status.UNAVAILABLE, String(err.details));
        return true;
      },
    );
  } finally {
    client.close();
  }
  assert.doesNotMatch(await metrics(METRICS_TOKEN).then((r) => r.body), /method="Get"/);
});

test("a TLS client without a certificate is refused at the handshake", async () => {
  const client = clientWith();
  try {
    await assert.rejects(client.get(utf8("k"), { deadlineMs: 5_000 }), { code: status.UNAVAILABLE });
  } finally {
    client.close();
  }
});

function metrics(token: string | undefined, path = "/metrics"): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        servername: "localhost",
        port: server.service.metricsPort,
        path,
        ca: pki.ca.certPem,
        headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
      },
      (response) => {
        let body = "";
        response.setEncoding("utf8");
        response.on("data", (chunk: string) => {
          body += chunk;
        });
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

test("/metrics over HTTPS needs the bearer token; /healthz stays open", async () => {
  assert.equal((await metrics(undefined)).status, 401);
  assert.equal((await metrics("wrong")).status, 401);
  const ok = await metrics(METRICS_TOKEN);
  assert.equal(ok.status, 200);
  assert.match(ok.body, /metadata_rpc_duration_seconds/);
  const health = await metrics(undefined, "/healthz");
  assert.equal(health.status, 200);
  assert.equal(health.body, "ok\n");
});

test("reload takes a new metrics token, and keeps the old one when the file is bad", async () => {
  writeFileSync(metricsTokenFile, "not a hash\n");
  server.service.reload();
  assert.equal((await metrics(METRICS_TOKEN)).status, 200);
  writeFileSync(metricsTokenFile, hash("rotated"));
  server.service.reload();
  assert.equal((await metrics(METRICS_TOKEN)).status, 401);
  assert.equal((await metrics("rotated")).status, 200);
});

test("--reflection off removes the reflection service", async () => {
  const { Client, Metadata } = await import("@grpc/grpc-js");
  const pair = pki.issueClient("refl", "/CN=refl", pki.ca);
  const client = new Client(
    `localhost:${server.service.port}`,
    credentials.createSsl(pki.ca.certPem, pair.keyPem, pair.certPem),
  );
  try {
    const call = client.makeBidiStreamRequest(
      "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      (b: Buffer) => b,
      (b: Buffer) => b,
      new Metadata(),
      { deadline: Date.now() + 5_000 },
    );
    const code = await new Promise<number>((resolve) => {
      call.on("error", (err: { code: number }) => resolve(err.code));
      call.on("data", () => {});
      call.on("end", () => resolve(-1));
      call.end();
    });
    assert.equal(code, status.UNIMPLEMENTED);
  } finally {
    client.close();
  }
});
