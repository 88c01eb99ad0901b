/**
 * End-to-end crash tests: the server runs as a child process on a real data directory and is
 * killed or stopped while many clients write to it.
 *
 * - "acknowledged writes survive SIGKILL under concurrent load": 48 writers on 8 connections do
 *   seeded Puts, Removes and Commit batches (with preconditions) on two partitions, one with
 *   variable-width keys and one with 8-byte keys and same-size values (so delta syncs run too).
 *   Each writer owns its keys and runs one call at a time, so every key has a single order of
 *   writes and at most one write in flight. The server is killed with SIGKILL at a seeded moment,
 *   restarted on the same directory, and for every key the recovered value must be the last
 *   acknowledged one, or the write that was in flight at the kill -- never an older value, never
 *   one that was not written; an in-flight Commit shows whole or not at all; no unknown key
 *   appears; the recovered version is at least every acknowledged version. Five rounds run on one
 *   directory, each continuing from the state the previous one recovered.
 *   Beside them, streamed writers each pipeline up to STREAM_WINDOW requests (puts, removes,
 *   commits whose preconditions hold, and commits whose preconditions fail on purpose) over one
 *   Write stream on keys of their own. A stream's requests are applied in the order sent and a
 *   sync commits everything applied before it, so after the restart a streamed writer's keys
 *   must hold the state after some prefix of its requests that contains every acknowledged one:
 *   every acknowledged request present, no request answered with a failure applied, nothing
 *   torn. Answers must be the expected ones (OK, or FAILED_PRECONDITION exactly where planned),
 *   with versions that never decrease in the order sent.
 * - "SIGTERM finishes in-flight calls, commits buffered writes and exits 0": buffered writes
 *   (with a flush interval of an hour, so only the shutdown can commit them) and durable load;
 *   SIGTERM; every call ends OK or UNAVAILABLE; exit status 0; after a restart every
 *   acknowledged write is there and every refused one is not.
 * - In-flight durable writes held back by `--batch-max-delay-ms` are committed and answered as
 *   soon as shutdown begins, not cancelled at the end of the grace period.
 * - SIGTERM while the recovery at start is still opening partitions ends it between two
 *   partitions and exits 0, and every partition serves its data after a restart.
 *
 * Set TEST_SEED to repeat a run; the seed is in every failure message.
 */
import assert from "node:assert/strict";
import { after, test } from "node:test";
import { status } from "@grpc/grpc-js";
import {
  type BatchMutation,
  type BatchPrecondition,
  Durability,
  MetadataClient,
} from "../../clients/ts/metadata-client.js";
import type { WriterPrecondition } from "../../clients/ts/metadata-writer.js";
import { openMetadata } from "../../server/store/metadata.js";
import { FilesystemStorage } from "../../server/store/storage/filesystem.js";
import { Rng, testSeed } from "../support/rng.js";
import { tempDir } from "../support/temp-dir.js";
import { ServerProcess } from "./server-process.js";

const SEED = testSeed();
const ROUNDS = 5;
const WRITERS = 48;
const CONNECTIONS = 8;
const KEYS_PER_WRITER = 6;
/** Upper bound of calls per writer and round, so a round ends by itself. */
const MAX_OPS_PER_WRITER = 3000;
/** Deadline of every call: nothing waits forever on a dead server. */
const CALL_DEADLINE_MS = 10_000;
/** Partition with variable-width keys and every kind of write. */
const VARIABLE = "crash-var";
/** Partition with 8-byte keys and values of one size: after the first writes, delta syncs. */
const FIXED = "crash-fixed";
const FIXED_VALUE_BYTES = 24;
const SERVER_FLAGS = ["--partition-key-codec", `${FIXED}=fixed:8`];
/** Streamed writers, each with one Write stream on keys of its own in VARIABLE. */
const STREAM_WRITERS = 4;
const STREAM_KEYS = 8;
/** Requests a streamed writer keeps in flight. */
const STREAM_WINDOW = 32;
/** Upper bound of requests per streamed writer and round. */
const MAX_STREAM_OPS = 20_000;

