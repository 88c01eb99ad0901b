/**
 * Shutdown when grpc-js never reports its connections closed (as happens when a client drops
 * its connection just before the shutdown): the server still answers the call in flight, then
 * stops soon after instead of waiting out the grace period. grpc-js's graceful shutdown is made
 * to never call back, which is what it does in that race; the sync of the call in flight is
 * held by a gated storage, so the order is fixed without sleeps.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { GatedStorage } from "../support/gated-storage.js";
import { startTestServer } from "../support/in-process-server.js";
import { track } from "../support/rpc-helpers.js";
import { utf8 } from "../support/store-helpers.js";

const GRACE_MS = 30_000;

test("shutdown answers the call in flight and ends soon after when grpc-js never reports the connections closed", async () => {
  const tryShutdown = grpc.Server.prototype.tryShutdown;
  grpc.Server.prototype.tryShutdown = function (this: grpc.Server) {
    tryShutdown.call(this, () => undefined);
  };
  const gate = new GatedStorage(new MemoryStorage());
  const server = await startTestServer(["--shutdown-grace-ms", String(GRACE_MS)], gate);
  try {
    const first = await server.client.put(utf8("k"), utf8("first"));
    const synced = gate.syncs("default");
    gate.hold();
    const put = track(server.client.put(utf8("k"), utf8("second")));
    await gate.syncStarted("default", synced.started + 1);

    const started = performance.now();
    const stopping = track(server.service.stop());
    // The put is still waiting for its sync: the stop must wait for it too.
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(stopping.settled(), false);
    assert.equal(put.settled(), false);

    gate.release();
    const answer = await put.promise;
    assert.equal(answer.version, first.version + 1n);
    await stopping.promise;
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 5_000, `stop took ${elapsed.toFixed(0)} ms (grace ${GRACE_MS} ms)`);
  } finally {
    grpc.Server.prototype.tryShutdown = tryShutdown;
    gate.releaseAll();
    await server.stop();
  }
});
