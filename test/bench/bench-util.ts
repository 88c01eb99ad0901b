/**
 * Bench utilities: timing, sample policies, summaries, ratio verdicts and aligned tables shared
 * by the `npm run bench:*` scripts. Nothing here measures anything by itself.
 *
 * How to read the figures these helpers produce:
 * - Every time is wall-clock microseconds from `process.hrtime.bigint()`.
 * - `summarize` reports the median (mean of the two middle samples when the count is even) and
 *   the nearest-rank p90 (the sample at rank ceil(0.9 n)), the same definitions as the Rust
 *   driver in test/interop/rust, so its figures and ours compare cell by cell.
 * - A ratio is ours / reference: below 1 we are faster, above 1 slower.
 *
 * Usage:
 *   const samples = await collect({ budgetMs: 3000, min: 10, max: 300, warmup: 2 }, async () => {
 *     await setUp();
 *     return timeUs(() => operation());
 *   });
 *   console.log(formatTable([{ header: "median", align: "right" }], [[formatUs(summarize(samples).medianUs)]]));
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { statfs } from "node:fs/promises";
import { cpus, loadavg, platform, release, totalmem } from "node:os";
import { resolve } from "node:path";

/** Current time in microseconds (monotonic, fractional). */
export function nowUs(): number {
  return Number(process.hrtime.bigint()) / 1000;
}

/** Runs `operation` once and resolves with its wall-clock duration in microseconds. */
export async function timeUs(operation: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await operation();
  return Number(process.hrtime.bigint() - start) / 1000;
}

/**
 * When to stop sampling: once `budgetMs` of wall time (setup and warm-up included) is spent and
 * at least `min` samples were kept, or as soon as `max` samples were kept. The first `warmup`
 * iterations run in full but their samples are dropped.
 */
export interface SamplePolicy {
  budgetMs: number;
  min: number;
  max: number;
  warmup: number;
}

/**
 * Calls `iteration` until `policy` says stop and resolves with the kept samples. `iteration`
 * does its own setup and teardown and resolves with the duration of the part it timed, in
 * microseconds; its index (warm-up iterations included) is passed in.
 */
export async function collect(
  policy: SamplePolicy,
  iteration: (index: number) => Promise<number>,
): Promise<number[]> {
  const started = nowUs();
  const samples: number[] = [];
  for (let index = 0; ; index++) {
    const elapsed = await iteration(index);
    if (index >= policy.warmup) samples.push(elapsed);
    const kept = samples.length;
    if (kept >= policy.max) break;
    if (kept >= policy.min && nowUs() - started >= policy.budgetMs * 1000) break;
  }
  return samples;
}

/** Summary of a list of durations, in microseconds. */
export interface Summary {
  medianUs: number;
  p90Us: number;
  meanUs: number;
  minUs: number;
  maxUs: number;
  iterations: number;
}

/**
 * Median, nearest-rank p90, mean, min and max of `samplesUs` (microseconds).
 * @throws Error when there are no samples
 */
export function summarize(samplesUs: readonly number[]): Summary {
  const sorted = [...samplesUs].sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) throw new Error("summarize: no samples");
  const at = (i: number): number => sorted[i] as number;
  const median = n % 2 === 1 ? at((n - 1) / 2) : (at(n / 2 - 1) + at(n / 2)) / 2;
  const p90 = at(Math.max(Math.ceil((n * 9) / 10), 1) - 1);
  const mean = sorted.reduce((sum, x) => sum + x, 0) / n;
  return { medianUs: median, p90Us: p90, meanUs: mean, minUs: at(0), maxUs: at(n - 1), iterations: n };
}

/** Rounds to one decimal place (for JSON output). */
export function round1(x: number): number {
  return Math.round(x * 10) / 10;
}

/** `summary` with every time rounded to 0.1 us, for JSON output. */
export function roundSummary(summary: Summary): Summary {
  return {
    medianUs: round1(summary.medianUs),
    p90Us: round1(summary.p90Us),
    meanUs: round1(summary.meanUs),
    minUs: round1(summary.minUs),
    maxUs: round1(summary.maxUs),
    iterations: summary.iterations,
  };
}

/** A duration for humans: "850.3 us", "12.41 ms", "1.234 s". */
export function formatUs(us: number): string {
  if (us < 1000) return `${us.toFixed(1)} us`;
  if (us < 1_000_000) return `${(us / 1000).toFixed(2)} ms`;
  return `${(us / 1_000_000).toFixed(3)} s`;
}

/** A ratio for humans: "1.23x"; "-" when undefined. */
export function formatRatio(ratio: number | undefined): string {
  return ratio === undefined ? "-" : `${ratio.toFixed(2)}x`;
}

/** An integer with thousands separators: "10,000". */
export function formatCount(n: number): string {
  return n.toLocaleString("en-US");
}

/** ours / reference, or undefined when the reference figure is missing or not positive. */
export function ratioOf(ours: number, reference: number | undefined): number | undefined {
  return reference === undefined || !(reference > 0) ? undefined : ours / reference;
}

