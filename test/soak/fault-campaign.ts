/**
 * Fault campaign: the server as a child process under mixed durable load (Put, Remove, Commit, as
 * unary calls, and over Write streams with several requests in flight), killed with SIGKILL every
 * cycle, with a fault injected around some kills:
 *
 *   kill          SIGKILL at a seeded moment of the load, restart
 *   enospc        the filesystem filled up under load (writes to new partitions too): answers
 *                 RESOURCE_EXHAUSTED "disk full", /healthz turns 503; SIGKILL, space freed, restart;
 *                 each partition whose creation was tried meanwhile is read once (those that no
 *                 longer open are counted apart: a creation cut short by ENOSPC)
 *   readonly      SIGKILL, filesystem remounted read-only: the server must refuse to start with one
 *                 line; remounted read-write, restart
 *   corrupt-one   SIGKILL, one byte flipped in the older blob of each partition: recovery keeps it in
 *                 the quarantine and serves the newest version (nothing lost)
 *   corrupt-both  a scratch partition written twice, SIGKILL, both its blobs damaged: it answers
 *                 DATA_LOSS while the others serve; SIGTERM, `accept-data-loss`, restart: empty
 *
 * After every restart each key must hold its last acknowledged value, or the value of the write
 * that was in flight (or failed) since; a Commit in flight shows whole or not at all ("writes
 * checked" counts these key checks, one per key and cycle). The
 * campaign prints cycles, writes acknowledged, writes checked, lost (must be 0), torn commits,
 * statuses seen, and what each fault did.
 *
 * The filesystem faults need a tmpfs of its own (root: CI runs as root); without it those cycles
 * are plain kills, and the summary says so.
 *
 * Usage: `npm run soak` (SOAK_CYCLES, default 100; TEST_SEED). test/e2e/soak.test.ts runs a
 * short campaign (5 cycles: each fault once) in the test suite.
 */
