/**
 * Resource-limits benchmark (`npm run bench:limits [-- --quick]`): what hostile or careless clients
 * cost the server, measured on a server process started with its default limits.
 *
 * - Slow readers: 4,000 Keys streams with values (40 HTTP/2 connections x 100) on a 20 MiB
 *   partition, none of which ever reads. Reported: streams admitted and refused
 *   (RESOURCE_EXHAUSTED beyond --max-streams), the server's peak RSS, its stream buffer, and the
 *   latency of another client's durable Puts and Gets meanwhile (p50, p99, max). Targets: RSS <=
 *   512 MiB, Get p99 < 100 ms.
 * - Many partitions: 5,000 partitions created by one durable Put each. Reported: the server's open
 *   file descriptors, the partitions open, and the size and scrape time of /metrics.
 *
 * It prints figures; it is not a test. `--quick` uses 1,000 streams and 1,000 partitions. Every
 * load is bounded, the server listens on 127.0.0.1 only and is stopped at the end.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  KeysRequestSchema,
  MetadataService,
} from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { freePort } from "../support/ports.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const KEYS_PATH = `/${MetadataService.typeName}/${MetadataService.method.keys.name}`;
const quick = process.argv.includes("--quick");
const CONNECTIONS = quick ? 10 : 40;
const STREAMS_PER_CONNECTION = 100;
const PARTITIONS = quick ? 1000 : 5000;
const BIG_VALUE_BYTES = 4096;
const BIG_KEYS = 5120; // 20 MiB of values

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmRSS:"));
  return Number(/(\d+)/.exec(line ?? "")?.[1] ?? 0) / 1024;
}

function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? 0;
}

function summary(ms: number[]): string {
  const sorted = [...ms].sort((a, b) => a - b);
  return `p50 ${percentile(sorted, 0.5).toFixed(2)} ms, p99 ${percentile(sorted, 0.99).toFixed(2)} ms, max ${(sorted.at(-1) ?? 0).toFixed(2)} ms`;
}

async function metricValue(url: string, name: string): Promise<number> {
  const text = await (await fetch(url)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return Number(line?.split(" ")[1] ?? Number.NaN);
}

async function startServer(
  dataDir: string,
): Promise<{ child: ChildProcess; address: string; metricsUrl: string }> {
  const [port, metricsPort] = [await freePort(), await freePort()];
  const child = spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      join(ROOT, "server/main.ts"),
      "--data-dir",
      dataDir,
      "--listen",
      `127.0.0.1:${port}`,
      "--metrics-listen",
      `127.0.0.1:${metricsPort}`,
    ],
    { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] },
  );
  const metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    try {
      if ((await fetch(`http://127.0.0.1:${metricsPort}/healthz`)).ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline || child.exitCode !== null) throw new Error("the server did not start");
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, address: `127.0.0.1:${port}`, metricsUrl };
}

/** Opens one Keys stream that never reads; resolves "refused" or "open" from its first headers. */
function unreadKeys(session: http2.ClientHttp2Session): Promise<"open" | "refused" | "failed"> {
  const message = toBinary(
    KeysRequestSchema,
    create(KeysRequestSchema, { partition: "big", includeValues: true }),
  );
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  frame.set(message, 5);
  const stream = session.request({
    ":method": "POST",
    ":path": KEYS_PATH,
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.pause();
  stream.end(frame);
  return new Promise((resolveOutcome) => {
    stream.once("response", (headers) => {
      // A refused call answers with its status in the first (and only) headers.
      resolveOutcome(headers["grpc-status"] === "8" ? "refused" : "open");
    });
    stream.once("error", () => resolveOutcome("failed"));
  });
}

async function main(): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), "metadata-limits-bench-"));
  const server = await startServer(join(root, "data"));
  const pid = server.child.pid as number;
  const client = new MetadataClient(server.address);
  const sessions: http2.ClientHttp2Session[] = [];
  try {
    const value = new Uint8Array(BIG_VALUE_BYTES).fill(1);
    for (let batch = 0; batch < BIG_KEYS / 256; batch++) {
      await client.commit(
        Array.from({ length: 256 }, (_, i) => ({
          put: { key: Buffer.from(`key-${String(batch * 256 + i).padStart(6, "0")}`), value },
        })),
        [],
        { partition: "big" },
      );
    }
    const baseline = rssMiB(pid);
    console.log(
      `slow readers: ${CONNECTIONS * STREAMS_PER_CONNECTION} unread Keys streams on a ${(BIG_KEYS * BIG_VALUE_BYTES) / 2 ** 20} MiB partition`,
    );
    for (let c = 0; c < CONNECTIONS; c++) sessions.push(http2.connect(`http://${server.address}`));
    const outcomes = await Promise.all(
      sessions.flatMap((session) =>
        Array.from({ length: STREAMS_PER_CONNECTION }, () => unreadKeys(session)),
      ),
    );
    let peak = rssMiB(pid);
    const puts: number[] = [];
    const gets: number[] = [];
    const until = Date.now() + (quick ? 3000 : 8000);
    let i = 0;
    while (Date.now() < until) {
      const key = Buffer.from(`other-${i++ % 100}`);
      let t = performance.now();
      await client.put(key, Buffer.from("v"), { partition: "other", deadlineMs: 5000 });
      puts.push(performance.now() - t);
      t = performance.now();
      await client.get(key, { partition: "other", deadlineMs: 5000 });
      gets.push(performance.now() - t);
      if (i % 20 === 0) peak = Math.max(peak, rssMiB(pid));
    }
    peak = Math.max(peak, rssMiB(pid));
    const buffered = await metricValue(server.metricsUrl, "metadata_stream_buffered_bytes");
    const count = (what: string) => outcomes.filter((o) => o === what).length;
    console.log(
      `  streams admitted ${count("open")}, refused ${count("refused")}, failed ${count("failed")}`,
    );
    console.log(
      `  server RSS: ${baseline.toFixed(0)} MiB before, ${peak.toFixed(0)} MiB peak (target <= 512 MiB)`,
    );
    console.log(`  stream buffer in use: ${(buffered / 2 ** 20).toFixed(1)} MiB`);
    console.log(`  another client's durable Put: ${summary(puts)} (${puts.length} calls)`);
    console.log(`  another client's Get: ${summary(gets)} (target p99 < 100 ms)`);
    for (const session of sessions.splice(0)) session.destroy();

    console.log(`many partitions: ${PARTITIONS} partitions, one durable Put each`);
    let next = 0;
    await Promise.all(
      Array.from({ length: 32 }, async () => {
        while (next < PARTITIONS) {
          const n = next++;
          await client.put(Buffer.from("k"), Buffer.from("v"), { partition: `p${n}` });
        }
      }),
    );
    await new Promise((r) => setTimeout(r, 200));
    const started = performance.now();
    const text = await (await fetch(server.metricsUrl)).text();
    const scrapeMs = performance.now() - started;
    console.log(`  open file descriptors: ${openFds(pid)}`);
    console.log(
      `  /metrics: ${(text.length / 1024).toFixed(0)} KiB, ${text.split("\n").length} lines, scraped in ${scrapeMs.toFixed(0)} ms`,
    );
    console.log(`  server RSS: ${rssMiB(pid).toFixed(0)} MiB`);
  } finally {
    for (const session of sessions) session.destroy();
    client.close();
    server.child.kill("SIGTERM");
    await new Promise((r) => server.child.once("exit", r));
    await rm(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
