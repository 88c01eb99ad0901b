/**
 * EtcdStorage: blobs kept in an etcd cluster, so a partition survives the loss of a machine.
 *
 * Keys (every key starts with the configured prefix P, which has no trailing '/'):
 *   P/.partitions/<partition>                   marker of an existing partition (empty value)
 *   P/<partition>/<hex name>/length             "<physical length>:<sync nonce>" or "incomplete:<nonce>"
 *   P/<partition>/<hex name>/page/<%08x index>  bytes [i * pageBytes, min((i + 1) * pageBytes, length))
 *   P/<partition>/<hex name>/delta/<%016x seq>  writes made since the pages were written: records of
 *                                               u32be offset, u32be length, then that many bytes
 * Partition names hold no '.', so the marker folder never collides with a partition.
 *
 * A handle keeps the whole blob in memory (loaded at open from one etcd revision: the pages, then
 * every delta applied in sequence order); writes and resizes change that copy and mark the pages
 * they touch dirty. A sync takes one of two paths:
 * - delta: when the length is unchanged and the bytes written since the last sync are small
 *   (the metadata store's overwrite: a version, changed values, a CRC), one transaction puts them
 *   as one delta key and the length key (new nonce). Pages stay as they were, still dirty.
 * - pages: otherwise (a resize, a large write, or once the deltas since the pages were last
 *   written reach `maxDeltas` or `maxDeltaBytes`), the dirty pages, the new length, a delete of
 *   every page past the end and a delete of every delta go in one etcd transaction.
 * So a sync of a few changed values costs etcd a few kilobytes rather than a page per value, and
 * the deltas a reader applies at open are bounded.
 *
 * Limits: etcd refuses a transaction with more than `--max-txn-ops` (128) operations or a request
 * over `--max-request-bytes` (1.5 MiB). A sync that does not fit is split: its first transaction
 * sets the length to "incomplete", the last one sets the real length. A blob whose length reads
 * "incomplete" (a writer died, or etcd refused a write, between the two) opens as its header
 * region alone, i.e. with an empty body, or as physical length 0 without a whole header (its
 * deltas ignored, and deleted by its next sync, which takes the pages path). Keeping the header
 * means reopening needs no write, so a partition stays readable while etcd is out of space. The
 * metadata store's two-blob recovery treats the empty body as a torn blob: the other blob, which
 * the store never touches while this one is written, holds the last completed sync. So a
 * multi-transaction sync is either complete or detected as torn, never a silent mix of old and
 * new pages.
 *
 * Invariants:
 * - Every write transaction compares the length key's mod revision with the one this handle last
 *   saw, and the fence (when configured) with the ownership key's create revision: a handle whose
 *   blob was written by anyone else, or whose server lost ownership, can never commit again.
 * - When a transaction's outcome is unknown (a transport error after it was sent, or a compare
 *   failure after a retry), the length key is read back: its nonce says whether this sync landed.
 * - A failed sync is `voided` (StoreError) when its transaction can never land: etcd refused it
 *   (a failed compare; authentication, permission, out of space and other refusals etcd answers
 *   before applying anything), or it was fenced off after an unknown outcome. Only the
 *   transaction that sets the final length can make a sync's bytes readable, so a voided sync's
 *   bytes never surface, whichever earlier transactions of a split sync landed.
 * - Creating a blob (its first sync, made by `openHeadered` at open) also creates the partition
 *   marker, in the same transaction. Removing is one transaction, durable when it resolves.
 * - An acknowledged sync is in a majority of etcd members (etcd commits through Raft).
 * - etcd out of space ("etcdserver: mvcc: database space exceeded": `--quota-backend-bytes`
 *   reached, the NOSPACE alarm raised) and only that is `DiskFull`, like ENOSPC, with a message
 *   saying what the operator does (ETCD_NO_SPACE_ADVICE); etcd refused the whole transaction, so
 *   nothing of it landed. Reads still work. Every other etcd failure is `Io`.
 *
 * Usage:
 *   const storage = new EtcdStorage({ client: new Etcd3({ hosts: ["127.0.0.1:2379"] }), prefix: "meta" });
 */
