/**
 * CLI tests: server/cli.ts run as a child process (`node --import tsx server/cli.ts ...`) against
 * an in-process server, checking stdout, stderr and the exit status of put / get / rm / keys /
 * sync / retain / clear / commit / partitions, `--output json`, `--raw`, values from `@FILE` and
 * `-`, the text / hex / u64 spellings of bytes both ways, and the error output for bad input; `serve` runs as a child process of its own and is stopped with SIGTERM. The byte
 * spellings and the command-line parser are also checked in-process, where it is cheap to try
 * many cases.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CLI_USAGE,
  DEFAULT_ADDRESS,
  formatBytes,
  InputError,
  parseBatch,
  parseBytes,
  parseCommandLine,
  UsageError,
} from "../../server/cli.js";
import { ServerProcess } from "../e2e/server-process.js";
import { type CliRun, runCli } from "../support/cli-process.js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";
import { u64 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";

const REPO_ROOT = new URL("../../", import.meta.url);

type Run = CliRun;

/** Runs the CLI with `args` and METADATA_ADDRESS=`address` (unless `env` says otherwise). */
function cli(
  address: string,
  args: string[],
  env: NodeJS.ProcessEnv = {},
  stdin: string | Uint8Array = "",
): Promise<Run> {
  return runCli(args, { env: { METADATA_ADDRESS: address, ...env }, input: [stdin], timeoutMs: 30_000 });
}

/** Asserts a successful run and returns its stdout lines. */
function ok(run: Run): string[] {
  assert.equal(run.code, 0, `exit status ${run.code}, stderr: ${run.stderr}`);
  assert.equal(run.stderr, "");
  return run.stdout === "" ? [] : run.stdout.replace(/\n$/, "").split("\n");
}

/** Asserts a failed run with `error: CODE: ...` on stderr and nothing on stdout. */
function failed(run: Run, code: number, stderr: RegExp): void {
  assert.equal(run.code, code, `exit status, stdout: ${run.stdout} stderr: ${run.stderr}`);
  assert.equal(run.stdout, "");
  assert.match(run.stderr, stderr);
}

/** The options every command line starts from. */
const DEFAULTS = {
  buffered: false,
  values: false,
  invert: false,
  none: false,
  raw: false,
  output: "text",
} as const;

