/**
 * Server-level interop with the reference: the gRPC server (in-process, and the real process
 * stopped by SIGTERM) on storage directories shared with commonware-storage `metadata` (tokio
 * runtime) 2026.4.0 and 2026.10.0, driven through test/interop/rust and test/interop/rust-2026.10
 * (rust-driver.ts), with U64 keys: the partitions are configured `--partition-key-codec
 * NAME=fixed:8`. Tests 1 and 2 run once per release: against 2026.4.0 the partition is
 * configured V0 (`--partition-blob-layout NAME=v0`); against 2026.10.0 the server keeps its
 * defaults, so the reference's partition is V1 and so is the one the server creates.
 *
 * 1. Rust writes, our server serves: the reference writes a partition through several syncs
 *    (same-size overwrites, a shrinking rewrite, a clear, more puts, then an unsynced put that
 *    must be lost); our server started on that directory serves exactly the committed entries
 *    through Keys (with values) and Get, and leaves the files byte-identical.
 * 2. Our server writes, Rust reads: durable Puts, Removes and Commits (some same-size overwrites,
 *    so overwrite syncs happen, and a refused Commit) and acknowledged buffered writes, then the
 *    server stops; the reference's `dump` lists exactly what was acknowledged. The reference
 *    then writes on, and our restarted server serves its changes.
 * 3. The same as 2 with the server as a real process (`node --import tsx server/main.ts`)
 *    stopped with SIGTERM, which must commit the acknowledged buffered writes and exit 0.
 *
 * An independent model (a map of the acknowledged or synced operations) is the oracle.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { status } from "@grpc/grpc-js";
import { Durability, MetadataClient } from "../../clients/ts/metadata-client.js";
import { parseConfig } from "../../server/config.js";
import { type RunningService, startService } from "../../server/service.js";
import { freePort } from "../support/ports.js";
import { metricValue, u64 } from "../support/store-helpers.js";
import { tempDir } from "../support/temp-dir.js";
import {
  buildRustInterop,
  RUST_RELEASES,
  type RustEntry,
  type RustRelease,
  rustDump,
  rustReplay,
} from "./rust-driver.js";

const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));
const FILE_NAMES = ["6c656674", "7269676874"] as const;
const U64_MAX = (1n << 64n) - 1n;
/** Deadline of every RPC. */
const CALL_MS = 15_000;

let root = "";
let removeRoot: () => Promise<void> = async () => {};

before(
  async () => {
    // Cached in $HOME/.cache; a few minutes each when cold.
    for (const release of RUST_RELEASES) buildRustInterop(release);
    const dir = await tempDir("metadata-server-interop-");
    root = dir.path;
    removeRoot = dir.remove;
  },
  { timeout: 20 * 60 * 1000 },
);

/** Server processes started by this file, killed at the end whatever happened. */
const children = new Set<ChildProcess>();

after(async () => {
  for (const child of children) child.kill("SIGKILL");
  await removeRoot();
});

/** Bound of each test (the reference runs and our servers are quick; this is for hangs). */
const TEST_TIMEOUT = { timeout: 3 * 60 * 1000 };

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/** A key and value as the driver prints them. */
function entry(key: bigint, value: Uint8Array): RustEntry {
  return { key: key.toString(), value_hex: Buffer.from(value).toString("hex") };
}

/** The model's entries in the driver's form, ascending by key. */
function sorted(model: Map<bigint, Uint8Array>): RustEntry[] {
  return [...model].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => entry(k, v));
}

function keyOf(bytes: Uint8Array): bigint {
  assert.equal(bytes.length, 8, "a U64 key is 8 bytes");
  return Buffer.from(bytes).readBigUInt64BE(0);
}

/** A value of `length` bytes derived from `seed` (distinct seeds give distinct contents). */
function value(seed: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i < length; i++) out[i] = (seed * 131 + i * 7 + 1) & 0xff;
  return out;
}