import { randomBytes } from "node:crypto";
import {
  type Etcd3,
  EtcdAuthenticationFailedError,
  EtcdInvalidAuthTokenError,
  EtcdPermissionDeniedError,
  GRPCFailedPreconditionError,
  GRPCInvalidArgumentError,
  GRPCUnauthenticatedError,
  type ICompare,
  type IKeyValue,
  type IRequestOp,
  type ITxnResponse,
} from "etcd3";
import { asIoError, StoreError } from "../errors.js";
import { DEFAULT_BLOB_LAYOUT, type ResolvedHeader, resolveHeader, V1_DATA_OFFSET } from "./blob-header.js";
import { openHeadered, type RawFile } from "./headered-blob.js";
import {
  type BlobWrite,
  blobFileName,
  describeBlob,
  type OpenedBlob,
  type OpenOptions,
  type Storage,
  validatePartitionName,
} from "./storage.js";

/** Ownership to check in every write transaction: the key must exist with this create revision. */
export interface EtcdFence {
  key: string;
  createRevision: string;
}

/** Options of `EtcdStorage`. */
export interface EtcdStorageOptions {
  /** Connected etcd client; the storage never closes it. */
  client: Etcd3;
  /** Key prefix, non-empty, no trailing '/'. */
  prefix: string;
  /** Bytes per page (default 4096). Fixed for a prefix: changing it makes existing blobs unreadable. */
  pageBytes?: number;
  /** Most operations in one transaction (default 128, etcd's `--max-txn-ops` default). */
  maxTxnOps?: number;
  /** Most page bytes in one transaction (default 1 MiB, under etcd's 1.5 MiB request limit). */
  maxTxnBytes?: number;
  /** Deltas a blob may hold before a sync writes its pages instead (default 256; 0: pages only). */
  maxDeltas?: number;
  /** Bytes of deltas a blob may hold before a sync writes its pages instead (default 1 MiB). */
  maxDeltaBytes?: number;
  /** Ownership checked by every write; a write after the fence fails throws `StoreError("Io")`. */
  fence?: () => EtcdFence | undefined;
  /** Told when a write failed because the fence no longer holds (ownership is gone). */
  onFenceLost?: (what: string) => void;
  /** @internal Called before each write transaction is sent; a throw there models a crash. */
  beforeTransaction?: () => void;
  /** @internal Called after each write transaction answered; a throw there models a lost answer. */
  afterTransaction?: () => void;
}

/** Default page size in bytes. */
export const ETCD_PAGE_BYTES = 4096;
const DEFAULT_MAX_TXN_OPS = 128;
const DEFAULT_MAX_TXN_BYTES = 1024 * 1024;
const DEFAULT_MAX_DELTAS = 256;
const DEFAULT_MAX_DELTA_BYTES = 1024 * 1024;
/** Most bytes one delta carries; a sync writing more takes the pages path. */
const MAX_DELTA_RECORD_BYTES = 64 * 1024;
/** Bytes of a delta record's header: u32be offset, u32be length. */
const DELTA_RECORD_HEADER = 8;
/**
 * Operations of the last transaction besides pages: length put, tail delete, delta delete,
 * partition marker.
 */
const RESERVED_OPS = 4;
const INCOMPLETE = "incomplete";
/** Keys read per range request at open (kept well under gRPC's 4 MiB message limit). */
const RANGE_BYTES = 2 * 1024 * 1024;

/** Storage in etcd; see the module comment. */
export class EtcdStorage implements Storage {
  readonly prefix: string;
  readonly pageBytes: number;
  private readonly client: Etcd3;
  private readonly maxTxnOps: number;
  private readonly maxTxnBytes: number;
  /** @internal Deltas and delta bytes a blob may hold before a sync writes pages. */
  readonly maxDeltas: number;
  readonly maxDeltaBytes: number;

  constructor(private readonly options: EtcdStorageOptions) {
    if (options.prefix === "" || options.prefix.endsWith("/")) {
      throw new StoreError("InvalidConfig", `invalid etcd prefix ${JSON.stringify(options.prefix)}`);
    }
    this.client = options.client;
    this.prefix = options.prefix;
    this.pageBytes = options.pageBytes ?? ETCD_PAGE_BYTES;
    this.maxTxnOps = options.maxTxnOps ?? DEFAULT_MAX_TXN_OPS;
    this.maxTxnBytes = options.maxTxnBytes ?? DEFAULT_MAX_TXN_BYTES;
    this.maxDeltas = options.maxDeltas ?? DEFAULT_MAX_DELTAS;
    this.maxDeltaBytes = Math.min(options.maxDeltaBytes ?? DEFAULT_MAX_DELTA_BYTES, this.maxTxnBytes);
    if (!Number.isInteger(this.maxDeltas) || this.maxDeltas < 0) {
      throw new StoreError("InvalidConfig", `invalid etcd max deltas: ${this.maxDeltas}`);
    }
    if (!Number.isInteger(this.pageBytes) || this.pageBytes < 1 || this.pageBytes > this.maxTxnBytes) {
      throw new StoreError("InvalidConfig", `invalid etcd page size: ${this.pageBytes} bytes`);
    }
    if (this.maxTxnOps < RESERVED_OPS + 1) {
      throw new StoreError("InvalidConfig", `etcd max txn ops too small: ${this.maxTxnOps}`);
    }
  }

