/**
 * The standard gRPC server metrics (go-grpc-prometheus names, labels and buckets) next to ours,
 * on a real scrape of /metrics after unary, streaming, failing and health calls, and that scrape
 * passing `promtool check metrics` (skipped, saying why, when promtool cannot be installed).
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { healthStatus } from "../support/health.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { promtool, promtoolMissing } from "../support/promtool.js";
import { utf8 } from "../support/store-helpers.js";

const SERVICE = "commonware.metadata.v1.MetadataService";
let server: TestServer;
let scrape: string;

before(async () => {
  server = await startTestServer();
  const { client } = server;
  await client.put(utf8("a"), utf8("1"));
  await client.put(utf8("b"), utf8("2"));
  await client.get(utf8("a"));
  await assert.rejects(client.put(new Uint8Array(), utf8("x")), { code: status.INVALID_ARGUMENT });
  for await (const _ of client.keys()) {
    // drain the stream
  }
  assert.equal(await healthStatus(server.address), "SERVING");
  scrape = await server.metrics();
});
after(async () => {
  await server?.stop();
});

/** The value of the sample `series` (name and labels exactly as exposed). */
function sample(series: string): number | undefined {
  const line = scrape.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

test("grpc_server_started_total and grpc_server_handled_total count calls by type, service, method and code", () => {
  const put = `grpc_type="unary",grpc_service="${SERVICE}",grpc_method="Put"`;
  assert.equal(sample(`grpc_server_started_total{${put}}`), 3);
  assert.equal(sample(`grpc_server_handled_total{${put},grpc_code="OK"}`), 2);
  assert.equal(sample(`grpc_server_handled_total{${put},grpc_code="InvalidArgument"}`), 1);
  const keys = `grpc_type="server_stream",grpc_service="${SERVICE}",grpc_method="Keys"`;
  assert.equal(sample(`grpc_server_started_total{${keys}}`), 1);
  assert.equal(sample(`grpc_server_handled_total{${keys},grpc_code="OK"}`), 1);
  const check = `grpc_type="unary",grpc_service="grpc.health.v1.Health",grpc_method="Check"`;
  assert.equal(sample(`grpc_server_handled_total{${check},grpc_code="OK"}`), 1);
});

test("grpc_server_handling_seconds has Prometheus' default buckets and no code label", () => {
  const get = `grpc_type="unary",grpc_service="${SERVICE}",grpc_method="Get"`;
  const buckets = scrape
    .split("\n")
    .filter((l) => l.startsWith("grpc_server_handling_seconds_bucket{") && l.includes('grpc_method="Get"'))
    .map((l) => /le="([^"]+)"/.exec(l)?.[1]);
  assert.deepEqual(buckets, [
    "0.005",
    "0.01",
    "0.025",
    "0.05",
    "0.1",
    "0.25",
    "0.5",
    "1",
    "2.5",
    "5",
    "10",
    "+Inf",
  ]);
  assert.equal(sample(`grpc_server_handling_seconds_count{${get}}`), 1);
  assert.doesNotMatch(scrape, /grpc_server_handling_seconds_count\{[^}]*grpc_code/);
});

test("metadata_rpc_duration_seconds tells services apart", () => {
  assert.equal(
    sample(`metadata_rpc_duration_seconds_count{service="${SERVICE}",method="Put",code="INVALID_ARGUMENT"}`),
    1,
  );
  assert.equal(
    sample(`metadata_rpc_duration_seconds_count{service="grpc.health.v1.Health",method="Check",code="OK"}`),
    1,
  );
});

test("promtool check metrics accepts the scrape", (t) => {
  const missing = promtoolMissing();
  if (missing !== undefined) {
    t.skip(missing);
    return;
  }
  const result = promtool(["check", "metrics"], scrape);
  assert.equal(result.status, 0, result.output);
  assert.equal(result.output.trim(), "");
});
