/**
 * The server process against a hostile environment: it refuses to start, quickly and with one
 * clear line, on a data directory it cannot create or write; and out of file descriptors it
 * answers RESOURCE_EXHAUSTED (never INTERNAL) and keeps serving the partitions it has open.
 */
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { status } from "@grpc/grpc-js";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { utf8 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";
import { REPO_ROOT, ServerProcess } from "./server-process.js";

const run = promisify(execFile);
/** A refusal must come well before a supervisor would give up. */
const REFUSAL_LIMIT_MS = 20_000;

/** Runs the server on `dataDir` until it exits; its exit code, stderr and how long it took. */
async function refusal(dataDir: string): Promise<{ code: number | null; stderr: string; ms: number }> {
  const started = Date.now();
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "server/main.ts",
      "--data-dir",
      dataDir,
      "--listen",
      "127.0.0.1:0",
      "--metrics-listen",
      "off",
    ],
    { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] },
  );
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), REFUSAL_LIMIT_MS);
  const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  clearTimeout(timer);
  return { code, stderr, ms: Date.now() - started };
}

function assertOneLineRefusal(
  result: { code: number | null; stderr: string; ms: number },
  pattern: RegExp,
): void {
  assert.equal(result.code, 1, `exit code (stderr: ${result.stderr})`);
  assert.ok(result.ms < REFUSAL_LIMIT_MS, `took ${result.ms} ms`);
  const lines = result.stderr.trimEnd().split("\n");
  assert.equal(lines.length, 1, result.stderr);
  assert.match(lines[0] as string, pattern);
}

test("--data-dir /proc/data: refused at once with one line, no hang", async () => {
  assertOneLineRefusal(
    await refusal("/proc/data"),
    /^error: cannot create data directory \/proc\/data: ENOENT/,
  );
});

test("a data directory that is a file: refused with one line", async () => {
  const dir = await tempDir("metadata-refuse-");
  try {
    await writeFile(join(dir.path, "file"), "");
    assertOneLineRefusal(
      await refusal(join(dir.path, "file", "data")),
      /^error: cannot create data directory .*file\/data: ENOTDIR/,
    );
  } finally {
    await dir.remove();
  }
});

test("a read-only data directory: refused with one line naming EROFS", async (t) => {
  if (process.getuid?.() !== 0) {
    t.skip("needs root to mount a read-only tmpfs (CI runs as root)");
    return;
  }
  const dir = await tempDir("metadata-refuse-ro-");
  const mount = join(dir.path, "mnt");
  await mkdir(mount);
  try {
    try {
      await run("mount", ["-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", mount]);
    } catch (err) {
      t.skip(`cannot mount a tmpfs here: ${(err as Error).message.split("\n")[0]}`);
      return;
    }
    assertOneLineRefusal(await refusal(mount), /^error: cannot write data directory .*: EROFS/);
  } finally {
    await run("umount", [mount]).catch(() => undefined);
    await dir.remove();
  }
});

test("out of file descriptors: RESOURCE_EXHAUSTED, and open partitions keep serving", async () => {
  const dir = await tempDir("metadata-emfile-");
  const server = await ServerProcess.start({ dataDir: dir.path, fileLimit: 100 });
  const client = new MetadataClient(server.address);
  try {
    const codes = new Map<string, number>();
    let created = 0;
    // Each open partition holds two descriptors: some hundred partitions exhaust 100.
    for (let i = 0; i < 100; i++) {
      try {
        await client.put(utf8("k"), utf8(`v${i}`), { partition: `p${i}` });
        created++;
      } catch (err) {
        const { code, details } = err as { code: number; details: string };
        codes.set(status[code] ?? String(code), (codes.get(status[code] ?? String(code)) ?? 0) + 1);
        if (code === status.RESOURCE_EXHAUSTED) assert.match(details, /too many open files/);
      }
    }
    assert.ok(created > 5, `created ${created}`);
    assert.deepEqual([...codes.keys()], ["RESOURCE_EXHAUSTED"], server.output());
    for (let i = 0; i < created; i++) {
      assert.equal(
        Buffer.from((await client.get(utf8("k"), { partition: `p${i}` })) ?? []).toString(),
        `v${i}`,
      );
    }
  } finally {
    client.close();
    await server.stop();
    await dir.remove();
  }
});