  async open(partition: string, name: Uint8Array, options: OpenOptions = {}): Promise<OpenedBlob> {
    validatePartitionName(partition);
    const where = describeBlob(partition, name);
    const base = this.blobBase(partition, name);
    let kvs: IKeyValue[];
    try {
      kvs = await this.rangeAll(Buffer.from(base));
    } catch (err) {
      throw asEtcdError(err, `open ${where}`);
    }
    const file = new EtcdFile(this, base, this.partitionKey(partition), where);
    file.load(kvs);
    return openHeadered(file, where, {
      layout: options.layout ?? DEFAULT_BLOB_LAYOUT,
      ...(options.creationFile === undefined ? {} : { creationFile: options.creationFile }),
    });
  }

  async remove(partition: string, name?: Uint8Array): Promise<void> {
    validatePartitionName(partition);
    const marker = this.partitionKey(partition);
    if (name === undefined) {
      const prefix = Buffer.from(`${this.prefix}/${partition}/`);
      const response = await this.txn(
        `remove partition ${partition}`,
        [exists(marker)],
        [
          { request_delete_range: { key: prefix, range_end: prefixEnd(prefix) } },
          { request_delete_range: { key: Buffer.from(marker) } },
        ],
      );
      if (!response.succeeded) {
        await this.explainFailure(`remove partition ${partition}`);
        throw new StoreError("PartitionMissing", `partition missing: ${partition}`);
      }
      return;
    }
    const where = describeBlob(partition, name);
    const base = Buffer.from(this.blobBase(partition, name));
    const response = await this.txn(
      `remove ${where}`,
      [exists(`${this.blobBase(partition, name)}length`)],
      [{ request_delete_range: { key: base, range_end: prefixEnd(base) } }],
    );
    if (!response.succeeded) {
      await this.explainFailure(`remove ${where}`);
      throw new StoreError("BlobMissing", `blob missing: ${where}`);
    }
  }

  async scan(partition: string): Promise<Uint8Array[]> {
    validatePartitionName(partition);
    const prefix = `${this.prefix}/${partition}/`;
    let names: Uint8Array[];
    try {
      const marker = await this.client.get(this.partitionKey(partition)).exists();
      if (!marker) throw new StoreError("PartitionMissing", `partition missing: ${partition}`);
      const keys = await this.client.getAll().prefix(prefix).keys();
      names = [];
      for (const key of keys) {
        const rest = key.slice(prefix.length);
        const match = /^((?:[0-9a-f]{2})*)\/(length|page\/[0-9a-f]{8}|delta\/[0-9a-f]{16})$/.exec(rest);
        if (match === null) {
          throw new StoreError("PartitionCorrupt", `partition corrupt: ${partition}: unexpected key ${rest}`);
        }
        if (match[2] === "length") names.push(Buffer.from(match[1] ?? "", "hex"));
      }
    } catch (err) {
      throw asEtcdError(err, `scan ${partition}`);
    }
    return names.sort(Buffer.compare);
  }

  async listPartitions(): Promise<string[]> {
    const prefix = `${this.prefix}/.partitions/`;
    try {
      const keys = await this.client.getAll().prefix(prefix).keys();
      return keys.map((key) => key.slice(prefix.length)).sort();
    } catch (err) {
      throw asEtcdError(err, "list partitions");
    }
  }

  /** @internal Key of a blob's page `index`. */
  pageKey(base: string, index: number): string {
    return `${base}page/${index.toString(16).padStart(8, "0")}`;
  }

  /** @internal Key of a blob's delta number `seq`. */
  deltaKey(base: string, seq: number): string {
    return `${base}delta/${seq.toString(16).padStart(16, "0")}`;
  }

  /** @internal Key prefix of blob `name` of `partition`, ending in '/'. */
  blobBase(partition: string, name: Uint8Array): string {
    return `${this.prefix}/${partition}/${blobFileName(name)}/`;
  }

