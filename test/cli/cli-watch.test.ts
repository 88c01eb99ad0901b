/**
 * The CLI's `watch` command as a child process (`node --import tsx server/cli.ts watch ...`)
 * against an in-process server: it prints committed changes as they come, one a line
 * (VERSION, put or rm, KEY, and the VALUE with --values), replayed from --from-version and then
 * live; a version the history no longer holds exits 1 with OUT_OF_RANGE.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, test } from "node:test";
import { parseCommandLine, UsageError } from "../../server/cli.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { waitUntil } from "../support/rpc-helpers.js";
import { utf8 } from "../support/store-helpers.js";

const REPO_ROOT = new URL("../../", import.meta.url);

/** Starts the CLI with `args`; its stdout lines accumulate in `lines`. */
function startCli(address: string, args: string[]) {
  const child = spawn(process.execPath, ["--import", "tsx", "server/cli.ts", ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, METADATA_ADDRESS: address },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const lines: string[] = [];
  let pending = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    pending += chunk;
    const complete = pending.split("\n");
    pending = complete.pop() ?? "";
    lines.push(...complete);
  });
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  const exited = new Promise<number | null>((resolve) => {
    child.once("close", (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
  return { child, lines, exited, stderr: () => stderr };
}

describe("cli watch", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer(["--watch-history-syncs", "5"]);
  });
  after(async () => server.stop());

  test("prints each committed change, replayed from --from-version, then live", async () => {
    const { client } = server;
    const v1 = (await client.put(utf8("greeting"), utf8("hello world"), { partition: "cli" })).version;
    const cli = startCli(server.address, [
      "watch",
      "--partition",
      "cli",
      "--from-version",
      String(v1),
      "--values",
    ]);
    try {
      await waitUntil(() => cli.lines.length >= 1, "the replayed change", 20_000);
      const v2 = (await client.put(utf8("greeting"), utf8("hi"), { partition: "cli" })).version;
      const v3 = (await client.remove(utf8("greeting"), { partition: "cli" })).version;
      await waitUntil(() => cli.lines.length >= 3, "the live changes", 20_000);
      assert.deepEqual(cli.lines, [
        `${v1}\tput\tgreeting\thello world`,
        `${v2}\tput\tgreeting\thi`,
        `${v3}\trm\tgreeting`,
      ]);
      assert.equal(cli.stderr(), "");
    } finally {
      cli.child.kill("SIGTERM");
      await cli.exited;
    }
  });

  test("a version the history no longer holds exits 1 with OUT_OF_RANGE", async () => {
    for (let i = 0; i < 8; i++) await server.client.put(utf8(`k${i}`), utf8("v"), { partition: "old" });
    const cli = startCli(server.address, ["watch", "--partition", "old", "--from-version", "1"]);
    assert.equal(await cli.exited, 1);
    assert.match(cli.stderr(), /^error: OUT_OF_RANGE: .*oldest available version 4\n$/);
    assert.deepEqual(cli.lines, []);
  });

  test("--from-version takes a u64", () => {
    assert.equal(parseCommandLine(["watch", "--from-version", "18446744073709551615"], {}).name, "watch");
    assert.throws(() => parseCommandLine(["watch", "--from-version", "-1"], {}), UsageError);
    assert.throws(
      () => parseCommandLine(["watch", "--from-version", "18446744073709551616"], {}),
      UsageError,
    );
    assert.throws(() => parseCommandLine(["watch", "x"], {}), UsageError);
  });
});
