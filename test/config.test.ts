/**
 * Configuration: the flag table of server/config.ts, parsed from flags and environment, the
 * `--help` generated from it, the README table kept current, and one-line startup errors.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { readmeWithTable } from "../scripts/config-table.js";
import { ConfigError, FLAGS, parseConfig } from "../server/config.js";
import { REPO_ROOT } from "./e2e/server-process.js";
import { freePort } from "./support/ports.js";
import { tempDir } from "./support/temp-dir.js";

describe("parseConfig", () => {
  test("every default comes from the table", () => {
    const config = parseConfig([], {});
    assert.equal(config.dataDir, "./data");
    assert.equal(config.listen, "127.0.0.1:50051");
    assert.deepEqual(config.metricsListen, { host: "127.0.0.1", port: 9464 });
    assert.equal(config.defaultPartition, "default");
    assert.deepEqual(config.keyCodecs, new Map());
    assert.equal(config.maxValueBytes, 1_048_576);
    assert.equal(config.flushIntervalMs, 100);
    assert.equal(config.batchMaxMutations, 10_000);
    assert.equal(config.shutdownGraceMs, 10_000);
    assert.equal(config.tls, undefined);
  });

  test("a flag wins over its variable, which wins over the default", () => {
    const env = { METADATA_FLUSH_INTERVAL_MS: "250", METADATA_BATCH_MAX_DELAY_MS: "5", METADATA_LISTEN: "" };
    const config = parseConfig(["--flush-interval-ms", "7"], env);
    assert.equal(config.flushIntervalMs, 7);
    assert.equal(config.batchMaxDelayMs, 5);
    assert.equal(config.listen, "127.0.0.1:50051", "an empty variable counts as unset");
    assert.equal(parseConfig(["--flush-interval-ms=9"], {}).flushIntervalMs, 9);
  });

  test("a repeatable flag collects every value; its variable is comma-separated", () => {
    const fromFlags = parseConfig(
      ["--partition-key-codec", "a=fixed:8", "--partition-key-codec=b=variable"],
      {},
    );
    assert.deepEqual([...fromFlags.keyCodecs.keys()], ["a", "b"]);
    const fromEnv = parseConfig([], { METADATA_PARTITION_KEY_CODECS: "x=fixed:4, y=fixed:32" });
    assert.deepEqual([...fromEnv.keyCodecs.keys()], ["x", "y"]);
  });

  test("metrics can be turned off, TLS needs both files", () => {
    assert.equal(parseConfig(["--metrics-listen", "off"], {}).metricsListen, undefined);
    assert.deepEqual(parseConfig(["--tls-cert", "c.pem", "--tls-key", "k.pem"], {}).tls, {
      certFile: "c.pem",
      keyFile: "k.pem",
    });
  });

  test("bad command lines are refused with one line naming the flag", () => {
    const cases: [string[], RegExp][] = [
      [["--nope"], /^unknown flag --nope \(--help lists the flags\)$/],
      [["--listen"], /^--listen needs a value/],
      [["--listen", "--data-dir"], /^--listen needs a value/],
      [["--listen", "a:1", "--listen", "b:2"], /^--listen given twice$/],
      [["stray"], /^unexpected argument "stray"$/],
      [["--max-value-bytes", "-1"], /^--max-value-bytes needs a value/],
      [["--max-value-bytes", "1.5"], /^--max-value-bytes: "1.5" is not an integer in 0\.\./],
      [["--listen", "nowhere"], /^--listen: "nowhere" is not HOST:PORT$/],
      [["--default-partition", "a/b"], /^--default-partition: invalid partition name/],
      [["--tls-cert", "c.pem"], /^--tls-cert and --tls-key go together$/],
    ];
    for (const [argv, message] of cases) {
      assert.throws(
        () => parseConfig(argv, {}),
        (err: unknown) =>
          err instanceof ConfigError && message.test(err.message) && !err.message.includes("\n"),
        argv.join(" "),
      );
    }
    assert.throws(() => parseConfig([], { METADATA_BATCH_MAX_BYTES: "lots" }), /--batch-max-bytes: "lots"/);
  });
});

describe("documentation generated from the table", () => {
  test("--help lists every flag with its variable, default and unit", () => {
    const run = spawnSync(process.execPath, ["--import", "tsx", "server/main.ts", "--help"], {
      cwd: REPO_ROOT,
      encoding: "utf8",
    });
    assert.equal(run.status, 0, run.stderr);
    for (const flag of Object.values(FLAGS)) {
      const shown = flag.defaultShown ?? flag.default ?? "none";
      assert.ok(run.stdout.includes(`--${flag.flag} ${flag.value}`), `--${flag.flag} in --help`);
      assert.ok(run.stdout.includes(flag.env), `${flag.env} in --help`);
      const unit = "unit" in flag ? ` ${flag.unit}` : "";
      assert.ok(run.stdout.includes(`${flag.description}; default: ${shown}${unit}`), `--${flag.flag}`);
    }
    assert.match(run.stdout, /--max-value-bytes N +METADATA_MAX_VALUE_BYTES\n +.*default: 1048576 bytes\n/);
  });

  test("the README's configuration table is current (npm run docs:config)", () => {
    const readme = readFileSync(join(REPO_ROOT, "README.md"), "utf8");
    assert.equal(readme, readmeWithTable(readme));
  });
});

describe("startup errors", () => {
  let dir: { path: string; remove(): Promise<void> };
  const holder = createServer();
  let held: number;
  before(async () => {
    dir = await tempDir("metadata-config-");
    held = await freePort();
    await new Promise<void>((resolve) => holder.listen(held, "127.0.0.1", resolve));
  });
  after(async () => {
    await new Promise<void>((resolve) => holder.close(() => resolve()));
    await dir.remove();
  });

  for (const which of ["--listen", "--metrics-listen"]) {
    test(`a port in use (${which}) prints one line and exits 1`, async () => {
      const other = which === "--listen" ? "--metrics-listen" : "--listen";
      const run = spawnSync(
        process.execPath,
        [
          "--import",
          "tsx",
          "server/main.ts",
          "--data-dir",
          dir.path,
          which,
          `127.0.0.1:${held}`,
          other,
          `127.0.0.1:${await freePort()}`,
        ],
        { cwd: REPO_ROOT, encoding: "utf8", timeout: 30_000 },
      );
      assert.equal(run.status, 1, run.stderr);
      assert.equal(
        run.stderr,
        `error: cannot listen on 127.0.0.1:${held}: address already in use (another process holds the port)\n`,
      );
    });
  }
});