/** Both blob files of `partition` (hex), to check that nothing rewrote them. */
async function readFiles(dir: string, partition: string): Promise<string[]> {
  return Promise.all(
    FILE_NAMES.map(async (name) => (await readFile(join(dir, partition, name))).toString("hex")),
  );
}

/** Flags of every server: the partitions used here are U64-keyed (fixed:8). */
function codecFlags(...partitions: string[]): string[] {
  return partitions.flatMap((p) => ["--partition-key-codec", `${p}=fixed:8`]);
}

/** Flags for a partition shared with `release`: V0 blobs for 2026.4.0, the defaults otherwise. */
function layoutFlags(release: RustRelease, partition: string): string[] {
  return release === "2026.4.0" ? ["--partition-blob-layout", `${partition}=v0`] : [];
}

/** Magic of the blobs `release` creates by default ("CWIC" V0, "CWIK" V1). */
function magicOf(release: RustRelease): string {
  return release === "2026.4.0" ? "CWIC" : "CWIK";
}

async function assertMagic(dir: string, partition: string, magic: string): Promise<void> {
  for (const name of FILE_NAMES) {
    const head = (await readFile(join(dir, partition, name))).subarray(0, 4).toString("latin1");
    assert.equal(head, magic, `${partition}/${name} layout`);
  }
}

interface InProcessServer {
  service: RunningService;
  client: MetadataClient;
  stop(): Promise<void>;
}

/** Our server, in this process, on `dataDir` (the reference's storage directory). */
async function startInProcess(dataDir: string, flags: string[]): Promise<InProcessServer> {
  const config = parseConfig(
    ["--data-dir", dataDir, "--listen", "127.0.0.1:0", "--metrics-listen", "off", ...flags],
    {},
  );
  const service = await startService(config);
  const client = new MetadataClient(`127.0.0.1:${service.port}`);
  return {
    service,
    client,
    stop: async () => {
      client.close();
      await service.stop();
    },
  };
}

/** Every entry of `partition` through Keys (with values), checking order and chunk versions. */
async function listAll(client: MetadataClient, partition: string): Promise<RustEntry[]> {
  const out: RustEntry[] = [];
  let previous: bigint | undefined;
  for await (const { key, value } of client.keys({ partition, includeValues: true, deadlineMs: CALL_MS })) {
    const k = keyOf(key);
    if (previous !== undefined) assert.ok(previous < k, `Keys ascending: ${previous} then ${k}`);
    previous = k;
    assert.ok(value !== undefined, "Keys with includeValues sends values");
    out.push(entry(k, value));
  }
  return out;
}

/** Checks that the server serves exactly `expected` through Keys and through Get of each key. */
async function assertServes(
  client: MetadataClient,
  partition: string,
  expected: RustEntry[],
  absentKeys: bigint[],
): Promise<void> {
  assert.deepEqual(await listAll(client, partition), expected, "Keys lists exactly the entries");
  for (const e of expected) {
    const got = await client.get(u64(BigInt(e.key)), { partition, deadlineMs: CALL_MS });
    assert.ok(got !== undefined, `Get ${e.key}: absent`);
    assert.equal(Buffer.from(got).toString("hex"), e.value_hex, `Get ${e.key}`);
  }
  for (const k of absentKeys) {
    assert.equal(await client.get(u64(k), { partition, deadlineMs: CALL_MS }), undefined, `Get ${k}: absent`);
  }
}

/**
 * Applies a scripted sequence of writes through gRPC and returns the model of what was
 * acknowledged. Includes durable Puts of new keys (rewrites), same-size overwrites done twice
 * (so both blobs get them as overwrites), Removes, a Commit, a refused Commit and buffered Puts
 * that are acknowledged but not synced before the caller stops the server.
 */