  /** @internal The limits a sync splits its pages by. */
  limits(): { maxPageOps: number; maxTxnBytes: number } {
    return { maxPageOps: this.maxTxnOps - RESERVED_OPS, maxTxnBytes: this.maxTxnBytes };
  }

  /**
   * @internal One write transaction with the fence added to `compare`. Errors are `Io`, or
   * `DiskFull` when etcd is out of space.
   */
  async txn(what: string, compare: ICompare[], success: IRequestOp[]): Promise<ITxnResponse> {
    const fence = this.options.fence?.();
    const compares =
      fence === undefined
        ? compare
        : [
            ...compare,
            {
              key: Buffer.from(fence.key),
              target: "Create" as const,
              result: "Equal" as const,
              create_revision: fence.createRevision,
            },
          ];
    try {
      this.options.beforeTransaction?.();
      const response = await this.client.kv.txn({ compare: compares, success, failure: [] });
      this.options.afterTransaction?.();
      return response;
    } catch (err) {
      throw asEtcdError(err, what);
    }
  }

  /** @internal Throws when the fence no longer holds, naming it; returns otherwise. */
  async explainFailure(what: string): Promise<void> {
    const fence = this.options.fence?.();
    if (fence === undefined) return;
    let current: IKeyValue | undefined;
    try {
      current = (await this.client.kv.range({ key: Buffer.from(fence.key) })).kvs[0];
    } catch (err) {
      throw asEtcdError(err, what);
    }
    if (current?.create_revision !== fence.createRevision) {
      this.options.onFenceLost?.(what);
      throw new StoreError("Io", `i/o error: ${what}: this server no longer owns its partitions`);
    }
  }

  /** @internal Value of one key with its mod revision, or undefined when missing. */
  async readKey(key: string): Promise<IKeyValue | undefined> {
    return (await this.client.kv.range({ key: Buffer.from(key) })).kvs[0];
  }

  /** Every key under `prefix` at one revision, in pages of at most RANGE_BYTES. */
  private async rangeAll(prefix: Buffer): Promise<IKeyValue[]> {
    const end = prefixEnd(prefix);
    const limit = Math.max(1, Math.floor(RANGE_BYTES / this.pageBytes));
    const out: IKeyValue[] = [];
    let key = prefix;
    let revision: string | undefined;
    for (;;) {
      const response = await this.client.kv.range({
        key,
        range_end: end,
        limit,
        ...(revision === undefined ? {} : { revision }),
      });
      revision ??= response.header.revision;
      out.push(...response.kvs);
      const last = response.kvs.at(-1);
      if (!response.more || last === undefined) return out;
      key = Buffer.concat([last.key, Buffer.of(0)]);
    }
  }

  private partitionKey(partition: string): string {
    return `${this.prefix}/.partitions/${partition}`;
  }
}

/** What etcd says when its database reached `--quota-backend-bytes` (gRPC RESOURCE_EXHAUSTED). */
export const ETCD_NO_SPACE = "etcdserver: mvcc: database space exceeded";

/** What an operator does when etcd is out of space, as the refused calls' messages say it. */
export const ETCD_NO_SPACE_ADVICE =
  "compact old revisions and defragment (etcdctl compact, etcdctl defrag), then run etcdctl alarm disarm";

/** True when `err` is etcd refusing a write because its database is full (and nothing else). */
export function isEtcdNoSpace(err: unknown): boolean {
  return err instanceof Error && err.message.includes(ETCD_NO_SPACE);
}

/**
 * Wraps an etcd failure as a StoreError: `DiskFull` with ETCD_NO_SPACE_ADVICE when etcd is out
 * of space, else as `asIoError` does.
 */
export function asEtcdError(err: unknown, what: string): StoreError {
  if (isEtcdNoSpace(err)) {
    return new StoreError(
      "DiskFull",
      `etcd out of space (${what}: ${ETCD_NO_SPACE}; --quota-backend-bytes reached): ${ETCD_NO_SPACE_ADVICE}; writes succeed again without a restart`,
      { cause: err },
    );
  }
  return asIoError(err, what);
}

/**
 * True when etcd refused a request before applying any of it: a status etcd answers for a
 * refusal (authentication, permission, out of space, a bad request), never for a lost answer.
 */
