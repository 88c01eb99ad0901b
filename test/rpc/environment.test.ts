/**
 * Errors of the environment, as clients and health checks see them: a data directory remounted
 * read-only (UNAVAILABLE naming the path, health NOT_SERVING until it is writable again), a full
 * filesystem (RESOURCE_EXHAUSTED "disk full", nothing acknowledged lost), and the file limit
 * (RESOURCE_EXHAUSTED). The filesystems are real: small tmpfs mounts, which need root (CI runs as
 * root); elsewhere those tests are skipped with a message. The status table itself is checked
 * for every errno class without mounts.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { status } from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { toStatus } from "../../server/rpc/status.js";
import { asIoError, StoreError } from "../../server/store/errors.js";
import { startDirServer } from "../support/rpc-helpers.js";
import { utf8 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";

const run = promisify(execFile);

function errno(code: string, message: string): Error {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

test("the status table: each errno class answers what a caller can act on", () => {
  const quiet = () => undefined;
  const cases: [Error, grpc.status, RegExp][] = [
    [errno("ENOSPC", "no space left on device, write"), status.RESOURCE_EXHAUSTED, /^disk full: /],
    [errno("EDQUOT", "disk quota exceeded, write"), status.RESOURCE_EXHAUSTED, /^disk full: /],
    [
      errno("EMFILE", "too many open files, open 'd/p/6c656674'"),
      status.RESOURCE_EXHAUSTED,
      /^too many open files: /,
    ],
    [
      errno("ENFILE", "file table overflow, open 'd/p/6c656674'"),
      status.RESOURCE_EXHAUSTED,
      /^too many open files: /,
    ],
    [
      errno("EROFS", "read-only file system, open 'd/p/6c656674'"),
      status.UNAVAILABLE,
      /not writable: .*'d\/p\/6c656674'/,
    ],
    [
      errno("EACCES", "permission denied, open 'd/p/6c656674'"),
      status.UNAVAILABLE,
      /not writable: .*'d\/p\/6c656674'/,
    ],
    [errno("EPERM", "operation not permitted, open 'd/p'"), status.UNAVAILABLE, /not writable: /],
  ];
  for (const [cause, code, details] of cases) {
    const answer = toStatus(asIoError(cause, "open p/6c656674"), quiet);
    assert.equal(answer.code, code, cause.message);
    assert.match(answer.details, details);
    // The same errno behind a failed sync: still the same class, still "not committed".
    const sync = new StoreError("SyncFailed", "sync failed: version 3 of p was not committed", {
      cause: asIoError(cause, "sync p/6c656674"),
    });
    assert.equal(toStatus(sync, quiet).code, code === status.RESOURCE_EXHAUSTED ? code : status.UNAVAILABLE);
    assert.match(toStatus(sync, quiet).details, /was not committed/);
  }
  assert.equal(
    toStatus(new StoreError("DataLoss", "data loss in partition p"), quiet).code,
    status.DATA_LOSS,
  );
  assert.equal(toStatus(asIoError(errno("EIO", "i/o error, read"), "read"), quiet).code, status.INTERNAL);
});

/** Mounts a tmpfs of `size` on `path`; false (and the test skipped) when that is not possible. */
async function mountTmpfs(t: { skip(message: string): void }, path: string, size: string): Promise<boolean> {
  if (process.getuid?.() !== 0) {
    t.skip("needs root to mount a tmpfs (CI runs as root)");
    return false;
  }
  try {
    await run("mount", ["-t", "tmpfs", "-o", `size=${size}`, "tmpfs", path]);
    return true;
  } catch (err) {
    t.skip(`cannot mount a tmpfs here: ${(err as Error).message.split("\n")[0]}`);
    return false;
  }
}

async function remount(path: string, mode: "ro" | "rw"): Promise<void> {
  await run("mount", ["-o", `remount,${mode}`, path]);
}

/** gRPC health of the whole server ("" service). */
async function grpcHealth(address: string): Promise<string> {
  const Client = grpc.makeGenericClientConstructor(healthService, "Health");
  const client = new Client(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    check(
      request: { service: string },
      callback: (err: grpc.ServiceError | null, reply?: { status: string }) => void,
    ): void;
  };
  try {
    return await new Promise((resolve, reject) =>
      client.check({ service: "" }, (err, reply) => (err ? reject(err) : resolve(String(reply?.status)))),
    );
  } finally {
    client.close();
  }
}

async function healthz(port: number | undefined): Promise<{ code: number; text: string }> {
  const response = await fetch(`http://127.0.0.1:${port}/healthz`);
  return { code: response.status, text: await response.text() };
}

