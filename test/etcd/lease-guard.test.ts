/**
 * The lease guard of server/cluster/ownership.ts against a real single-member etcd (skipped with
 * the reason when etcd is not installed), with the server as a child process. Lease TTL 3 s.
 *
 * etcd itself is paused (SIGSTOP), not the owner: keepalives go unanswered and no watch event or
 * failed write can arrive, so the owner learns nothing from etcd. Reads come from memory, so
 * without the guard the owner would go on answering them until its etcd client gives the lease up
 * (about 2 TTL after the last answer), long after a standby could have taken over at etcd. With
 * the guard:
 * - reads sent right after the pause are answered (the owner serves normally);
 * - every read sent 0.9 TTL or more after the pause is refused UNAVAILABLE, saying the ownership
 *   lease is unconfirmed, and never answered with the value; meanwhile gRPC health says
 *   NOT_SERVING and /healthz answers 503 saying why;
 * - once etcd goes on (after its TTL, so etcd has let the lease expire), the server reports the
 *   lost lease and exits 3, and a restarted server owns the prefix and reads the durable write.
 */
import assert from "node:assert/strict";
import { performance } from "node:perf_hooks";
import { after, before, describe, test } from "node:test";
import { status } from "@grpc/grpc-js";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { ServerProcess } from "../e2e/server-process.js";
import { type EtcdCluster, etcdMissing, startEtcdCluster } from "../support/etcd-cluster.js";
import { healthStatus } from "../support/health.js";
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

/** One read sent while etcd was paused: when it was sent (ms after the pause) and how it ended. */
interface Read {
  sentMs: number;
  value?: string | undefined;
  code?: number;
  details?: string;
}

describe("the ownership lease guard, etcd paused", { skip, timeout: 60_000 }, () => {
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

  async function startServer(): Promise<ServerProcess> {
    const dir = await tempDir("metadata-lease-guard-");
    cleanups.push(dir.remove);
    const server = await ServerProcess.start({
      dataDir: dir.path,
      flags: [
        "--storage",
        "etcd",
        "--etcd-endpoints",
        cluster.endpoints.join(","),
        "--etcd-prefix",
        "guard",
        "--etcd-lease-ttl-seconds",
        String(TTL_SECONDS),
      ],
    });
    servers.push(server);
    return server;
  }

  test("an owner refuses reads from 0.9 TTL after etcd stopped confirming its lease, then exits 3", async (t) => {
    const owner = await startServer();
    await waitUntil(
      async () => (await healthStatus(owner.address).catch(() => "unreachable")) === "SERVING",
      "owner serving",
      15_000,
    );
    const client = new MetadataClient(owner.address);
    cleanups.push(async () => client.close());
    await client.put(utf8("key"), utf8("durable value"));
    // A read over the same connection first, so that the reads below pay no connection set-up.
    assert.equal(Buffer.from((await client.get(utf8("key"))) ?? []).toString(), "durable value");

    pauseEtcd(true);
    const pausedAt = performance.now();
    // Reads one after the other until the first refusal (at most 2 TTL: by then the etcd client
    // gives the lease up by itself, and a refusal would no longer be the guard's).
    const reads: Read[] = [];
    while (performance.now() - pausedAt < 2 * TTL_MS) {
      const read: Read = { sentMs: Math.round(performance.now() - pausedAt) };
      reads.push(read);
      try {
        const value = await client.get(utf8("key"), { deadlineMs: 2_000 });
        read.value = value === undefined ? undefined : Buffer.from(value).toString();
      } catch (err) {
        const { code, details } = err as { code?: number; details?: string };
        read.code = code ?? -1;
        read.details = details ?? String(err);
        break;
      }
      await sleep(100);
    }
    const summary = reads.map(
      (r) => `${r.sentMs} ms: ${r.code === undefined ? r.value : `${r.code} ${r.details}`}`,
    );
    const answered = reads.filter((r) => r.code === undefined);
    // Right after the pause the lease is still confirmed for at least 0.9 TTL - TTL / 3.
    assert.ok(reads[0] !== undefined && reads[0].code === undefined, summary.join("\n"));
    for (const read of answered) {
      assert.equal(read.value, "durable value", summary.join("\n"));
      // Nothing etcd confirmed covers a read sent this late: answering it is the bug the guard prevents.
      assert.ok(read.sentMs < TRUST * TTL_MS, `answered too late:\n${summary.join("\n")}`);
    }
    const refused = reads.at(-1);
    assert.ok(refused !== undefined && refused.code !== undefined, `never refused:\n${summary.join("\n")}`);
    assert.equal(refused.code, status.UNAVAILABLE, summary.join("\n"));
    assert.match(
      refused.details ?? "",
      /^this server's ownership lease is unconfirmed \(etcd last confirmed it \d+ ms too long ago\); retry$/,
    );
    t.diagnostic(
      `${answered.length} reads answered after the pause, the first refused sent at ${refused.sentMs} ms`,
    );

    // Health follows the refusal (a timer at the bound, so allow it a moment): clients routed by
    // health stop picking this server, and /healthz says why.
    await waitUntil(
      async () => (await healthStatus(owner.address)) === "NOT_SERVING",
      "grpc health NOT_SERVING",
      1_000,
    );
    assert.equal(await healthStatus(owner.address, SERVICE), "NOT_SERVING");
    const healthz = await fetch(`http://127.0.0.1:${owner.metricsPort}/healthz`);
    assert.equal(healthz.status, 503);
    assert.equal(
      await healthz.text(),
      "not serving\nownership lease unconfirmed by etcd: calls refused until etcd confirms it\n",
    );

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
    const restarted = await startServer();
    await waitUntil(
      async () => (await healthStatus(restarted.address).catch(() => "unreachable")) === "SERVING",
      "restarted server serving",
      15_000,
    );
    const again = new MetadataClient(restarted.address);
    cleanups.push(async () => again.close());
    assert.equal(Buffer.from((await again.get(utf8("key"))) ?? []).toString(), "durable value");
  });
});
