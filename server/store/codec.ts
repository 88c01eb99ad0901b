/**
 * Codec: the bytes of a metadata blob body, its varints and its key codecs.
 *
 * Body (all integers big-endian):
 *   +--------------+------------------------------------------+--------------+
 *   | version: u64 | (key || varint(len(value)) || value)*    | crc32c: u32  |
 *   +--------------+------------------------------------------+--------------+
 * The CRC covers every byte before it. There is no entry count; entries end where the CRC
 * begins. An empty body (length 0) means "no data, version 0"; the smallest valid body is 12
 * bytes.
 *
 * Varint: unsigned LEB128 limited to u32: 7-bit groups, least significant first, high bit set on
 * every byte but the last. A decoder refuses a 0x00 continuation byte after the first (so each
 * length has one encoding), a fifth byte above 0x0F, and input that ends inside a varint.
 *
 * Key codecs (the format is not self-describing: reader and writer must agree):
 * - fixed(N): the key is exactly N raw bytes (commonware's U64 is fixed(8), digests fixed(32)).
 * - variable: varint(len(key)) || key, keys of 1..maxKeyBytes bytes. commonware-storage 2026.4.0
 *   has no variable-length key type; this encoding is this project's own.
 * Whatever the codec, entries are ordered by the raw key bytes (lexicographic, shorter first on
 * a common prefix), which for fixed keys is also the order of their encodings.
 *
 * In memory a key is a "key string": its bytes as a latin1 string (one UTF-16 code unit per
 * byte), so that `<` on key strings is the byte order of keys and keys can index a Map.
 *
 * Invariants:
 * - `decodeBody` accepts only what `encodeBody` produces: strictly ascending keys, every byte
 *   accounted for. Anything else is `StoreError("Corrupt")`.
 */
import { StoreError } from "./errors.js";

/** Largest value (and varint) length the format can hold: 2^32 - 1. */
export const MAX_VALUE_BYTES = 0xffffffff;
/** Bytes of the version at the start of a body. */
export const VERSION_BYTES = 8;
/** Bytes of the CRC at the end of a body. */
export const CRC_BYTES = 4;
/** Length of the smallest valid body: version and CRC, no entries. */
export const MIN_BODY_BYTES = VERSION_BYTES + CRC_BYTES;

/** A key as a latin1 string of its raw bytes. */
export type KeyString = string;

/** Key string of raw key bytes. */
export function toKeyString(key: Uint8Array): KeyString {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString("latin1");
}

/** Raw key bytes of a key string (a new buffer). */
export function fromKeyString(key: KeyString): Buffer {
  return Buffer.from(key, "latin1");
}

/** Number of bytes of the varint encoding of `n` (0 <= n < 2^32). */
export function varintSize(n: number): number {
  if (n < 0x80) return 1;
  if (n < 0x4000) return 2;
  if (n < 0x200000) return 3;
  if (n < 0x10000000) return 4;
  return 5;
}

/** Writes the varint of `n` at `offset`; returns the offset after it. */
export function writeVarint(out: Uint8Array, offset: number, n: number): number {
  let rest = n;
  while (rest >= 0x80) {
    out[offset++] = (rest & 0x7f) | 0x80;
    rest = Math.floor(rest / 128);
  }
  out[offset++] = rest;
  return offset;
}

/** A decoded varint and the offset just after it. */
export interface VarintRead {
  value: number;
  next: number;
}

/** Reads a varint at `offset`, refusing anything but the one canonical encoding of a u32. */
export function readVarint(bytes: Uint8Array, offset: number, end: number): VarintRead {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 5; i++) {
    if (offset + i >= end) throw corrupt(`varint runs past the end at offset ${offset}`);
    const byte = bytes[offset + i] as number;
    if (i > 0 && byte === 0) throw corrupt(`non-canonical varint at offset ${offset}`);
    if (i === 4 && byte > 0x0f) throw corrupt(`varint larger than 32 bits at offset ${offset}`);
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return { value, next: offset + i + 1 };
    scale *= 128;
  }
  throw corrupt(`varint larger than 32 bits at offset ${offset}`);
}

/** How keys are framed in a body, and which keys are valid. */
export type KeyCodec = { kind: "fixed"; width: number } | { kind: "variable"; maxKeyBytes: number };

/** Default longest key of the variable codec. */
export const DEFAULT_MAX_KEY_BYTES = 4096;

/** Fixed-width raw keys (commonware's U64 is `fixedKeys(8)`). */
export function fixedKeys(width: number): KeyCodec {
  if (!Number.isInteger(width) || width < 1 || width > 0xffff) {
    throw new StoreError("InvalidConfig", `invalid fixed key width ${width}: use 1..65535`);
  }
  return { kind: "fixed", width };
}

/** Variable-length keys with a varint length prefix. */
export function variableKeys(maxKeyBytes = DEFAULT_MAX_KEY_BYTES): KeyCodec {
  if (!Number.isInteger(maxKeyBytes) || maxKeyBytes < 1 || maxKeyBytes > MAX_VALUE_BYTES) {
    throw new StoreError("InvalidConfig", `invalid maximum key size ${maxKeyBytes}`);
  }
  return { kind: "variable", maxKeyBytes };
}

