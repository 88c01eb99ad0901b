/**
 * FaultyStorage: wraps any Storage and makes chosen operations fail (for tests).
 *
 * Faults are scheduled (`inject`: fail the nth next write/sync/resize/read/open, tear a write so
 * that only a prefix of its bytes reaches the blob); tests that want them at random draw the
 * schedule from their seeded generator, so runs repeat. The steps of a blob's creation inside
 * `open` (cut, header write, sync; see headered-blob.ts) are ops of their own, `create-truncate`,
 * `create-write` and `create-sync`, so a test can fail or crash each one without counting it among
 * the blob's writes. `crash()` forwards to the wrapped MemoryStorage, which
 * drops what was not synced, and kills every handle opened before it; a scheduled fault can
 * crash at its own point, in the middle of a sync.
 *
 * Invariants:
 * - A failed operation throws `StoreError("Io")` with "injected" in its message; with `errno`,
 *   its cause carries that code, as a failed system call's error does (e.g. ENOSPC).
 * - A torn write applies exactly `tearBytes` leading bytes, then fails; any other failed write,
 *   resize or sync changes nothing in the wrapped storage.
 */
import { StoreError } from "../errors.js";
import type { RawFile } from "./headered-blob.js";
import type { CrashOptions, MemoryStorage } from "./memory.js";
import {
  type Blob,
  type BlobWrite,
  type OpenedBlob,
  type OpenOptions,
  StorageWrapper,
  writeEach,
} from "./storage.js";

/** Operations a fault can hit. */
export type FaultOp =
  | "open"
  | "read"
  | "write"
  | "resize"
  | "sync"
  | "create-truncate"
  | "create-write"
  | "create-sync";

/** One scheduled fault. */
export interface Fault {
  op: FaultOp;
  /** Matching calls to let through before this one fails (default 0: the next one). */
  after?: number;
  /** For a write: this many leading bytes reach the blob before the failure. */
  tearBytes?: number;
  /** Crash the wrapped storage at this point (after the tear), as a power cut would. */
  crash?: CrashOptions;
  /** Error code of the failure's cause, as a system call reports it (e.g. "ENOSPC"). */
  errno?: string;
  /**
   * The failure is a `voided` StoreError: the backend promises none of the failed sync's writes
   * can become durable. Nothing here enforces it: a test using it must not crash keeping them.
   */
  voided?: boolean;
}

interface Pending {
  op: FaultOp;
  after: number;
  tearBytes: number | undefined;
  crash: CrashOptions | undefined;
  errno: string | undefined;
  voided: boolean;
}

/** How a call fails: bytes to tear (-1: nothing written), a crash after, the error code. */
interface Firing {
  tear: number;
  crash: CrashOptions | undefined;
  errno?: string | undefined;
  voided?: boolean;
}

/** Storage wrapper that injects failures; see the module comment. */
export class FaultyStorage extends StorageWrapper {
  private scheduled: Pending[] = [];
  /** Number of faults fired so far. */
  faultsFired = 0;

  /** Schedules a fault. Faults of the same op count down independently. */
  inject(fault: Fault): void {
    this.scheduled.push({
      op: fault.op,
      after: fault.after ?? 0,
      tearBytes: fault.tearBytes,
      crash: fault.crash,
      errno: fault.errno,
      voided: fault.voided === true,
    });
  }

  /** Drops every scheduled fault. */
  heal(): void {
    this.scheduled = [];
  }

  /** Crashes the wrapped storage, which must be a MemoryStorage. */
  crash(options?: CrashOptions): void {
    const memory = this.inner as Partial<MemoryStorage>;
    if (typeof memory.crash !== "function") throw new Error("crash() needs a MemoryStorage underneath");
    memory.crash.call(this.inner, options);
  }

  async open(partition: string, name: Uint8Array, options: OpenOptions = {}): Promise<OpenedBlob> {
    this.check("open");
    const outer = options.creationFile;
    const opened = await this.inner.open(partition, name, {
      ...options,
      creationFile: (file) => new FaultyCreationFile(outer?.(file) ?? file, this),
    });
    return { ...opened, blob: new FaultyBlob(opened.blob, this) };
  }