describe("byte spellings and the command line (in-process)", () => {
  test("parseBytes reads text, hex:, u64: and text:", () => {
    assert.deepEqual(parseBytes("héllo", "KEY"), Buffer.from("héllo", "utf8"));
    assert.deepEqual(parseBytes("", "VALUE"), Buffer.alloc(0));
    assert.deepEqual(parseBytes("hex:00FFa0", "KEY"), Buffer.from([0x00, 0xff, 0xa0]));
    assert.deepEqual(parseBytes("hex:", "KEY"), Buffer.alloc(0));
    assert.deepEqual(parseBytes("u64:0", "KEY"), Buffer.alloc(8));
    assert.deepEqual(parseBytes("u64:258", "KEY"), Buffer.from([0, 0, 0, 0, 0, 0, 1, 2]));
    assert.deepEqual(parseBytes("u64:18446744073709551615", "KEY"), Buffer.alloc(8, 0xff));
    assert.deepEqual(parseBytes("text:hex:12", "KEY"), Buffer.from("hex:12"));
    assert.deepEqual(parseBytes("text:", "KEY"), Buffer.alloc(0));
    assert.deepEqual(parseBytes("HEX:12", "KEY"), Buffer.from("HEX:12"));
  });

  test("parseBytes refuses bad hex: and u64: spellings", () => {
    for (const [text, message] of [
      ["hex:abc", /KEY "hex:abc": hex needs an even number of digits/],
      ["hex:zz", /KEY "hex:zz": hex needs/],
      ["u64:18446744073709551616", /u64 needs a decimal integer in 0\.\.18446744073709551615/],
      ["u64:-1", /u64 needs/],
      ["u64:", /u64 needs/],
      ["u64:0x10", /u64 needs/],
    ] as const) {
      assert.throws(
        () => parseBytes(text, "KEY"),
        (err: unknown) => err instanceof InputError && message.test(err.message),
        text,
      );
    }
  });

  test("formatBytes prints text when printable, else u64 (8-byte keys) or hex, and reads back", () => {
    const cases: [Uint8Array, "key" | "value", string][] = [
      [Buffer.from("hello world"), "value", "hello world"],
      [Buffer.from("wörld ✓ 日本"), "key", "wörld ✓ 日本"],
      [Buffer.from(""), "value", ""],
      [Buffer.from("hex:12"), "value", "text:hex:12"],
      [Buffer.from("u64:1"), "key", "text:u64:1"],
      [Buffer.from("text:x"), "value", "text:text:x"],
      [Buffer.from("abcdefgh"), "key", "abcdefgh"],
      [u64(123), "key", "u64:123"],
      [u64(123), "value", "hex:000000000000007b"],
      [Buffer.from([0x00, 0xff]), "key", "hex:00ff"],
      [Buffer.from("tab\there"), "value", "hex:7461620968657265"],
      [Buffer.from("line\n"), "value", "hex:6c696e650a"],
      [Buffer.from([0xc3]), "value", "hex:c3"],
      [Buffer.from([0xef, 0xbb, 0xbf, 0x41]), "value", "hex:efbbbf41"],
      [Buffer.from("a\u202eb"), "value", "hex:61e280ae62"],
      [Buffer.from("\u{1F469}\u200D\u{1F4BB}"), "value", "\u{1F469}\u200D\u{1F4BB}"],
      // Text that reads as a file or stdin VALUE is spelled with text: too.
      [Buffer.from("@file"), "value", "text:@file"],
      [Buffer.from("-"), "value", "text:-"],
    ];
    for (const [bytes, kind, spelled] of cases) {
      assert.equal(formatBytes(bytes, kind), spelled, Buffer.from(bytes).toString("hex"));
      assert.deepEqual(parseBytes(spelled, "KEY"), Buffer.from(bytes), `round trip of ${spelled}`);
    }
  });

  test("parseBatch reads operations, quoted words and comments; refuses bad lines by number", () => {
    const batch = parseBatch(
      '# a comment\n\nput k1 "two words"\r\nrm hex:00ff\nif-absent "k 2"\nif-present u64:7\nif-equals k1 "\\t"\n',
      "b.txt",
    );
    assert.deepEqual(batch, {
      mutations: [
        { put: { key: Buffer.from("k1"), value: Buffer.from("two words") } },
        { remove: { key: Buffer.from([0x00, 0xff]) } },
      ],
      preconditions: [
        { key: Buffer.from("k 2"), absent: true },
        { key: u64(7), present: true },
        { key: Buffer.from("k1"), valueEquals: Buffer.from("\t") },
      ],
    });
    for (const [text, message] of [
      ["put k", /^b\.txt:1: put takes KEY VALUE, got 1 word/],
      ["rm a b", /^b\.txt:1: rm takes KEY, got 2 word/],
      ["\nupsert k v", /^b\.txt:2: unknown operation "upsert"/],
      ['put k "open', /^b\.txt:1: bad quoted word "open/],
      ["put hex:0 v", /^b\.txt:1: KEY "hex:0": hex needs/],
      ["# only a comment\n", /^b\.txt: empty batch$/],
    ] as const) {
      assert.throws(
        () => parseBatch(text, "b.txt"),
        (err: unknown) => err instanceof InputError && message.test(err.message),
        text,
      );
    }
  });

  test("parseCommandLine: options anywhere, --flag=value, --, env address, bad usage", () => {
    assert.deepEqual(parseCommandLine(["put", "--partition", "p", "k", "--buffered", "v"], {}), {
      name: "put",
      args: ["k", "v"],
      options: { ...DEFAULTS, address: DEFAULT_ADDRESS, buffered: true, partition: "p" },
    });
    assert.deepEqual(
      parseCommandLine(["--address=h:1", "keys", "--limit=3", "--values", "--prefix", "a"], {}),
      {
        name: "keys",
        args: [],
        options: { ...DEFAULTS, address: "h:1", values: true, limit: 3, prefix: "a" },
      },
    );
    assert.deepEqual(parseCommandLine(["put", "--", "--k", "-1"], { METADATA_ADDRESS: "env:2" }), {
      name: "put",
      args: ["--k", "-1"],
      options: { ...DEFAULTS, address: "env:2" },
    });
    assert.deepEqual(parseCommandLine(["serve", "--listen", "127.0.0.1:0"], {}), {
      name: "serve",
      args: ["--listen", "127.0.0.1:0"],
    });
    assert.deepEqual(parseCommandLine(["help"], {}), { name: "help" });
    assert.deepEqual(parseCommandLine(["get", "--help"], {}), { name: "help" });
    assert.deepEqual(parseCommandLine(["-h"], {}), { name: "help" });
    for (const [argv, message] of [
      [[], /no command given/],
      [["frob"], /unknown command "frob"/],
      [["get"], /get takes KEY, got 0 argument/],
      [["put", "k"], /put takes KEY VALUE, got 1 argument/],
      [["sync", "x"], /sync takes no arguments, got 1/],
      [["get", "k", "--buffered"], /get does not take --buffered/],
      [["get", "k", "--colour"], /unknown option --colour/],
      [["keys", "--limit", "-1"], /--limit: "-1" is not an integer/],
      [["get", "k", "--deadline-ms", "0"], /--deadline-ms: "0" is not an integer in 1\.\./],
      [["get", "k", "--partition"], /--partition needs a value/],
      [["--partition", "p", "serve"], /serve takes server flags only/],
      [["retain"], /retain takes --prefix, --start or --end \(what to keep\), or --none/],
      [["retain", "--prefix", "a", "--none"], /retain takes --prefix, --start or --end/],
      [["retain", "--none", "--invert"], /--invert or --none, not both/],
      [["get", "k", "--output", "yaml"], /--output: "yaml" is not text or json/],
      [["get", "k", "--raw", "--output", "json"], /--raw and --output json exclude each other/],
      [["put", "k", "v", "--raw"], /put does not take --raw/],
      [["commit"], /commit takes FILE, got 0 argument/],
    ] as const) {
      assert.throws(
        () => parseCommandLine(argv, {}),
        (err: unknown) => err instanceof UsageError && message.test(err.message),
        argv.join(" "),
      );
    }
  });
});

describe("the CLI against a server", () => {
  let server: TestServer;
  before(async () => {
    server = await startTestServer([
      "--partition-key-codec",
      "nodes=fixed:8",
      "--max-value-bytes",
      "64",
      // Buffered writes stay pending until a sync, so the test decides when they commit.
      "--flush-interval-ms",
      "3600000",
    ]);
  });
  after(async () => {
    await server.stop();
  });
  const run = (...args: string[]) => cli(server.address, args);

  test("help, --help and no command", async () => {
    const [help, flag, none] = await Promise.all([run("help"), run("keys", "--help"), run()]);
    assert.deepEqual(ok(help), CLI_USAGE.split("\n"));
    assert.deepEqual(ok(flag), CLI_USAGE.split("\n"));
    failed(none, 2, /^error: no command given\nrun "npm run cli -- help" for usage\n$/);
  });

  test("put prints the previous value and the version; get prints the value", async () => {
    const first = ok(await run("put", "greeting", "hello world"));
    assert.match(first.join("\n"), /^version: \d+$/);
    const version1 = BigInt((first[0] as string).slice("version: ".length));
    assert.ok(version1 > 0n);
    const second = ok(await run("put", "greeting", "wörld"));
    assert.equal(second[0], "previous: hello world");
    assert.ok(BigInt((second[1] as string).slice("version: ".length)) > version1);
    assert.equal(second.length, 2);
    assert.deepEqual(ok(await run("get", "greeting")), ["wörld"]);
    // The bytes stored are the UTF-8 of the text.
    assert.deepEqual(await server.client.get(Buffer.from("greeting")), Buffer.from("wörld", "utf8"));
  });

  test("binary keys and values go in as hex: and come out as hex:", async () => {
    await server.client.put(Buffer.from("ctl"), Buffer.from("a\tb\n"));
    const puts = await Promise.all([
      run("put", "hex:00ff01", "hex:deadbeef00"),
      run("put", "hex:6869", "text:hex:00"),
    ]);
    for (const put of puts) ok(put);
    const binary = await server.client.get(Buffer.from([0x00, 0xff, 0x01]));
    assert.deepEqual(binary, Buffer.from("deadbeef00", "hex"));
    assert.deepEqual(await server.client.get(Buffer.from("hi")), Buffer.from("hex:00"));
    const [get, spelled, control] = await Promise.all([
      run("get", "hex:00FF01"),
      run("get", "hi"),
      run("get", "ctl"),
    ]);
    assert.deepEqual(ok(get), ["hex:deadbeef00"]);
    // Text that reads like a spelling gets text: in front; text with control characters is hex.
    assert.deepEqual(ok(spelled), ["text:hex:00"]);
    assert.deepEqual(ok(control), ["hex:6109620a"]);
  });

  test("u64: keys in a fixed:8 partition, listed as u64:N", async () => {
    const nodes = ["--partition", "nodes"];
    await server.client.put(u64(7), Buffer.from("seven"), { partition: "nodes" });
    const puts = await Promise.all([
      run("put", ...nodes, "u64:123", "node 123"),
      run("put", ...nodes, "u64:18446744073709551615", "hex:01"),
    ]);
    for (const put of puts) assert.match(ok(put).join("\n"), /^version: \d+$/);
    assert.deepEqual(await server.client.get(u64(123), { partition: "nodes" }), Buffer.from("node 123"));
    const [all, range, get, short] = await Promise.all([
      run("keys", ...nodes, "--values"),
      run("keys", ...nodes, "--start", "u64:8", "--end", "u64:1000"),
      run("get", ...nodes, "u64:7"),
      run("put", ...nodes, "short", "x"),
    ]);
    assert.deepEqual(ok(all), ["u64:7\tseven", "u64:123\tnode 123", "u64:18446744073709551615\thex:01"]);
    assert.deepEqual(ok(range), ["u64:123"]);
    assert.deepEqual(ok(get), ["seven"]);
    failed(short, 1, /^error: INVALID_ARGUMENT: key width 5 bytes != 8\n$/);
  });

  test("rm prints the removed value; get of a missing key prints not found and exits 1", async () => {
    await server.client.put(Buffer.from("doomed"), Buffer.from("bye"));
    const removed = ok(await run("rm", "doomed"));
    assert.equal(removed[0], "removed: bye");
    assert.match(removed[1] as string, /^version: \d+$/);
    assert.equal(await server.client.get(Buffer.from("doomed")), undefined);
    const [get, again] = await Promise.all([run("get", "doomed"), run("rm", "doomed")]);
    failed(get, 1, /^not found\n$/);
    // Removing a missing key is not an error.
    assert.equal(again.code, 0);
    assert.match(again.stdout, /^version: \d+\n$/);
    assert.equal(again.stderr, "not found (nothing removed)\n");
  });

  test("keys with --prefix, --start, --end, --limit and --values, in byte order", async () => {
    for (const [key, value] of [
      ["fruit/apple", "red"],
      ["fruit/banana", "yellow"],
      ["fruit/cherry", "dark red"],
      ["fruit/date", "hex:00"],
      ["veg/kale", "green"],
    ] as const) {
      await server.client.put(Buffer.from(key), parseBytes(value, "VALUE"), { partition: "shop" });
    }
    const shop = ["--partition", "shop"];
    const [all, prefix, range, limit, empty] = await Promise.all([
      run("keys", ...shop),
      run("keys", ...shop, "--prefix", "fruit/", "--values"),
      run("keys", ...shop, "--start", "fruit/b", "--end", "fruit/d"),
      run("keys", ...shop, "--start", "fruit/b", "--limit", "2"),
      run("keys", "--partition", "empty-shop"),
    ]);
    assert.deepEqual(ok(all), ["fruit/apple", "fruit/banana", "fruit/cherry", "fruit/date", "veg/kale"]);
    assert.deepEqual(ok(prefix), [
      "fruit/apple\tred",
      "fruit/banana\tyellow",
      "fruit/cherry\tdark red",
      "fruit/date\thex:00",
    ]);
    assert.deepEqual(ok(range), ["fruit/banana", "fruit/cherry"]);
    assert.deepEqual(ok(limit), ["fruit/banana", "fruit/cherry"]);
    assert.deepEqual(ok(empty), []);
  });

  test("--buffered answers before the commit; sync commits; partitions lists them", async () => {
    for (const partition of ["default", "nodes", "shop"])
      await server.client.put(u64(1), Buffer.from("x"), { partition });
    const put = ok(await run("put", "--buffered", "--partition", "later", "pending", "soon"));
    assert.deepEqual(put, ["version: 0 (buffered: committed by the next sync)"]);
    // Reads see committed state only, and the flush interval is an hour.
    failed(await run("get", "--partition", "later", "pending"), 1, /^not found\n$/);
    const sync = ok(await run("sync", "--partition", "later"));
    assert.match(sync.join("\n"), /^version: [1-9]\d*$/);
    assert.deepEqual(ok(await run("get", "--partition", "later", "pending")), ["soon"]);
    const removed = ok(await run("rm", "--buffered", "--partition=later", "pending"));
    assert.deepEqual(removed, ["removed: soon", "version: 0 (buffered: committed by the next sync)"]);
    ok(await run("sync", "--partition", "later"));
    failed(await run("get", "--partition", "later", "pending"), 1, /^not found\n$/);
    const partitions = ok(await run("partitions"));
    for (const name of ["default", "later", "nodes", "shop"]) assert.ok(partitions.includes(name), name);
    assert.deepEqual(partitions, [...partitions].sort());
  });

  test("errors: error: CODE: details on stderr, exit 1; bad usage exits 2", async () => {
    const [badPartition, badHex, tooLarge, emptyKey, badU64, unknown, unreachable] = await Promise.all([
      run("put", "--partition", "bad name!", "k", "v"),
      run("get", "hex:abc"),
      run("put", "big", "x".repeat(65)),
      run("put", "", "v"),
      run("keys", "--start", "u64:99999999999999999999"),
      run("frobnicate"),
      cli("127.0.0.1:1", ["get", "k"]),
    ]);
    failed(
      badPartition,
      1,
      /^error: INVALID_ARGUMENT: invalid partition name "bad name!": use 1 or more ASCII letters, digits, '-' or '_'\n$/,
    );
    // Bad bytes are a bad command line: exit 2, and nothing is sent.
    failed(
      badHex,
      2,
      /^error: KEY "hex:abc": hex needs an even number of digits 0-9, a-f\nrun "npm run cli -- help" for usage\n$/,
    );
    failed(tooLarge, 1, /^error: INVALID_ARGUMENT: value too large: 65 bytes > 64\n$/);
    failed(emptyKey, 1, /^error: INVALID_ARGUMENT: empty key\n$/);
    failed(badU64, 2, /^error: --start "u64:99999999999999999999": u64 needs/);
    failed(unknown, 2, /^error: unknown command "frobnicate"\nrun "npm run cli -- help" for usage\n$/);
    failed(unreachable, 1, /^error: cannot reach the server at 127\.0\.0\.1:1 \(connection refused\)\n$/);
    // Nothing was written by any of them.
    assert.equal(await server.client.get(Buffer.from("big")), undefined);
    assert.ok(!(await server.client.listPartitions()).some((name) => name.includes("bad")));
  });

  test("--deadline-ms: a write still waiting at the deadline fails with DEADLINE_EXCEEDED", async () => {
    // This server waits 10 s for more writers before a sync, so the put waits past the deadline.
    const slow = await startTestServer(["--batch-max-delay-ms", "10000"]);
    try {
      const started = Date.now();
      failed(
        await cli(slow.address, ["put", "--deadline-ms", "300", "late", "x"]),
        1,
        /^error: DEADLINE_EXCEEDED: Deadline exceeded/,
      );
      assert.ok(Date.now() - started < 9000, "the CLI gave up at its deadline, not at the sync");
    } finally {
      await slow.stop();
    }
  });

  test("values from @FILE and from - (stdin); get --raw prints the bytes as they are", async () => {
    const dir = await tempDir("metadata-cli-values-");
    try {
      const binary = Buffer.from([0x00, 0x01, 0xfe, 0x0a, 0xff]);
      await writeFile(join(dir.path, "value.bin"), binary);
      ok(await run("put", "--partition", "files", "from-file", `@${join(dir.path, "value.bin")}`));
      ok(await cli(server.address, ["put", "--partition", "files", "from-stdin", "-"], {}, "piped\n"));
      ok(await run("put", "--partition", "files", "literal", "text:@not-a-file"));
      assert.deepEqual(await server.client.get(Buffer.from("from-file"), { partition: "files" }), binary);
      assert.deepEqual(
        await server.client.get(Buffer.from("from-stdin"), { partition: "files" }),
        Buffer.from("piped\n"),
      );
      assert.deepEqual(ok(await run("get", "--partition", "files", "literal")), ["text:@not-a-file"]);
      // --raw: exactly the stored bytes on stdout, no newline, no spelling.
      const raw = spawn(
        process.execPath,
        ["--import", "tsx", "server/cli.ts", "get", "--raw", "--partition", "files", "from-file"],
        {
          cwd: REPO_ROOT,
          env: { ...process.env, METADATA_ADDRESS: server.address },
          stdio: ["ignore", "pipe", "inherit"],
        },
      );
      const chunks: Buffer[] = [];
      raw.stdout.on("data", (chunk: Buffer) => chunks.push(chunk));
      const code = await new Promise((resolve) => raw.once("close", resolve));
      assert.equal(code, 0);
      assert.deepEqual(Buffer.concat(chunks), binary);
      failed(
        await run("put", "k", `@${join(dir.path, "missing")}`),
        2,
        /^error: cannot read ".*missing": ENOENT\n/,
      );
    } finally {
      await dir.remove();
    }
  });

  test("commit applies a batch from a file or stdin atomically, if its preconditions hold", async () => {
    const dir = await tempDir("metadata-cli-commit-");
    try {
      const batch = join(dir.path, "batch.txt");
      await writeFile(batch, '# first batch\nif-absent account\nput account "balance 10"\nput log hex:00\n');
      const first = ok(await run("commit", "--partition", "bank", batch));
      assert.match(first.join("\n"), /^version: [1-9]\d*$/);
      assert.deepEqual(ok(await run("keys", "--partition", "bank", "--values")), [
        "account\tbalance 10",
        "log\thex:00",
      ]);
      // The same batch again: its precondition fails, nothing of it is applied.
      failed(await run("commit", "--partition", "bank", batch), 1, /^error: FAILED_PRECONDITION: /);
      const second = await cli(
        server.address,
        ["commit", "--partition", "bank", "-", "--output", "json"],
        {},
        'if-equals account "balance 10"\nput account "balance 7"\nrm log\n',
      );
      assert.match(ok(second)[0] as string, /^\{"version":"[1-9]\d*"\}$/);
      assert.deepEqual(ok(await run("keys", "--partition", "bank", "--values")), ["account\tbalance 7"]);
      // A bad batch is a bad command line: exit 2, nothing sent.
      failed(
        await cli(server.address, ["commit", "--partition", "bank", "-"], {}, "put account\n"),
        2,
        /^error: stdin:1: put takes KEY VALUE, got 1 word\(s\)\nrun "npm run cli -- help" for usage\n$/,
      );
      assert.deepEqual(ok(await run("get", "--partition", "bank", "account")), ["balance 7"]);
    } finally {
      await dir.remove();
    }
  });

  test("retain keeps the selected keys (or removes them with --invert); clear removes every key", async () => {
    for (const key of ["a/1", "a/2", "b/1", "c/1"]) {
      await server.client.put(Buffer.from(key), Buffer.from("x"), { partition: "pruned" });
    }
    const keep = ok(await run("retain", "--partition", "pruned", "--prefix", "a/"));
    assert.equal(keep[0], "removed: 2");
    assert.match(keep[1] as string, /^version: [1-9]\d*$/);
    assert.deepEqual(ok(await run("keys", "--partition", "pruned")), ["a/1", "a/2"]);
    const invert = ok(
      await run("retain", "--partition", "pruned", "--start", "a/2", "--invert", "--output", "json"),
    );
    assert.match(invert[0] as string, /^\{"removed":"1","version":"[1-9]\d*"\}$/);
    assert.deepEqual(ok(await run("keys", "--partition", "pruned")), ["a/1"]);
    const cleared = ok(await run("clear", "--partition", "pruned"));
    assert.equal(cleared[0], "removed: 1");
    assert.deepEqual(ok(await run("keys", "--partition", "pruned")), []);
    await server.client.put(Buffer.from("z"), Buffer.from("x"), { partition: "pruned" });
    assert.equal(ok(await run("retain", "--partition", "pruned", "--none"))[0], "removed: 1");
  });

  test("--output json: protobuf JSON (bytes in base64, numbers as strings), one object per result", async () => {
    const json = ["--partition", "json", "--output", "json"];
    const put = JSON.parse(ok(await run("put", ...json, "k", "hex:00ff"))[0] as string);
    assert.deepEqual(Object.keys(put), ["version"]);
    assert.match(put.version, /^[1-9]\d*$/);
    const again = JSON.parse(ok(await run("put", ...json, "k", "v2"))[0] as string);
    assert.equal(again.previous, Buffer.from([0x00, 0xff]).toString("base64"));
    await server.client.put(Buffer.from("k2"), Buffer.from("v"), { partition: "json" });
    assert.deepEqual(JSON.parse(ok(await run("get", ...json, "k"))[0] as string), {
      value: Buffer.from("v2").toString("base64"),
    });
    assert.deepEqual(
      ok(await run("keys", ...json, "--values")).map((line) => JSON.parse(line)),
      [
        { key: Buffer.from("k").toString("base64"), value: Buffer.from("v2").toString("base64") },
        { key: Buffer.from("k2").toString("base64"), value: Buffer.from("v").toString("base64") },
      ],
    );
    const removed = JSON.parse(ok(await run("rm", ...json, "k2"))[0] as string);
    assert.equal(removed.previous, Buffer.from("v").toString("base64"));
    assert.match(JSON.parse(ok(await run("sync", ...json))[0] as string).version, /^\d+$/);
    const { partitions } = JSON.parse(ok(await run("partitions", "--output", "json"))[0] as string);
    assert.ok(partitions.includes("json"));
  });

  test("--address wins over METADATA_ADDRESS", async () => {
    await server.client.put(Buffer.from("where"), Buffer.from("here"));
    assert.deepEqual(ok(await cli("127.0.0.1:1", ["get", "where", "--address", server.address])), ["here"]);
  });
});

describe("serve", () => {
  const cleanups: (() => Promise<void>)[] = [];
  after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  test("serve runs the server; SIGTERM commits buffered writes and exits 0", async () => {
    const dir = await tempDir("metadata-cli-serve-");
    cleanups.push(() => dir.remove());
    const flags = ["--flush-interval-ms", "3600000"];
    const first = await ServerProcess.start({ dataDir: dir.path, entry: ["server/cli.ts", "serve"], flags });
    cleanups.push(() => first.stop());
    assert.match(ok(await cli(first.address, ["put", "--buffered", "kept", "yes"])).join(""), /version: 0/);
    assert.deepEqual(await first.kill("SIGTERM"), { code: 0, signal: null }, first.output());
    assert.match(
      first.stdoutText,
      /SIGTERM: finishing in-flight calls and committing buffered changes\nstopped\n/,
    );

    const second = await ServerProcess.start({ dataDir: dir.path, entry: ["server/cli.ts", "serve"], flags });
    cleanups.push(() => second.stop());
    assert.deepEqual(ok(await cli(second.address, ["get", "kept"])), ["yes"]);
    assert.deepEqual(await second.kill("SIGINT"), { code: 0, signal: null }, second.output());
  });

  test("serve --help lists the server flags; a bad server flag exits 2", async () => {
    const [help, bad] = await Promise.all([
      cli(DEFAULT_ADDRESS, ["serve", "--help"]),
      cli(DEFAULT_ADDRESS, ["serve", "--listen", "nowhere"]),
    ]);
    const lines = ok(help);
    assert.equal(lines[0], "usage: npm run cli -- serve [flags]");
    assert.ok(lines.some((line) => line.includes("--data-dir") && line.includes("METADATA_DATA_DIR")));
    failed(bad, 2, /^error: --listen: "nowhere" is not HOST:PORT\n$/);
  });
});
