/**
 * etcd out of space. Without etcd: its refusal maps to RESOURCE_EXHAUSTED with what to do, any
 * other etcd failure does not, the client's fault handling neither retries it nor opens its
 * circuit breaker on it, and the space probe turns on that refusal only and back on a probe write
 * that lands. Then against a real single-member etcd with a 16 MiB `--quota-backend-bytes`
 * (skipped with the reason when etcd is not installed): durable Puts of 64 KiB values, never
 * compacted, fill it until etcd raises its NOSPACE alarm, in two shapes: 8 keys overwritten in
 * turn (each sync one transaction), and a new key per Put (the blob grows past 1 MiB, so each
 * sync is split over transactions and the refused one leaves a torn blob). The refused write
 * answers RESOURCE_EXHAUSTED saying what to do, reads keep working (health stays SERVING, so
 * clients routed by health read on), `metadata_data_dir_writable` and /healthz's body say so,
 * and every acknowledged write is there. Once the test has compacted, defragmented and disarmed
 * as an operator would, writes succeed on the same server, the gauge turns 1 again, the refused
 * write never surfaces, and a new server reads it all. A server started while etcd is full gets
 * no lease and says why.
 */
import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { type Etcd3, GRPCResourceExhastedError, GRPCUnavailableError } from "etcd3";
import { MetadataService } from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { OWNER_SERVICE_CONFIG, ownerTarget } from "../../clients/ts/owner-resolver.js";
import { etcdFaultHandling } from "../../server/cluster/etcd-client.js";
import { EtcdSpaceProbe } from "../../server/cluster/etcd-space-probe.js";
import { toStatus } from "../../server/rpc/status.js";
import { StoreError } from "../../server/store/errors.js";
import { asEtcdError } from "../../server/store/storage/etcd.js";
import { type EtcdCluster, etcdMissing, startEtcdCluster } from "../support/etcd-cluster.js";
import { healthStatus } from "../support/health.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { metricValue, waitUntil } from "../support/rpc-helpers.js";
import { u64 } from "../support/store-helpers.js";

const skip = etcdMissing() ?? false;

const QUOTA_BYTES = 16 * 1024 * 1024;
const VALUE_BYTES = 64 * 1024;
/** Keys overwritten in turn by the first shape. */
const KEYS = 8;
/** More writes than 16 MiB of history can hold, so the loop ends by the alarm. */
const MAX_WRITES = 2_000;

/** A value of VALUE_BYTES that names the write `n`. */
function valueNamed(n: number): Uint8Array {
  const value = Buffer.alloc(VALUE_BYTES, n % 251);
  value.write(`write ${n};`);
  return value;
}

function writeOf(value: Uint8Array | undefined): string {
  return value === undefined
    ? "missing"
    : (/^write \d+;/.exec(Buffer.from(value).toString("latin1"))?.[0] ?? "?");
}

const SHAPES = [
  { name: "one transaction per sync", keyOf: (n: number) => n % KEYS },
  { name: "syncs split over transactions, the refused one torn", keyOf: (n: number) => n },
];

/** etcd's refusal as etcd3 1.1.2 throws it. */
function noSpace(): Error {
  return new GRPCResourceExhastedError("8 RESOURCE_EXHAUSTED: etcdserver: mvcc: database space exceeded");
}