/** "PASS" when `ratio` <= `limit`, "MISS" above it, "-" when there is no ratio. */
export function verdict(ratio: number | undefined, limit: number): "PASS" | "MISS" | "-" {
  if (ratio === undefined) return "-";
  return ratio <= limit ? "PASS" : "MISS";
}

/** One column of `formatTable`. */
export interface Column {
  header: string;
  /** Default "left"; use "right" for numbers. */
  align?: "left" | "right";
}

/**
 * An aligned plain-text table: a header row, a rule, then the rows, columns separated by two
 * spaces. Rows shorter than `columns` are padded with empty cells.
 */
export function formatTable(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  const widths = columns.map((column, i) =>
    Math.max(column.header.length, ...rows.map((row) => (row[i] ?? "").length)),
  );
  const line = (cells: readonly string[]): string =>
    columns
      .map((column, i) => {
        const cell = cells[i] ?? "";
        const width = widths[i] ?? 0;
        return column.align === "right" ? cell.padStart(width) : cell.padEnd(width);
      })
      .join("  ")
      .trimEnd();
  const rule = widths.map((w) => "-".repeat(w)).join("  ");
  return [line(columns.map((c) => c.header)), rule, ...rows.map(line)].join("\n");
}

/** The machine a benchmark ran on. */
export interface MachineInfo {
  os: string;
  cpuModel: string;
  cpuCount: number;
  totalMemoryBytes: number;
  node: string;
  /** 1, 5 and 15 minute load averages when the benchmark started (all 0 on Windows). */
  loadAverage: number[];
  /** Directory the benchmark wrote to, and the filesystem type holding it ("unknown" if not found). */
  directory: string;
  filesystem: string;
}

/** Describes this machine, and the filesystem that holds `directory`. */
export async function machineInfo(directory: string): Promise<MachineInfo> {
  const list = cpus();
  return {
    os: `${platform()} ${release()}`,
    cpuModel: list[0]?.model.trim() ?? "unknown",
    cpuCount: list.length,
    totalMemoryBytes: totalmem(),
    node: process.version,
    loadAverage: loadavg(),
    directory,
    filesystem: await filesystemOf(directory),
  };
}

/** The machine as a few "name: value" lines. */
export function formatMachine(info: MachineInfo): string {
  const gib = (info.totalMemoryBytes / 2 ** 30).toFixed(1);
  return [
    `os:         ${info.os}`,
    `cpu:        ${info.cpuModel} x ${info.cpuCount}`,
    `memory:     ${gib} GiB`,
    `node:       ${info.node}`,
    `load:       ${formatLoad(info.loadAverage)} at start (1/5/15 min; above 0.5 per core means shared CPU)`,
    `filesystem: ${info.filesystem} (${info.directory})`,
  ].join("\n");
}

/** Load averages as "0.42 0.50 0.61"; pass nothing for the current ones. */
export function formatLoad(load: readonly number[] = loadavg()): string {
  return load.map((x) => x.toFixed(2)).join(" ");
}

/** Well-known statfs magic numbers, for when /proc/mounts is not there. */
const FS_MAGIC = new Map<number, string>([
  [0xef53, "ext2/3/4"],
  [0x01021994, "tmpfs"],
  [0x58465342, "xfs"],
  [0x9123683e, "btrfs"],
  [0x794c7630, "overlayfs"],
  [0x2fc12fc1, "zfs"],
  [0x6969, "nfs"],
  [0x1a, "apfs"],
]);

/**
 * Filesystem type of `directory`: the longest mount point of /proc/mounts containing it (Linux),
 * else `stat -f`'s type name, else the statfs magic number; "unknown" when all of these fail.
 */
async function filesystemOf(directory: string): Promise<string> {
  const path = resolve(directory);
  try {
    let best: { mount: string; type: string } | undefined;
    for (const row of readFileSync("/proc/mounts", "utf8").split("\n")) {
      const [, mount, type] = row.split(" ");
      if (mount === undefined || type === undefined) continue;
      const inside = mount === "/" || path === mount || path.startsWith(`${mount}/`);
      if (inside && (best === undefined || mount.length >= best.mount.length)) best = { mount, type };
    }
    if (best !== undefined) return `${best.type} on ${best.mount}`;
  } catch {
    // Not Linux: try the next source.
  }
  try {
    const name = execFileSync("stat", ["-f", "-c", "%T", path], { encoding: "utf8" }).trim();
    if (name !== "") return name;
  } catch {
    // BSD stat takes other flags: fall back to the magic number.
  }
  try {
    const { type } = await statfs(path);
    return FS_MAGIC.get(type) ?? `statfs type 0x${type.toString(16)}`;
  } catch {
    return "unknown";
  }
}

/**
 * Reads the flags of a bench script: every argument must be one of `known` (e.g. "--quick").
 * @throws Error naming the first unknown argument and the accepted ones
 */
export function parseFlags(argv: readonly string[], known: readonly string[]): Set<string> {
  const flags = new Set<string>();
  for (const arg of argv) {
    if (!known.includes(arg)) throw new Error(`unknown argument ${arg}: use ${known.join(" ")}`);
    flags.add(arg);
  }
  return flags;
}

/** Writes a progress line to stderr, so stdout holds only the report. */
export function progress(message: string): void {
  process.stderr.write(`${message}\n`);
}
