/**
 * The TypeScript client on `ownerTarget` (clients/ts/owner-resolver.ts): given the standby and the
 * owner, its calls reach the owner by health, and after the owner stops they reach the new owner
 * with no change on the client's side. Real single-member etcd (skipped when not installed).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { OWNER_SERVICE_CONFIG, ownerTarget } from "../../clients/ts/owner-resolver.js";
import { type EtcdCluster, etcdMissing, etcdServerFlags, startEtcdCluster } from "../support/etcd-cluster.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { waitUntil } from "../support/rpc-helpers.js";
import { utf8 } from "../support/store-helpers.js";

const skip = etcdMissing() ?? false;

describe("client failover by health", { skip }, () => {
  let cluster: EtcdCluster;
  const servers: TestServer[] = [];
  before(async () => {
    cluster = await startEtcdCluster(1);
  });
  after(async () => {
    for (const server of servers) await server.stop().catch(() => undefined);
    await cluster?.stop();
  });

  const start = async (): Promise<TestServer> => {
    const server = await startTestServer(etcdServerFlags(cluster.endpoints, "client", 2));
    servers.push(server);
    return server;
  };

  test("calls reach the owner, then the standby once it took over", async () => {
    const a = await start();
    await waitUntil(() => a.service.ownership?.current === "owner", "a owns", 10_000);
    const b = await start();
    // The standby first: a plain pick_first channel would stick to it and get UNAVAILABLE.
    const client = new MetadataClient(ownerTarget([b.address, a.address]), {
      channelOptions: { "grpc.service_config": JSON.stringify(OWNER_SERVICE_CONFIG) },
    });
    try {
      for (let i = 0; i < 20; i++) await client.put(utf8(`k${i}`), utf8(`a${i}`));
      await a.stop();
      servers.splice(servers.indexOf(a), 1);
      await waitUntil(
        async () => {
          try {
            await client.put(utf8("after"), utf8("b"), { deadlineMs: 2_000 });
            return true;
          } catch {
            return false;
          }
        },
        "a put through the new owner",
        10_000,
      );
      assert.equal(b.service.ownership?.current, "owner");
      for (let i = 0; i < 20; i++) {
        assert.equal(Buffer.from((await client.get(utf8(`k${i}`))) ?? []).toString(), `a${i}`);
      }
    } finally {
      client.close();
    }
  });

  test("a plain channel to the standby alone gets UNAVAILABLE naming the owner", async () => {
    const owner = servers.find((s) => s.service.ownership?.current === "owner");
    assert.ok(owner !== undefined);
    const standby = await start();
    const client = new MetadataClient(standby.address);
    try {
      await assert.rejects(client.put(utf8("x"), utf8("y")), (err: { details?: string }) =>
        (err.details ?? "").endsWith(`the owner is ${owner.address}`),
      );
    } finally {
      client.close();
    }
  });
});