test("etcd out of space answers RESOURCE_EXHAUSTED saying what to do; nothing else does", () => {
  const quiet = () => undefined;
  const refused = asEtcdError(noSpace(), "sync p/6c656674");
  assert.equal(refused.kind, "DiskFull");
  const sync = new StoreError(
    "SyncFailed",
    `sync failed: version 3 of p was not committed: ${refused.message}`,
    {
      cause: refused,
    },
  );
  for (const err of [refused, sync]) {
    const answer = toStatus(err, quiet);
    assert.equal(answer.code, status.RESOURCE_EXHAUSTED);
    assert.match(
      answer.details,
      /etcd out of space \(sync p\/6c656674: etcdserver: mvcc: database space exceeded/,
    );
    assert.match(answer.details, /compact old revisions and defragment .* then run etcdctl alarm disarm/);
  }
  assert.match(toStatus(sync, quiet).details, /not committed/);
  // Other refusals of the same gRPC code, and other failures, stay what they were.
  for (const other of [
    new GRPCResourceExhastedError("8 RESOURCE_EXHAUSTED: etcdserver: too many requests"),
    new GRPCUnavailableError("14 UNAVAILABLE: No connection established"),
  ]) {
    assert.equal(asEtcdError(other, "sync p/6c656674").kind, "Io");
  }
});

test("the etcd client's fault handling neither retries etcd out of space nor breaks the circuit on it", async () => {
  const { host, global } = etcdFaultHandling();
  assert.ok(host !== undefined && global !== undefined);
  const breaker = host("127.0.0.1:2379");
  let calls = 0;
  const refuse = async (): Promise<never> => {
    calls++;
    throw noSpace();
  };
  for (let i = 0; i < 5; i++) {
    await assert.rejects(
      global.execute(() => breaker.execute(refuse)),
      /database space exceeded/,
    );
  }
  assert.equal(calls, 5, "one try per call");
  assert.equal(await global.execute(() => breaker.execute(async () => "read")), "read");
  // A recoverable failure still gets its retries, and three of them in a row open the breaker.
  calls = 0;
  await assert.rejects(
    global.execute(() =>
      breaker.execute(async () => {
        calls++;
        throw new GRPCUnavailableError("14 UNAVAILABLE: connection refused");
      }),
    ),
  );
  assert.ok(calls > 1, `${calls} tries`);
});

test("the space probe: only etcd out of space turns it, only a probe write that lands turns it back", async () => {
  let refuse: Error | undefined = noSpace();
  let puts = 0;
  const client = {
    put: (key: string) => ({
      value: () => ({
        options: () => ({
          exec: async () => {
            puts++;
            assert.equal(key, "pfx/.space-probe");
            if (refuse !== undefined) throw refuse;
            return {};
          },
        }),
      }),
    }),
  } as unknown as Etcd3;
  const changes: [boolean, string | undefined][] = [];
  const probe = new EtcdSpaceProbe(client, "pfx", {
    intervalMs: 2,
    timeoutMs: 1_000,
    onChange: (writable, reason) => changes.push([writable, reason]),
  });
  probe.start();
  try {
    probe.report(new StoreError("Io", "i/o error: sync p/6c656674: connection reset"));
    probe.report(new Error("anything"));
    assert.equal(probe.writable, true);
    const refused = asEtcdError(noSpace(), "sync p/6c656674");
    probe.report(
      new StoreError("SyncFailed", "sync failed: version 3 of p was not committed", { cause: refused }),
    );
    assert.equal(probe.writable, false);
    assert.deepEqual(changes, [[false, "sync failed: version 3 of p was not committed"]]);
    await waitUntil(() => puts >= 3, "three probes");
    assert.equal(probe.writable, false);
    // etcd unreachable says nothing about its space.
    refuse = new GRPCUnavailableError("14 UNAVAILABLE: No connection established");
    const seen = puts;
    await waitUntil(() => puts >= seen + 2, "two more probes");
    assert.equal(probe.writable, false);
    refuse = undefined;
    await waitUntil(() => probe.writable, "writable again");
    assert.deepEqual(changes.at(-1), [true, undefined]);
    assert.equal(changes.length, 2);
    // Writable: no more probes.
    const after = puts;
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(puts, after);
  } finally {
    probe.stop();
  }
});

describe("etcd out of space", { skip }, () => {
  let cluster: EtcdCluster | undefined;
  const servers: TestServer[] = [];
  afterEach(async () => {
    for (const server of servers.splice(0)) await server.stop().catch(() => undefined);
    await cluster?.stop();
    cluster = undefined;
  });

  const flags = (cluster: EtcdCluster) => [
    "--storage",
    "etcd",
    "--etcd-endpoints",
    cluster.endpoints.join(","),
    "--etcd-prefix",
    "space",
  ];

  test("a server started while etcd is full gets no lease, and says why and what to do", async () => {
    cluster = await startEtcdCluster(1, { quotaBackendBytes: QUOTA_BYTES });
    const direct = cluster.client();
    let full = false;
    for (let n = 0; n < MAX_WRITES && !full; n++) {
      full = await direct
        .put(`filler/${n % 4}`)
        .value(Buffer.alloc(512 * 1024, n))
        .then(
          () => false,
          (err: unknown) => /database space exceeded/.test(String(err)),
        );
    }
    assert.ok(full, "etcd never raised its alarm");
    const server = await startTestServer(flags(cluster));
    servers.push(server);
    const reason = await server.service.ownershipLost;
    assert.match(
      reason ?? "",
      /^no lease: etcd out of space .* etcdctl alarm disarm, then restart this server$/,
    );
    await assert.rejects(server.client.get(u64(0), { partition: "full" }), (err: unknown) => {
      assert.equal((err as { code?: number }).code, status.UNAVAILABLE);
      assert.match((err as { details?: string }).details ?? "", /lost ownership .*etcd out of space/);
      return true;
    });
  });

  for (const shape of SHAPES) {
    test(`refused writes answer RESOURCE_EXHAUSTED, reads go on, and writes heal after compact, defrag, disarm (${shape.name})`, async (t) => {
      cluster = await startEtcdCluster(1, { quotaBackendBytes: QUOTA_BYTES });
      const server = await startTestServer(flags(cluster));
      servers.push(server);
      await waitUntil(() => server.service.ownership?.current === "owner", "ownership", 10_000);

      // Acknowledged value of each key (the number of the write), as a client knows it.
      const acknowledged = new Map<number, number>();
      let refused: { err: { code?: number; details?: string }; write: number } | undefined;
      for (let n = 0; n < MAX_WRITES && refused === undefined; n++) {
        try {
          await server.client.put(u64(shape.keyOf(n)), valueNamed(n), { partition: "full" });
          acknowledged.set(shape.keyOf(n), n);
        } catch (err) {
          refused = { err: err as { code?: number; details?: string }, write: n };
        }
      }
      assert.ok(refused !== undefined, `etcd took ${MAX_WRITES} writes of ${VALUE_BYTES} bytes`);
      assert.ok(acknowledged.size >= KEYS, `only ${acknowledged.size} keys written before the alarm`);
      assert.equal(refused.err.code, status.RESOURCE_EXHAUSTED, refused.err.details);
      assert.match(refused.err.details ?? "", /not committed/);
      assert.match(refused.err.details ?? "", /etcd out of space .*database space exceeded/);
      assert.match(refused.err.details ?? "", /compact .* defragment .* etcdctl alarm disarm/);

      // The next writes are refused the same way, at once: no retries, no circuit breaker.
      const started = performance.now();
      await assert.rejects(
        server.client.put(u64(0), valueNamed(MAX_WRITES), { partition: "full" }),
        (err: unknown) => {
          assert.equal((err as { code?: number }).code, status.RESOURCE_EXHAUSTED);
          return true;
        },
      );
      const refusedMs = performance.now() - started;
      assert.ok(refusedMs < 2_000, `a refused write took ${refusedMs} ms`);
      t.diagnostic(
        `${refused.write} writes acknowledged before the alarm; the next one refused in ${refusedMs.toFixed(1)} ms`,
      );
      // A Write stream answers each request so, and goes on (it is used again once healed).
      const writer = server.client.writer({ partition: "full" });
      for (let i = 0; i < 3; i++) {
        await assert.rejects(writer.put(u64(2), valueNamed(MAX_WRITES + 2)), (err: unknown) => {
          assert.equal((err as { code?: number }).code, status.RESOURCE_EXHAUSTED);
          assert.match((err as { details?: string }).details ?? "", /etcd out of space/);
          return true;
        });
      }

      // Reads go on, and hold every acknowledged write; the refused ones are nowhere. Health stays
      // SERVING, so a client that finds the owner by health (ownerTarget) reads on too; the gauge
      // and /healthz's body say what is wrong.
      const routed = new MetadataClient(ownerTarget([server.address]), {
        channelOptions: { "grpc.service_config": JSON.stringify(OWNER_SERVICE_CONFIG) },
      });
      try {
        for (const client of [server.client, routed]) {
          for (const [key, n] of acknowledged) {
            assert.equal(writeOf(await client.get(u64(key), { partition: "full" })), `write ${n};`);
          }
        }
      } finally {
        routed.close();
      }
      // A partition created now fails the same way, and is not left half made.
      await assert.rejects(
        server.client.put(u64(0), valueNamed(0), { partition: "fresh" }),
        (err: unknown) => {
          assert.equal((err as { code?: number }).code, status.RESOURCE_EXHAUSTED);
          assert.match((err as { details?: string }).details ?? "", /etcd out of space/);
          return true;
        },
      );
      assert.deepEqual(await server.client.listPartitions(), ["full"]);
      assert.equal(await healthStatus(server.address, MetadataService.typeName), "SERVING");
      assert.equal(metricValue(await server.metrics(), "metadata_data_dir_writable"), 0);
      const healthz = await fetch(`http://127.0.0.1:${server.service.metricsPort}/healthz`);
      assert.equal(healthz.status, 200);
      assert.match(
        await healthz.text(),
        /etcd is out of space \(NOSPACE alarm\): writes refused, reads served/,
      );
      assert.equal(server.service.ownership?.current, "owner");

      // The operator: compact every revision but the last, defragment, disarm.
      const admin = cluster.client();
      const revision = (await admin.maintenance.status()).header.revision;
      await admin.kv.compact({ revision, physical: true });
      await admin.maintenance.defragment();
      const { alarms } = await admin.maintenance.alarm({ action: "Get", memberID: "0", alarm: "None" });
      assert.ok(
        alarms.some((alarm) => alarm.alarm === "Nospace"),
        JSON.stringify(alarms),
      );
      for (const alarm of alarms) {
        await admin.maintenance.alarm({ action: "Deactivate", memberID: alarm.memberID, alarm: alarm.alarm });
      }

      // Same server, no restart: writes succeed, and the gauge and /healthz follow.
      const healed = MAX_WRITES + 1;
      await server.client.put(u64(1), valueNamed(healed), { partition: "full" });
      acknowledged.set(1, healed);
      await writer.put(u64(2), valueNamed(healed + 1));
      acknowledged.set(2, healed + 1);
      await writer.close();
      await server.client.put(u64(0), valueNamed(healed), { partition: "fresh" });
      assert.equal(writeOf(await server.client.get(u64(0), { partition: "fresh" })), `write ${healed};`);
      await waitUntil(
        async () => metricValue(await server.metrics(), "metadata_data_dir_writable") === 1,
        "metadata_data_dir_writable 1",
        10_000,
      );
      const healthz2 = await fetch(`http://127.0.0.1:${server.service.metricsPort}/healthz`);
      assert.equal(await healthz2.text(), "ok\n");
      for (const [key, n] of acknowledged) {
        assert.equal(writeOf(await server.client.get(u64(key), { partition: "full" })), `write ${n};`);
      }

      // Durable in etcd: a new server on the prefix reads the same.
      await server.stop();
      const next = await startTestServer(flags(cluster));
      servers.push(next);
      await waitUntil(() => next.service.ownership?.current === "owner", "ownership", 10_000);
      for (const [key, n] of acknowledged) {
        assert.equal(writeOf(await next.client.get(u64(key), { partition: "full" })), `write ${n};`);
      }
    });
  }
});
