/**
 * Ownership of an etcd prefix between two in-process servers on a real single-member etcd
 * (skipped with the reason when etcd is not installed): only the owner reports SERVING and
 * serves; the standby answers UNAVAILABLE naming the owner, takes over at once when the owner
 * stops (it resigns), and reads every write the owner acknowledged.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { type EtcdCluster, etcdMissing, etcdServerFlags, startEtcdCluster } from "../support/etcd-cluster.js";
import { healthStatus } from "../support/health.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { waitUntil } from "../support/rpc-helpers.js";
import { u64, utf8 } from "../support/store-helpers.js";

const skip = etcdMissing() ?? false;
const SERVICE = "commonware.metadata.v1.MetadataService";

describe("ownership on etcd", { skip }, () => {
  let cluster: EtcdCluster;
  const servers: TestServer[] = [];
  before(async () => {
    cluster = await startEtcdCluster(1);
  });
  after(async () => {
    for (const server of servers) await server.stop().catch(() => undefined);
    await cluster?.stop();
  });

  async function start(prefix: string, leaseTtlSeconds = 2): Promise<TestServer> {
    const server = await startTestServer(etcdServerFlags(cluster.endpoints, prefix, leaseTtlSeconds));
    servers.push(server);
    return server;
  }

  test("the owner serves, the standby refuses naming it and takes over when it stops", async () => {
    // A 30 s lease: a takeover within seconds can only come from the owner resigning.
    const a = await start("own", 30);
    await waitUntil(() => a.service.ownership?.current === "owner", "a owns", 10_000);
    const b = await start("own", 30);
    assert.equal(b.service.ownership?.current, "standby");
    assert.equal(await healthStatus(a.address), "SERVING");
    assert.equal(await healthStatus(a.address, SERVICE), "SERVING");
    assert.equal(await healthStatus(b.address), "NOT_SERVING");
    assert.equal(await healthStatus(b.address, SERVICE), "NOT_SERVING");

    for (let i = 0; i < 20; i++) await a.client.put(u64(i), utf8(`a${i}`));
    await waitUntil(
      async () => (await b.service.ownership?.refusal())?.includes(a.address) === true,
      "b names a",
    );
    await assert.rejects(b.client.put(u64(1), utf8("b")), (err: { code?: number; details?: string }) => {
      assert.equal(err.code, status.UNAVAILABLE);
      assert.equal(err.details, `this server is a standby; the owner is ${a.address}`);
      return true;
    });
    await assert.rejects(b.client.get(u64(1)), (err: { code?: number }) => err.code === status.UNAVAILABLE);

    const stoppedAt = Date.now();
    await a.stop();
    servers.splice(servers.indexOf(a), 1);
    await waitUntil(() => b.service.ownership?.current === "owner", "b owns", 10_000);
    // A graceful stop resigns: no waiting for the lease to expire.
    assert.ok(Date.now() - stoppedAt < 10_000, `${Date.now() - stoppedAt} ms`);
    assert.equal(await healthStatus(b.address), "SERVING");
    for (let i = 0; i < 20; i++)
      assert.equal(Buffer.from((await b.client.get(u64(i))) ?? []).toString(), `a${i}`);
    await b.client.put(u64(100), utf8("b"));
  });

  test("a server whose lease is revoked stops serving and can no longer commit", async () => {
    const a = await start("revoked");
    await waitUntil(() => a.service.ownership?.current === "owner", "a owns", 10_000);
    await a.client.put(u64(1), utf8("before"));
    const lost = a.service.ownershipLost;
    assert.ok(lost !== undefined);
    // The lease behind the campaign key goes, as when it expires during a pause.
    const fence = a.service.ownership?.fence();
    assert.ok(fence !== undefined);
    const owner = await cluster.client().get(fence.key).exec();
    const lease = owner.kvs[0]?.lease;
    assert.ok(lease !== undefined && lease !== "0");
    await cluster.client().leaseClient.leaseRevoke({ ID: lease });
    await assert.rejects(
      a.client.put(u64(1), utf8("after")),
      (err: { code?: number }) => err.code === status.UNAVAILABLE,
    );
    // Whichever notices first: the keepalive, or the put finding the fence broken.
    assert.match(await lost, /lease lost|the ownership key is gone/);
    assert.equal(await healthStatus(a.address), "NOT_SERVING");
    // A new owner finds the write acknowledged before, not the one refused after.
    const b = await start("revoked");
    await waitUntil(() => b.service.ownership?.current === "owner", "b owns", 10_000);
    assert.equal(Buffer.from((await b.client.get(u64(1))) ?? []).toString(), "before");
  });
});
