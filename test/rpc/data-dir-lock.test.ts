/**
 * One server per data directory: a second server on a directory in use (by the same path or
 * through a symlink) refuses to start with a clear error and changes nothing, the first keeps
 * serving, and the directory is free again once the first stops. (That a SIGKILLed server leaves
 * no stale lock is shown by test/e2e/crash.test.ts, which restarts at once after each kill.)
 */
import assert from "node:assert/strict";
import { symlink } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { DataDirLockedError, lockDataDir } from "../../server/data-dir-lock.js";
import { type DirServer, startDirServer } from "../support/rpc-helpers.js";
import { utf8 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";

const text = (bytes: Uint8Array | undefined) =>
  bytes === undefined ? undefined : Buffer.from(bytes).toString();

test("a second server on a data directory in use refuses to start; the first keeps serving", async () => {
  const dir = await tempDir("metadata-lock-");
  const other = await tempDir("metadata-lock-other-");
  const servers: DirServer[] = [];
  try {
    const first = await startDirServer(dir.path);
    servers.push(first);
    await first.client.put(utf8("k"), utf8("first"));

    const link = join(other.path, "link");
    await symlink(dir.path, link);
    for (const path of [dir.path, link]) {
      // A server that starts anyway is stopped at the end, so the failure is reported, not hung.
      const started = startDirServer(path).then((server) => {
        servers.push(server);
        return server;
      });
      await assert.rejects(started, (err: unknown) => {
        assert.ok(err instanceof DataDirLockedError, String(err));
        assert.match(err.message, /is in use by another metadata server process/);
        return true;
      });
    }
    // Another directory is not affected.
    servers.push(await startDirServer(join(other.path, "data")));

    assert.equal(text(await first.client.get(utf8("k"))), "first");
    await first.client.put(utf8("k"), utf8("still first"));
    await first.stop();

    const second = await startDirServer(dir.path);
    servers.push(second);
    assert.equal(text(await second.client.get(utf8("k"))), "still first");
  } finally {
    for (const server of servers) await server.stop();
    await dir.remove();
    await other.remove();
  }
});

test("the lock is taken once per directory and released on demand", async () => {
  const dir = await tempDir("metadata-lock-");
  try {
    const lock = await lockDataDir(dir.path);
    assert.equal(lock.held, process.platform === "linux");
    if (lock.held) await assert.rejects(lockDataDir(join(dir.path, ".")), DataDirLockedError);
    await lock.release();
    await lock.release();
    const again = await lockDataDir(dir.path);
    await again.release();
  } finally {
    await dir.remove();
  }
});
