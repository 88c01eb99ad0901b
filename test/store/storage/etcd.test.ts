/**
 * The etcd backend against a real single-member etcd started here (skipped with the reason when
 * etcd is not installed): the reference suite of the store, etcd's transaction limits, syncs
 * split over several transactions and torn at every point, overwrites sent as deltas (their
 * bound, a torn blob's deltas), lost answers, and fencing (a second writer of a blob, a lost
 * ownership key).
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
      // Two pages per transaction, no deltas: every sync writes its pages.
      const options = { pageBytes: 8, maxTxnOps: 6, maxDeltas: 0 };
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

  test("a torn blob reopens without a write, its header kept (etcd out of space refuses them)", async () => {
    for (const layout of ["v0", "v1"] as const) {
      const prefix = freshPrefix();
      const options = { pageBytes: 512, maxTxnOps: 6, maxDeltas: 0 };
      const first = await storageOn(prefix, options).open("p", NAME, { layout });
      await first.blob.write(0, Buffer.alloc(8192, 1));
      await first.blob.sync();
      let sent = 0;
      const crashing = storageOn(prefix, {
        ...options,
        beforeTransaction: () => {
          if (++sent > 1) throw new Error("crash");
        },
      });
      const { blob } = await crashing.open("p", NAME, { layout });
      await blob.write(0, Buffer.alloc(8192, 2));
      await assert.rejects(blob.sync(), (err: unknown) => isStoreError(err, "Io"));
      const base = storageOn(prefix).blobBase("p", NAME);
      assert.match((await client.get(`${base}length`).string()) ?? "", /^incomplete:/);

      const readOnly = storageOn(prefix, {
        ...options,
        beforeTransaction: () => {
          throw new Error("no write expected");
        },
      });
      const torn = await readOnly.open("p", NAME, { layout });
      assert.equal(torn.length, 0, layout);
      assert.equal(torn.layout, layout);
      assert.equal(torn.created, false);
      // The next sync grows it from the header: only the new bytes, no stale page.
      const healed = await storageOn(prefix, options).open("p", NAME, { layout });
      await healed.blob.write(0, Buffer.alloc(100, 3));
      await healed.blob.sync();
      const again = await storageOn(prefix, options).open("p", NAME, { layout });
      assert.equal(again.length, 100, layout);
      assert.deepEqual(Buffer.from(await again.blob.read(0, 100)), Buffer.alloc(100, 3));
    }
  });

  for (const [shape, options] of [
    ["pages only", { pageBytes: 16, maxTxnOps: 6, maxDeltas: 0 }],
    ["overwrites as deltas", { pageBytes: 16, maxTxnOps: 6, maxDeltas: 2 }],
  ] as const) {
    test(`the store recovers the last completed sync from a sync torn at every transaction (${shape})`, async () => {
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
  }

  test("an overwrite is one transaction holding one delta; past maxDeltas the pages are written", async () => {
    const prefix = freshPrefix();
    const options = { pageBytes: 16, maxDeltas: 3 };
    let transactions = 0;
    const storage = storageOn(prefix, { ...options, beforeTransaction: () => void transactions++ });
    const { blob } = await storage.open("p", NAME);
    const bytes = Buffer.from(new Rng(2).bytes(256));
    await blob.write(0, bytes);
    await blob.sync();
    const base = storage.blobBase("p", NAME);
    const deltaKeys = async () => (await client.getAll().prefix(`${base}delta/`).keys()).length;
    for (let round = 1; round <= 4; round++) {
      // Two separate changes and one spanning pages: one delta of three records.
      const change = Buffer.alloc(20, round);
      bytes.set(change.subarray(0, 3), 5);
      bytes.set(change, 100);
      bytes.set(change.subarray(0, 4), 252);
      await blob.write(5, change.subarray(0, 3));
      await blob.write(100, change);
      await blob.write(252, change.subarray(0, 4));
      transactions = 0;
      await blob.sync();
      assert.equal(transactions, 1, `round ${round}: one transaction`);
      // Rounds 1-3 add a delta; round 4 finds 3 and writes the pages, deleting them.
      assert.equal(await deltaKeys(), round <= 3 ? round : 0, `round ${round}: deltas`);
      const reader = await storageOn(prefix, options).open("p", NAME);
      assert.deepEqual(Buffer.from(await reader.blob.read(0, 256)), bytes, `round ${round}: bytes`);
      // The physical bytes end with the logical ones (the runtime header comes first).
      const physical = (await etcdBlobBytes(client, base, 16)) ?? Buffer.alloc(0);
      assert.deepEqual(physical.subarray(physical.length - 256), bytes, `round ${round}: physical bytes`);
    }
    // A resize is never a delta.
    await blob.write(0, Buffer.alloc(1, 9));
    await blob.sync();
    assert.equal(await deltaKeys(), 1);
    await blob.resize(200);
    await blob.sync();
    assert.equal(await deltaKeys(), 0);
    const reader = await storageOn(prefix, options).open("p", NAME);
    assert.equal(reader.length, 200);
  });

  test("a delta sync that fails leaves the blob as it was; one whose answer is lost is found by its nonce", async () => {
    const prefix = freshPrefix();
    let crash = false;
    let lose = false;
    const storage = storageOn(prefix, {
      beforeTransaction: () => {
        if (crash) throw new Error("crash");
      },
      afterTransaction: () => {
        if (lose) {
          lose = false;
          throw new Error("connection reset");
        }
      },
    });
    const { blob } = await storage.open("p", NAME);
    await blob.write(0, Buffer.from("first value"));
    await blob.sync();
    await blob.write(0, Buffer.from("lost answer"));
    lose = true;
    await blob.sync();
    const read = async () =>
      Buffer.from(await (await storageOn(prefix).open("p", NAME)).blob.read(0, 11)).toString();
    assert.equal(await read(), "lost answer");
    await blob.write(0, Buffer.from("never made"));
    crash = true;
    await assert.rejects(blob.sync(), (err: unknown) => isStoreError(err, "Io"));
    assert.equal(await read(), "lost answer");
  });

  test("a torn split sync after deltas opens empty, and the next sync deletes those deltas", async () => {
    const prefix = freshPrefix();
    const options = { pageBytes: 8, maxTxnOps: 6 };
    const first = await storageOn(prefix, options).open("p", NAME);
    await first.blob.write(0, Buffer.alloc(64, 1));
    await first.blob.sync();
    await first.blob.write(3, Buffer.alloc(2, 5));
    await first.blob.sync();
    const base = storageOn(prefix).blobBase("p", NAME);
    assert.equal((await client.getAll().prefix(`${base}delta/`).keys()).length, 1);
    let sent = 0;
    const crashing = storageOn(prefix, {
      ...options,
      beforeTransaction: () => {
        if (++sent > 1) throw new Error("crash");
      },
    });
    const { blob } = await crashing.open("p", NAME);
    await blob.write(0, Buffer.alloc(80, 2)); // grows: pages, split
    await assert.rejects(blob.sync(), (err: unknown) => isStoreError(err, "Io"));
    const torn = await storageOn(prefix, options).open("p", NAME);
    assert.equal(torn.length, 0);
    await torn.blob.write(0, Buffer.alloc(16, 3));
    await torn.blob.sync();
    assert.equal((await client.getAll().prefix(`${base}delta/`).keys()).length, 0);
    const reread = await storageOn(prefix, options).open("p", NAME);
    assert.deepEqual(Buffer.from(await reread.blob.read(0, 16)), Buffer.alloc(16, 3));
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

  test("a failed sync is voided only when it can never land: refused, fenced off, or its compare failed", async () => {
    const prefix = freshPrefix();
    const failing = { next: 0 };
    const storage = storageOn(prefix, {
      beforeTransaction: () => {
        if (failing.next > 0) {
          failing.next--;
          throw new Error("connection reset");
        }
      },
    });
    const { blob } = await storage.open("p", NAME);
    await blob.write(0, Buffer.from("committed"));
    await blob.sync();
    const voided = (expected: boolean) => (err: unknown) => {
      assert.ok(isStoreError(err), String(err));
      assert.equal(err.voided, expected, err.message);
      return true;
    };
    // Unknown outcome, then fenced off (the length key rewritten): it can never land.
    failing.next = 1;
    await blob.write(0, Buffer.from("fenced of"));
    await assert.rejects(blob.sync(), voided(true));
    // Unknown outcome, and the fence-off fails too: it might still land.
    failing.next = 2;
    await blob.write(0, Buffer.from("uncertain"));
    await assert.rejects(blob.sync(), voided(false));
    // Refused by etcd's compare: another writer got there first.
    const other = await storageOn(prefix).open("p", NAME);
    await other.blob.write(0, Buffer.from("the other"));
    await other.blob.sync();
    await blob.write(0, Buffer.from("refused!!"));
    await assert.rejects(blob.sync(), voided(true));
    const reopened = await storageOn(prefix).open("p", NAME);
    assert.equal(Buffer.from(await reopened.blob.read(0, 9)).toString(), "the other");
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
