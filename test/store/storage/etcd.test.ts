/**
 * The etcd backend against a real single-member etcd started here (skipped with the reason when
 * etcd is not installed): the reference suite of the store, etcd's transaction limits, syncs
 * split over several transactions and torn at every point, lost answers, and fencing (a second
 * writer of a blob, a lost ownership key).
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Etcd3 } from "etcd3";
import { Registry } from "prom-client";
import { fixedKeys } from "../../../server/store/codec.js";
import { isStoreError } from "../../../server/store/errors.js";
import { openMetadata } from "../../../server/store/metadata.js";
import { EtcdStorage, type EtcdStorageOptions } from "../../../server/store/storage/etcd.js";
import type { Storage } from "../../../server/store/storage/storage.js";
import {
  type EtcdCluster,
  etcdBlobBytes,
  etcdMissing,
  startEtcdCluster,
} from "../../support/etcd-cluster.js";
import { Rng } from "../../support/rng.js";
import { u64 } from "../../support/store-helpers.js";
import { referenceSuite } from "../reference-suite.js";

const skip = etcdMissing() ?? false;
const NAME = Buffer.from("left");
let cluster: EtcdCluster;
let client: Etcd3;
let prefixes = 0;

before(async () => {
  if (skip !== false) return;
  cluster = await startEtcdCluster(1);
  client = cluster.client();
});
after(async () => {
  await cluster?.stop();
});

function storageOn(prefix: string, options: Partial<EtcdStorageOptions> = {}): EtcdStorage {
  return new EtcdStorage({ client, prefix, ...options });
}

function freshPrefix(): string {
  return `t${prefixes++}`;
}

describe("reference suite on etcd", { skip }, () => {
  referenceSuite({
    create: async () => storageOn(freshPrefix()),
    // A crashed server's unsynced pages lived only in its memory: a new storage on the same
    // prefix sees what the last sync committed.
    crash: async (storage) => storageOn((storage as EtcdStorage).prefix),
    fileLength: async (storage, partition, name) => {
      const etcd = storage as EtcdStorage;
      return (await etcdBlobBytes(client, etcd.blobBase(partition, name), etcd.pageBytes))?.length;
    },
  });
});

describe("etcd backend", { skip }, () => {
  test("a blob larger than one transaction allows is split and reads back whole", async () => {
    // 300 pages of 4 KiB: over etcd's 128 operations per transaction, near its 1.5 MiB request limit.
    const storage = storageOn(freshPrefix());
    const { blob } = await storage.open("p", NAME);
    const bytes = new Rng(1).bytes(300 * 4096);
    let transactions = 0;
    const counted = storageOn(storage.prefix, { beforeTransaction: () => void transactions++ });
    const reopened = await counted.open("p", NAME);
    await blob.close();
    await reopened.blob.write(0, bytes);
    await reopened.blob.sync();
    assert.ok(transactions >= 3, `${transactions} transactions`);
    const again = await storageOn(storage.prefix).open("p", NAME);
    assert.equal(again.length, bytes.length);
    assert.deepEqual(Buffer.from(await again.blob.read(0, bytes.length)), Buffer.from(bytes));
  });

  test("a split sync torn after any of its transactions opens as an empty blob", async () => {
    for (let crashAfter = 1; crashAfter <= 3; crashAfter++) {
      const prefix = freshPrefix();
      const options = { pageBytes: 8, maxTxnOps: 5 }; // two pages per transaction
      const first = await storageOn(prefix, options).open("p", NAME);
      await first.blob.write(0, Buffer.alloc(64, 1));
      await first.blob.sync();
      let sent = 0;
      const crashing = storageOn(prefix, {
        ...options,
        beforeTransaction: () => {
          if (++sent > crashAfter) throw new Error("crash");
        },
      });
      const { blob } = await crashing.open("p", NAME);
      await blob.write(0, Buffer.alloc(64, 2));
      await assert.rejects(blob.sync(), (err: unknown) => isStoreError(err, "Io"));
      const reopened = await storageOn(prefix, options).open("p", NAME);
      // Neither the old bytes nor the new ones: a torn blob that the two-blob rules discard.
      assert.equal(reopened.length, 0, `crash after ${crashAfter}`);
    }
  });

  test("the store recovers the last completed sync from a sync torn at every transaction", async () => {
    const options = { pageBytes: 16, maxTxnOps: 5 };
    for (let crashAfter = 0; crashAfter <= 12; crashAfter++) {
      const prefix = freshPrefix();
      const registry = new Registry();
      const config = { partition: "p", keyCodec: fixedKeys(8), registry };
      const store = await openMetadata(storageOn(prefix, options), config);
      for (let i = 0; i < 20; i++) store.put(u64(i), Buffer.alloc(20, i));
      await store.sync();
      for (let i = 0; i < 20; i++) store.put(u64(i), Buffer.alloc(20, i + 100));
      await store.sync();
      await store.close();

      let sent = 0;
      const crashing = storageOn(prefix, {
        ...options,
        beforeTransaction: () => {
          if (++sent > crashAfter) throw new Error("crash");
        },
      });
      const doomed = await openMetadata(crashing, { ...config, registry: new Registry() });
      // A rewrite (new key) then an overwrite: both need several transactions.
      doomed.put(u64(99), Buffer.alloc(30, 7));
      let completed = 0;
      try {
        await doomed.sync();
        completed = 1;
        for (let i = 0; i < 20; i++) doomed.put(u64(i), Buffer.alloc(20, i + 200));
        await doomed.sync();
        completed = 2;
      } catch {
        // The crash: the process is gone, nothing more is sent.
      }
      const recovered = await openMetadata(storageOn(prefix, options), {
        ...config,
        registry: new Registry(),
      });
      const expected = (i: number) => (completed === 2 ? i + 200 : i + 100);
      for (let i = 0; i < 20; i++) {
        assert.deepEqual(recovered.get(u64(i)), Buffer.alloc(20, expected(i)), `crash after ${crashAfter}`);
      }
      assert.equal(recovered.get(u64(99)) !== undefined, completed >= 1, `crash after ${crashAfter}`);
      await recovered.close();
    }
  });

  test("a sync whose answer is lost is found committed by its nonce", async () => {
    const prefix = freshPrefix();
    let lose = false;
    const storage = storageOn(prefix, {
      afterTransaction: () => {
        if (lose) {
          lose = false;
          throw new Error("connection reset");
        }
      },
    });
    const { blob } = await storage.open("p", NAME);
    await blob.write(0, Buffer.from("acknowledged"));
    lose = true;
    await blob.sync();
    await blob.write(0, Buffer.from("A"));
    await blob.sync();
    const reopened = await storageOn(prefix).open("p", NAME);
    assert.equal(Buffer.from(await reopened.blob.read(0, 12)).toString(), "Acknowledged");
  });

  test("a second writer of a blob can never commit over the first", async () => {
    const prefix = freshPrefix();
    const a = await storageOn(prefix).open("p", NAME);
    const b = await storageOn(prefix).open("p", NAME);
    await a.blob.write(0, Buffer.from("from a"));
    await a.blob.sync();
    await b.blob.write(0, Buffer.from("from b"));
    await assert.rejects(
      b.blob.sync(),
      (err: unknown) => isStoreError(err, "Io") && /another writer/.test(err.message),
    );
    await a.blob.write(0, Buffer.from("FROM a"));
    await a.blob.sync();
    const reopened = await storageOn(prefix).open("p", NAME);
    assert.equal(Buffer.from(await reopened.blob.read(0, 6)).toString(), "FROM a");
  });

  test("a server whose ownership key is gone cannot sync, create or remove", async () => {
    const prefix = freshPrefix();
    const lease = client.lease(30);
    await lease.put(`${prefix}-owner`).value("me");
    const owner = await client.get(`${prefix}-owner`).exec();
    const createRevision = owner.kvs[0]?.create_revision ?? "";
    const fenced: Storage = storageOn(prefix, {
      fence: () => ({ key: `${prefix}-owner`, createRevision }),
    });
    const { blob } = await fenced.open("p", NAME);
    await blob.write(0, Buffer.from("owned"));
    await blob.sync();
    await lease.revoke();
    await blob.write(0, Buffer.from("stale"));
    const lost = (err: unknown) => isStoreError(err, "Io") && /no longer owns/.test(err.message);
    await assert.rejects(blob.sync(), lost);
    await assert.rejects(fenced.open("p", Buffer.from("right")), lost);
    await assert.rejects(fenced.remove("p", NAME), lost);
    const reopened = await storageOn(prefix).open("p", NAME);
    assert.equal(Buffer.from(await reopened.blob.read(0, 5)).toString(), "owned");
  });
});