function refusedByEtcd(err: unknown): boolean {
  if (isEtcdNoSpace(err)) return true;
  const cause = err instanceof StoreError ? err.cause : err;
  return (
    cause instanceof EtcdAuthenticationFailedError ||
    cause instanceof EtcdInvalidAuthTokenError ||
    cause instanceof EtcdPermissionDeniedError ||
    cause instanceof GRPCInvalidArgumentError ||
    cause instanceof GRPCFailedPreconditionError ||
    cause instanceof GRPCUnauthenticatedError
  );
}

/** `err` as a StoreError of a sync that can never land (see the module comment). */
function voided(err: unknown): StoreError {
  const failure = err instanceof StoreError ? err : asIoError(err, "sync");
  return new StoreError(failure.kind, failure.message, { cause: failure.cause, voided: true });
}

/** A compare that holds when `key` exists. */
function exists(key: string): ICompare {
  return { key: Buffer.from(key), target: "Version", result: "Greater", version: 0 };
}

/** The end of the range of keys starting with `prefix` (etcd's prefix convention). */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if ((end[i] ?? 0) < 0xff) {
      end[i] = (end[i] ?? 0) + 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.of(0);
}

class EtcdFile implements RawFile {
  private data = Buffer.alloc(0);
  private size = 0;
  /** Length as of the last sync (or load). */
  private durableSize = 0;
  /** Mod revision of the length key as last seen; "0" when the key does not exist. */
  private lengthRevision = "0";
  /** Value of the length key as last seen (restored to fence off an unknown outcome). */
  private lengthValue: Buffer | undefined;
  /** Pages changed since the pages were last written (deltas may hold those changes meanwhile). */
  private readonly dirty = new Set<number>();
  /** Byte ranges [start, end) written since the last sync, for the delta path. */
  private pending: [number, number][] = [];
  /** Whether the length changed since the last sync (the pages path then). */
  private resized = false;
  /** Deltas in etcd, their bytes, and the sequence number of the next. */
  private deltas = 0;
  private deltaBytes = 0;
  private nextDelta = 0;
  /** False while etcd may hold deltas that do not apply (a torn blob's): pages path then. */
  private deltasApply = true;
  private closed = false;

  constructor(
    private readonly storage: EtcdStorage,
    private readonly base: string,
    private readonly partitionMarker: string,
    private readonly where: string,
  ) {}

  /** Takes the blob's keys read at one revision. */
  load(kvs: readonly IKeyValue[]): void {
    const lengthKey = `${this.base}length`;
    const deltaPrefix = `${this.base}delta/`;
    const pages = new Map<string, Buffer>();
    const deltas: { seq: number; value: Buffer }[] = [];
    let lengthKv: IKeyValue | undefined;
    for (const kv of kvs) {
      const key = kv.key.toString();
      if (key === lengthKey) lengthKv = kv;
      else if (key.startsWith(deltaPrefix)) {
        deltas.push({ seq: Number.parseInt(key.slice(deltaPrefix.length), 16), value: kv.value });
      } else pages.set(key, kv.value);
    }
    deltas.sort((a, b) => a.seq - b.seq);
    this.nextDelta = (deltas.at(-1)?.seq ?? -1) + 1;
    this.deltas = deltas.length;
    this.deltaBytes = deltas.reduce((sum, d) => sum + d.value.length, 0);
    // Until proven to apply (below), deltas send the next sync down the pages path.
    this.deltasApply = deltas.length === 0;
    if (lengthKv === undefined) return;
    this.lengthRevision = lengthKv.mod_revision;
    this.lengthValue = lengthKv.value;
    const [text] = lengthKv.value.toString().split(":");
    if (text === INCOMPLETE) {
      // A torn multi-transaction sync: the blob reads as its header region alone, i.e. an empty
      // body, and its stale pages and deltas are deleted by its next sync (which grows it: the
      // pages path, deleting every page past the end and every delta).
      this.loadHeaderOnly(pages);
      return;
    }
    const length = Number(text);
    if (text === undefined || !/^\d+$/.test(text) || !Number.isSafeInteger(length)) {
      throw new StoreError("BlobCorrupt", `blob corrupt: ${this.where}: invalid length ${text ?? ""}`);
    }
    const pageBytes = this.storage.pageBytes;
    this.data = Buffer.alloc(length);
    for (let i = 0; i * pageBytes < length; i++) {
      const page = pages.get(this.storage.pageKey(this.base, i));
      const expected = Math.min(pageBytes, length - i * pageBytes);
      if (page === undefined || page.length < expected) {
        throw new StoreError("BlobCorrupt", `blob corrupt: ${this.where}: page ${i} missing or short`);
      }
      page.copy(this.data, i * pageBytes, 0, expected);
    }
    for (const delta of deltas) applyDelta(this.data, delta.value, `${this.where}: delta ${delta.seq}`);
    this.deltasApply = true;
    this.size = length;
    this.durableSize = length;
  }