async function writeThroughGrpc(client: MetadataClient, partition: string): Promise<Map<bigint, Uint8Array>> {
  const model = new Map<bigint, Uint8Array>();
  const opts = { partition, deadlineMs: CALL_MS };
  const putDurable = async (k: bigint, v: Uint8Array) => {
    const reply = await client.put(u64(k), v, opts);
    assert.ok(reply.version > 0n, "a durable Put answers with its synced version");
    model.set(k, v);
  };
  for (let i = 1; i <= 12; i++) await putDurable(BigInt(i), value(i, 24));
  await putDurable(U64_MAX, value(99, 127));
  await putDurable(1n << 63n, new Uint8Array());
  // Same-size overwrites, each twice: once per blob.
  for (const round of [1, 2, 3]) {
    await putDurable(2n, value(200 + round, 24));
    await putDurable(5n, value(500 + round, 24));
  }
  // Removes (the second of an absent key).
  for (const k of [7n, 7n, 1000n]) {
    await client.remove(u64(k), opts);
    model.delete(k);
  }
  // A batch with a precondition.
  await client.commit(
    [
      { put: { key: u64(13n), value: value(13, 300) } },
      { remove: { key: u64(3n) } },
      { put: { key: u64(4n), value: value(44, 10) } },
    ],
    [
      { key: u64(13n), absent: true },
      { key: u64(4n), present: true },
    ],
    opts,
  );
  model.set(13n, value(13, 300));
  model.delete(3n);
  model.set(4n, value(44, 10));
  // A refused batch changes nothing.
  await assert.rejects(
    client.commit(
      [{ put: { key: u64(14n), value: value(14, 5) } }, { remove: { key: u64(1n) } }],
      [{ key: u64(13n), absent: true }],
      opts,
    ),
    (err: { code?: number }) => err.code === status.FAILED_PRECONDITION,
  );
  // Same-size overwrites through Commit.
  await client.commit([{ put: { key: u64(6n), value: value(66, 24) } }], [], opts);
  await client.commit([{ put: { key: u64(6n), value: value(67, 24) } }], [], opts);
  model.set(6n, value(67, 24));
  // Acknowledged buffered writes: committed by the stop at the latest.
  const buffered = { ...opts, durability: Durability.BUFFERED };
  const b1 = await client.put(u64(20n), value(20, 40), buffered);
  assert.equal(b1.version, 0n, "a buffered Put answers at version 0");
  model.set(20n, value(20, 40));
  await client.remove(u64(8n), buffered);
  model.delete(8n);
  await client.put(u64(9n), value(90, 24), buffered);
  model.set(9n, value(90, 24));
  return model;
}

interface ChildServer {
  child: ChildProcess;
  client: MetadataClient;
  output(): string;
  /** SIGTERM; resolves with the exit code (fails the test after `ms`). */
  terminate(ms: number): Promise<number | null>;
}

/** A port taken between being picked and being bound. */
class PortTaken extends Error {}

/** Our server as a real process (`node --import tsx server/main.ts`), serving on a free port. */
async function startChild(dataDir: string, flags: string[]): Promise<ChildServer> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startChildOnce(dataDir, flags);
    } catch (err) {
      if (!(err instanceof PortTaken) || attempt >= 3) throw err;
    }
  }
}

