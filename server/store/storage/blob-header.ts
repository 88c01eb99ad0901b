/**
 * Blob headers: the region a storage keeps in front of every blob's data, in the two layouts of
 * commonware-runtime (docs/FORMAT.md §2). The magic names the layout; the layout fixes where the
 * data starts.
 *
 *   V0 (every release; deprecated from 2026.10.0), data at 8:
 *     +--------------+--------------------+-------------------+
 *     | "CWIC"       | layout version: 0  | blob version: u16 |
 *     +--------------+--------------------+-------------------+
 *   V1 (default from 2026.10.0), data at 4096:
 *     +--------------+--------------------+-------------------+-------------------+----------------+
 *     | "CWIK"       | layout version: 1  | blob version: u16 | crc32c(0..8): u32 | zeros to 4096  |
 *     +--------------+--------------------+-------------------+-------------------+----------------+
 *   (all big-endian; metadata blobs use blob version 0)
 *
 * Resolution at open (`resolveHeader`, the rules of commonware-runtime 2026.10.0):
 * - A file shorter than 8 bytes holds no header: the blob is created (again).
 * - Otherwise the magic selects the layout and the layout version must agree with it; a V1 header
 *   also needs 12 bytes, a CRC matching the first 8, a file of at least 4096 bytes and zero
 *   padding; then the blob version must be 0.
 * - A failure that a torn creation can cause (magic, layout version, header CRC, truncation) on a
 *   file of at most 4096 bytes whose bytes are a canonical V1 creation prefix followed by zeros
 *   is an interrupted creation: the blob is created again. Since "CWIC" and "CWIK" share "CWI",
 *   this also covers every torn V0 creation of 8 bytes (zeros, or "C", "CW", "CWI" then zeros).
 * - Anything else is refused with a typed error (`BlobCorrupt`, `BlobVersionMismatch`) and
 *   nothing is modified: a header that was once whole is never rewritten.
 *
 * Invariant: creation writes exactly `headerRegion(layout)` into an empty file and syncs it, so
 * every state a crash or a full disk can leave behind resolves to "create again" or to the whole
 * header.
 */
import { crc32c } from "../checksum.js";
import { StoreError } from "../errors.js";

/** Layout of a blob's header region: "v0" (8 bytes) or "v1" (one 4096-byte page). */
export type BlobLayout = "v0" | "v1";

/** Every layout, oldest first. */
export const BLOB_LAYOUTS: readonly BlobLayout[] = ["v0", "v1"];

/** Layout of new blobs unless configured otherwise: the newest, as commonware-runtime 2026.10.0. */
export const DEFAULT_BLOB_LAYOUT: BlobLayout = "v1";

/** Bytes of the prelude every layout starts with: magic, layout version, blob version. */
export const PRELUDE_BYTES = 8;
/** Bytes needed to parse any header: the prelude and V1's CRC. */
export const HEADER_PARSE_BYTES = 12;
/** Size of a V1 header region, and so the largest file whose header region a resolve reads. */
export const V1_DATA_OFFSET = 4096;
/** Application blob version written and accepted (metadata blobs use 0). */
export const BLOB_VERSION = 0;

const MAGIC: Record<BlobLayout, Uint8Array> = {
  v0: Uint8Array.of(0x43, 0x57, 0x49, 0x43), // "CWIC"
  v1: Uint8Array.of(0x43, 0x57, 0x49, 0x4b), // "CWIK"
};
const LAYOUT_VERSION: Record<BlobLayout, number> = { v0: 0, v1: 1 };

/** Offset in the file where the data of a blob of `layout` starts. */
export function dataOffset(layout: BlobLayout): number {
  return layout === "v0" ? PRELUDE_BYTES : V1_DATA_OFFSET;
}

/** Parses "v0" or "v1" (any case). @throws StoreError InvalidConfig */
export function parseBlobLayout(text: string): BlobLayout {
  const layout = text.trim().toLowerCase();
  if (layout === "v0" || layout === "v1") return layout;
  throw new StoreError("InvalidConfig", `invalid blob layout ${JSON.stringify(text)}: use v0 or v1`);
}

/** The whole header region of a new blob of `layout` (blob version 0): what creation writes. */
export function headerRegion(layout: BlobLayout): Uint8Array {
  const region = new Uint8Array(dataOffset(layout));
  const view = new DataView(region.buffer);
  region.set(MAGIC[layout], 0);
  view.setUint16(4, LAYOUT_VERSION[layout]);
  view.setUint16(6, BLOB_VERSION);
  if (layout === "v1") view.setUint32(PRELUDE_BYTES, crc32c(region.subarray(0, PRELUDE_BYTES)));
  return region;
}

/** Number of leading bytes `resolveHeader` needs from a file of `rawLength` bytes. */
export function resolveLength(rawLength: number): number {
  return Math.min(rawLength, V1_DATA_OFFSET);
}

/** A valid header: the blob's layout and where its data starts. */
export interface ResolvedHeader {
  layout: BlobLayout;
  dataOffset: number;
}

type HeaderFailure =
  | { torn: true; error: StoreError }
  | { torn: false; error: StoreError }
  | { torn: false; error: undefined; header: ResolvedHeader };