async function eventually<T>(read: () => Promise<T>, ok: (value: T) => boolean, what: string): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline)
      throw new Error(`timed out waiting for ${what}; last: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

test("a data directory remounted read-only: UNAVAILABLE naming the path, NOT_SERVING, then back", async (t) => {
  const dir = await tempDir("metadata-ro-");
  const mount = join(dir.path, "mnt");
  await mkdir(mount);
  if (!(await mountTmpfs(t, mount, "4m"))) return dir.remove();
  try {
    const first = await startDirServer(mount);
    await first.client.put(utf8("a"), utf8("1"), { partition: "p" });
    await first.stop();
    // Linux refuses to remount read-only while a file is open for writing, so the partitions
    // are closed (a fresh server, which does not open them at start) when the filesystem turns
    // read-only.
    const server = await startDirServer(mount, [
      "--data-dir-probe-interval-ms",
      "50",
      "--recover-at-start",
      "off",
    ]);
    try {
      assert.equal(await grpcHealth(server.address), "SERVING");
      await remount(mount, "ro");

      for (const partition of ["fresh", "p"]) {
        await assert.rejects(
          server.client.put(utf8("b"), utf8("2"), { partition }),
          (err: grpc.ServiceError) => {
            assert.equal(err.code, status.UNAVAILABLE, err.details);
            assert.match(err.details, /data directory not writable: open .*EROFS/);
            assert.match(err.details, new RegExp(`${partition}/6c656674`));
            return true;
          },
        );
      }
      const down = await eventually(
        () => healthz(server.service.metricsPort),
        (h) => h.code === 503,
        "503",
      );
      assert.match(down.text, /^not serving\ndata directory cannot be written \(EROFS\): not serving\n$/);
      assert.equal(await grpcHealth(server.address), "NOT_SERVING");
      assert.match(await server.metrics(), /^metadata_data_dir_writable 0$/m);

      await remount(mount, "rw");
      await eventually(
        () => healthz(server.service.metricsPort),
        (h) => h.code === 200,
        "200",
      );
      assert.equal(await grpcHealth(server.address), "SERVING");
      assert.match(await server.metrics(), /^metadata_data_dir_writable 1$/m);
      await server.client.put(utf8("b"), utf8("2"), { partition: "p" });
      await server.client.put(utf8("b"), utf8("2"), { partition: "fresh" });
      assert.equal(
        Buffer.from((await server.client.get(utf8("a"), { partition: "p" })) ?? []).toString(),
        "1",
      );
    } finally {
      await server.stop();
    }
  } finally {
    await run("umount", [mount]).catch(() => undefined);
    await dir.remove();
  }
});

test("a full filesystem: RESOURCE_EXHAUSTED disk full, NOT_SERVING at once, nothing acknowledged lost", async (t) => {
  const dir = await tempDir("metadata-enospc-");
  const mount = join(dir.path, "mnt");
  await mkdir(mount);
  if (!(await mountTmpfs(t, mount, "1m"))) return dir.remove();
  try {
    // A long probe interval: health must turn at the failed sync, not at a probe.
    const server = await startDirServer(mount, ["--data-dir-probe-interval-ms", "3600000"]);
    try {
      await server.client.put(utf8("a"), utf8("1"), { partition: "p" });
      const filler = join(mount, "filler");
      await writeFile(filler, Buffer.alloc(1024 * 1024)).catch(() => undefined);

      await assert.rejects(
        server.client.put(utf8("big"), Buffer.alloc(64 * 1024, 1), { partition: "p" }),
        (err: grpc.ServiceError) => {
          assert.equal(err.code, status.RESOURCE_EXHAUSTED, err.details);
          assert.match(err.details, /disk full/);
          assert.match(err.details, /not committed/);
          return true;
        },
      );
      const down = await healthz(server.service.metricsPort);
      assert.equal(down.code, 503);
      assert.match(down.text, /ENOSPC/);

      await rm(filler);
      await eventually(
        () => healthz(server.service.metricsPort),
        (h) => h.code === 200,
        "200 after space is freed",
      );
      await server.client.put(utf8("big"), Buffer.alloc(64 * 1024, 1), { partition: "p" });
      assert.equal(
        Buffer.from((await server.client.get(utf8("a"), { partition: "p" })) ?? []).toString(),
        "1",
      );
      assert.equal((await server.client.get(utf8("big"), { partition: "p" }))?.length, 64 * 1024);
    } finally {
      await server.stop();
    }
  } finally {
    await run("umount", [mount]).catch(() => undefined);
    await dir.remove();
  }
});