/** Servers and directories to clean up whatever happens. */
const cleanups: (() => Promise<void>)[] = [];
/** Every client made, closed in `after` too, so that a failed assertion leaves no channel open. */
const clientsMade: MetadataClient[] = [];
after(async () => {
  for (const client of clientsMade) client.close();
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** A client of `address`; `connection` > 0 gives it a connection of its own. */
function newClient(address: string, connection = 0): MetadataClient {
  const client = new MetadataClient(
    address,
    connection === 0
      ? {}
      : {
          // grpc-js shares one connection per address between clients unless told otherwise.
          channelOptions: {
            "grpc.use_local_subchannel_pool": 1,
            "grpc.primary_user_agent": `crash-${connection}`,
          },
        },
  );
  clientsMade.push(client);
  return client;
}

async function startServer(dataDir: string, flags: string[] = []): Promise<ServerProcess> {
  const server = await ServerProcess.start({ dataDir, flags: [...SERVER_FLAGS, ...flags] });
  cleanups.push(() => server.stop());
  return server;
}

/** `count` clients, each on a connection of its own. */
function connect(address: string, count: number): MetadataClient[] {
  return Array.from({ length: count }, (_, i) => newClient(address, i + 1));
}

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

/** Readable form of a value (hex) or of absence. */
function show(value: string | null | undefined): string {
  if (value === undefined) return "(none)";
  if (value === null) return "(absent)";
  return value.length > 40 ? `${value.slice(0, 40)}..` : value;
}

function errorText(err: unknown): string {
  if (typeof err === "object" && err !== null && "code" in err) {
    const e = err as { code: number; details?: string };
    return `${status[e.code] ?? e.code}: ${e.details ?? ""}`;
  }
  return String(err);
}

/** Everything the test knows about one key. Values are hex; null means absent. */
interface KeyModel {
  partition: string;
  key: Buffer;
  id: string;
  /** State after the last acknowledged write (or as recovered at the start of the round). */
  acked: string | null;
  /** Every state acknowledged for this key since the test began, oldest first. */
  history: { value: string | null; version: bigint }[];
  /** The write in flight, if any: its resulting state and the operation it belongs to. */
  pending: { value: string | null; op: number } | undefined;
}

/** One writer: its keys, its partition, its last acknowledged version. */
interface Writer {
  index: number;
  partition: string;
  keys: KeyModel[];
  lastVersion: bigint;
}

/** Statistics of one round. */
interface RoundStats {
  ackedOps: number;
  ackedWrites: number;
  failedAfterKill: number;
  unackedKeys: number;
  unackedOpsApplied: number;
  keysPresent: number;
  overwriteSyncs: number;
  recoveredVersions: Record<string, string>;
  /** Streamed requests sent, answered OK, and applied after the restart (the prefix). */
  streamedSent: number;
  streamedAcked: number;
  streamedApplied: number;
}

function writerKey(writer: number, index: number, partition: string): Buffer {
  if (partition === FIXED) {
    const key = Buffer.alloc(8);
    key.writeBigUInt64BE(BigInt(writer * 1000 + index));
    return key;
  }
  // Text keys for half the writers, binary ones (with 0x00 and 0xff) for the others.
  return writer % 4 === 0
    ? Buffer.from([0x00, writer, 0xff, index])
    : Buffer.from(`w${String(writer).padStart(2, "0")}/k${index}`);
}

/** A value unique to (round, writer, op, mutation): a write can never be mistaken for another. */
function valueFor(rng: Rng, partition: string, round: number, writer: number, op: number, m: number): Buffer {
  const tag = Buffer.from(`r${round}w${writer}o${op}m${m}:`);
  if (partition === FIXED) {
    const value = Buffer.alloc(FIXED_VALUE_BYTES);
    tag.copy(value);
    rng.bytes(FIXED_VALUE_BYTES - tag.length).copy(value, tag.length);
    return value;
  }
  // Mostly small values, sometimes a few KB so that some syncs take longer.
  const size = rng.chance(0.05) ? 1024 + rng.int(4096) : rng.int(64);
  return Buffer.concat([tag, rng.bytes(size)]);
}

/** One planned call: the mutations (key -> resulting state) and how to send it. */
interface PlannedOp {
  mutations: { key: KeyModel; value: Buffer | null }[];
  send(client: MetadataClient): Promise<bigint>;
}

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[rng.int(items.length)] as T;
}

/** Distinct items of `items`, `count` of them, in seeded order. */
function pickDistinct<T>(rng: Rng, items: readonly T[], count: number): T[] {
  const pool = [...items];
  const out: T[] = [];
  while (out.length < count && pool.length > 0) out.push(pool.splice(rng.int(pool.length), 1)[0] as T);
  return out;
}

/** Precondition matching what `key` holds now (its acknowledged state; nothing else is in flight). */
function conditionOn(rng: Rng, key: KeyModel): BatchPrecondition {
  if (key.acked === null) return { key: key.key, absent: true };
  return rng.chance(0.5)
    ? { key: key.key, valueEquals: Buffer.from(key.acked, "hex") }
    : { key: key.key, present: true };
}

function planOp(rng: Rng, writer: Writer, round: number, op: number): PlannedOp {
  const partition = writer.partition;
  const options = { partition, deadlineMs: CALL_DEADLINE_MS };
  const roll = rng.next();
  const removes = partition !== FIXED;
  if (roll < 0.55 || (!removes && roll < 0.75)) {
    const key = pick(rng, writer.keys);
    const value = valueFor(rng, partition, round, writer.index, op, 0);
    return {
      mutations: [{ key, value }],
      send: async (client) => (await client.put(key.key, value, options)).version,
    };
  }
  if (roll < 0.75) {
    const key = pick(rng, writer.keys);
    return {
      mutations: [{ key, value: null }],
      send: async (client) => (await client.remove(key.key, options)).version,
    };
  }
  const keys = pickDistinct(rng, writer.keys, 2 + rng.int(3));
  const mutations = keys.map((key, m) => ({
    key,
    value: removes && rng.chance(0.3) ? null : valueFor(rng, partition, round, writer.index, op, m),
  }));
  const batch: BatchMutation[] = mutations.map(({ key, value }) =>
    value === null ? { remove: { key: key.key } } : { put: { key: key.key, value } },
  );
  const preconditions = rng.chance(0.5)
    ? keys.filter(() => rng.chance(0.5)).map((k) => conditionOn(rng, k))
    : [];
  return {
    mutations,
    send: async (client) => (await client.commit(batch, preconditions, options)).version,
  };
}

/** Text of /metrics of a server, or "" if it cannot be read. */
async function metricsText(server: ServerProcess): Promise<string> {
  try {
    const response = await fetch(`http://127.0.0.1:${server.metricsPort}/metrics`);
    return await response.text();
  } catch {
    return "";
  }
}

function metric(text: string, name: string, partition: string): number {
  const prefix = `${name}{partition="${partition}"} `;
  const row = text.split("\n").find((line) => line.startsWith(prefix));
  return row === undefined ? 0 : Number(row.slice(prefix.length));
}

/** Every committed entry of `partition`, as hex key -> hex value, and the version read. */
async function readAll(
  client: MetadataClient,
  partition: string,
): Promise<{ entries: Map<string, string>; version: bigint }> {
  const entries = new Map<string, string>();
  for await (const { key, value } of client.keys({ partition, includeValues: true })) {
    entries.set(hex(key), hex(value ?? new Uint8Array()));
  }
  // The committed version of the partition (an 8-byte key is valid in both partitions).
  const { version } = await client.getWithVersion(Buffer.alloc(8, 0xee), { partition });
  return { entries, version };
}

/**
 * Checks the recovered state against the model (see the module comment), then makes the
 * recovered state the acknowledged one for the next round. Returns what it saw.
 */
async function checkRecovered(
  client: MetadataClient,
  keys: KeyModel[],
  maxAckedVersion: ReadonlyMap<string, bigint>,
  context: string,
  streamed: ReadonlySet<string> = new Set(),
): Promise<{
  present: number;
  inFlight: number;
  applied: number;
  versions: Record<string, string>;
  recovered: Map<string, string>;
}> {
  const recovered = new Map<string, string>();
  const versions: Record<string, string> = {};
  for (const partition of [VARIABLE, FIXED]) {
    const { entries, version } = await readAll(client, partition);
    versions[partition] = String(version);
    for (const [key, value] of entries) recovered.set(`${partition}/${key}`, value);
    const acked = maxAckedVersion.get(partition) ?? 0n;
    assert.ok(
      version >= acked,
      `${context}: partition ${partition} recovered version ${version} < acknowledged version ${acked}`,
    );
  }
  const known = new Set([...keys.map((k) => k.id), ...streamed]);
  for (const id of recovered.keys()) assert.ok(known.has(id), `${context}: key ${id} was never written`);

  const applied = new Map<number, { yes: string[]; no: string[] }>();
  let inFlight = 0;
  for (const key of keys) {
    const actual = recovered.get(key.id) ?? null;
    // A Get must agree with the listing.
    const got = await client.get(key.key, { partition: key.partition });
    assert.equal(got === undefined ? null : hex(got), actual, `${context}: Get and Keys differ on ${key.id}`);
    const pending = key.pending;
    if (pending !== undefined) inFlight++;
    if (actual === key.acked) {
      if (pending !== undefined && pending.value !== key.acked) {
        const seen = applied.get(pending.op) ?? { yes: [], no: [] };
        seen.no.push(key.id);
        applied.set(pending.op, seen);
      }
      continue;
    }
    if (pending !== undefined && actual === pending.value) {
      const seen = applied.get(pending.op) ?? { yes: [], no: [] };
      seen.yes.push(key.id);
      applied.set(pending.op, seen);
      continue;
    }
    const older = key.history.findIndex((h) => h.value === actual);
    const what =
      older >= 0
        ? `an older acknowledged state (#${older} of ${key.history.length}, version ${key.history[older]?.version})`
        : "a state never written";
    assert.fail(
      `${context}: key ${key.id} recovered ${show(actual)}, ${what}; last acknowledged ${show(key.acked)}` +
        `, in flight ${show(pending?.value)}`,
    );
  }
  let appliedOps = 0;
  for (const [op, seen] of applied) {
    assert.ok(
      seen.yes.length === 0 || seen.no.length === 0,
      `${context}: in-flight op ${op} torn: applied on ${seen.yes.join(",")} but not on ${seen.no.join(",")}`,
    );
    if (seen.yes.length > 0) appliedOps++;
  }
  for (const key of keys) {
    key.acked = recovered.get(key.id) ?? null;
    key.pending = undefined;
  }
  return { present: recovered.size, inFlight, applied: appliedOps, versions, recovered };
}

/** One request of a streamed writer: its mutations (null: remove) and whether it must apply. */
interface StreamRequest {
  mutations: { id: string; value: string | null }[];
  applies: boolean;
}

/** A streamed writer (see the module comment): its keys and what it sent in this round. */
interface StreamWriter {
  index: number;
  keys: { id: string; key: Buffer }[];
  /** State of its keys at the start of the round (hex; null: absent), by id. */
  base: Map<string, string | null>;
  /** Requests sent this round, in order. */
  sent: StreamRequest[];
  /** Version of each acknowledged request, by its index in `sent`. */
  acked: Map<number, bigint>;
}

/**
 * Runs one streamed writer until its stream fails (the kill) or its ops run out: plans each
 * request from the state its earlier requests leave (they apply in order), keeps STREAM_WINDOW
 * in flight, and records the answers. Answers other than the planned ones go to `unexpected`.
 */
async function runStreamWriter(
  client: MetadataClient,
  stream: StreamWriter,
  rng: Rng,
  round: number,
  isKilled: () => boolean,
  unexpected: string[],
): Promise<void> {
  const writer = client.writer({ partition: VARIABLE, window: STREAM_WINDOW, deadlineMs: 60_000 });
  const state = new Map(stream.base);
  let inFlight = 0;
  let slotFreed: (() => void) | undefined;
  let failed = false;
  const answered = (index: number, request: StreamRequest) => ({
    ok: (version: bigint) => {
      stream.acked.set(index, version);
      if (!request.applies) unexpected.push(`stream ${stream.index} request ${index}: OK, planned to fail`);
    },
    err: (err: unknown) => {
      const code = (err as { code?: number }).code;
      if (!request.applies && code === status.FAILED_PRECONDITION) return;
      failed = true;
      if (!isKilled()) unexpected.push(`stream ${stream.index} request ${index}: ${errorText(err)}`);
    },
  });
  for (let op = 0; op < MAX_STREAM_OPS && !failed && !writer.streamEnded; op++) {
    while (inFlight >= STREAM_WINDOW) {
      await new Promise<void>((resolve) => {
        slotFreed = resolve;
      });
    }
    if (failed || writer.streamEnded) break;
    const tag = (m: number) => Buffer.from(`s${stream.index}r${round}o${op}m${m}:${hex(rng.bytes(4))}`);
    const roll = rng.next();
    const index = stream.sent.length;
    let answer: Promise<bigint>;
    let request: StreamRequest;
    if (roll < 0.5) {
      const key = pick(rng, stream.keys);
      const value = tag(0);
      request = { mutations: [{ id: key.id, value: hex(value) }], applies: true };
      answer = writer.put(key.key, value).then((r) => r.version);
    } else if (roll < 0.65) {
      const key = pick(rng, stream.keys);
      request = { mutations: [{ id: key.id, value: null }], applies: true };
      answer = writer.remove(key.key).then((r) => r.version);
    } else {
      // A batch with a precondition on its first key: true as planned, or false on purpose.
      const keys = pickDistinct(rng, stream.keys, 2 + rng.int(2));
      const values = keys.map((_, m) => (rng.chance(0.25) ? null : tag(m)));
      const first = keys[0] as (typeof keys)[number];
      const now = state.get(first.id) ?? null;
      const holds = roll < 0.9;
      let condition: WriterPrecondition;
      if (now === null)
        condition = holds ? { key: first.key, absent: true } : { key: first.key, present: true };
      else if (holds) condition = { key: first.key, valueEquals: Buffer.from(now, "hex") };
      else condition = { key: first.key, absent: true };
      request = {
        mutations: keys.map((key, m) => {
          const value = values[m];
          return { id: key.id, value: value === null || value === undefined ? null : hex(value) };
        }),
        applies: holds,
      };
      answer = writer
        .commit(
          keys.map((key, m) => {
            const value = values[m];
            return value === null || value === undefined
              ? { remove: { key: key.key } }
              : { put: { key: key.key, value } };
          }),
          [condition],
        )
        .then((r) => r.version);
    }
    stream.sent.push(request);
    if (request.applies) for (const { id, value } of request.mutations) state.set(id, value);
    inFlight++;
    const settle = answered(index, request);
    void answer.then(settle.ok, settle.err).finally(() => {
      inFlight--;
      slotFreed?.();
      slotFreed = undefined;
    });
  }
  await writer.close().catch(() => undefined);
}

/**
 * Checks a streamed writer's keys after the restart: they must hold the state after a prefix of
 * its requests that contains every acknowledged one. Then makes the recovered state its base.
 */
function checkStreamRecovered(
  stream: StreamWriter,
  recovered: ReadonlyMap<string, string>,
  context: string,
): number {
  const actual = new Map(stream.keys.map((k) => [k.id, recovered.get(k.id) ?? null]));
  let lastAcked = -1;
  let previous: { index: number; version: bigint } | undefined;
  for (const index of [...stream.acked.keys()].sort((a, b) => a - b)) {
    const version = stream.acked.get(index) as bigint;
    if (stream.sent[index]?.applies) lastAcked = index;
    assert.ok(
      previous === undefined || version >= previous.version,
      `${context}: stream ${stream.index} request ${index} at version ${version} after request ` +
        `${previous?.index} at ${previous?.version}`,
    );
    previous = { index, version };
  }
  const model = new Map(stream.base);
  const matches = () => [...actual].every(([id, value]) => (model.get(id) ?? null) === value);
  let prefix = -1;
  for (let i = 0; i < stream.sent.length; i++) {
    if (i > lastAcked && matches()) {
      prefix = i;
      break;
    }
    const request = stream.sent[i] as StreamRequest;
    if (request.applies) for (const { id, value } of request.mutations) model.set(id, value);
  }
  if (prefix === -1 && matches()) prefix = stream.sent.length;
  assert.ok(
    prefix !== -1,
    `${context}: stream ${stream.index}: recovered ${JSON.stringify([...actual].map(([id, v]) => [id, show(v)]))} ` +
      `is the state after no prefix of its ${stream.sent.length} requests holding the ${lastAcked + 1} first ` +
      `(every acknowledged one)`,
  );
  stream.base = actual;
  stream.sent = [];
  stream.acked = new Map();
  return prefix;
}

test("acknowledged writes survive SIGKILL under concurrent load", { timeout: 90_000 }, async (t) => {
  const started = Date.now();
  const dir = await tempDir("metadata-e2e-crash-");
  cleanups.push(() => dir.remove());
  const rng = new Rng(SEED);

  const writers: Writer[] = Array.from({ length: WRITERS }, (_, index) => {
    const partition = index % 3 === 2 ? FIXED : VARIABLE;
    const keys = Array.from({ length: KEYS_PER_WRITER }, (_, k): KeyModel => {
      const key = writerKey(index, k, partition);
      return { partition, key, id: `${partition}/${hex(key)}`, acked: null, history: [], pending: undefined };
    });
    return { index, partition, keys, lastVersion: 0n };
  });
  const allKeys = writers.flatMap((w) => w.keys);
  const streams: StreamWriter[] = Array.from({ length: STREAM_WRITERS }, (_, index) => {
    const keys = Array.from({ length: STREAM_KEYS }, (_, k) => {
      const key = Buffer.from(`s${index}/k${k}`);
      return { id: `${VARIABLE}/${hex(key)}`, key };
    });
    return { index, keys, base: new Map(keys.map((k) => [k.id, null])), sent: [], acked: new Map() };
  });
  const streamedIds = new Set(streams.flatMap((s) => s.keys.map((k) => k.id)));
  const maxAckedVersion = new Map<string, bigint>();
  let totalChecked = 0;
  const rounds: RoundStats[] = [];

  let server = await startServer(dir.path);
  for (let round = 1; round <= ROUNDS; round++) {
    const context = `seed ${SEED}, round ${round}`;
    const clients = connect(server.address, CONNECTIONS);
    let killed = false;
    let ackedOps = 0;
    let ackedWrites = 0;
    let nextOp = 0;
    const unexpected: string[] = [];
    let failedAfterKill = 0;
    let progress: (() => void) | undefined;

    const runWriter = async (writer: Writer): Promise<void> => {
      const writerRng = new Rng(SEED ^ (round * 7919 + writer.index * 104729));
      const client = clients[writer.index % CONNECTIONS] as MetadataClient;
      // A writer goes on until a call fails (the server is gone) or its ops run out: stopping
      // at the kill instead would let a whole group commit's answers end every writer cleanly.
      for (let i = 0; i < MAX_OPS_PER_WRITER; i++) {
        const op = planOp(writerRng, writer, round, i);
        const id = nextOp++;
        for (const { key, value } of op.mutations) {
          key.pending = { value: value === null ? null : hex(value), op: id };
        }
        let version: bigint;
        try {
          version = await op.send(client);
        } catch (err) {
          // Outcome unknown: the write stays in flight for the check.
          if (killed) failedAfterKill++;
          else unexpected.push(`writer ${writer.index} op ${i}: ${errorText(err)}`);
          return;
        }
        if (version <= writer.lastVersion) {
          unexpected.push(
            `writer ${writer.index} op ${i}: version ${version} <= its previous ${writer.lastVersion}`,
          );
        }
        writer.lastVersion = version;
        if (version > (maxAckedVersion.get(writer.partition) ?? 0n)) {
          maxAckedVersion.set(writer.partition, version);
        }
        for (const { key, value } of op.mutations) {
          const state = value === null ? null : hex(value);
          key.acked = state;
          key.history.push({ value: state, version });
          key.pending = undefined;
        }
        ackedOps++;
        ackedWrites += op.mutations.length;
        progress?.();
      }
    };

    const load = Promise.all([
      ...writers.map((w) => runWriter(w)),
      ...streams.map((stream) =>
        runStreamWriter(
          clients[stream.index % CONNECTIONS] as MetadataClient,
          stream,
          new Rng(SEED ^ (round * 6151 + stream.index * 15_485_863)),
          round,
          () => killed,
          unexpected,
        ),
      ),
    ]);
    // Kill at a seeded moment once the load is going: after some acknowledged writes, plus a
    // seeded delay during which writes keep being acknowledged and in flight.
    const minAcked = 200 + rng.int(800);
    const delayMs = rng.int(2500);
    await Promise.race([
      new Promise<void>((resolve) => {
        progress = () => {
          if (ackedOps >= minAcked) resolve();
        };
      }),
      load,
    ]);
    progress = undefined;
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    const overwriteSyncs = metric(await metricsText(server), "metadata_sync_overwrites_total", FIXED);
    killed = true;
    const exit = await server.kill("SIGKILL");
    assert.equal(exit.signal, "SIGKILL", `${context}: server was not killed\n${server.output()}`);
    await load;
    for (const client of clients) client.close();
    assert.deepEqual(unexpected, [], `${context}: calls failed before the kill\n${server.output()}`);
    const unackedKeys = allKeys.filter((k) => k.pending !== undefined).length;
    const streamedSent = streams.reduce((n, s) => n + s.sent.length, 0);
    const streamedAcked = streams.reduce((n, s) => n + s.acked.size, 0);

    server = await startServer(dir.path);
    const checker = newClient(server.address);
    try {
      const seen = await checkRecovered(checker, allKeys, maxAckedVersion, context, streamedIds);
      const streamedApplied = streams.reduce(
        (n, stream) => n + checkStreamRecovered(stream, seen.recovered, context),
        0,
      );
      rounds.push({
        ackedOps,
        ackedWrites,
        failedAfterKill,
        unackedKeys,
        unackedOpsApplied: seen.applied,
        keysPresent: seen.present,
        overwriteSyncs,
        recoveredVersions: seen.versions,
        streamedSent,
        streamedAcked,
        streamedApplied,
      });
      totalChecked += ackedWrites;
    } finally {
      checker.close();
    }
    t.diagnostic(`round ${round}: ${JSON.stringify(rounds.at(-1))}`);
    assert.ok(ackedWrites >= minAcked, `${context}: only ${ackedWrites} writes acknowledged before the kill`);
    assert.ok(streamedAcked > 0, `${context}: no streamed request acknowledged before the kill`);
  }
  await server.stop();
  t.diagnostic(
    `seed ${SEED}: ${ROUNDS} rounds, ${totalChecked} acknowledged writes checked in ${Date.now() - started} ms`,
  );
  // The fixed-size partition must have run delta syncs, so the crash hit them too.
  assert.ok(
    rounds.some((r) => r.overwriteSyncs > 0),
    `seed ${SEED}: no delta (overwrite) sync ran in partition ${FIXED}`,
  );
});

test("SIGTERM finishes in-flight calls, commits buffered writes and exits 0", {
  timeout: 60_000,
}, async (t) => {
  const dir = await tempDir("metadata-e2e-term-");
  cleanups.push(() => dir.remove());
  const rng = new Rng(SEED + 1);
  // A flush interval of an hour: only the shutdown can commit the buffered writes.
  let server = await startServer(dir.path, ["--flush-interval-ms", "3600000"]);
  const context = `seed ${SEED}`;
  const client = newClient(server.address);
  const expected = new Map<string, string | null>();
  const buffered = { durability: Durability.BUFFERED, partition: VARIABLE };
  let bufferedMutations = 0;

  // Durable first, then buffered puts, removes of durable keys and a buffered batch.
  for (let i = 0; i < 20; i++) {
    const value = rng.bytes(8 + rng.int(16));
    await client.put(Buffer.from(`durable-${i}`), value, { partition: VARIABLE });
    expected.set(`durable-${i}`, hex(value));
  }
  for (let i = 0; i < 200; i++) {
    const value = rng.bytes(1 + rng.int(100));
    const response = await client.put(Buffer.from(`buffered-${i}`), value, buffered);
    bufferedMutations++;
    assert.equal(response.version, 0n, "a buffered put answers with version 0");
    expected.set(`buffered-${i}`, hex(value));
  }
  for (let i = 0; i < 20; i += 2) {
    await client.remove(Buffer.from(`durable-${i}`), buffered);
    bufferedMutations++;
    expected.set(`durable-${i}`, null);
  }
  await client.commit(
    [
      { put: { key: Buffer.from("batch-a"), value: Buffer.from("A") } },
      { remove: { key: Buffer.from("durable-1") } },
    ],
    [{ key: Buffer.from("durable-1"), present: true }],
    buffered,
  );
  bufferedMutations += 2;
  expected.set("batch-a", hex(Buffer.from("A")));
  expected.set("durable-1", null);
  // Still pending: reads see only committed state.
  assert.equal(await client.get(Buffer.from("buffered-0"), { partition: VARIABLE }), undefined);

  // Durable load from 32 writers on 4 connections; SIGTERM once it is going.
  const clients = connect(server.address, 4);
  let signalled = false;
  let acked = 0;
  let okAfterSignal = 0;
  const refused: string[] = [];
  const unexpected: string[] = [];
  let progress: (() => void) | undefined;
  const writer = async (w: number): Promise<void> => {
    const c = clients[w % clients.length] as MetadataClient;
    for (let i = 0; i < 2000; i++) {
      const key = `load-${w}-${i % 4}`;
      const value = Buffer.from(`w${w}i${i}`);
      const wasSignalled = signalled;
      try {
        await c.put(Buffer.from(key), value, { partition: VARIABLE, deadlineMs: CALL_DEADLINE_MS });
      } catch (err) {
        const code = (err as { code?: number }).code;
        if (signalled && code === status.UNAVAILABLE) refused.push(key);
        else unexpected.push(`${key}: ${errorText(err)}`);
        return;
      }
      expected.set(key, hex(value));
      acked++;
      if (signalled && !wasSignalled) okAfterSignal++;
      progress?.();
    }
  };
  const load = Promise.all(Array.from({ length: 32 }, (_, w) => writer(w)));
  await Promise.race([
    new Promise<void>((resolve) => {
      progress = () => {
        if (acked >= 200) resolve();
      };
    }),
    load,
  ]);
  progress = undefined;
  signalled = true;
  server.signal("SIGTERM");
  await load;
  const exit = await server.exited;
  for (const c of clients) c.close();
  client.close();
  assert.deepEqual(exit, { code: 0, signal: null }, `${context}: exit after SIGTERM\n${server.output()}`);
  assert.match(server.stdoutText, /SIGTERM: finishing in-flight calls/);
  assert.match(server.stdoutText, /\nstopped\n/);
  assert.deepEqual(unexpected, [], `${context}: calls failed other than UNAVAILABLE\n${server.output()}`);
  assert.ok(okAfterSignal > 0, `${context}: no call in flight at SIGTERM was answered OK`);
  t.diagnostic(
    `seed ${SEED}: ${bufferedMutations} buffered mutations; ${acked} durable puts acknowledged under ` +
      `load, ${okAfterSignal} of them answered after SIGTERM; ${refused.length} refused (UNAVAILABLE)`,
  );

  server = await startServer(dir.path);
  const checker = newClient(server.address);
  try {
    const { entries } = await readAll(checker, VARIABLE);
    for (const [key, value] of expected) {
      assert.equal(entries.get(hex(Buffer.from(key))) ?? null, value, `${context}: key ${key} after restart`);
    }
    // A write refused with UNAVAILABLE was not committed: its key holds the last acknowledged value.
    assert.equal(entries.size, [...expected.values()].filter((v) => v !== null).length);
  } finally {
    checker.close();
    await server.stop();
  }
});

test("SIGTERM answers in-flight durable writes at once even with --batch-max-delay-ms", {
  timeout: 30_000,
}, async () => {
  const dir = await tempDir("metadata-e2e-delay-");
  cleanups.push(() => dir.remove());
  const server = await startServer(dir.path, [
    "--batch-max-delay-ms",
    "30000",
    "--shutdown-grace-ms",
    "3000",
  ]);
  const client = newClient(server.address);
  try {
    const calls = Array.from({ length: 5 }, (_, i) =>
      client.put(Buffer.from(`k${i}`), Buffer.from(`v${i}`), { partition: VARIABLE }).then(
        (response) => `ok ${response.version > 0n}`,
        (err: unknown) => errorText(err),
      ),
    );
    // Wait until the server has applied all five (the keys gauge counts live keys).
    const deadline = Date.now() + 10_000;
    while (metric(await metricsText(server), "metadata_keys", VARIABLE) < 5) {
      assert.ok(Date.now() < deadline, `puts never applied\n${server.output()}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    const signalledAt = Date.now();
    server.signal("SIGTERM");
    const answers = await Promise.all(calls);
    const elapsedMs = Date.now() - signalledAt;
    assert.deepEqual(answers, Array(5).fill("ok true"), `answers after ${elapsedMs} ms`);
    assert.ok(elapsedMs < 2000, `in-flight writes answered ${elapsedMs} ms after SIGTERM`);
    assert.deepEqual(await server.exited, { code: 0, signal: null });
  } finally {
    client.close();
    await server.stop();
  }
});

test("SIGTERM during the recovery at start stops it, exits 0 and loses nothing", {
  timeout: 120_000,
}, async () => {
  const dir = await tempDir("metadata-e2e-recovery-");
  cleanups.push(() => dir.remove());
  // Enough partitions that their recovery at start outlasts the start (about 2 ms each here).
  const count = 1500;
  const storage = new FilesystemStorage(dir.path);
  for (let p = 0; p < count; p++) {
    const store = await openMetadata(storage, { partition: `p${p}` });
    store.put(Buffer.from("k"), Buffer.from(`value ${p}`));
    await store.sync();
    await store.close();
  }
  const server = await startServer(dir.path);
  const exit = await server.kill("SIGTERM");
  assert.deepEqual(exit, { code: 0, signal: null }, server.output());
  const summary =
    /recovery at start: (\d+) partition\(s\) checked in \d+ ms: (\d+) opened(, stopped by shutdown)?/.exec(
      server.stdoutText,
    );
  assert.ok(summary !== null, `no recovery summary in:\n${server.output()}`);
  assert.equal(summary[1], String(count));
  assert.ok(summary[3] !== undefined, `the recovery was not stopped: ${summary[0]}\n${server.output()}`);
  assert.ok(Number(summary[2]) < count, summary[0]);

  const restarted = await startServer(dir.path, ["--recover-at-start", "off"]);
  const client = newClient(restarted.address);
  try {
    for (const p of [0, 1, Math.floor(count / 2), count - 1]) {
      const value = await client.get(Buffer.from("k"), { partition: `p${p}` });
      assert.equal(Buffer.from(value ?? []).toString(), `value ${p}`);
    }
  } finally {
    client.close();
    await restarted.stop();
  }
});