/**
 * Resolves the header of a file of `rawLength` bytes whose first `resolveLength(rawLength)`
 * bytes are `raw`: the header, or undefined when the blob must be created (again): no header
 * yet, or an interrupted creation. `where` names the blob in messages.
 * @throws StoreError BlobCorrupt, BlobVersionMismatch (the file must then be left as it is)
 */
export function resolveHeader(raw: Uint8Array, rawLength: number, where: string): ResolvedHeader | undefined {
  if (rawLength < PRELUDE_BYTES) return undefined;
  const parsed = parseHeader(raw, rawLength, where);
  if (parsed.error === undefined) return parsed.header;
  if (parsed.torn && rawLength <= V1_DATA_OFFSET && isInterruptedV1Creation(raw.subarray(0, rawLength))) {
    return undefined;
  }
  throw parsed.error;
}

function parseHeader(raw: Uint8Array, rawLength: number, where: string): HeaderFailure {
  const corrupt = (reason: string) => new StoreError("BlobCorrupt", `blob corrupt: ${where}: ${reason}`);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const layout = BLOB_LAYOUTS.find((l) => startsWith(raw, MAGIC[l]));
  if (layout === undefined) {
    const found = Buffer.from(raw.subarray(0, 4)).toString("hex");
    return { torn: true, error: corrupt(`invalid magic: found ${found}`) };
  }
  const layoutVersion = view.getUint16(4);
  if (layoutVersion !== LAYOUT_VERSION[layout]) {
    return {
      torn: true,
      error: corrupt(
        `unsupported layout version: expected ${LAYOUT_VERSION[layout]}, found ${layoutVersion}`,
      ),
    };
  }
  if (layout === "v1") {
    if (raw.length < HEADER_PARSE_BYTES) {
      return {
        torn: true,
        error: corrupt(`truncated header: required length ${HEADER_PARSE_BYTES}, raw length ${rawLength}`),
      };
    }
    if (view.getUint32(PRELUDE_BYTES) !== crc32c(raw.subarray(0, PRELUDE_BYTES))) {
      return { torn: true, error: corrupt("invalid header checksum") };
    }
    if (rawLength < V1_DATA_OFFSET) {
      return {
        torn: true,
        error: corrupt(`truncated header: required length ${V1_DATA_OFFSET}, raw length ${rawLength}`),
      };
    }
    if (raw.subarray(HEADER_PARSE_BYTES, V1_DATA_OFFSET).some((b) => b !== 0)) {
      // The CRC held and the region is whole: foreign bytes, not a torn write.
      return { torn: false, error: corrupt("invalid header padding") };
    }
  }
  const blobVersion = view.getUint16(6);
  if (blobVersion !== BLOB_VERSION) {
    return {
      torn: false,
      error: new StoreError(
        "BlobVersionMismatch",
        `blob version mismatch: ${where}: expected ${BLOB_VERSION}..=${BLOB_VERSION}, found ${blobVersion}`,
      ),
    };
  }
  return { torn: false, error: undefined, header: { layout, dataOffset: dataOffset(layout) } };
}

/**
 * True when `raw` (a whole file) is what an interrupted V1 creation can leave: at most 4096
 * bytes, equal to a prefix of the canonical V1 region (magic and layout version fixed, any blob
 * version, then the CRC of that prelude) followed by zeros only. Trailing zeros cannot be told
 * from unwritten bytes, so the written prefix ends at the last nonzero byte. Anything else (a
 * lost byte before a persisted one, a CRC that does not match its prelude) is not a creation.
 */
export function isInterruptedV1Creation(raw: Uint8Array): boolean {
  if (raw.length > V1_DATA_OFFSET) return false;
  const head = raw.subarray(0, Math.min(raw.length, HEADER_PARSE_BYTES));
  if (raw.subarray(head.length).some((b) => b !== 0)) return false;
  let written = head.length;
  while (written > 0 && head[written - 1] === 0) written--;
  const canonical = new Uint8Array(HEADER_PARSE_BYTES);
  canonical.set(MAGIC.v1, 0);
  new DataView(canonical.buffer).setUint16(4, LAYOUT_VERSION.v1);
  if (written <= PRELUDE_BYTES) {
    // Torn at or before the CRC: the fixed bytes must match; bytes 6..8 are the writer's choice.
    const fixed = Math.min(written, 6);
    return equalBytes(head.subarray(0, fixed), canonical.subarray(0, fixed));
  }
  // CRC bytes persisted, so the whole prelude did: it must be canonical, with the writer's blob
  // version, and the CRC bytes a prefix of its CRC.
  if (!equalBytes(head.subarray(0, 6), canonical.subarray(0, 6))) return false;
  canonical.set(head.subarray(6, 8), 6);
  new DataView(canonical.buffer).setUint32(PRELUDE_BYTES, crc32c(canonical.subarray(0, PRELUDE_BYTES)));
  return equalBytes(head.subarray(PRELUDE_BYTES, written), canonical.subarray(PRELUDE_BYTES, written));
}

function startsWith(bytes: Uint8Array, prefix: Uint8Array): boolean {
  return bytes.length >= prefix.length && equalBytes(bytes.subarray(0, prefix.length), prefix);
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
