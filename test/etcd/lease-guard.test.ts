/**
 * The lease guard of server/cluster/ownership.ts against a real single-member etcd (skipped with
 * the reason when etcd is not installed), with the server as a child process. Lease TTL 3 s.
 *
 * The owner itself runs on; what etcd tells it stops. Reads come from memory, so without the
 * guard the owner would go on answering them until its etcd client gives the lease up (about
 * 2 TTL after the last answer), long after a standby could have taken over at etcd. Each test
 * checks the guard's promise from the moment etcd's answers stop: reads sent right away are
 * answered, none sent 0.9 TTL later or after is (UNAVAILABLE, "ownership lease is unconfirmed"),
 * and meanwhile gRPC health says NOT_SERVING and /healthz answers 503 saying why.
 * - etcd paused (SIGSTOP): no answer, no watch event, no failed write. Once etcd goes on after
 *   its TTL (it has let the lease expire), the server reports the lost lease and exits 3; a
 *   restarted server owns the prefix and reads the durable write.
 * - etcd's answers held back by a proxy (keepalives still reach etcd, which keeps the lease):
 *   once they arrive, health says SERVING again and reads are answered.
 * - etcd's answers held back, then its requests too (a full partition): the answers etcd gave
 *   before the cut arrive after the etcd client gave up on their stream and opened another.
 *   They confirm the lease only from their own keepalives' send times, so every read stays
 *   refused; once requests reach etcd again, the server learns the lease expired and exits 3.
 */
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { after, before, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { ServerProcess } from "../e2e/server-process.js";
import { type EtcdCluster, etcdMissing, etcdServerFlags, startEtcdCluster } from "../support/etcd-cluster.js";
import { healthStatus } from "../support/health.js";
import { startHeldProxy } from "../support/held-proxy.js";
import { waitUntil } from "../support/rpc-helpers.js";
import { utf8 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";

const skip = etcdMissing() ?? false;
const TTL_SECONDS = 3;
const TTL_MS = TTL_SECONDS * 1000;
const SERVICE = "commonware.metadata.v1.MetadataService";
/** The share of a confirmed TTL the owner serves for (LEASE_TRUST in ownership.ts). */
const TRUST = 0.9;

/** Resolves after `ms` (at once when not positive). */
async function sleep(ms: number): Promise<void> {
  if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
}

/** What `promise` resolves to, or undefined once `ms` passed first (its timer then cleared). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<undefined>((resolve) => {
        timer = setTimeout(() => resolve(undefined), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** One read: when it was sent (ms after etcd's answers stopped) and how it ended. */
interface Read {
  sentMs: number;
  value?: string | undefined;
  code?: number;
  details?: string;
}

describe("the ownership lease guard", { skip, timeout: 90_000 }, () => {
  let cluster: EtcdCluster;
  let etcdPaused = false;
  const servers: ServerProcess[] = [];
  const cleanups: (() => Promise<void>)[] = [];

  function pauseEtcd(paused: boolean): void {
    for (const member of cluster.members)
      if (!member.exited) member.child.kill(paused ? "SIGSTOP" : "SIGCONT");
    etcdPaused = paused;
  }

  before(async () => {
    cluster = await startEtcdCluster(1);
  });
  after(async () => {
    // Never leave etcd stopped, whatever failed.
    if (etcdPaused) pauseEtcd(false);
    for (const server of servers) await server.stop();
    for (const cleanup of cleanups) await cleanup();
    await cluster?.stop();
  });

  /** A server on `prefix`, reaching etcd at `endpoint` (default: etcd itself). */
  async function startServer(prefix: string, endpoint?: string): Promise<ServerProcess> {
    const dir = await tempDir("metadata-lease-guard-");
    cleanups.push(dir.remove);
    const server = await ServerProcess.start({
      dataDir: dir.path,
      flags: etcdServerFlags(endpoint === undefined ? cluster.endpoints : [endpoint], prefix, TTL_SECONDS),
    });
    servers.push(server);
    return server;
  }

  /** A serving owner on `prefix` holding "key", and a client already connected to it. */
  async function startOwner(
    prefix: string,
    endpoint?: string,
  ): Promise<{ owner: ServerProcess; client: MetadataClient }> {
    const owner = await startServer(prefix, endpoint);
    await waitUntil(async () => (await serving(owner)) === "SERVING", "owner serving", 15_000);
    const client = new MetadataClient(owner.address);
    cleanups.push(async () => client.close());
    await client.put(utf8("key"), utf8("durable value"));
    // A read over the same connection first, so that the reads below pay no connection set-up.
    assert.equal(await read(client), "durable value");
    return { owner, client };
  }

  test("etcd paused: the owner refuses reads from 0.9 TTL on, says NOT_SERVING, and exits 3 once etcd goes on", async (t) => {
    const { owner, client } = await startOwner("paused");

    pauseEtcd(true);
    const pausedAt = performance.now();
    // At most 2 TTL: by then the etcd client gives the lease up by itself, and a refusal would
    // no longer be the guard's.
    const reads = await readUntilRefused(client, pausedAt, 2 * TTL_MS);
    checkGuard(reads, "the pause");
    t.diagnostic(describeReads(reads, "the pause"));
    await checkNotServing(owner);

    // Past the TTL, etcd has let the lease expire (its clock ran on while it was stopped): as
    // etcd goes on, it answers the pending keepalives "expired", the server reports the loss and
    // exits 3, for a supervisor to restart it as a fresh standby.
    await sleep(TTL_MS + 500 - (performance.now() - pausedAt));
    const resumedAt = performance.now();
    pauseEtcd(false);
    const exit = await within(owner.exited, 3 * TTL_MS + 5_000);
    t.diagnostic(
      `exit ${JSON.stringify(exit)} ${Math.round(performance.now() - resumedAt)} ms after etcd went on`,
    );
    assert.deepEqual(exit, { code: 3, signal: null }, owner.output());
    assert.match(owner.output(), /ownership lost \(lease lost: /);

    // Restarted, it owns the prefix again and reads the durable write.
    const { client: again } = await startOwner("paused");
    assert.equal(await read(again), "durable value");
  });

  test("etcd's answers held back: the owner refuses from 0.9 TTL on, then serves again once they come", async (t) => {
    const target = cluster.endpoints[0];
    assert.ok(target !== undefined);
    const proxy = await startHeldProxy(target);
    cleanups.push(proxy.close);
    const { owner, client } = await startOwner("held", proxy.endpoint);

    // Keepalives still reach etcd, which keeps the lease alive, but no answer comes back.
    proxy.hold("down");
    const heldAt = performance.now();
    const reads = await readUntilRefused(client, heldAt, 2 * TTL_MS);
    checkGuard(reads, "the hold");
    t.diagnostic(describeReads(reads, "the hold"));
    await checkNotServing(owner);

    // Within 2 TTL of the last answer (the etcd client's limit): the answers prove the lease
    // alive, so the owner serves again and says so.
    proxy.release("down");
    const releasedAt = performance.now();
    await waitUntil(async () => (await serving(owner)) === "SERVING", "SERVING again", TTL_MS);
    t.diagnostic(`SERVING again ${Math.round(performance.now() - releasedAt)} ms after the release`);
    assert.equal(await read(client), "durable value");
    const healthz = await fetch(`http://127.0.0.1:${owner.metricsPort}/healthz`);
    assert.equal(healthz.status, 200);
    assert.equal(await healthz.text(), "ok\n");
    assert.match(owner.output(), /ownership: etcd no longer confirms the lease: refusing calls/);
    assert.match(owner.output(), /ownership: etcd confirmed the lease again: serving/);
  });

  test("answers etcd gave before a full partition, delivered after it: they confirm nothing past their own time", async (t) => {
    const target = cluster.endpoints[0];
    assert.ok(target !== undefined);
    const proxy = await startHeldProxy(target);
    cleanups.push(proxy.close);
    const { owner, client } = await startOwner("stale", proxy.endpoint);

    // Answers held first, long enough for at least one keepalive (every TTL / 3) to be renewed
    // by etcd with its answer held; then nothing reaches etcd any more either.
    proxy.hold("down");
    const heldAt = performance.now();
    const reading = readUntilRefused(client, heldAt, 2 * TTL_MS);
    await sleep(TTL_MS / 3 + 400);
    proxy.hold("up");
    const cutAt = performance.now();
    checkGuard(await reading, "the hold");

    // etcd renewed the lease last before the cut, so nothing it said covers a read sent 0.9 TTL
    // after it. Its held answers arrive now (after the etcd client gave up on their stream and
    // opened another): every read must still be refused.
    await sleep(TRUST * TTL_MS + 100 - (performance.now() - cutAt));
    proxy.release("down");
    const releasedAt = performance.now();
    const late: Read[] = [];
    while (performance.now() - releasedAt < 600) {
      const one: Read = { sentMs: Math.round(performance.now() - cutAt) };
      late.push(one);
      await readInto(client, one);
      await sleep(50);
    }
    const summary = late.map(describeRead).join("\n");
    t.diagnostic(
      `after the held answers came: ${late.filter((r) => r.code === undefined).length} of ${late.length} reads answered`,
    );
    for (const one of late) {
      assert.notEqual(
        one.value,
        "durable value",
        `a read answered ${one.sentMs} ms after the cut:\n${summary}`,
      );
      assert.equal(one.code, status.UNAVAILABLE, summary);
    }

    // etcd let the lease expire meanwhile: once requests reach it again, the owner learns so and exits 3.
    await sleep(TTL_MS + 500 - (performance.now() - cutAt));
    proxy.release("up");
    const exit = await within(owner.exited, 3 * TTL_MS + 5_000);
    assert.deepEqual(exit, { code: 3, signal: null }, owner.output());
    assert.match(owner.output(), /ownership lost \(lease lost: /);
  });
});

/** The gRPC health `server` reports, or "unreachable". */
async function serving(server: ServerProcess): Promise<string> {
  return healthStatus(server.address).catch(() => "unreachable");
}

/** The value of "key", as text. */
async function read(client: MetadataClient): Promise<string | undefined> {
  const value = await client.get(utf8("key"), { deadlineMs: 2_000 });
  return value === undefined ? undefined : Buffer.from(value).toString();
}

/** Reads "key" into `one`: its value, or the code and message of the refusal. */
async function readInto(client: MetadataClient, one: Read): Promise<void> {
  try {
    one.value = await read(client);
  } catch (err) {
    const { code, details } = err as { code?: number; details?: string };
    one.code = code ?? -1;
    one.details = details ?? String(err);
  }
}

/** Reads one after the other, every 100 ms from `since` on, until the first refusal or `limitMs`. */
async function readUntilRefused(client: MetadataClient, since: number, limitMs: number): Promise<Read[]> {
  const reads: Read[] = [];
  while (performance.now() - since < limitMs) {
    const one: Read = { sentMs: Math.round(performance.now() - since) };
    reads.push(one);
    await readInto(client, one);
    if (one.code !== undefined) break;
    await sleep(100);
  }
  return reads;
}

function describeRead(one: Read): string {
  return `${one.sentMs} ms: ${one.code === undefined ? one.value : `${one.code} ${one.details}`}`;
}

function describeReads(reads: Read[], event: string): string {
  const refused = reads.at(-1);
  return `${reads.length - 1} reads answered after ${event}, the first refused sent at ${refused?.sentMs} ms`;
}

/**
 * What the guard promises once etcd's answers stop at time 0: reads sent at once are answered
 * (the lease is confirmed for at least 0.9 TTL - TTL / 3 more), none sent at 0.9 TTL or later
 * is, and the first refusal is UNAVAILABLE saying the lease is unconfirmed.
 */
function checkGuard(reads: Read[], event: string): void {
  const summary = reads.map(describeRead).join("\n");
  assert.ok(reads[0] !== undefined && reads[0].code === undefined, summary);
  for (const one of reads.filter((r) => r.code === undefined)) {
    assert.equal(one.value, "durable value", summary);
    // Nothing etcd confirmed covers a read sent this late: answering it is what the guard prevents.
    assert.ok(one.sentMs < TRUST * TTL_MS, `answered ${one.sentMs} ms after ${event}:\n${summary}`);
  }
  const refused = reads.at(-1);
  assert.ok(refused !== undefined && refused.code !== undefined, `never refused:\n${summary}`);
  assert.equal(refused.code, status.UNAVAILABLE, summary);
  assert.match(
    refused.details ?? "",
    /^this server's ownership lease is unconfirmed \(etcd last confirmed it \d+ ms too long ago\); retry$/,
  );
}

/**
 * While the owner refuses for want of a confirmed lease, health says so (a timer at the bound,
 * so allow it a moment): clients routed by health stop picking it, and /healthz says why.
 */
async function checkNotServing(owner: ServerProcess): Promise<void> {
  await waitUntil(async () => (await serving(owner)) === "NOT_SERVING", "health NOT_SERVING", 1_000);
  assert.equal(await healthStatus(owner.address, SERVICE), "NOT_SERVING");
  const healthz = await fetch(`http://127.0.0.1:${owner.metricsPort}/healthz`);
  assert.equal(healthz.status, 503);
  assert.equal(
    await healthz.text(),
    "not serving\nownership lease unconfirmed by etcd: calls refused until etcd confirms it\n",
  );
}
