/**
 * Watch benchmark: what recording committed changes costs the write path, and what watchers cost
 * a loaded server.
 *
 *   npm run bench:watch [-- --quick] [-- --no-server]
 *
 * 1. Record cost (in process, memory storage): for stores of 10,000 and 100,000 keys, syncs that
 *    change 1, 100 and 1,000 keys; the time of `ChangeFeed.record` (the diff of two committed
 *    copy-on-write views, plus the history) against the time of the sync itself.
 * 2. Write path (in process, no gRPC, memory storage): durable puts through the Engine from 64
 *    callers into a partition of 100,000 keys, with the change feed recording and with its
 *    `record` replaced by a bare move of the base (no diff, no history); puts per second of each.
 * 3. Watchers under load (a server process on 127.0.0.1, data in a temp directory: set
 *    TMPDIR=/dev/shm to take fsync latency out of the comparison): 64 callers Put to one
 *    partition for a few seconds, without watchers, then with 100 watchers of that partition in
 *    a second process. Reports both Put rates, their ratio (target >= 0.8), the server's CPU time
 *    per put (from /proc) and the delay from a Put's answer to each watcher's receipt of its
 *    version (p50, p99). On a machine with fewer cores than processes, the watcher process and
 *    the load generator compete with the server: the CPU per put tells the server's own cost.
 *
 * Bounded: each load phase runs DURATION_MS; every process started is stopped at the end.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { ChangeFeed } from "../../server/engine/change-feed.js";
import { Engine } from "../../server/engine/operations.js";
import { Partitions } from "../../server/engine/partitions.js";
import { fixedKeys } from "../../server/store/codec.js";
import { openMetadata } from "../../server/store/metadata.js";
import { MemoryStorage } from "../../server/store/storage/memory.js";
import { freePort } from "../support/ports.js";
import { tempDir } from "../support/temp-dir.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const QUICK = process.argv.includes("--quick");
const DURATION_MS = QUICK ? 2000 : 5000;
const CALLERS = 64;
const WATCHERS = 100;

function key(i: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeUInt32BE(Math.imul(i, 2654435761) >>> 0, 0);
  out.writeUInt32BE(i, 4);
  return out;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

async function recordCost(): Promise<void> {
  console.log("record cost per sync (memory storage; median of the runs)");
  console.log("keys      changed  sync us  record us  record/sync");
  for (const size of [10_000, 100_000]) {
    const store = await openMetadata(new MemoryStorage(), {
      partition: "bench",
      keyCodec: fixedKeys(8),
      maxValueBytes: 1 << 20,
    });
    for (let i = 0; i < size; i++) store.put(key(i), Buffer.alloc(32, i & 0xff));
    await store.sync();
    const feed = new ChangeFeed("bench", store.committed(), {
      historyMaxSyncs: 64,
      historyMaxBytes: 1 << 30,
    });
    for (const changed of [1, 100, 1000]) {
      const syncs: number[] = [];
      const records: number[] = [];
      for (let run = 0; run < (QUICK ? 10 : 40); run++) {
        for (let j = 0; j < changed; j++) {
          store.put(key((run * 7919 + j * 104729) % size), Buffer.alloc(32, run & 0xff));
        }
        let start = process.hrtime.bigint();
        await store.sync();
        syncs.push(Number(process.hrtime.bigint() - start) / 1000);
        start = process.hrtime.bigint();
        feed.record(store.committed());
        records.push(Number(process.hrtime.bigint() - start) / 1000);
      }
      const sync = percentile(
        [...syncs].sort((a, b) => a - b),
        50,
      );
      const record = percentile(
        [...records].sort((a, b) => a - b),
        50,
      );
      console.log(
        `${String(size).padEnd(9)} ${String(changed).padEnd(8)} ${sync.toFixed(0).padStart(7)}  ${record
          .toFixed(1)
          .padStart(9)}  ${(record / sync).toFixed(3).padStart(11)}`,
      );
    }
    await store.close();
  }
}

async function enginePuts(record: boolean): Promise<number> {
  const original = ChangeFeed.prototype.record;
  if (!record) {
    ChangeFeed.prototype.record = function (this: ChangeFeed, committed) {
      (this as unknown as { base: unknown }).base = committed;
      return undefined;
    };
  }
  try {
    const partitions = new Partitions(new MemoryStorage(), {
      defaultPartition: "bench",
      defaultKeyCodec: fixedKeys(8),
      keyCodecs: new Map(),
      maxValueBytes: 1 << 20,
      maxOpenPartitions: 16,
      maxPartitions: 16,
      groupCommit: {
        batchMaxMutations: 10_000,
        batchMaxBytes: 16 << 20,
        batchMaxDelayMs: 0,
        flushIntervalMs: 100,
        maxQueuedOperations: 100_000,
      },
    });
    const engine = new Engine(partitions);
    const size = 100_000;
    for (let i = 0; i < size; i += 10_000) {
      await engine.commit({
        partition: "",
        durable: true,
        preconditions: [],
        mutations: Array.from({ length: 10_000 }, (_, j) => ({
          key: key(i + j),
          value: Buffer.alloc(32, j),
        })),
      });
    }
    let puts = 0;
    const stopAt = Date.now() + DURATION_MS / 2;
    const started = performance.now();
    await Promise.all(
      Array.from({ length: CALLERS }, async (_, caller) => {
        for (let i = 0; Date.now() < stopAt; i++) {
          await engine.put({
            partition: "",
            durable: true,
            key: key((caller * 7919 + i * 104729) % size),
            value: Buffer.alloc(32, i),
          });
          puts++;
        }
      }),
    );
    const rate = puts / ((performance.now() - started) / 1000);
    await partitions.close();
    return rate;
  } finally {
    ChangeFeed.prototype.record = original;
  }
}

async function writePath(): Promise<void> {
  // A warm-up of each, then alternating rounds; the median of each is reported.
  await enginePuts(false);
  await enginePuts(true);
  const without: number[] = [];
  const withFeed: number[] = [];
  for (let round = 0; round < 3; round++) {
    without.push(await enginePuts(false));
    withFeed.push(await enginePuts(true));
  }
  const median = (xs: number[]) =>
    percentile(
      [...xs].sort((a, b) => a - b),
      50,
    );
  console.log(`\nwrite path: ${CALLERS} callers, durable puts, 100,000 keys, memory storage (median of 3)`);
  console.log(
    `without recording ${median(without).toFixed(0)} puts/s, with ${median(withFeed).toFixed(0)} puts/s ` +
      `(${(median(withFeed) / median(without)).toFixed(2)}x); rounds: ${without.map((x) => x.toFixed(0)).join(" ")} / ` +
      `${withFeed.map((x) => x.toFixed(0)).join(" ")}`,
  );
}

async function startServer(dataDir: string): Promise<{ child: ChildProcess; address: string }> {
  const port = await freePort();
  const address = `127.0.0.1:${port}`;
  const child = spawn(
    process.execPath,
    ["--import", "tsx", join(ROOT, "server/main.ts"), "--data-dir", dataDir, "--listen", address],
    {
      cwd: ROOT,
      stdio: ["ignore", "ignore", "inherit"],
      env: { ...process.env, METADATA_METRICS_LISTEN: "off" },
    },
  );
  const client = new MetadataClient(address);
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await client.listPartitions({ deadlineMs: 1000 });
      break;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  client.close();
  return { child, address };
}

/** CPU seconds (user + system) a process used so far, from /proc (Linux); NaN elsewhere. */
function cpuSeconds(pid: number | undefined): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return Number.NaN;
  }
}