import { execFile } from "node:child_process";
import { readdir, readFile, rm, statfs, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { status } from "@grpc/grpc-js";
import { type BatchMutation, MetadataClient } from "../../clients/ts/metadata-client.js";
import { crc32c } from "../../server/store/checksum.js";
import { REPO_ROOT, ServerProcess } from "../e2e/server-process.js";
import { Rng, testSeed } from "../support/rng.js";
import { tempDir } from "../support/temp-dir.js";

const run = promisify(execFile);

/** Faults, in the order the first cycles take them: a short campaign meets each once. */
const SCHEDULE = [
  "enospc",
  "readonly",
  "corrupt-one",
  "corrupt-both",
  "kill",
  "kill",
  "kill",
  "kill",
  "kill",
  "kill",
] as const;
type Fault = (typeof SCHEDULE)[number];

const VARIABLE = "soak-var";
const FIXED = "soak-fixed";
const SCRATCH = "soak-scratch";
const FIXED_VALUE_BYTES = 16;
const SERVER_FLAGS = ["--partition-key-codec", `${FIXED}=fixed:8`, "--data-dir-probe-interval-ms", "100"];
const CALL_DEADLINE_MS = 5_000;
const LEFT = "6c656674";
const RIGHT = "7269676874";
/** Bytes before the body of a blob file: 8 for a V0 header ("CWIC"), one 4096-byte page for V1. */
function headerBytes(file: Buffer): number {
  return file.subarray(0, 4).toString("latin1") === "CWIC" ? 8 : 4096;
}

/** Options of a campaign. */
export interface CampaignOptions {
  cycles: number;
  seed: number;
  writers?: number;
  keysPerWriter?: number;
  /** Progress lines (one per cycle); none by default. */
  log?: (line: string) => void;
}

/** What a campaign saw. */
export interface CampaignResult {
  cycles: number;
  seconds: number;
  filesystemFaults: boolean;
  faults: Record<string, number>;
  writesAcknowledged: number;
  /** Of those, acknowledged on a Write stream. */
  streamedAcknowledged: number;
  writesChecked: number;
  lost: number;
  tornCommits: number;
  statuses: Record<string, number>;
  /** ENOSPC cycles where /healthz answered 503, of ENOSPC cycles run. */
  unhealthyWhileFull: number;
  /** Read-only cycles where the server refused to start with the expected line. */
  refusedReadOnly: number;
  /**
   * Partitions whose creation was tried while the filesystem was full and that do not open after
   * the restart (a creation cut short leaves a blob that is not one).
   */
  brokenCreations: number;
  /** Partitions whose creation was tried while the filesystem was full. */
  creationsWhileFull: number;
  /** Blobs recovery put in the quarantine. */
  quarantined: number;
  /** corrupt-both cycles where the scratch partition answered DATA_LOSS and was recovered. */
  dataLossRecovered: number;
  problems: string[];
}

interface KeyState {
  partition: string;
  key: Buffer;
  /** Hex of the acknowledged value, null when absent. */
  acked: string | null;
  /** Values a write since then may have left (failed or in flight): allowed after a restart. */
  maybe: Set<string | null>;
}

interface Writer {
  partition: string;
  keys: KeyState[];
  /** True: writes go over one Write stream, several in flight (on distinct keys). */
  streamed: boolean;
  /**
   * Commits in flight or failed, each with the value it gives each of its keys; one leaves when
   * it is acknowledged or one of its keys is written again.
   */
  commits: Set<CommitRecord>;
}

/** A Commit in flight or failed: the value it gives each key, and what each key could hold before. */
interface CommitRecord {
  effect: Map<KeyState, string | null>;
  /** Per key: its acknowledged value and the values earlier failed writes may have left. */
  before: Map<KeyState, Set<string | null>>;
}

/** The writes of a writer, over unary calls or one Write stream. */
interface Calls {
  put(key: Uint8Array, value: Uint8Array): Promise<unknown>;
  remove(key: Uint8Array): Promise<unknown>;
  commit(mutations: BatchMutation[]): Promise<unknown>;
  /** After a failure: a new stream if the current one ended (nothing for unary calls). */
  recover(err: unknown): void;
  close(): void;
}

function unaryCalls(c: MetadataClient, partition: string): Calls {
  const call = { partition, deadlineMs: CALL_DEADLINE_MS };
  return {
    put: (key, value) => c.put(key, value, call),
    remove: (key) => c.remove(key, call),
    commit: (mutations) => c.commit(mutations, [], call),
    recover: () => undefined,
    close: () => undefined,
  };
}

/** Requests of one Write stream in flight at once, at most. */
const STREAM_WINDOW = 3;

function streamCalls(c: MetadataClient, partition: string): Calls {
  let writer = c.writer({ partition, window: STREAM_WINDOW });
  return {
    put: (key, value) => writer.put(key, value),
    remove: (key) => writer.remove(key),
    commit: (mutations) => writer.commit(mutations),
    recover: (err) => {
      // A request refused by the server leaves the stream open; a broken stream says so.
      if (!/outcome unknown|stream ended|closed/.test(String((err as { details?: unknown }).details))) return;
      writer.cancel();
      writer = c.writer({ partition, window: STREAM_WINDOW });
    },
    close: () => writer.cancel(),
  };
}

function codeName(err: unknown): string {
  const code = (err as { code?: unknown }).code;
  if (typeof code === "number") return status[code] ?? String(code);
  return "ERROR";
}

/** Runs a campaign; see the module comment. */
export async function runCampaign(options: CampaignOptions): Promise<CampaignResult> {
  const rng = new Rng(options.seed);
  const log = options.log ?? (() => undefined);
  const started = Date.now();
  const dir = await tempDir("metadata-soak-");
  const dataDir = join(dir.path, "data");
  await run("mkdir", ["-p", dataDir]);
  let mounted = false;
  if (process.getuid?.() === 0) {
    try {
      await run("mount", ["-t", "tmpfs", "-o", "size=16m", "tmpfs", dataDir]);
      mounted = true;
    } catch {
      mounted = false;
    }
  }
  const result: CampaignResult = {
    cycles: 0,
    seconds: 0,
    filesystemFaults: mounted,
    faults: {},
    writesAcknowledged: 0,
    streamedAcknowledged: 0,
    writesChecked: 0,
    lost: 0,
    tornCommits: 0,
    statuses: {},
    unhealthyWhileFull: 0,
    refusedReadOnly: 0,
    quarantined: 0,
    brokenCreations: 0,
    creationsWhileFull: 0,
    dataLossRecovered: 0,
    problems: [],
  };
  const count = (name: string) => {
    result.statuses[name] = (result.statuses[name] ?? 0) + 1;
  };
  const problem = (text: string) => {
    result.problems.push(text);
    log(`PROBLEM: ${text}`);
  };

  const writers: Writer[] = Array.from({ length: options.writers ?? 12 }, (_, w) => {
    const partition = w % 2 === 0 ? VARIABLE : FIXED;
    return {
      partition,
      // Every third writer uses the Write stream.
      streamed: w % 3 === 2,
      commits: new Set(),
      keys: Array.from({ length: options.keysPerWriter ?? 4 }, (_, k) => {
        const key = Buffer.alloc(8);
        key.writeUInt32BE(w, 0);
        key.writeUInt32BE(k, 4);
        return { partition, key, acked: null, maybe: new Set<string | null>() };
      }),
    };
  });

  let server: ServerProcess | undefined;
  let client: MetadataClient | undefined;
  const start = async () => {
    server = await ServerProcess.start({ dataDir, flags: SERVER_FLAGS });
    client = new MetadataClient(server.address);
  };
  const kill = async () => {
    await server?.kill("SIGKILL");
  };

  const valueFor = (partition: string): Buffer =>
    partition === FIXED ? rng.bytes(FIXED_VALUE_BYTES) : rng.bytes(1 + rng.int(64));

  /** One write of `writer` on some of its `free` keys (marked busy until it is answered). */
  const write = async (
    writer: Writer,
    calls: Calls,
    free: KeyState[],
    busy: Set<KeyState>,
    extra?: string,
  ) => {
    const pick = rng.next();
    if (extra !== undefined && pick < 0.1) {
      // A partition that does not exist yet: creating it needs free space.
      const partition = `${extra}-${rng.int(1_000_000)}`;
      createdWhileFull.add(partition);
      try {
        await (client as MetadataClient).put(Buffer.from("k"), Buffer.from("v"), {
          partition,
          deadlineMs: CALL_DEADLINE_MS,
        });
        count("OK");
      } catch (err) {
        count(codeName(err));
      }
      return;
    }
    let effect: Map<KeyState, string | null>;
    let send: () => Promise<unknown>;
    if (pick < 0.55) {
      const state = free[rng.int(free.length)] as KeyState;
      const value = valueFor(writer.partition);
      effect = new Map([[state, value.toString("hex")]]);
      send = () => calls.put(state.key, value);
    } else if (pick < 0.75) {
      const state = free[rng.int(free.length)] as KeyState;
      effect = new Map([[state, null]]);
      send = () => calls.remove(state.key);
    } else {
      const chosen = free.filter(() => rng.chance(0.6));
      if (chosen.length === 0) chosen.push(free[0] as KeyState);
      effect = new Map();
      const mutations: BatchMutation[] = chosen.map((state) => {
        if (rng.chance(0.25)) {
          effect.set(state, null);
          return { remove: { key: state.key } };
        }
        const value = valueFor(writer.partition);
        effect.set(state, value.toString("hex"));
        return { put: { key: state.key, value } };
      });
      send = () => calls.commit(mutations);
    }
    // A new write to a key ends what an earlier failed commit could show for it.
    for (const commit of writer.commits) {
      if ([...effect.keys()].some((state) => commit.effect.has(state))) writer.commits.delete(commit);
    }
    const record: CommitRecord = {
      effect,
      before: new Map([...effect.keys()].map((state) => [state, new Set([state.acked, ...state.maybe])])),
    };
    if (effect.size > 1) writer.commits.add(record);
    for (const [state, value] of effect) {
      busy.add(state);
      state.maybe.add(value);
    }
    try {
      await send();
      for (const [state, value] of effect) {
        state.acked = value;
        state.maybe.clear();
      }
      writer.commits.delete(record);
      result.writesAcknowledged += effect.size;
      if (writer.streamed) result.streamedAcknowledged += effect.size;
      count("OK");
    } catch (err) {
      count(codeName(err));
      calls.recover(err);
      // Failed fast (no server): do not spin.
      await new Promise((resolve) => setTimeout(resolve, 5));
    } finally {
      for (const state of effect.keys()) busy.delete(state);
    }
  };

  /** One writer's load until `stopped()`: one call at a time, or a few on a Write stream. */
  const load = async (
    writer: Writer,
    c: MetadataClient,
    stopped: () => boolean,
    extra: string | undefined,
  ) => {
    const calls = writer.streamed ? streamCalls(c, writer.partition) : unaryCalls(c, writer.partition);
    const window = writer.streamed ? STREAM_WINDOW : 1;
    const busy = new Set<KeyState>();
    const running = new Set<Promise<void>>();
    for (let ops = 0; ops < 5000 && !stopped(); ) {
      const free = writer.keys.filter((state) => !busy.has(state));
      if (running.size >= window || free.length === 0) {
        await Promise.race(running);
        continue;
      }
      ops++;
      const task: Promise<void> = write(writer, calls, free, busy, extra).finally(() => running.delete(task));
      running.add(task);
    }
    await Promise.all(running);
    calls.close();
  };

  /** What the server serves for the model partitions: "partition/keyhex" -> value hex. */
  const recovered = new Map<string, string>();
  const id = (state: KeyState) => `${state.partition}/${state.key.toString("hex")}`;
  const readValue = (state: KeyState) => recovered.get(id(state)) ?? null;

  /** Reads every model partition, checks each key, then takes what is there as acknowledged. */
  const verify = async (cycle: number) => {
    recovered.clear();
    const unreadable = new Set<string>();
    for (const partition of [VARIABLE, FIXED]) {
      try {
        for await (const entry of (client as MetadataClient).keys({
          partition,
          includeValues: true,
          deadlineMs: 30_000,
        })) {
          recovered.set(
            `${partition}/${Buffer.from(entry.key).toString("hex")}`,
            Buffer.from(entry.value ?? []).toString("hex"),
          );
        }
      } catch (err) {
        unreadable.add(partition);
        count(codeName(err));
        problem(
          `cycle ${cycle}: reading ${partition} failed: ${String((err as { details?: unknown }).details ?? err)}`,
        );
      }
    }
    const unknown = new Set(recovered.keys());
    for (const writer of writers) {
      if (unreadable.has(writer.partition)) continue;
      for (const state of writer.keys) {
        const value = readValue(state);
        unknown.delete(id(state));
        result.writesChecked++;
        if (value !== state.acked && !state.maybe.has(value)) {
          result.lost++;
          problem(
            `cycle ${cycle}: ${id(state)} holds ${value ?? "(absent)"}, acknowledged ${state.acked ?? "(absent)"}`,
          );
        }
      }
      for (const commit of writer.commits) {
        const effect = [...commit.effect];
        // A key shows the commit when it holds its value and nothing before could explain it; it
        // shows the commit missing when it holds what it could hold before and not that value.
        const shows = ([state, v]: [KeyState, string | null]) =>
          readValue(state) === v && !commit.before.get(state)?.has(v);
        const misses = ([state, v]: [KeyState, string | null]) =>
          readValue(state) !== v && (commit.before.get(state)?.has(readValue(state)) ?? false);
        if (effect.some(shows) && effect.some(misses)) {
          result.tornCommits++;
          const detail = effect
            .map(
              ([state, v]) =>
                `${id(state)}: was ${state.acked ?? "(absent)"}, commit ${v ?? "(absent)"}, now ${readValue(state) ?? "(absent)"}`,
            )
            .join("; ");
          problem(
            `cycle ${cycle}: a commit of ${effect.length} keys (${writer.streamed ? "Write stream" : "unary"}) shows in part: ${detail}`,
          );
        }
      }
    }
    for (const key of unknown) problem(`cycle ${cycle}: unknown key ${key}`);
    for (const writer of writers) {
      if (unreadable.has(writer.partition)) continue;
      writer.commits.clear();
      for (const state of writer.keys) {
        state.acked = readValue(state);
        state.maybe.clear();
      }
    }
  };

  const fill = async (): Promise<string> => {
    const filler = join(dataDir, "filler");
    const stats = await statfs(dataDir);
    await writeFile(filler, Buffer.alloc(Math.max(0, Number(stats.bavail) * Number(stats.bsize)))).catch(
      () => undefined,
    );
    return filler;
  };

  const quarantineCount = async (): Promise<number> => {
    let total = 0;
    for (const partition of await readdir(join(dataDir, ".quarantine")).catch(() => [] as string[])) {
      total += (await readdir(join(dataDir, ".quarantine", partition))).length;
    }
    return total;
  };

  /** Flips one bit in the body of the blob file at `path` (past its version); false if it has none. */
  const flip = async (path: string): Promise<boolean> => {
    const bytes = await readFile(path).catch(() => Buffer.alloc(0));
    const header = headerBytes(bytes);
    if (bytes.length < header + 12) return false;
    const offset = header + 8 + rng.int(bytes.length - header - 8);
    bytes[offset] = (bytes[offset] as number) ^ (1 << rng.int(8));
    await writeFile(path, bytes);
    return true;
  };

  /** Version of a blob file when its body is valid, else -1. */
  const validVersion = async (path: string): Promise<bigint> => {
    const bytes = await readFile(path).catch(() => Buffer.alloc(0));
    const header = headerBytes(bytes);
    if (bytes.length < header + 12) return -1n;
    const body = bytes.subarray(header);
    const crcAt = body.length - 4;
    return body.readUInt32BE(crcAt) === crc32c(body.subarray(0, crcAt)) ? body.readBigUInt64BE(0) : -1n;
  };

  /** Partitions whose creation was tried while the filesystem was full, to read after a restart. */
  const createdWhileFull = new Set<string>();
  /** Reads each of them once: one that no longer opens is counted (and not a lost write). */
  const checkCreatedWhileFull = async () => {
    for (const partition of createdWhileFull) {
      result.creationsWhileFull++;
      try {
        await (client as MetadataClient).get(Buffer.from("k"), { partition, deadlineMs: CALL_DEADLINE_MS });
      } catch (err) {
        result.brokenCreations++;
        count(codeName(err));
        log(`partition ${partition}, created while the disk was full, does not open: ${codeName(err)}`);
      }
    }
    createdWhileFull.clear();
  };

  try {
    await start();
    // The model partitions exist before the first fault, so that a full disk meets them open.
    for (const partition of [VARIABLE, FIXED]) {
      const state = writers.find((w) => w.partition === partition)?.keys[0] as KeyState;
      const value = valueFor(partition);
      await (client as MetadataClient).put(state.key, value, { partition, deadlineMs: CALL_DEADLINE_MS });
      state.acked = value.toString("hex");
      result.writesAcknowledged++;
    }
    for (let cycle = 0; cycle < options.cycles; cycle++) {
      const scheduled = SCHEDULE[cycle % SCHEDULE.length] as Fault;
      const fault: Fault =
        !mounted && (scheduled === "enospc" || scheduled === "readonly") ? "kill" : scheduled;
      result.faults[fault] = (result.faults[fault] ?? 0) + 1;
      const c = client as MetadataClient;
      if (fault === "corrupt-both") {
        await c.put(Buffer.from("a"), Buffer.from("1"), { partition: SCRATCH });
        await c.put(Buffer.from("b"), Buffer.from("2"), { partition: SCRATCH });
      }
      let stop = false;
      const extra = fault === "enospc" ? `soak-new-${cycle}` : undefined;
      const running = writers.map((w) => load(w, c, () => stop, extra));
      let filler: string | undefined;
      if (fault === "enospc") {
        await new Promise((resolve) => setTimeout(resolve, 100 + rng.int(200)));
        filler = await fill();
        const deadline = Date.now() + 5000;
        let unhealthy = false;
        while (Date.now() < deadline && !unhealthy) {
          await new Promise((resolve) => setTimeout(resolve, 50));
          const health = await fetch(`http://127.0.0.1:${server?.metricsPort}/healthz`).catch(
            () => undefined,
          );
          unhealthy = health?.status === 503;
        }
        if (unhealthy) result.unhealthyWhileFull++;
        else problem(`cycle ${cycle}: /healthz did not turn 503 on a full filesystem`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100 + rng.int(400)));
      await kill();
      stop = true;
      await Promise.all(running);
      client?.close();
      if (filler !== undefined) await rm(filler, { force: true });

      if (fault === "readonly") {
        await run("mount", ["-o", "remount,ro", dataDir]);
        try {
          const refused = await ServerProcess.start({
            dataDir,
            flags: SERVER_FLAGS,
            startTimeoutMs: 20_000,
          }).then(
            async (s) => {
              await s.stop();
              return "";
            },
            (err: unknown) => String(err),
          );
          if (/error: cannot write data directory .*EROFS/.test(refused)) result.refusedReadOnly++;
          else
            problem(
              `cycle ${cycle}: on a read-only filesystem the server did not refuse as expected: ${refused.slice(0, 300)}`,
            );
        } finally {
          await run("mount", ["-o", "remount,rw", dataDir]);
        }
      }
      const quarantinedBefore = await quarantineCount();
      let corrupted = 0;
      if (fault === "corrupt-one") {
        for (const partition of [VARIABLE, FIXED]) {
          const left = join(dataDir, partition, LEFT);
          const right = join(dataDir, partition, RIGHT);
          // Never the blob holding the newest committed version: nothing acknowledged may go.
          const other = (await validVersion(left)) >= (await validVersion(right)) ? right : left;
          if (await flip(other)) corrupted++;
        }
      }
      if (fault === "corrupt-both") {
        for (const name of [LEFT, RIGHT]) await flip(join(dataDir, SCRATCH, name));
      }

      await start();
      if (fault === "corrupt-both") {
        const answer = await (client as MetadataClient)
          .get(Buffer.from("a"), { partition: SCRATCH })
          .then(() => "OK", codeName);
        count(answer);
        if (answer !== "DATA_LOSS")
          problem(`cycle ${cycle}: a partition with both blobs damaged answered ${answer}`);
      }
      await verify(cycle);
      await checkCreatedWhileFull();
      if (fault === "corrupt-one") {
        const added = (await quarantineCount()) - quarantinedBefore;
        if (added !== corrupted) problem(`cycle ${cycle}: ${corrupted} blobs damaged, ${added} quarantined`);
      }
      if (fault === "corrupt-both") {
        client?.close();
        await server?.kill("SIGTERM");
        const accepted = await run(
          process.execPath,
          ["--import", "tsx", "server/cli.ts", "accept-data-loss", SCRATCH, "--data-dir", dataDir],
          { cwd: REPO_ROOT },
        ).then(
          (r) => r.stdout,
          (err: unknown) => String(err),
        );
        await start();
        const after = await (client as MetadataClient).get(Buffer.from("a"), { partition: SCRATCH });
        if (/accepted the data loss/.test(accepted) && after === undefined) result.dataLossRecovered++;
        else
          problem(
            `cycle ${cycle}: accept-data-loss did not recover the scratch partition: ${accepted.slice(0, 300)}`,
          );
      }
      result.quarantined = await quarantineCount();
      result.cycles++;
      log(
        `cycle ${cycle + 1}/${options.cycles} ${fault}: acknowledged ${result.writesAcknowledged}, checked ${result.writesChecked}, lost ${result.lost}`,
      );
    }
  } finally {
    client?.close();
    await server?.stop();
    if (mounted) await run("umount", [dataDir]).catch(() => undefined);
    await dir.remove();
    result.seconds = Math.round((Date.now() - started) / 100) / 10;
  }
  return result;
}

/** The summary lines of a result. */
export function summary(result: CampaignResult, seed: number): string {
  const statuses = Object.entries(result.statuses)
    .sort((a, b) => b[1] - a[1])
    .map(([name, n]) => `${name} ${n}`)
    .join(", ");
  const faults = Object.entries(result.faults)
    .map(([name, n]) => `${name} ${n}`)
    .join(", ");
  return [
    `fault campaign (seed ${seed}): ${result.cycles} SIGKILL cycles in ${result.seconds} s${result.filesystemFaults ? "" : " (no tmpfs: filesystem faults ran as plain kills; run as root for them)"}`,
    `  faults: ${faults}`,
    `  writes acknowledged: ${result.writesAcknowledged} (${result.streamedAcknowledged} on Write streams), writes checked: ${result.writesChecked}, lost: ${result.lost}, torn commits: ${result.tornCommits}`,
    `  statuses seen: ${statuses}`,
    `  /healthz 503 while full: ${result.unhealthyWhileFull}/${result.faults.enospc ?? 0}; refused to start read-only: ${result.refusedReadOnly}/${result.faults.readonly ?? 0}; DATA_LOSS then accept-data-loss: ${result.dataLossRecovered}/${result.faults["corrupt-both"] ?? 0}; blobs quarantined: ${result.quarantined}`,
    `  partitions whose creation was tried while the disk was full: ${result.creationsWhileFull}, of which no longer open: ${result.brokenCreations}`,
    `  problems: ${result.problems.length === 0 ? "none" : result.problems.length}`,
  ].join("\n");
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const seed = testSeed();
  const cycles = Number(process.env.SOAK_CYCLES ?? 100);
  runCampaign({ cycles, seed, log: (line) => console.log(line) }).then(
    (result) => {
      console.log(summary(result, seed));
      for (const text of result.problems) console.log(`  - ${text}`);
      process.exitCode =
        result.lost === 0 && result.tornCommits === 0 && result.problems.length === 0 ? 0 : 1;
    },
    (err: unknown) => {
      console.error("fault campaign failed:", err);
      process.exitCode = 1;
    },
  );
}