  /**
   * Keeps only the blob's header region, read from its first pages, as the whole blob. Syncs never
   * change a header once created (docs/FORMAT.md §2), so a torn blob still holds its own, and
   * reopening it needs no write: a sync torn because etcd ran out of space leaves the partition
   * readable while etcd refuses writes. Without a whole valid header the blob reads as empty (it
   * is created again at open, as before).
   */
  private loadHeaderOnly(pages: ReadonlyMap<string, Buffer>): void {
    const pageBytes = this.storage.pageBytes;
    const head: Buffer[] = [];
    let bytes = 0;
    for (let i = 0; bytes < V1_DATA_OFFSET; i++) {
      const page = pages.get(this.storage.pageKey(this.base, i));
      if (page === undefined) break;
      head.push(page);
      bytes += page.length;
      if (page.length < pageBytes) break;
    }
    const raw = Buffer.concat(head).subarray(0, V1_DATA_OFFSET);
    let header: ResolvedHeader | undefined;
    try {
      header = resolveHeader(raw, raw.length, this.where);
    } catch {
      header = undefined;
    }
    if (header === undefined || raw.length < header.dataOffset) return;
    this.data = Buffer.from(raw.subarray(0, header.dataOffset));
    this.size = header.dataOffset;
    this.durableSize = header.dataOffset;
  }

  length(): number {
    return this.size;
  }

  async read(position: number, length: number): Promise<Uint8Array> {
    this.alive();
    if (position + length > this.size) throw new StoreError("Io", "i/o error: read past the end");
    return Uint8Array.prototype.slice.call(this.data, position, position + length);
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    this.alive();
    this.apply(position, data);
  }

  async writeAll(writes: readonly BlobWrite[]): Promise<void> {
    this.alive();
    for (const [position, data] of writes) this.apply(position, data);
  }

  async truncate(length: number): Promise<void> {
    this.alive();
    if (length > this.size) {
      this.ensureCapacity(length);
      this.data.fill(0, this.size, length);
      this.markDirty(this.size, length);
    }
    if (length !== this.size) this.resized = true;
    this.size = length;
  }

  async sync(): Promise<void> {
    this.alive();
    const pageBytes = this.storage.pageBytes;
    const pageCount = Math.ceil(this.size / pageBytes);
    // A changed length rewrites the last page, which holds only the bytes below the length.
    if (this.size !== this.durableSize && pageCount > 0) this.dirty.add(pageCount - 1);
    if (this.dirty.size === 0 && this.size === this.durableSize && this.lengthRevision !== "0") return;
    const delta = this.deltaToSend();
    if (delta !== undefined) return this.syncDelta(delta);

    const pages = [...this.dirty].filter((i) => i < pageCount).sort((a, b) => a - b);
    const batches = splitPages(pages, this.storage.limits(), pageBytes);
    const creating = this.lengthRevision === "0";
    const nonce = randomBytes(8).toString("hex");
    const lengthKey = Buffer.from(`${this.base}length`);
    const finalValue = Buffer.from(`${this.size}:${nonce}`);
    const tailStart = Buffer.from(this.storage.pageKey(this.base, pageCount));
    const tailEnd = prefixEnd(Buffer.from(`${this.base}page/`));
    const deltaStart = Buffer.from(`${this.base}delta/`);

    for (let b = 0; b < batches.length; b++) {
      const first = b === 0;
      const last = b === batches.length - 1;
      const success: IRequestOp[] = (batches[b] ?? []).map((i) => ({
        request_put: { key: Buffer.from(this.storage.pageKey(this.base, i)), value: this.page(i) },
      }));
      let lengthValue: Buffer | undefined;
      if (last) {
        lengthValue = finalValue;
        success.push({ request_delete_range: { key: tailStart, range_end: tailEnd } });
        success.push({ request_delete_range: { key: deltaStart, range_end: prefixEnd(deltaStart) } });
      } else if (first) {
        lengthValue = Buffer.from(`${INCOMPLETE}:${nonce}`);
      }
      // The first transaction creates the blob, so it also creates the partition marker.
      if (first && creating) {
        success.push({ request_put: { key: Buffer.from(this.partitionMarker), value: Buffer.alloc(0) } });
      }
      if (lengthValue !== undefined) success.push({ request_put: { key: lengthKey, value: lengthValue } });
      await this.send(success, lengthValue);
    }
    this.dirty.clear();
    this.synced();
    this.deltas = 0;
    this.deltaBytes = 0;
    this.deltasApply = true;
  }

