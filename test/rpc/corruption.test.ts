/**
 * Corruption as a client and an operator see it: a partition whose two blobs are both damaged
 * answers DATA_LOSS (never an empty partition), /healthz and /metrics say so from the start
 * (recovery at start; only from its first call with `--recover-at-start off`), and it stays so
 * until `metadata-cli accept-data-loss` (server stopped) keeps both blobs in the quarantine and
 * empties it. A stray file beside the blobs is ignored with one warning and never deleted.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { test } from "node:test";
import { promisify } from "node:util";
import { status } from "@grpc/grpc-js";
import { QUARANTINE_DIRECTORY } from "../../server/store/quarantine.js";
import { REPO_ROOT } from "../e2e/server-process.js";
import { startDirServer } from "../support/rpc-helpers.js";
import { utf8 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";

const run = promisify(execFile);

async function flipLastBodyByte(path: string): Promise<void> {
  const bytes = await readFile(path);
  bytes[bytes.length - 5] = (bytes[bytes.length - 5] as number) ^ 0x40;
  await writeFile(path, bytes);
}

/** Runs the CLI's accept-data-loss; resolves with its exit code and output. */
async function acceptLoss(dataDir: string, partition: string) {
  try {
    const { stdout, stderr } = await run(
      process.execPath,
      ["--import", "tsx", "server/cli.ts", "accept-data-loss", partition, "--data-dir", dataDir],
      { cwd: REPO_ROOT },
    );
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

/** Waits until the recovery at start has checked every partition; resolves with that scrape. */
async function recoveredAtStart(server: { metrics(): Promise<string> }): Promise<string> {
  for (let i = 0; i < 200; i++) {
    const scrape = await server.metrics();
    if (/^metadata_recovery_at_start_remaining 0$/m.test(scrape)) return scrape;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error("the recovery at start did not finish within 5 s");
}

/** Captures console.warn while `body` runs. */
async function captureWarnings<T>(body: () => Promise<T>): Promise<{ result: T; warnings: string[] }> {
  const warnings: string[] = [];
  const original = console.warn;
  console.warn = (...args: unknown[]) => warnings.push(args.map(String).join(" "));
  try {
    return { result: await body(), warnings };
  } finally {
    console.warn = original;
  }
}

test("both blobs damaged: DATA_LOSS, reported by /healthz and /metrics, until accept-data-loss", async () => {
  const dir = await tempDir("metadata-corruption-");
  try {
    let server = await startDirServer(dir.path);
    await server.client.put(utf8("a"), utf8("1"), { partition: "p" });
    await server.client.put(utf8("b"), utf8("2"), { partition: "p" });
    await server.client.put(utf8("k"), utf8("fine"), { partition: "q" });
    await server.stop();
    await flipLastBodyByte(join(dir.path, "p", "6c656674"));
    await flipLastBodyByte(join(dir.path, "p", "7269676874"));

    const captured = await captureWarnings(async () => {
      server = await startDirServer(dir.path);
      // Found at start, before any call names the partition.
      const scrape = await recoveredAtStart(server);
      assert.match(scrape, /^metadata_partition_data_loss\{partition="p"\} 1$/m);
      assert.match(scrape, /^metadata_recovery_at_start_partitions_total\{result="data_loss"\} 1$/m);
      assert.match(
        await (await fetch(`http://127.0.0.1:${server.service.metricsPort}/healthz`)).text(),
        /^ok\ndata loss: 1 partition\(s\) not served/,
      );
      for (const call of [
        () => server.client.get(utf8("a"), { partition: "p" }),
        () => server.client.put(utf8("c"), utf8("3"), { partition: "p" }),
        () => server.client.keys({ partition: "p" }).next(),
      ]) {
        await assert.rejects(call(), (err: { code: number; details: string }) => {
          assert.equal(err.code, status.DATA_LOSS);
          assert.match(err.details, /data loss in partition p: no valid blob/);
          assert.match(err.details, /accept-data-loss p/);
          return true;
        });
      }
      // Other partitions are served as usual.
      assert.equal(
        Buffer.from((await server.client.get(utf8("k"), { partition: "q" })) ?? []).toString(),
        "fine",
      );
    });
    // Reported once, not once per call.
    assert.equal(captured.warnings.filter((w) => /data loss in partition p/.test(w)).length, 1);

    const health = await fetch(`http://127.0.0.1:${server.service.metricsPort}/healthz`);
    assert.equal(health.status, 200);
    // /healthz is open to anyone: it counts, the metrics and the log name the partition.
    assert.match(await health.text(), /^ok\ndata loss: 1 partition\(s\) not served/);
    assert.match(await server.metrics(), /^metadata_partition_data_loss\{partition="p"\} 1$/m);

    // Refused while the server holds the directory.
    const refused = await acceptLoss(dir.path, "p");
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /in use by another metadata server process: stop the server first/);
    await server.stop();

    const accepted = await acceptLoss(dir.path, "p");
    assert.equal(accepted.code, 0, accepted.stderr);
    assert.match(accepted.stdout, /accepted the data loss of partition p: it is empty now/);
    const kept = await readdir(join(dir.path, QUARANTINE_DIRECTORY, "p"));
    assert.equal(kept.length, 2);
    assert.deepEqual(await readdir(join(dir.path, "p")), ["6c656674", "7269676874"]);

    server = await startDirServer(dir.path);
    assert.equal(await server.client.get(utf8("a"), { partition: "p" }), undefined);
    await server.client.put(utf8("c"), utf8("3"), { partition: "p" });
    assert.equal(Buffer.from((await server.client.get(utf8("c"), { partition: "p" })) ?? []).toString(), "3");
    assert.doesNotMatch(await server.metrics(), /^metadata_partition_data_loss\{/m);
    await server.stop();

    const again = await acceptLoss(dir.path, "p");
    assert.equal(again.code, 0);
    assert.match(again.stdout, /partition p has no data loss/);
  } finally {
    await dir.remove();
  }
});

test("with --recover-at-start off, data loss is found by the first call on the partition", async () => {
  const dir = await tempDir("metadata-corruption-off-");
  try {
    let server = await startDirServer(dir.path);
    await server.client.put(utf8("a"), utf8("1"), { partition: "p" });
    await server.client.put(utf8("b"), utf8("2"), { partition: "p" });
    await server.stop();
    await flipLastBodyByte(join(dir.path, "p", "6c656674"));
    await flipLastBodyByte(join(dir.path, "p", "7269676874"));
    await captureWarnings(async () => {
      server = await startDirServer(dir.path, ["--recover-at-start", "off"]);
      await server.client.get(utf8("a"), { partition: "q" });
      const before = await server.metrics();
      assert.doesNotMatch(before, /^metadata_partition_data_loss\{/m);
      assert.doesNotMatch(before, /^metadata_recovery_at_start_remaining/m);
      await assert.rejects(server.client.get(utf8("a"), { partition: "p" }), { code: status.DATA_LOSS });
      assert.match(await server.metrics(), /^metadata_partition_data_loss\{partition="p"\} 1$/m);
      await server.stop();
    });
  } finally {
    await dir.remove();
  }
});

test("a stray file or directory in a partition: Get and Keys answer, one warning, nothing deleted", async () => {
  const dir = await tempDir("metadata-stray-");
  try {
    let server = await startDirServer(dir.path);
    await server.client.put(utf8("a"), utf8("1"), { partition: "p" });
    await server.stop();
    await writeFile(join(dir.path, "p", "notes.txt"), "an operator's notes");
    await mkdir(join(dir.path, "p", "backup"));

    const { warnings } = await captureWarnings(async () => {
      server = await startDirServer(dir.path);
      for (let i = 0; i < 3; i++) {
        assert.equal(
          Buffer.from((await server.client.get(utf8("a"), { partition: "p" })) ?? []).toString(),
          "1",
        );
        const keys = [];
        for await (const entry of server.client.keys({ partition: "p" }))
          keys.push(Buffer.from(entry.key).toString());
        assert.deepEqual(keys, ["a"]);
      }
      await server.client.put(utf8("b"), utf8("2"), { partition: "p" });
      await server.stop();
    });
    assert.equal(
      warnings.filter((w) => /partition corrupt: p: unexpected entry/.test(w)).length,
      1,
      warnings.join("\n"),
    );
    assert.deepEqual((await readdir(join(dir.path, "p"))).sort(), [
      "6c656674",
      "7269676874",
      "backup",
      "notes.txt",
    ]);
    assert.equal(await readFile(join(dir.path, "p", "notes.txt"), "utf8"), "an operator's notes");
  } finally {
    await dir.remove();
  }
});
