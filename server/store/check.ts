/**
 * Check: what opening a partition would find, decided from the bytes of its two blob files
 * alone, without opening anything: for checking a data directory (or a copy of one, such as a
 * backup) before a server serves it (`metadata-cli check`).
 *
 * Invariants:
 * - Nothing is written: the caller hands in each blob file's bytes, or undefined when absent.
 * - The verdict follows the rules of `openMetadata` (metadata.ts) and of the header layer
 *   (blob-header.ts), so that a partition checked "ok" or "recoverable" opens, "data_loss" is
 *   answered DATA_LOSS until an operator accepts the loss, and "corrupt" is refused at open:
 *   - a header that is neither whole nor an interrupted creation: corrupt (BlobCorrupt);
 *   - both blobs held a body and neither is valid: data_loss;
 *   - the newest valid body (left on a tie) does not decode with the partition's key codec:
 *     corrupt (Corrupt);
 *   - one damaged body, the other valid or never written: recoverable (the open keeps the
 *     damaged one in the quarantine and cuts it); the writes of a damaged body that claims a
 *     newer version than the one served are lost, and the finding says so;
 *   - otherwise ok.
 * - Only the newest valid body is decoded, as at open: the older one is checked by its CRC.
 */
import { crc32c } from "./checksum.js";
import { CRC_BYTES, decodeBody, type KeyCodec, MIN_BODY_BYTES, VERSION_BYTES } from "./codec.js";
import { isStoreError } from "./errors.js";
import { type BlobLayout, resolveHeader, resolveLength } from "./storage/blob-header.js";

/** What one blob file holds. */
export type BlobFinding =
  /** No file: the open creates it. */
  | { state: "missing" }
  /** A file without a whole header (an interrupted creation): the open creates it again. */
  | { state: "uncreated" }
  /** A header and no body: never synced, or cut by a recovery. */
  | { state: "empty"; layout: BlobLayout }
  | { state: "valid"; layout: BlobLayout; version: bigint; bodyBytes: number }
  | {
      state: "damaged";
      layout: BlobLayout;
      reason: "too_short" | "checksum_mismatch";
      /** The version in the body's first 8 bytes, not covered by any valid checksum. */
      claimedVersion: bigint | undefined;
    }
  /** A header that is neither whole nor an interrupted creation: the open refuses the blob. */
  | { state: "bad_header"; detail: string };

/** The verdict on a partition; see the module comment. */
export type Verdict = "ok" | "recoverable" | "data_loss" | "corrupt";

/** What `checkPartition` found. */
export interface PartitionCheck {
  partition: string;
  verdict: Verdict;
  left: BlobFinding;
  right: BlobFinding;
  /** Version and number of keys an open would serve (ok and recoverable only). */
  version?: bigint;
  keys?: number;
  /** One line saying what was found and what an open does with it. */
  summary: string;
}

/** Examines one blob file's bytes (header included); `where` names it in messages. */
export function examineBlob(file: Uint8Array | undefined, where: string): BlobFinding {
  if (file === undefined) return { state: "missing" };
  let header: ReturnType<typeof resolveHeader>;
  try {
    header = resolveHeader(file.subarray(0, resolveLength(file.length)), file.length, where);
  } catch (err) {
    return { state: "bad_header", detail: err instanceof Error ? err.message : String(err) };
  }
  if (header === undefined) return { state: "uncreated" };
  const body = Buffer.from(file.buffer, file.byteOffset + header.dataOffset, file.length - header.dataOffset);
  const layout = header.layout;
  if (body.length === 0) return { state: "empty", layout };
  const claimedVersion = body.length >= VERSION_BYTES ? body.readBigUInt64BE(0) : undefined;
  if (body.length < MIN_BODY_BYTES) return { state: "damaged", layout, reason: "too_short", claimedVersion };
  const crcAt = body.length - CRC_BYTES;
  if (body.readUInt32BE(crcAt) !== crc32c(body.subarray(0, crcAt))) {
    return { state: "damaged", layout, reason: "checksum_mismatch", claimedVersion };
  }
  return { state: "valid", layout, version: body.readBigUInt64BE(0), bodyBytes: body.length };
}

/**
 * Decides what opening `partition` would do, from its blob files' bytes (`left`, `right`:
 * header included, undefined when absent) and its key codec. Reads nothing else, writes nothing.
 */
export function checkPartition(
  partition: string,
  left: Uint8Array | undefined,
  right: Uint8Array | undefined,
  codec: KeyCodec,
): PartitionCheck {
  const findings = [
    examineBlob(left, `${partition}/left`),
    examineBlob(right, `${partition}/right`),
  ] as const;
  const [l, r] = findings;
  const base = { partition, left: l, right: r };
  const described = `left ${describe(l)}, right ${describe(r)}`;
  for (const finding of findings) {
    if (finding.state === "bad_header") {
      return {
        ...base,
        verdict: "corrupt",
        summary: `CORRUPT: ${finding.detail}; the open refuses it (DATA_LOSS)`,
      };
    }
  }
  if (l.state === "damaged" && r.state === "damaged") {
    return {
      ...base,
      verdict: "data_loss",
      summary: `DATA LOSS: ${described}; no valid blob: answered DATA_LOSS until the loss is accepted`,
    };
  }
  const valid = findings.filter((f) => f.state === "valid");
  const newest = valid.reduce<(typeof valid)[number] | undefined>(
    (best, f) => (best === undefined || f.version > best.version ? f : best),
    undefined,
  );
  let keys = 0;
  if (newest !== undefined) {
    const file = (newest === l ? left : right) as Uint8Array;
    const body = Buffer.from(file.buffer, file.byteOffset + file.length - newest.bodyBytes, newest.bodyBytes);
    try {
      keys = decodeBody(codec, body, `${partition}/${newest === l ? "left" : "right"}`).keys.length;
    } catch (err) {
      if (!isStoreError(err, "Corrupt")) throw err;
      return {
        ...base,
        verdict: "corrupt",
        summary: `CORRUPT: ${err.message} (with key codec ${codec.kind === "fixed" ? `fixed:${codec.width}` : "variable"}); the open refuses it (DATA_LOSS)`,
      };
    }
  }
  const version = newest?.version ?? 0n;
  const served = `serves version ${version}, ${keys} key(s)`;
  const damaged = findings.filter((f) => f.state === "damaged");
  if (damaged.length > 0) {
    const lost = damaged.some((f) => f.claimedVersion !== undefined && f.claimedVersion > version);
    return {
      ...base,
      verdict: "recoverable",
      version,
      keys,
      summary: `recoverable: ${described}; the open keeps the damaged blob in the quarantine, cuts it and ${served}${lost ? " (the writes of the damaged, newer version are lost)" : ""}`,
    };
  }
  return { ...base, verdict: "ok", version, keys, summary: `ok: ${described}; ${served}` };
}

function describe(finding: BlobFinding): string {
  switch (finding.state) {
    case "missing":
      return "missing";
    case "uncreated":
      return "not created yet";
    case "empty":
      return "empty";
    case "valid":
      return `v${finding.version}`;
    case "damaged":
      return `${finding.reason === "too_short" ? "too short" : "checksum mismatch"} (claims ${finding.claimedVersion === undefined ? "no readable version" : `v${finding.claimedVersion}`})`;
    case "bad_header":
      return "bad header";
    default:
      return finding satisfies never;
  }
}