/** Puts from CALLERS loops for DURATION_MS; returns the rate and each version's answer time. */
async function putLoad(address: string): Promise<{ rate: number; answeredAt: Map<bigint, number> }> {
  const clients = Array.from({ length: 8 }, () => new MetadataClient(address));
  const answeredAt = new Map<bigint, number>();
  let puts = 0;
  const stopAt = Date.now() + DURATION_MS;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CALLERS }, async (_, caller) => {
      const client = clients[caller % clients.length] as MetadataClient;
      for (let i = 0; Date.now() < stopAt; i++) {
        const { version } = await client.put(key(caller * 1_000_000 + (i % 1000)), Buffer.alloc(32, i));
        const now = performance.timeOrigin + performance.now();
        if (!answeredAt.has(version)) answeredAt.set(version, now);
        puts++;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  for (const client of clients) client.close();
  return { rate: puts / seconds, answeredAt };
}

/** Watcher process: WATCHERS watches of the default partition; prints "version receivedAt" lines. */
async function watcherProcess(address: string): Promise<void> {
  const client = new MetadataClient(address);
  const lines: string[] = [];
  let open = 0;
  const watches = Array.from({ length: WATCHERS }, async () => {
    open++;
    if (open === WATCHERS) console.log("ready");
    try {
      for await (const { version } of client.watch({})) {
        lines.push(`${version} ${performance.timeOrigin + performance.now()}`);
      }
    } catch {
      // ended by the parent closing stdin
    }
  });
  process.stdin.on("end", () => {
    process.stdout.write(`${lines.join("\n")}\nend\n`, () => process.exit(0));
  });
  process.stdin.resume();
  await Promise.all(watches);
}

async function watchersUnderLoad(): Promise<void> {
  const dir = await tempDir("metadata-watch-bench-");
  const { child, address } = await startServer(dir.path);
  try {
    // Warm-up, then the cell without watchers.
    await putLoad(address);
    let cpu = cpuSeconds(child.pid);
    const alone = await putLoad(address);
    const aloneCpu = cpuSeconds(child.pid) - cpu;
    const watcher = spawn(
      process.execPath,
      ["--import", "tsx", fileURLToPath(import.meta.url), "--watcher", address],
      {
        cwd: ROOT,
        stdio: ["pipe", "pipe", "inherit"],
      },
    );
    const rows = createInterface({ input: watcher.stdout as NodeJS.ReadableStream });
    const received: string[] = [];
    let ready!: () => void;
    const isReady = new Promise<void>((resolve) => {
      ready = resolve;
    });
    let ended!: () => void;
    const isEnded = new Promise<void>((resolve) => {
      ended = resolve;
    });
    rows.on("line", (line) => {
      if (line === "ready") ready();
      else if (line === "end") ended();
      else if (line !== "") received.push(line);
    });
    await isReady;
    // Let the watch calls reach the server before the load starts.
    await new Promise((resolve) => setTimeout(resolve, 500));
    cpu = cpuSeconds(child.pid);
    const watched = await putLoad(address);
    const watchedCpu = cpuSeconds(child.pid) - cpu;
    await new Promise((resolve) => setTimeout(resolve, 500));
    watcher.stdin?.end();
    await isEnded;
    const delays: number[] = [];
    for (const line of received) {
      const [version, at] = line.split(" ");
      const answered = watched.answeredAt.get(BigInt(version as string));
      if (answered !== undefined) delays.push(Number(at) - answered);
    }
    delays.sort((a, b) => a - b);
    console.log(
      `\nPut at ${CALLERS} callers, ${DURATION_MS} ms per cell, one partition (server process, filesystem)`,
    );
    const perPut = (cpuS: number, rate: number) => ((cpuS * 1e6) / (rate * (DURATION_MS / 1000))).toFixed(0);
    console.log(
      `without watchers: ${alone.rate.toFixed(0)} puts/s, server CPU ${aloneCpu.toFixed(2)} s (${perPut(aloneCpu, alone.rate)} us a put)`,
    );
    console.log(
      `with ${WATCHERS} watchers: ${watched.rate.toFixed(0)} puts/s (${(watched.rate / alone.rate).toFixed(2)}x, target >= 0.80), ` +
        `server CPU ${watchedCpu.toFixed(2)} s (${perPut(watchedCpu, watched.rate)} us a put)`,
    );
    console.log(
      `delay from a Put's answer to a watcher's receipt of its version: p50 ${percentile(delays, 50).toFixed(1)} ms, ` +
        `p99 ${percentile(delays, 99).toFixed(1)} ms over ${delays.length} deliveries ` +
        `(${watched.answeredAt.size} versions x ${WATCHERS} watchers)`,
    );
  } finally {
    child.kill("SIGTERM");
    await once(child, "exit");
    await dir.remove();
  }
}

if (process.argv[2] === "--watcher") {
  await watcherProcess(process.argv[3] as string);
} else {
  await recordCost();
  await writePath();
  if (!process.argv.includes("--no-server")) await watchersUnderLoad();
}