/** Parses "fixed:N" or "variable" (as given on the command line). */
export function parseKeyCodec(text: string): KeyCodec {
  if (text === "variable") return variableKeys();
  const match = /^fixed:(\d+)$/.exec(text);
  if (match) return fixedKeys(Number(match[1]));
  throw new StoreError("InvalidConfig", `invalid key codec ${JSON.stringify(text)}: use fixed:N or variable`);
}

/** Throws the input error for a key the codec refuses; returns nothing for a valid key. */
export function validateKey(codec: KeyCodec, key: Uint8Array): void {
  if (codec.kind === "fixed") {
    if (key.length !== codec.width) {
      throw new StoreError("KeyWidth", `key width ${key.length} bytes != ${codec.width}`);
    }
    return;
  }
  if (key.length === 0) throw new StoreError("EmptyKey", "empty key");
  if (key.length > codec.maxKeyBytes) {
    throw new StoreError("KeyTooLarge", `key too large: ${key.length} bytes > ${codec.maxKeyBytes}`);
  }
}

/** Throws `ValueTooLarge` when `value` is longer than `maxValueBytes`. */
export function validateValue(value: Uint8Array, maxValueBytes: number): void {
  if (value.length > maxValueBytes) {
    throw new StoreError("ValueTooLarge", `value too large: ${value.length} bytes > ${maxValueBytes}`);
  }
}

/** Bytes of the encoding of key string `key`. */
export function encodedKeySize(codec: KeyCodec, key: KeyString): number {
  return codec.kind === "fixed" ? key.length : varintSize(key.length) + key.length;
}

/** Bytes of the encoding of a value. */
export function encodedValueSize(value: Uint8Array): number {
  return varintSize(value.length) + value.length;
}

/** Writes the value's varint and bytes at `offset`; returns the offset after it. */
export function writeValue(out: Uint8Array, offset: number, value: Uint8Array): number {
  const start = writeVarint(out, offset, value.length);
  out.set(value, start);
  return start + value.length;
}

/** Offsets (in a body) of the encoded values, by key. */
export type Spans = Map<KeyString, number>;

/** An encoded body together with where each value's encoding starts in it. */
export interface EncodedBody {
  body: Buffer;
  spans: Spans;
}

/**
 * Encodes a whole body: `version`, `entries` in the order given (which must be ascending), CRC.
 * `entriesBytes` must be the exact total size of the entries' encodings.
 */
export function encodeBody(
  codec: KeyCodec,
  version: bigint,
  entries: Iterable<[KeyString, Uint8Array]>,
  entriesBytes: number,
  checksum: (bytes: Uint8Array) => number,
): EncodedBody {
  const length = VERSION_BYTES + entriesBytes + CRC_BYTES;
  const body = Buffer.allocUnsafe(length);
  body.writeBigUInt64BE(version, 0);
  const spans: Spans = new Map();
  let offset = VERSION_BYTES;
  for (const [key, value] of entries) {
    if (codec.kind === "variable") offset = writeVarint(body, offset, key.length);
    offset += body.write(key, offset, "latin1");
    spans.set(key, offset);
    offset = writeValue(body, offset, value);
  }
  if (offset !== length - CRC_BYTES) {
    throw new StoreError(
      "Corrupt",
      `internal: entries encoded to ${offset - VERSION_BYTES} bytes, expected ${entriesBytes}`,
    );
  }
  body.writeUInt32BE(checksum(body.subarray(0, offset)), offset);
  return { body, spans };
}

/** A decoded body. Values are views into the body, which must not be modified afterwards. */
export interface DecodedBody {
  version: bigint;
  keys: KeyString[];
  values: Buffer[];
  entriesBytes: number;
}

/**
 * Decodes a body whose CRC has been checked. Refuses entries that run into the CRC, keys out of
 * ascending order, and malformed varints, with `StoreError("Corrupt")`.
 */
export function decodeBody(codec: KeyCodec, body: Buffer, where: string): DecodedBody {
  const end = body.length - CRC_BYTES;
  const version = body.readBigUInt64BE(0);
  const keys: KeyString[] = [];
  const values: Buffer[] = [];
  let offset = VERSION_BYTES;
  let previous: KeyString | undefined;
  try {
    while (offset < end) {
      let keyLength: number;
      if (codec.kind === "fixed") {
        keyLength = codec.width;
      } else {
        const read = readVarint(body, offset, end);
        keyLength = read.value;
        offset = read.next;
        if (keyLength === 0) throw corrupt(`empty key at offset ${offset}`);
      }
      if (offset + keyLength > end) throw corrupt(`key runs past the entries at offset ${offset}`);
      const key = body.toString("latin1", offset, offset + keyLength);
      if (previous !== undefined && !(previous < key)) throw corrupt(`key out of order at offset ${offset}`);
      offset += keyLength;
      const length = readVarint(body, offset, end);
      if (length.next + length.value > end) throw corrupt(`value runs past the entries at offset ${offset}`);
      keys.push(key);
      values.push(body.subarray(length.next, length.next + length.value));
      offset = length.next + length.value;
      previous = key;
    }
  } catch (err) {
    if (err instanceof StoreError) {
      throw new StoreError("Corrupt", `corrupt body in ${where}: ${err.message}`, { cause: err });
    }
    throw err;
  }
  return { version, keys, values, entriesBytes: end - VERSION_BYTES };
}

function corrupt(message: string): StoreError {
  return new StoreError("Corrupt", message);
}
