/**
 * DataDirProbe: knows whether the data directory can be written, for health and for refusing to
 * start.
 *
 * A probe creates `<data-dir>/.write-probe`, writes PROBE_BYTES to it, fsyncs it, closes and
 * unlinks it: cheap, and it fails the way a sync would on a read-only filesystem (EROFS), a
 * directory without permission (EACCES), a full disk (ENOSPC) or no file descriptors left
 * (EMFILE). A probe that takes longer than its time limit counts as a failure.
 *
 * Invariants:
 * - `writable` turns false at once when a store operation reports a full disk, a read-only or
 *   forbidden directory or the file limit (`report`), and when a probe fails; it turns true
 *   again only when a probe succeeds. Probes run every `intervalMs` (one at a time; timer unref'd),
 *   soon after such a report, and at least every second while the directory is not writable.
 * - `checkDataDir` creates the directory one level at a time (Node's recursive mkdir loops for
 *   ever under /proc) and probes it once, within a time limit, so a server never starts on a
 *   directory it cannot write.
 */
import { constants, mkdir, open, stat, unlink } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { environmentKindOf } from "./store/errors.js";
import { type WritableChange, WriteProbe } from "./write-probe.js";

/** Name of the probe file in the data directory. */
export const PROBE_FILE = ".write-probe";
/** Bytes written by one probe: enough for a full filesystem to refuse them. */
const PROBE_BYTES = 4096;
/** Delay of the probe that follows a reported failure. */
const REPROBE_AFTER_REPORT_MS = 100;
/** Longest time between two probes while the directory is not writable. */
const REPROBE_WHILE_UNWRITABLE_MS = 1000;

/** Options of a DataDirProbe. */
export interface DataDirProbeOptions {
  /** Time between two probes. */
  intervalMs: number;
  /** Longest a probe may take before it counts as failed. */
  timeoutMs: number;
  /** Called with the new state whenever `writable` changes. */
  onChange?: WritableChange;
}

/** Probes the data directory; see the module comment. `reason` is an errno message. */
export class DataDirProbe extends WriteProbe {
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    readonly dataDir: string,
    private readonly options: DataDirProbeOptions,
  ) {
    super(options.onChange);
  }

  /** Starts probing every `intervalMs`. */
  start(): void {
    this.stopped = false;
    this.schedule(this.options.intervalMs);
  }

  /** Stops probing. */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /**
   * Takes note of a failed store operation: when its cause says the directory cannot be written
   * (full, read-only, forbidden, out of file descriptors), turns unwritable at once and probes
   * again soon. Anything else is ignored.
   */
  report(err: unknown): void {
    if (environmentKindOf(err) === undefined) return;
    this.set(false, err instanceof Error ? err.message : String(err));
    this.schedule(REPROBE_AFTER_REPORT_MS);
  }

  protected async attempt(): Promise<void> {
    try {
      await withTimeout(probeOnce(this.dataDir), this.options.timeoutMs, "write probe");
      this.set(true, undefined);
    } catch (err) {
      this.set(false, err instanceof Error ? err.message : String(err));
    }
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      void this.probe().then((writable) =>
        this.schedule(
          writable ? this.options.intervalMs : Math.min(this.options.intervalMs, REPROBE_WHILE_UNWRITABLE_MS),
        ),
      );
    }, delayMs);
    this.timer.unref();
  }
}

/** One probe: create, write, fsync, close and unlink the probe file. */
async function probeOnce(dataDir: string): Promise<void> {
  const path = join(dataDir, PROBE_FILE);
  const handle = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC);
  try {
    await handle.write(Buffer.alloc(PROBE_BYTES, 0x5a), 0, PROBE_BYTES, 0);
    await handle.sync();
  } finally {
    await handle.close();
    await unlink(path).catch(() => undefined);
  }
}

/** Rejects with "`what` timed out" when `promise` has not settled within `timeoutMs`. */
function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Creates `path` and its missing parents one level at a time.
 * @throws the first mkdir or stat failure (ENOENT under /proc, EACCES, EROFS, ENOTDIR)
 */
async function makeDirectories(path: string): Promise<void> {
  const missing: string[] = [];
  let current = resolve(path);
  for (;;) {
    try {
      if (!(await stat(current)).isDirectory()) {
        throw Object.assign(new Error(`ENOTDIR: not a directory, ${current}`), { code: "ENOTDIR" });
      }
      break;
    } catch (err) {
      if ((err as { code?: unknown }).code !== "ENOENT") throw err;
      missing.push(current);
      const parent = dirname(current);
      if (parent === current) throw err;
      current = parent;
    }
  }
  for (const directory of missing.reverse()) {
    try {
      await mkdir(directory);
    } catch (err) {
      if ((err as { code?: unknown }).code !== "EEXIST") throw err;
    }
  }
}

/** A data directory the server cannot use. */
export class DataDirError extends Error {
  override readonly name = "DataDirError";
}

/**
 * Creates `dataDir` if needed and probes it once, all within `timeoutMs`.
 * @throws DataDirError with a one-line message naming the directory and the cause
 */
export async function checkDataDir(dataDir: string, timeoutMs: number): Promise<void> {
  const check = async () => {
    try {
      await makeDirectories(dataDir);
    } catch (err) {
      throw new DataDirError(`cannot create data directory ${dataDir}: ${oneLine(err)}`);
    }
    try {
      await probeOnce(dataDir);
    } catch (err) {
      throw new DataDirError(`cannot write data directory ${dataDir}: ${oneLine(err)}`);
    }
  };
  try {
    await withTimeout(check(), timeoutMs, "data directory check");
  } catch (err) {
    if (err instanceof DataDirError) throw err;
    throw new DataDirError(`cannot use data directory ${dataDir}: ${oneLine(err)}`);
  }
}

function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s*\n\s*/g, " ");
}
