/**
 * A deliberately slow Keys reader, run as its own process so that the memory of the test process
 * is the server's alone:
 *
 *   node --import tsx test/support/slow-keys-reader.ts ADDRESS PARTITION SLEEP_MS
 *
 * It lists the partition with values over a raw grpc-js stream, sleeping SLEEP_MS after every
 * chunk, and prints one JSON object per line on stdout: `{"chunks": n}` after each chunk (so the
 * test can sample memory as the read progresses), then a summary: chunk and key counts, listed
 * bytes, whether keys were strictly ascending, whether every chunk carried the same version, and
 * a sha256 over every key and value in order (each as u32 length then bytes).
 */
import { createHash } from "node:crypto";
import { pathToFileURL } from "node:url";
import type { KeysResponse } from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { RawClient } from "./raw-client.js";

/** The last line the reader prints. */
export interface SlowReadSummary {
  chunks: number;
  keys: number;
  bytes: number;
  ascending: boolean;
  oneVersion: boolean;
  version: string;
  sha256: string;
  durationMs: number;
}

/** sha256 input of one entry: u32 length and bytes of the key, then of the value. */
export function hashEntry(hash: ReturnType<typeof createHash>, key: Uint8Array, value: Uint8Array): void {
  const length = Buffer.alloc(4);
  length.writeUInt32BE(key.length);
  hash.update(length).update(key);
  length.writeUInt32BE(value.length);
  hash.update(length).update(value);
}

async function main(address: string, partition: string, sleepMs: number): Promise<void> {
  const raw = new RawClient(address);
  const started = Date.now();
  const hash = createHash("sha256");
  const summary: SlowReadSummary = {
    chunks: 0,
    keys: 0,
    bytes: 0,
    ascending: true,
    oneVersion: true,
    version: "",
    sha256: "",
    durationMs: 0,
  };
  let previous: Uint8Array | undefined;
  try {
    for await (const chunk of raw.keys({ partition, includeValues: true }) as AsyncIterable<KeysResponse>) {
      if (summary.chunks === 0) summary.version = String(chunk.version);
      else if (String(chunk.version) !== summary.version) summary.oneVersion = false;
      summary.chunks++;
      for (const [i, key] of chunk.keys.entries()) {
        const value = chunk.values[i] ?? new Uint8Array();
        if (previous !== undefined && Buffer.compare(previous, key) >= 0) summary.ascending = false;
        previous = key;
        hashEntry(hash, key, value);
        summary.keys++;
        summary.bytes += key.length + value.length;
      }
      process.stdout.write(`${JSON.stringify({ chunks: summary.chunks })}\n`);
      await new Promise((resolve) => setTimeout(resolve, sleepMs));
    }
  } finally {
    raw.close();
  }
  summary.sha256 = hash.digest("hex");
  summary.durationMs = Date.now() - started;
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

// Runs only as a script, not when a test imports `hashEntry` and the summary type.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [address, partition, sleepMs] = process.argv.slice(2);
  if (address === undefined || partition === undefined || sleepMs === undefined) {
    process.stderr.write("usage: slow-keys-reader.ts ADDRESS PARTITION SLEEP_MS\n");
    process.exit(2);
  }
  main(address, partition, Number(sleepMs)).catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
}