  /**
   * @internal Decides whether this call of `op` fails. Returns undefined to let it through, or
   * how it fails: the number of bytes to tear (-1: nothing written) and whether to crash after.
   */
  decide(op: FaultOp, size = 0): Firing | undefined {
    let fire: Pending | undefined;
    for (const fault of this.scheduled) {
      if (fault.op !== op) continue;
      if (fault.after === 0) {
        fire = fault;
        break;
      }
      fault.after--;
      break;
    }
    if (fire !== undefined) {
      this.scheduled.splice(this.scheduled.indexOf(fire), 1);
      this.faultsFired++;
      return {
        tear: fire.tearBytes === undefined ? -1 : Math.min(fire.tearBytes, size),
        crash: fire.crash,
        errno: fire.errno,
        voided: fire.voided,
      };
    }
    return undefined;
  }

  /** @internal Fails the call when a fault fires, crashing first if the fault says so. */
  fail(op: FaultOp, fault: Firing): never {
    if (fault.crash !== undefined) this.crash(fault.crash);
    throw injected(op, fault.errno, fault.voided === true);
  }

  private check(op: FaultOp): void {
    const fault = this.decide(op);
    if (fault !== undefined) this.fail(op, fault);
  }
}

class FaultyBlob implements Blob {
  constructor(
    private readonly inner: Blob,
    private readonly faults: FaultyStorage,
  ) {}

  async read(offset: number, length: number): Promise<Uint8Array> {
    const fault = this.faults.decide("read");
    if (fault !== undefined) this.faults.fail("read", fault);
    return this.inner.read(offset, length);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    const fault = this.faults.decide("write", data.length);
    if (fault === undefined) return this.inner.write(offset, data);
    if (fault.tear > 0) await this.inner.write(offset, data.subarray(0, fault.tear));
    this.faults.fail("write", fault);
  }

  /** Write by write, so that each one meets its own fault decision. */
  writeAll(writes: readonly BlobWrite[]): Promise<void> {
    return writeEach(this, writes);
  }

  async resize(length: number): Promise<void> {
    const fault = this.faults.decide("resize");
    if (fault !== undefined) this.faults.fail("resize", fault);
    return this.inner.resize(length);
  }

  async sync(): Promise<void> {
    const fault = this.faults.decide("sync");
    if (fault !== undefined) this.faults.fail("sync", fault);
    return this.inner.sync();
  }

  length(): number {
    return this.inner.length();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** The raw file of a blob being created, with the creation steps as fault points. */
class FaultyCreationFile implements RawFile {
  constructor(
    private readonly inner: RawFile,
    private readonly faults: FaultyStorage,
  ) {}

  length(): number {
    return this.inner.length();
  }

  read(position: number, length: number): Promise<Uint8Array> {
    return this.inner.read(position, length);
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    const fault = this.faults.decide("create-write", data.length);
    if (fault === undefined) return this.inner.write(position, data);
    if (fault.tear > 0) await this.inner.write(position, data.subarray(0, fault.tear));
    this.faults.fail("create-write", fault);
  }

  writeAll(writes: readonly BlobWrite[]): Promise<void> {
    return writeEach(this, writes);
  }

  async truncate(length: number): Promise<void> {
    const fault = this.faults.decide("create-truncate");
    if (fault !== undefined) this.faults.fail("create-truncate", fault);
    return this.inner.truncate(length);
  }

  async sync(): Promise<void> {
    const fault = this.faults.decide("create-sync");
    if (fault !== undefined) this.faults.fail("create-sync", fault);
    return this.inner.sync();
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

function injected(op: FaultOp, errno: string | undefined, voided = false): StoreError {
  if (errno === undefined) return new StoreError("Io", `i/o error: injected ${op} failure`, { voided });
  const cause = Object.assign(new Error(`${errno}: injected ${op} failure`), { code: errno });
  return new StoreError("Io", `i/o error: injected ${op} failure: ${errno}`, { cause, voided });
}
