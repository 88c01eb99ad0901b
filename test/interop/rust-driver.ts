// Drives the reference Rust implementation (commonware-storage `metadata`, tokio runtime) of
// either supported release through its driver binary: 2026.4.0 from test/interop/rust/,
// 2026.10.0 from test/interop/rust-2026.10/ (same subcommands and JSON). Interop tests use it to
// replay operations into real files, read stores back (recovery included) and time the
// reference on its own benchmark matrix. Each binary is built once per process by
// test/interop/rust/build.sh RELEASE (cargo, crates.io; target dirs outside the clone).

import { execFile, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const execFileAsync = promisify(execFile);

const BUILD_SCRIPT = fileURLToPath(new URL("./rust/build.sh", import.meta.url));

/** Large enough for a full dump of a 100,000-key store with 100-byte values. */
const MAX_OUTPUT_BYTES = 512 * 1024 * 1024;

export interface RustEntry {
  /** Decimal u64 (may exceed Number.MAX_SAFE_INTEGER). */
  key: string;
  value_hex: string;
}

/** Counters of the last opened instance; storage_write_bytes covers the whole process. */
export interface RustCounters {
  sync_rewrites?: number;
  sync_overwrites?: number;
  keys?: number;
  storage_write_bytes?: number;
}

export interface RustStoreResult {
  entries: RustEntry[];
  counters: RustCounters;
  /** Number of Metadata::init calls (1 + number of `reopen` ops). */
  instances_opened: number;
  /** Present when a `get_mut` op named an absent key (a no-op, as in the reference). */
  get_mut_missing?: number;
}

export interface RustTiming {
  median_us: number;
  p90_us: number;
  mean_us: number;
  min_us: number;
  max_us: number;
  iterations: number;
}

export interface RustSyncBench extends RustTiming {
  keys: number;
  modified: number;
  /**
   * "overwrite" or "rewrite": what the timed sync was, read from the store's counters
   * ("skipped" under 2026.10.0 when no key was modified: it writes nothing).
   */
  timed_sync_kind: string;
}

export interface RustInitBench extends RustTiming {
  keys: number;
}

export interface RustBenchResult {
  implementation: string;
  quick: boolean;
  value_bytes: number;
  storage_dir: string;
  sync: RustSyncBench[];
  init: RustInitBench[];
  total_s: number;
}

/** A release of commonware-storage with an interop driver. */
export type RustRelease = "2026.4.0" | "2026.10.0";

/** Every release the interop suites run against, oldest first. */
export const RUST_RELEASES: readonly RustRelease[] = ["2026.4.0", "2026.10.0"];

/**
 * The runtime's blob layout range for a 2026.10.0 driver: "v0-v1" (its default: reads both,
 * creates V1), "v1", or "v0" (reads and creates V0 only). The 2026.4.0 driver knows only V0.
 */
export type RustLayouts = "v0" | "v1" | "v0-v1";

/** Options of a replay or dump. */
export interface RustOptions {
  /** Release to run (default 2026.4.0). */
  release?: RustRelease;
  /** Blob layout range (2026.10.0 only; default its own, "v0-v1"). */
  layouts?: RustLayouts;
}

const cachedBinaries = new Map<RustRelease, string>();

/** Builds the driver of `release` (once per process) and returns its absolute path. */
export function buildRustInterop(release: RustRelease = "2026.4.0"): string {
  const cached = cachedBinaries.get(release);
  if (cached !== undefined) {
    return cached;
  }
  // stderr passes through: build.sh announces a cold build (minutes) there, and cargo's errors.
  const result = spawnSync("bash", [BUILD_SCRIPT, release], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (result.error !== undefined) {
    throw new Error(`metadata-interop build failed to start: ${result.error.message}`);
  }
  if (result.status !== 0) {
    throw new Error(`metadata-interop build failed (exit ${String(result.status)}); its errors are above`);
  }
  const lines = result.stdout.trim().split("\n");
  const binary = lines[lines.length - 1]?.trim();
  if (binary === undefined || binary === "") {
    throw new Error("metadata-interop build printed no binary path");
  }
  cachedBinaries.set(release, binary);
  return binary;
}

function layoutArgs(options: RustOptions): string[] {
  if (options.layouts === undefined) return [];
  if (options.release !== "2026.10.0") throw new Error("--layouts needs the 2026.10.0 driver");
  return ["--layouts", options.layouts];
}

async function runJson(
  args: string[],
  timeoutMs: number,
  release: RustRelease = "2026.4.0",
): Promise<unknown> {
  const binary = buildRustInterop(release);
  try {
    const { stdout } = await execFileAsync(binary, args, {
      encoding: "utf8",
      maxBuffer: MAX_OUTPUT_BYTES,
      timeout: timeoutMs,
    });
    return JSON.parse(stdout) as unknown;
  } catch (err: unknown) {
    const stderr =
      typeof err === "object" && err !== null && "stderr" in err ? String(err.stderr).trim() : "";
    const message = err instanceof Error ? err.message : String(err);
    throw new Error(`metadata-interop ${args[0] ?? ""} failed: ${stderr !== "" ? stderr : message}`);
  }
}

function asStoreResult(value: unknown): RustStoreResult {
  if (
    typeof value !== "object" ||
    value === null ||
    !Array.isArray((value as { entries?: unknown }).entries)
  ) {
    throw new Error("metadata-interop returned no entries array");
  }
  return value as RustStoreResult;
}

/**
 * Applies `ops` (golden-vector op format: put, remove, clear, sync, get_mut, retain_keys, reopen)
 * to the store in `partition` under storage directory `dir`, and returns the final entries.
 */
export async function rustReplay(
  dir: string,
  partition: string,
  ops: unknown[],
  options: RustOptions = {},
): Promise<RustStoreResult> {
  const scratch = mkdtempSync(join(tmpdir(), "metadata-interop-ops-"));
  const opsFile = join(scratch, "ops.json");
  try {
    writeFileSync(opsFile, JSON.stringify(ops));
    const out = await runJson(
      ["replay", "--dir", dir, "--partition", partition, "--ops", opsFile, ...layoutArgs(options)],
      5 * 60 * 1000,
      options.release,
    );
    return asStoreResult(out);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** Opens the store (running the reference's recovery, which may truncate blobs) and lists it. */
export async function rustDump(
  dir: string,
  partition: string,
  options: RustOptions = {},
): Promise<RustStoreResult> {
  const out = await runJson(
    ["dump", "--dir", dir, "--partition", partition, ...layoutArgs(options)],
    5 * 60 * 1000,
    options.release,
  );
  return asStoreResult(out);
}

/** Times the reference: sync after modifying 0..100 keys, and init of 100..100,000 keys. */
export async function rustBench(quick: boolean, release: RustRelease = "2026.4.0"): Promise<RustBenchResult> {
  const args = quick ? ["bench", "--quick"] : ["bench"];
  const out = await runJson(args, (quick ? 2 : 10) * 60 * 1000, release);
  if (typeof out !== "object" || out === null || !Array.isArray((out as { sync?: unknown }).sync)) {
    throw new Error("metadata-interop bench returned an unexpected document");
  }
  return out as RustBenchResult;
}