  /**
   * The delta of the writes since the last sync when the delta path applies (see the module
   * comment): the length unchanged, the blob created, its deltas applying, and room for one more.
   */
  private deltaToSend(): Buffer | undefined {
    if (this.resized || this.size !== this.durableSize || this.lengthRevision === "0" || !this.deltasApply) {
      return undefined;
    }
    if (this.deltas >= this.storage.maxDeltas || this.pending.length === 0) return undefined;
    const ranges = mergeRanges(this.pending);
    let bytes = 0;
    for (const [start, end] of ranges) {
      if (end > 0xffffffff) return undefined;
      bytes += DELTA_RECORD_HEADER + end - start;
    }
    if (bytes > MAX_DELTA_RECORD_BYTES || this.deltaBytes + bytes > this.storage.maxDeltaBytes)
      return undefined;
    const out = Buffer.allocUnsafe(bytes);
    let at = 0;
    for (const [start, end] of ranges) {
      out.writeUInt32BE(start, at);
      out.writeUInt32BE(end - start, at + 4);
      this.data.copy(out, at + DELTA_RECORD_HEADER, start, end);
      at += DELTA_RECORD_HEADER + end - start;
    }
    return out;
  }

  /** The delta path: one transaction putting `delta` and a new length nonce. */
  private async syncDelta(delta: Buffer): Promise<void> {
    const lengthValue = Buffer.from(`${this.size}:${randomBytes(8).toString("hex")}`);
    await this.send(
      [
        { request_put: { key: Buffer.from(this.storage.deltaKey(this.base, this.nextDelta)), value: delta } },
        { request_put: { key: Buffer.from(`${this.base}length`), value: lengthValue } },
      ],
      lengthValue,
    );
    this.nextDelta++;
    this.deltas++;
    this.deltaBytes += delta.length;
    this.synced();
  }

  /**
   * Sends one write transaction of a sync, compared against the length key as last seen. When it
   * puts `lengthValue` (a fresh nonce), an unknown outcome or a failed compare is settled by
   * reading the length key back: the transaction landed if it holds that value. Otherwise the
   * sync fails: after an unknown outcome the length key is rewritten (fenceOff) so the
   * transaction cannot land later.
   */
  private async send(success: IRequestOp[], lengthValue: Buffer | undefined): Promise<void> {
    const compare: ICompare = {
      key: Buffer.from(`${this.base}length`),
      target: "Mod",
      result: "Equal",
      mod_revision: this.lengthRevision,
    };
    let response: ITxnResponse;
    try {
      response = await this.storage.txn(`sync ${this.where}`, [compare], success);
    } catch (err) {
      if (lengthValue !== undefined && (await this.landed(lengthValue)) === true) return;
      if (refusedByEtcd(err)) throw voided(err);
      const fence = await this.fenceOff();
      if (fence === "fenced") throw voided(err);
      if (fence === "changed" && lengthValue !== undefined) {
        // Someone changed the length key since: this sync, landing meanwhile, or another writer.
        const landed = await this.landed(lengthValue);
        if (landed === true) return;
        if (landed === false) throw voided(err);
      }
      throw err;
    }
    if (!response.succeeded) {
      // A retried transaction that had landed fails its compare the second time round.
      const landed = lengthValue === undefined ? false : await this.landed(lengthValue);
      if (landed === true) return;
      // A failed compare can never hold later; an earlier try is ruled out only by the read.
      const failure = (err: unknown) =>
        landed === false ? voided(err) : asIoError(err, `sync ${this.where}`);
      try {
        await this.storage.explainFailure(`sync ${this.where}`);
      } catch (err) {
        throw failure(err);
      }
      throw failure(new StoreError("Io", `i/o error: sync ${this.where}: blob changed by another writer`));
    }
    if (lengthValue !== undefined) {
      this.lengthRevision = response.header.revision;
      this.lengthValue = lengthValue;
    }
  }