async function startChildOnce(dataDir: string, flags: string[]): Promise<ChildServer> {
  const port = await freePort();
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("METADATA_")));
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join("server", "main.ts"),
      "--data-dir",
      dataDir,
      "--listen",
      `127.0.0.1:${port}`,
      "--metrics-listen",
      "off",
      ...flags,
    ],
    { cwd: REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] },
  );
  children.add(child);
  let output = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const exited = once(child, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  exited.catch(() => {}); // a spawn error shows as the exit check below
  const client = new MetadataClient(`127.0.0.1:${port}`);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      client.close();
      if (output.includes("EADDRINUSE")) throw new PortTaken(output);
      assert.fail(`server exited before serving:\n${output}`);
    }
    try {
      await client.listPartitions({ deadlineMs: 1000 });
      break;
    } catch {
      if (Date.now() > deadline) {
        client.close();
        child.kill("SIGKILL");
        assert.fail(`server not serving on port ${port} after 60 s:\n${output}`);
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
  return {
    child,
    client,
    output: () => output,
    terminate: async (ms) => {
      client.close();
      child.kill("SIGTERM");
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          child.kill("SIGKILL");
          reject(new Error(`server did not exit within ${ms} ms of SIGTERM:\n${output}`));
        }, ms);
      });
      try {
        const [code] = await Promise.race([exited, timeout]);
        return code;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

describe("rust writes, our server serves", () => {
  for (const release of RUST_RELEASES) {
    test(
      `${release}: entries written through overwrites, a shrinking rewrite and a clear`,
      TEST_TIMEOUT,
      async () => {
        const dir = join(root, `rust-writes-${release}`);
        const partition = "rust_u64";
        const hex = (seed: number, length: number) => value(seed, length).toString("hex");
        const ops = [
          // Ten keys, synced to both blobs (two rewrites).
          ...Array.from({ length: 10 }, (_, i) => ({ op: "put", key: i, value_hex: hex(i, 16) })),
          { op: "sync" },
          { op: "sync" },
          // Same-size changes: overwrites of each blob.
          { op: "put", key: 3, value_hex: hex(33, 16) },
          { op: "put", key: 7, value_hex: hex(77, 16) },
          { op: "sync" },
          { op: "sync" },
          { op: "put", key: 3, value_hex: hex(34, 16) },
          { op: "sync" },
          { op: "sync" },
          // Shrinking: a shorter value and a removed key (rewrites).
          { op: "put", key: 5, value_hex: hex(55, 4) },
          { op: "remove", key: 9 },
          { op: "sync" },
          { op: "sync" },
          // A clear, committed.
          { op: "clear" },
          { op: "sync" },
          // More puts after the clear, with extreme keys and an empty value.
          { op: "put", key: 100, value_hex: hex(100, 20) },
          { op: "put", key: 1, value_hex: hex(1, 200) },
          { op: "put", key: (1n << 63n).toString(), value_hex: "" },
          { op: "put", key: U64_MAX.toString(), value_hex: hex(255, 8) },
          { op: "put", key: 42, value: "h\u00e9llo" },
          { op: "sync" },
          { op: "put", key: 100, value_hex: hex(101, 20) },
          { op: "sync" },
          // Not synced: lost when the reference exits.
          { op: "put", key: 77, value_hex: hex(7, 16) },
          { op: "remove", key: 1 },
        ];
        const replayed = await rustReplay(dir, partition, ops, { release });
        await assertMagic(dir, partition, magicOf(release));
        assert.ok((replayed.counters.sync_overwrites ?? 0) >= 3, "the reference did overwrite syncs");
        assert.ok((replayed.counters.sync_rewrites ?? 0) >= 4, "the reference did rewrite syncs");

        const committed = new Map<bigint, Uint8Array>([
          [1n, value(1, 200)],
          [42n, Buffer.from("h\u00e9llo", "utf8")],
          [100n, value(101, 20)],
          [1n << 63n, new Uint8Array()],
          [U64_MAX, value(255, 8)],
        ]);
        const expected = sorted(committed);
        assert.deepEqual(
          (await rustDump(dir, partition, { release })).entries,
          expected,
          "the reference reads the model",
        );
        const files = await readFiles(dir, partition);

        const server = await startInProcess(dir, [
          ...codecFlags(partition),
          ...layoutFlags(release, partition),
        ]);
        try {
          assert.ok((await server.client.listPartitions({ deadlineMs: CALL_MS })).includes(partition));
          await assertServes(server.client, partition, expected, [0n, 3n, 5n, 7n, 9n, 77n, 1000n]);
          // Filters on U64 keys: a range, a prefix (the high byte) and a limit.
          const range: bigint[] = [];
          for await (const { key } of server.client.keys({
            partition,
            start: u64(2n),
            end: u64(1n << 63n),
            deadlineMs: CALL_MS,
          })) {
            range.push(keyOf(key));
          }
          assert.deepEqual(range, [42n, 100n]);
          const high: bigint[] = [];
          for await (const { key } of server.client.keys({
            partition,
            prefix: Uint8Array.of(0xff),
            deadlineMs: CALL_MS,
          })) {
            high.push(keyOf(key));
          }
          assert.deepEqual(high, [U64_MAX]);
        } finally {
          await server.stop();
        }
        assert.deepEqual(
          await readFiles(dir, partition),
          files,
          "serving reads left the files byte-identical",
        );
      },
    );
  }
});

describe("our server writes, rust reads", () => {
  for (const release of RUST_RELEASES) {
    test(`${release}: in-process server: acknowledged writes, then a stop`, TEST_TIMEOUT, async () => {
      const dir = join(root, `ours-in-process-${release}`);
      const partition = "ours_u64";
      const flags = [...codecFlags(partition), ...layoutFlags(release, partition)];
      let server = await startInProcess(dir, [...flags, "--flush-interval-ms", "60000"]);
      let model: Map<bigint, Uint8Array>;
      try {
        model = await writeThroughGrpc(server.client, partition);
        const overwrites = await metricValue(
          server.service.registry,
          "metadata_sync_overwrites_total",
          partition,
        );
        const rewrites = await metricValue(
          server.service.registry,
          "metadata_sync_rewrites_total",
          partition,
        );
        assert.ok(overwrites >= 4, `overwrite syncs happened (${overwrites})`);
        assert.ok(rewrites >= 2, `rewrite syncs happened (${rewrites})`);
      } finally {
        await server.stop();
      }
      const expected = sorted(model);
      await assertMagic(dir, partition, magicOf(release));
      const dumped = await rustDump(dir, partition, { release });
      assert.deepEqual(dumped.entries, expected, "the reference lists exactly the acknowledged writes");

      // The reference writes on; our restarted server serves its changes.
      await rustReplay(
        dir,
        partition,
        [
          { op: "put", key: 2, value_hex: value(222, 24).toString("hex") },
          { op: "remove", key: 13 },
          { op: "put", key: 500, value: "from rust" },
          { op: "sync" },
        ],
        { release },
      );
      model.set(2n, value(222, 24));
      model.delete(13n);
      model.set(500n, Buffer.from("from rust"));
      server = await startInProcess(dir, flags);
      try {
        await assertServes(server.client, partition, sorted(model), [3n, 7n, 8n, 13n, 14n]);
      } finally {
        await server.stop();
      }
    });
  }

  test(
    "2026.4.0: server process stopped by SIGTERM: acknowledged buffered writes are committed",
    TEST_TIMEOUT,
    async () => {
      const dir = join(root, "ours-sigterm");
      const partition = "sigterm_u64";
      // A long flush interval: only the SIGTERM shutdown commits the trailing buffered writes.
      const server = await startChild(dir, [
        ...codecFlags(partition),
        ...layoutFlags("2026.4.0", partition),
        "--flush-interval-ms",
        "600000",
      ]);
      let model: Map<bigint, Uint8Array>;
      try {
        model = await writeThroughGrpc(server.client, partition);
      } catch (err) {
        server.child.kill("SIGKILL");
        throw new Error(`${String(err)}\nserver output:\n${server.output()}`, { cause: err });
      }
      const code = await server.terminate(30_000);
      assert.equal(code, 0, `exit status after SIGTERM:\n${server.output()}`);
      const dumped = await rustDump(dir, partition);
      assert.deepEqual(dumped.entries, sorted(model), "the reference lists exactly the acknowledged writes");
    },
  );
});
