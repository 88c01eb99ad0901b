/**
 * CLI `load`: server/cli.ts run as a child process against an in-process server, putting
 * KEY<TAB>VALUE lines from stdin or a file over one Write stream. Checks that every line is
 * committed (a later line wins for a repeated key, text / hex: / u64: spellings), that failed
 * lines are named on stderr with their status while the others still go in (exit status 1), the
 * summary on stdout, progress on stderr for input that takes more than a second, and a server
 * killed mid-load (unanswered lines fail with an unknown outcome, reading stops, exit status 1).
 */
import assert from "node:assert/strict";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parseCommandLine } from "../../server/cli.js";
import { ServerProcess } from "../e2e/server-process.js";
import { type CliRun, runCli } from "../support/cli-process.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { waitUntil } from "../support/rpc-helpers.js";
import { u64 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";

/**
 * Runs the CLI with `args` against `address`, writing `input` to its stdin chunk by chunk with
 * `pauseMs` between chunks (a function in `input` is awaited instead of written).
 */
function cli(
  address: string,
  args: string[],
  input: (string | (() => Promise<void>))[] = [],
  pauseMs = 0,
): Promise<CliRun> {
  return runCli(args, { env: { METADATA_ADDRESS: address }, input, pauseMs });
}

describe("cli load", () => {
  let server: TestServer;
  let dir: Awaited<ReturnType<typeof tempDir>>;
  before(async () => {
    server = await startTestServer(["--max-value-bytes", "64", "--partition-key-codec", "fixed8=fixed:8"]);
    dir = await tempDir("metadata-cli-load-");
  });
  after(async () => {
    await server.stop();
    await dir.remove();
  });

  test("parses `load FILE` with the write options", () => {
    const command = parseCommandLine(["load", "-", "--partition", "p", "--buffered"], {});
    assert.equal(command.name, "load");
    assert.ok("options" in command);
    assert.deepEqual(command.args, ["-"]);
    assert.equal(command.options.partition, "p");
    assert.equal(command.options.buffered, true);
    assert.throws(() => parseCommandLine(["load"], {}), /load takes FILE, got 0 argument/);
    assert.throws(() => parseCommandLine(["load", "-", "--values"], {}), /load does not take --values/);
  });

  test("puts every line of a file, in order, durably", async () => {
    const lines: string[] = [];
    for (let i = 0; i < 1200; i++) lines.push(`k${i % 400}\tv${i}`);
    lines.push("", "hex:00ff\thex:0102", "text:hex:1\ttab\tinside", "crlf\tvalue\r");
    const file = join(dir.path, "input.tsv");
    await writeFile(file, `${lines.join("\n")}\n`);
    const run = await cli(server.address, ["load", file, "--partition", "from-file"]);
    assert.equal(run.code, 0, run.stderr);
    // Nothing on stderr but progress lines (the run may take more than a second).
    for (const line of run.stderr.split("\n").filter((l) => l !== ""))
      assert.match(line, /^load: \d+ lines read/);
    assert.match(run.stdout, /^loaded: 1203 of 1203 puts acknowledged, 0 failed; version: [1-9]\d*\n$/);
    const get = async (key: Uint8Array) =>
      Buffer.from((await server.client.get(key, { partition: "from-file" })) ?? []).toString();
    for (let i = 0; i < 400; i++) assert.equal(await get(Buffer.from(`k${i}`)), `v${800 + i}`);
    const binary = await server.client.get(Buffer.from([0x00, 0xff]), { partition: "from-file" });
    assert.equal(Buffer.from(binary ?? []).toString("hex"), "0102");
    assert.equal(await get(Buffer.from("hex:1")), "tab\tinside");
    assert.equal(await get(Buffer.from("crlf")), "value");
  });

  test("failed lines are listed with their status, the others go in, exit status 1", async () => {
    const input = [
      "a\t1",
      "no tab here",
      "hex:zz\tbad hex key",
      `b\t${"x".repeat(65)}`,
      "u64:7\t8-byte key",
      "short\twrong width",
      "c\t3",
    ].join("\n");
    const run = await cli(server.address, ["load", "-", "--partition", "fixed8"], [input]);
    assert.equal(run.code, 1, run.stderr);
    // On a fixed:8 partition only the 8-byte key goes in: a, b, c and short are the wrong width.
    assert.match(run.stdout, /^loaded: 1 of 7 puts acknowledged, 6 failed; version: [1-9]\d*\n$/);
    const failed = run.stderr.trimEnd().split("\n");
    assert.deepEqual(
      failed.map((line) => line.replace(/: .*/s, "")),
      ["line 1", "line 2", "line 3", "line 4", "line 6", "line 7"],
    );
    assert.match(failed[1] as string, /^line 2: INVALID_ARGUMENT: no tab between KEY and VALUE$/);
    assert.match(failed[2] as string, /^line 3: INVALID_ARGUMENT: KEY "hex:zz": hex needs/);
    assert.match(failed[0] as string, /^line 1: INVALID_ARGUMENT: .*8/);
    assert.deepEqual(
      Buffer.from((await server.client.get(u64(7), { partition: "fixed8" })) ?? []).toString(),
      "8-byte key",
    );

    // On a variable-key partition only the oversize value and the unreadable lines fail.
    const again = await cli(server.address, ["load", "-", "--partition", "mixed"], [input]);
    assert.equal(again.code, 1);
    assert.match(again.stdout, /^loaded: 4 of 7 puts acknowledged, 3 failed; /);
    assert.match(again.stderr, /^line 4: INVALID_ARGUMENT: value too large: 65 bytes > 64$/m);
    assert.equal(
      Buffer.from((await server.client.get(Buffer.from("c"), { partition: "mixed" })) ?? []).toString(),
      "3",
    );
  });

  test("long input: progress on stderr every second", async () => {
    const chunks = Array.from({ length: 4 }, (_, c) =>
      Array.from({ length: 500 }, (_, i) => `p${c}-${i}\tv\n`).join(""),
    );
    // The input goes on for more than a second after the CLI has started putting: wait for the
    // first chunk's puts to be committed (so the CLI is running), then hold the rest back.
    const committed = async (): Promise<number> => {
      let count = 0;
      for await (const _ of server.client.keys({ partition: "progress" })) count++;
      return count;
    };
    const run = await cli(
      server.address,
      ["load", "-", "--partition", "progress"],
      [
        chunks[0] as string,
        async () => {
          await waitUntil(
            async () => (await committed()) === 500,
            "the first 500 puts to be committed",
            30_000,
          );
          await new Promise((resolve) => setTimeout(resolve, 1500));
        },
        ...chunks.slice(1),
      ],
    );
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /^load: \d+ lines read, \d+ puts acknowledged, 0 failed \(\d+\/s\)$/m);
    assert.match(run.stdout, /^loaded: 2000 of 2000 puts acknowledged, 0 failed; /);
  });

  test("a server killed mid-load: unanswered lines fail (outcome unknown), reading stops, exit 1", async () => {
    const data = await tempDir("metadata-cli-load-kill-");
    // Durable puts held back by the batch delay: none is answered before the kill.
    const child = await ServerProcess.start({ dataDir: data.path, flags: ["--batch-max-delay-ms", "30000"] });
    try {
      const waiting = async (): Promise<number> => {
        const text = await (await fetch(`http://127.0.0.1:${child.metricsPort}/metrics`)).text();
        const row = text
          .split("\n")
          .find((l) => l.startsWith('metadata_operations_waiting{partition="killed"} '));
        return row === undefined ? 0 : Number(row.split(" ")[1]);
      };
      const first = Array.from({ length: 10 }, (_, i) => `k${i}\tv\n`).join("");
      const run = await cli(
        child.address,
        ["load", "-", "--partition", "killed"],
        [
          first,
          async () => {
            const deadline = Date.now() + 30_000;
            while ((await waiting()) < 10) {
              assert.ok(Date.now() < deadline, `puts never reached the server\n${child.output()}`);
              await new Promise((resolve) => setTimeout(resolve, 20));
            }
            await child.kill("SIGKILL");
          },
          "k10\tv\nk11\tv\n",
        ],
      );
      assert.equal(run.code, 1);
      assert.match(run.stdout, /^loaded: 0 of 10 puts acknowledged, 10 failed; version: 0\n$/);
      // Progress lines (the run may pass a second) come first; the failed lines follow in order.
      const lines = run.stderr
        .trimEnd()
        .split("\n")
        .filter((line) => !line.startsWith("load: "));
      for (let i = 1; i <= 10; i++) {
        assert.match(lines[i - 1] as string, new RegExp(`^line ${i}: UNAVAILABLE: .*outcome unknown$`));
      }
      assert.match(run.stderr, /^error: the stream ended: UNAVAILABLE: /m);
      assert.match(run.stderr, /^stopped at line 11: it and the lines after it were not sent$/m);
    } finally {
      await child.stop();
      await data.remove();
    }
  });
});
