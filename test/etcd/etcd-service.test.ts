/**
 * The service on `--storage etcd` against a real single-member etcd (skipped with the reason when
 * etcd is not installed): the flags, durable writes landing as pages under the prefix, and a
 * second server on the same prefix reading every acknowledged write after the first stopped.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ConfigError, parseConfig } from "../../server/config.js";
import { type EtcdCluster, etcdMissing, startEtcdCluster } from "../support/etcd-cluster.js";
import { startTestServer } from "../support/in-process-server.js";
import { waitUntil } from "../support/rpc-helpers.js";
import { u64, utf8 } from "../support/store-helpers.js";

const skip = etcdMissing() ?? false;

test("etcd flags: endpoints required, checked, and only with --storage etcd", () => {
  const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => parseConfig(argv, env);
  assert.equal(parse([]).etcd, undefined);
  assert.deepEqual(parse(["--storage", "etcd", "--etcd-endpoints", "127.0.0.1:2379, 10.0.0.2:2379"]).etcd, {
    endpoints: ["127.0.0.1:2379", "10.0.0.2:2379"],
    prefix: "metadata",
    leaseTtlSeconds: 10,
  });
  assert.deepEqual(
    parse([], {
      METADATA_STORAGE: "etcd",
      METADATA_ETCD_ENDPOINTS: "e:1",
      METADATA_ETCD_PREFIX: "p",
      METADATA_ETCD_LEASE_TTL_SECONDS: "3",
    }).etcd,
    { endpoints: ["e:1"], prefix: "p", leaseTtlSeconds: 3 },
  );
  assert.equal(parse(["--advertise-address", "db1:50051"]).advertiseAddress, "db1:50051");
  const refused = (argv: string[], message: RegExp) =>
    assert.throws(
      () => parse(argv),
      (err: unknown) => err instanceof ConfigError && message.test(err.message),
    );
  refused(["--storage", "etcd"], /--storage etcd needs --etcd-endpoints/);
  refused(["--storage", "etcd", "--etcd-endpoints", "nohost"], /--etcd-endpoints: "nohost" is not HOST:PORT/);
  refused(["--storage", "etcd", "--etcd-endpoints", "e:1", "--etcd-prefix", "p/"], /--etcd-prefix/);
  refused(["--storage", "s3"], /--storage: "s3" is not one of filesystem, etcd/);
  refused(["--etcd-endpoints", "e:1"], /go with --storage etcd/);
  refused(
    ["--storage", "etcd", "--etcd-endpoints", "e:1", "--etcd-lease-ttl-seconds", "1"],
    /integer in 2\.\.3600/,
  );
  refused(["--advertise-address", "db1"], /--advertise-address: "db1" is not HOST:PORT/);
});

describe("service on etcd", { skip }, () => {
  let cluster: EtcdCluster;
  before(async () => {
    cluster = await startEtcdCluster(1);
  });
  after(async () => {
    await cluster?.stop();
  });

  test("durable writes are in etcd and a new server on the prefix reads them", async () => {
    const flags = [
      "--storage",
      "etcd",
      "--etcd-endpoints",
      cluster.endpoints.join(","),
      "--etcd-prefix",
      "svc",
    ];
    const first = await startTestServer(flags);
    await waitUntil(() => first.service.ownership?.current === "owner", "first owns", 10_000);
    await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        first.client.put(u64(i), utf8(`value ${i}`), { partition: "orders" }),
      ),
    );
    await first.stop();

    const keys = await cluster.client().getAll().prefix("svc/").keys();
    assert.ok(keys.includes("svc/.partitions/orders"), keys.join("\n"));
    assert.ok(keys.includes("svc/orders/6c656674/length"), keys.join("\n"));

    const second = await startTestServer(flags);
    await waitUntil(() => second.service.ownership?.current === "owner", "second owns", 10_000);
    try {
      assert.deepEqual(await second.client.listPartitions(), ["orders"]);
      for (let i = 0; i < 50; i++) {
        assert.equal(
          Buffer.from((await second.client.get(u64(i), { partition: "orders" })) ?? []).toString(),
          `value ${i}`,
        );
      }
    } finally {
      await second.stop();
    }
  });
});