  /** After a sync landed: nothing pending, the length durable. */
  private synced(): void {
    this.pending = [];
    this.resized = false;
    this.durableSize = this.size;
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  /**
   * True when the length key holds `value` (this sync's nonce): the transaction landed; false
   * when it holds anything else; undefined when it cannot be read.
   */
  private async landed(value: Buffer): Promise<boolean | undefined> {
    let current: IKeyValue | undefined;
    try {
      current = await this.storage.readKey(`${this.base}length`);
    } catch {
      return undefined;
    }
    if (current === undefined || !current.value.equals(value)) return false;
    this.lengthRevision = current.mod_revision;
    this.lengthValue = value;
    return true;
  }

  /**
   * After an unknown outcome, rewrites the length key with its last known value, so a
   * transaction of this sync still in flight fails its compare instead of landing later:
   * "fenced" once done, "changed" when the key changed meanwhile (the rewrite's own compare
   * failed), "unknown" when the rewrite failed or there is no value to rewrite.
   */
  private async fenceOff(): Promise<"fenced" | "changed" | "unknown"> {
    if (this.lengthValue === undefined) return "unknown";
    return this.storage
      .txn(
        `sync ${this.where}`,
        [
          {
            key: Buffer.from(`${this.base}length`),
            target: "Mod",
            result: "Equal",
            mod_revision: this.lengthRevision,
          },
        ],
        [{ request_put: { key: Buffer.from(`${this.base}length`), value: this.lengthValue } }],
      )
      .then(
        (response) => (response.succeeded ? "fenced" : "changed"),
        () => "unknown" as const,
      );
  }

  private page(index: number): Buffer {
    const pageBytes = this.storage.pageBytes;
    const start = index * pageBytes;
    return Buffer.from(this.data.subarray(start, Math.min(start + pageBytes, this.size)));
  }

  private apply(position: number, data: Uint8Array): void {
    const end = position + data.length;
    this.ensureCapacity(end);
    if (position > this.size) {
      this.data.fill(0, this.size, position);
      this.markDirty(this.size, position);
    }
    this.data.set(data, position);
    this.markDirty(position, end);
    if (end > this.size) this.resized = true;
    else if (end > position) this.pending.push([position, end]);
    this.size = Math.max(this.size, end);
  }

  private markDirty(start: number, end: number): void {
    const pageBytes = this.storage.pageBytes;
    for (let i = Math.floor(start / pageBytes); i * pageBytes < end; i++) this.dirty.add(i);
  }

  private ensureCapacity(length: number): void {
    if (length <= this.data.length) return;
    const grown = Buffer.alloc(Math.max(length, this.data.length * 2, 64));
    this.data.copy(grown, 0, 0, this.size);
    this.data = grown;
  }

  private alive(): void {
    if (this.closed) throw new StoreError("Io", `i/o error: ${this.where}: blob closed`);
  }
}

/** Sorted, disjoint ranges covering `ranges` (adjacent ones joined). */
function mergeRanges(ranges: readonly [number, number][]): [number, number][] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [start, end] of sorted) {
    const last = out.at(-1);
    if (last !== undefined && start <= last[1]) last[1] = Math.max(last[1], end);
    else out.push([start, end]);
  }
  return out;
}

/** Applies one delta's records to `data`; a record past the end or cut short is corruption. */
function applyDelta(data: Buffer, delta: Buffer, where: string): void {
  let at = 0;
  while (at < delta.length) {
    if (at + DELTA_RECORD_HEADER > delta.length) {
      throw new StoreError("BlobCorrupt", `blob corrupt: ${where}: record header cut short`);
    }
    const offset = delta.readUInt32BE(at);
    const length = delta.readUInt32BE(at + 4);
    const bytes = at + DELTA_RECORD_HEADER;
    if (bytes + length > delta.length || offset + length > data.length) {
      throw new StoreError("BlobCorrupt", `blob corrupt: ${where}: record out of bounds`);
    }
    delta.copy(data, offset, bytes, bytes + length);
    at = bytes + length;
  }
}

/**
 * Splits dirty pages into transactions within the limits; always at least one (possibly empty)
 * batch, so a length change alone still commits.
 */
function splitPages(
  pages: readonly number[],
  limits: { maxPageOps: number; maxTxnBytes: number },
  pageBytes: number,
): number[][] {
  const perTxn = Math.max(1, Math.min(limits.maxPageOps, Math.floor(limits.maxTxnBytes / pageBytes)));
  const batches: number[][] = [];
  for (let i = 0; i < pages.length; i += perTxn) batches.push(pages.slice(i, i + perTxn));
  if (batches.length === 0) batches.push([]);
  return batches;
}
