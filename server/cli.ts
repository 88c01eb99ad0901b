/**
 * CLI: a command line for people, built on the TypeScript client (clients/ts/metadata-client.ts).
 *
 *   npm run cli -- serve [server flags]          run the server, as `npm start` does
 *   npm run cli -- put KEY VALUE [--buffered]    prints the previous value (if any) and the version
 *   npm run cli -- get KEY                       prints the committed value
 *   npm run cli -- rm KEY [--buffered]           prints the removed value (if any) and the version
 *   npm run cli -- keys [--prefix P] [--start S] [--end E] [--limit N] [--values]
 *   npm run cli -- sync                          prints the committed version
 *   npm run cli -- retain (--prefix P | --start S --end E | --none) [--invert] [--buffered]
 *   npm run cli -- clear [--buffered]            prints how many keys were removed and the version
 *   npm run cli -- commit FILE|-                 an atomic batch (puts, removes, preconditions)
 *   npm run cli -- partitions                    prints the partition names
 *   npm run cli -- load FILE [--buffered]        streams the puts of FILE (- for stdin), one
 *                                                KEY<TAB>VALUE a line, over one Write stream
 *   npm run cli -- watch [--prefix P] [--from-version N] [--values]
 *                                                prints committed changes as they come, one a line
 *   npm run cli -- accept-data-loss PARTITION [server flags]   on the data directory, server stopped
 *   npm run cli -- check [PARTITION ...] [server flags]        read-only, server stopped or a copy
 * with `--address HOST:PORT` (env METADATA_ADDRESS, default 127.0.0.1:50051), `--partition NAME`,
 * `--deadline-ms N` and `--output text|json` on every call, and for secured servers `--token T`
 * (env METADATA_TOKEN), `--cacert FILE` (TLS trusting that CA) and `--cert FILE --key FILE` (a
 * client certificate). `help` or `--help` prints the usage.
 *
 * Bytes on the command line: plain text is its UTF-8 bytes; `hex:0a1b` is hex; `u64:123` is an
 * 8-byte big-endian integer (the U64 keys of Rust nodes); `text:...` is the text after the prefix
 * (for text that itself starts with `hex:`, `u64:`, `text:` or `@`). A VALUE may also be `@FILE`
 * (the bytes of the file) or `-` (standard input).
 *
 * A commit batch has one operation a line, its words separated by spaces; a word in double quotes
 * is a JSON string (for spaces and escapes); `#` starts a comment line:
 *   put KEY VALUE | rm KEY | if-absent KEY | if-present KEY | if-equals KEY VALUE
 *
 * Invariants:
 * - Output spells bytes so that reading the spelling back gives the same bytes: printable UTF-8 as
 *   text (with `text:` in front when it starts with a prefix), else an 8-byte key as `u64:N`, else
 *   `hex:...`. So a line of `keys` can be passed back as a KEY.
 * - Results go to stdout, diagnostics to stderr. Exit status: 0 ok; 1 for an error (printed as
 *   `error: CODE: details`, CODE a gRPC status name; `error: cannot reach the server at ADDR`
 *   when nothing answers there) or a `get` of a missing key ("not found" on stderr, nothing on
 *   stdout); 2 for a bad command line, including bad bytes and a bad batch (nothing is sent
 *   then), and, as for `npm start`, a bad server flag.
 * - `--output json` prints one JSON object per result (per key for `keys`), in the protobuf JSON
 *   mapping: bytes in base64, versions and counts as decimal strings. `get --raw` prints the value's
 *   bytes exactly, with no newline.
 * - `serve` starts the service exactly as server/main.ts does (server/serve.ts) and
 *   stops it the same way on SIGTERM/SIGINT: finish in-flight calls, commit buffered changes,
 *   exit 0; a second signal exits at once with status 1.
 */

import { createReadStream, readFileSync, realpathSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { status } from "@grpc/grpc-js";
import {
  type BatchMutation,
  type BatchPrecondition,
  type ClientOptions,
  Durability,
  MetadataClient,
} from "../clients/ts/metadata-client.js";

/** The address called when neither `--address` nor METADATA_ADDRESS is given. */
export const DEFAULT_ADDRESS = "127.0.0.1:50051";

/** Text of `help`. */
export const CLI_USAGE = `usage: npm run cli -- COMMAND [ARGS] [OPTIONS]
   or: node dist/server/cli.js COMMAND [ARGS] [OPTIONS] (after npm run build)

Commands:
  serve [SERVER FLAGS]  run the server, as npm start does ("serve --help" lists the flags)
  put KEY VALUE         store VALUE under KEY; prints the previous value (if any) and the version
  get KEY               print the committed value of KEY ("not found" on stderr and exit 1 if none)
  rm KEY                remove KEY; prints the removed value (if any) and the version
  keys                  list the committed keys in byte order, one a line (KEY<TAB>VALUE with --values)
  sync                  commit everything pending in the partition; prints the version
  retain                keep only the keys selected by --prefix or --start/--end (--invert:
                        remove them instead; --none: remove every key); prints removed and version
  clear                 remove every key of the partition; prints removed and version
  commit FILE|-         apply the batch in FILE (- for stdin) atomically, if its preconditions
                        hold (FAILED_PRECONDITION otherwise); prints the version
  partitions            list the partitions
  load FILE             put every KEY<TAB>VALUE line of FILE ("-": stdin) over one Write stream;
                        progress on stderr every second, a summary on stdout; exit 1 if a put
                        failed (the failed lines are listed on stderr)
  watch                 print committed changes as they come, one a line: VERSION<TAB>put<TAB>KEY
                        (<TAB>VALUE with --values) or VERSION<TAB>rm<TAB>KEY; runs until stopped
  check [PARTITION ...] [SERVER FLAGS]
                        with the server stopped (or on a copy of its data directory): read each
                        partition's blobs and say what opening it would find: ok, recoverable
                        (one damaged blob), DATA LOSS or CORRUPT; changes nothing; exit 1 when
                        any partition has data loss or is corrupt; takes the server's
                        --data-dir and key codec flags
  accept-data-loss PARTITION [SERVER FLAGS]
                        with the server stopped: keep both damaged blobs of PARTITION in
                        <data-dir>/.quarantine/ and restart it empty (see README: corruption);
                        takes the server's --data-dir and key codec flags
  help                  print this text

Options:
  --address HOST:PORT   server to call (env METADATA_ADDRESS; default ${DEFAULT_ADDRESS})
  --partition NAME      partition to use (default: the server's default partition)
  --deadline-ms N       give up after N ms (DEADLINE_EXCEEDED: a write may or may not be committed)
  --token T             bearer token (env METADATA_TOKEN; the env var keeps it out of ps and history)
  --cacert FILE         use TLS, trusting the CA certificate(s) in FILE (PEM)
  --cert FILE, --key FILE
                        use TLS with this client certificate and key (mutual TLS)
  --buffered            put, rm, load, retain, clear, commit: answer once applied, before the fsync (version 0); the server
                        commits it within its flush interval, or at once with "sync"
  --prefix P            keys: only keys starting with P
  --start S, --end E    keys: only keys >= S and < E
  --limit N             keys: at most N keys
  --values              keys, watch: print each value after its key and a tab
  --from-version N      watch: start at committed version N (default: the next sync); exits 1
                        with OUT_OF_RANGE when the server no longer holds it
  --invert, --none      retain: remove the selected keys / remove every key
  --raw                 get: print the value's bytes as they are, with no newline
  --output text|json    json: one JSON object per result (bytes in base64, numbers as strings)
  --                    end of options, for a KEY or VALUE starting with "--"

Bytes (KEY, VALUE, P, S, E):
  text                  the UTF-8 bytes of the text
  hex:0a1b              bytes in hex
  u64:123               8-byte big-endian unsigned integer (U64 keys of Rust nodes)
  text:hex:1            the UTF-8 bytes of "hex:1" (text starting with hex:, u64:, text: or @)
  @FILE, -              VALUE only: the bytes of FILE, or of standard input
Output spells bytes the same way: printable UTF-8 as text, else keys of 8 bytes as u64:N, else
hex:... -- so every line of "keys" can be given back as a KEY.

Commit batch (one operation a line; "a quoted word" is a JSON string; # starts a comment):
  put KEY VALUE         rm KEY
  if-absent KEY         if-present KEY         if-equals KEY VALUE

Exit status: 0 ok; 1 error ("error: CODE: details" on stderr) or "get" of a missing key;
2 bad command line (bad bytes or batch included: nothing was sent).`;

/** A bad command line: printed with a pointer to the usage, exit status 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** Bad bytes or a bad batch on the command line: exit status 2, nothing sent. */
export class InputError extends Error {
  override readonly name = "InputError";
}

const PREFIXES = ["hex:", "u64:", "text:"] as const;
const MAX_U64 = 0xffff_ffff_ffff_ffffn;

/**
 * The bytes a command-line argument spells (see the module comment); `what` names the argument
 * in error messages. @throws InputError for a bad `hex:` or `u64:` spelling
 */
export function parseBytes(text: string, what: string): Uint8Array {
  if (text.startsWith("text:")) return Buffer.from(text.slice(5), "utf8");
  if (text.startsWith("hex:")) {
    const digits = text.slice(4);
    if (!/^(?:[0-9a-fA-F]{2})*$/.test(digits)) {
      throw new InputError(`${what} ${JSON.stringify(text)}: hex needs an even number of digits 0-9, a-f`);
    }
    return Buffer.from(digits, "hex");
  }
  if (text.startsWith("u64:")) {
    const digits = text.slice(4);
    if (!/^\d{1,20}$/.test(digits) || BigInt(digits) > MAX_U64) {
      throw new InputError(`${what} ${JSON.stringify(text)}: u64 needs a decimal integer in 0..${MAX_U64}`);
    }
    const out = Buffer.alloc(8);
    out.writeBigUInt64BE(BigInt(digits));
    return out;
  }
  return Buffer.from(text, "utf8");
}

// ignoreBOM keeps a leading U+FEFF in the text (a format character, so not printable) instead of
// dropping it, which would print text that does not give the same bytes back.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * The text of `bytes` when it is valid UTF-8 that prints on one line: no control, format (except
 * the joiners U+200C and U+200D), private-use, unassigned or line/paragraph separator characters;
 * undefined otherwise.
 */
export function printableText(bytes: Uint8Array): string | undefined {
  let text: string;
  try {
    text = utf8.decode(bytes);
  } catch {
    return undefined;
  }
  if (/[\p{Cc}\p{Co}\p{Cn}\p{Zl}\p{Zp}]|(?![\u200c\u200d])\p{Cf}/u.test(text)) return undefined;
  return text;
}

/**
 * Spells `bytes` for output so that `parseBytes` gives them back: printable text as is (with
 * `text:` in front when it starts with a prefix), else, for a key of 8 bytes, `u64:N`, else
 * `hex:...`.
 */
export function formatBytes(bytes: Uint8Array, kind: "key" | "value"): string {
  const text = printableText(bytes);
  if (text !== undefined) {
    const spelling = PREFIXES.some((p) => text.startsWith(p)) || text.startsWith("@") || text === "-";
    return spelling ? `text:${text}` : text;
  }
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (kind === "key" && buffer.length === 8) return `u64:${buffer.readBigUInt64BE(0)}`;
  return `hex:${buffer.toString("hex")}`;
}

/** Options of the client commands, as parsed from the command line. */
export interface CliOptions {
  address: string;
  /** Bearer token (never printed). */
  token?: string;
  /** PEM files; any of them means TLS. */
  cacert?: string;
  cert?: string;
  key?: string;
  partition?: string;
  deadlineMs?: number;
  buffered: boolean;
  prefix?: string;
  start?: string;
  end?: string;
  limit?: number;
  values: boolean;
  invert: boolean;
  none: boolean;
  raw: boolean;
  output: "text" | "json";
  /** watch: first version. */
  fromVersion?: bigint;
}

/** A parsed command line. */
export type Command =
  | { name: "help" }
  | { name: "serve"; args: string[] }
  | { name: "accept-data-loss"; args: string[] }
  | { name: "check"; args: string[] }
  | {
      name:
        | "put"
        | "get"
        | "rm"
        | "keys"
        | "sync"
        | "retain"
        | "clear"
        | "commit"
        | "partitions"
        | "load"
        | "watch";
      args: string[];
      options: CliOptions;
    };

const VALUE_FLAGS = new Set([
  "address",
  "partition",
  "deadline-ms",
  "prefix",
  "start",
  "end",
  "limit",
  "output",
  "token",
  "cacert",
  "cert",
  "key",
  "from-version",
]);
const BOOLEAN_FLAGS = new Set(["buffered", "values", "help", "invert", "none", "raw"]);
const CALL_FLAGS = ["address", "deadline-ms", "output", "token", "cacert", "cert", "key"];

/** Per command: its positional arguments and the flags it takes besides `--help`. */
const COMMANDS: Record<string, { args: string[]; flags: string[] }> = {
  put: { args: ["KEY", "VALUE"], flags: [...CALL_FLAGS, "partition", "buffered"] },
  get: { args: ["KEY"], flags: [...CALL_FLAGS, "partition", "raw"] },
  rm: { args: ["KEY"], flags: [...CALL_FLAGS, "partition", "buffered"] },
  keys: {
    args: [],
    flags: [...CALL_FLAGS, "partition", "prefix", "start", "end", "limit", "values"],
  },
  sync: { args: [], flags: [...CALL_FLAGS, "partition"] },
  retain: {
    args: [],
    flags: [...CALL_FLAGS, "partition", "buffered", "prefix", "start", "end", "invert", "none"],
  },
  clear: { args: [], flags: [...CALL_FLAGS, "partition", "buffered"] },
  commit: { args: ["FILE"], flags: [...CALL_FLAGS, "partition", "buffered"] },
  partitions: { args: [], flags: CALL_FLAGS },
  // load prints its own summary and progress: no --output json.
  load: { args: ["FILE"], flags: [...CALL_FLAGS.filter((f) => f !== "output"), "partition", "buffered"] },
  // watch prints one line per change as it comes: no --output json.
  watch: {
    args: [],
    flags: [...CALL_FLAGS.filter((f) => f !== "output"), "partition", "prefix", "from-version", "values"],
  },
};

function integer(flag: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`--${flag}: ${JSON.stringify(text)} is not an integer in ${min}..${max}`);
  }
  return value;
}

/**
 * Parses a command line (without node and the script). Everything after `serve` goes to the
 * server's own flag parser. @throws UsageError
 */
export function parseCommandLine(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Command {
  const flags = new Map<string, string>();
  const positionals: string[] = [];
  let command: string | undefined;
  let onlyPositionals = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (onlyPositionals || !arg.startsWith("-") || arg === "-") {
      if (command === undefined) {
        command = arg;
        if (command === "serve") {
          if (flags.size > 0) throw new UsageError("serve takes server flags only, after the word serve");
          return { name: "serve", args: argv.slice(i + 1) };
        }
        if (command === "check") {
          if (flags.size > 0) throw new UsageError("check takes server flags only, after its partitions");
          return { name: "check", args: argv.slice(i + 1) };
        }
        if (command === "accept-data-loss") {
          if (flags.size > 0)
            throw new UsageError("accept-data-loss takes server flags only, after its partition");
          return { name: "accept-data-loss", args: argv.slice(i + 1) };
        }
      } else {
        positionals.push(arg);
      }
      continue;
    }
    if (arg === "--") {
      onlyPositionals = true;
      continue;
    }
    if (arg === "-h") {
      flags.set("help", "");
      continue;
    }
    // Other single-dash words (a negative number, say) are positionals.
    if (!arg.startsWith("--")) {
      if (command === undefined) throw new UsageError(`unknown option ${JSON.stringify(arg)}`);
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    if (VALUE_FLAGS.has(name)) {
      const value = eq === -1 ? argv[++i] : arg.slice(eq + 1);
      if (value === undefined) throw new UsageError(`--${name} needs a value`);
      if (flags.has(name)) throw new UsageError(`--${name} given twice`);
      flags.set(name, value);
    } else if (BOOLEAN_FLAGS.has(name)) {
      if (eq !== -1) throw new UsageError(`--${name} takes no value`);
      flags.set(name, "");
    } else {
      throw new UsageError(`unknown option --${name}`);
    }
  }
  if (flags.has("help") || command === undefined || command === "help") {
    if (command === undefined && !flags.has("help")) throw new UsageError("no command given");
    return { name: "help" };
  }
  const spec = COMMANDS[command];
  if (spec === undefined) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  for (const name of flags.keys()) {
    if (!spec.flags.includes(name)) throw new UsageError(`${command} does not take --${name}`);
  }
  if (positionals.length !== spec.args.length) {
    const wanted = spec.args.length === 0 ? "no arguments" : spec.args.join(" ");
    throw new UsageError(`${command} takes ${wanted}, got ${positionals.length} argument(s)`);
  }
  const envAddress = env.METADATA_ADDRESS === "" ? undefined : env.METADATA_ADDRESS;
  const options: CliOptions = {
    address: flags.get("address") ?? envAddress ?? DEFAULT_ADDRESS,
    buffered: flags.has("buffered"),
    values: flags.has("values"),
    invert: flags.has("invert"),
    none: flags.has("none"),
    raw: flags.has("raw"),
    output: "text",
  };
  const token = flags.get("token") ?? (env.METADATA_TOKEN === "" ? undefined : env.METADATA_TOKEN);
  if (token !== undefined) options.token = token;
  if (flags.has("cert") !== flags.has("key")) throw new UsageError("--cert and --key go together");
  for (const name of ["cacert", "cert", "key"] as const) {
    const value = flags.get(name);
    if (value !== undefined) options[name] = value;
  }
  const output = flags.get("output");
  if (output !== undefined) {
    if (output !== "text" && output !== "json") {
      throw new UsageError(`--output: ${JSON.stringify(output)} is not text or json`);
    }
    options.output = output;
  }
  if (options.raw && options.output === "json")
    throw new UsageError("--raw and --output json exclude each other");
  if (command === "retain") {
    const selects = flags.has("prefix") || flags.has("start") || flags.has("end");
    if (selects === options.none) {
      throw new UsageError("retain takes --prefix, --start or --end (what to keep), or --none");
    }
    if (options.none && options.invert) throw new UsageError("retain takes --invert or --none, not both");
  }
  const partition = flags.get("partition");
  if (partition !== undefined) options.partition = partition;
  const deadline = flags.get("deadline-ms");
  if (deadline !== undefined) options.deadlineMs = integer("deadline-ms", deadline, 1, 2 ** 31 - 1);
  const limit = flags.get("limit");
  if (limit !== undefined) options.limit = integer("limit", limit, 0, 2 ** 32 - 1);
  const fromVersion = flags.get("from-version");
  if (fromVersion !== undefined) {
    if (!/^\d{1,20}$/.test(fromVersion) || BigInt(fromVersion) > 0xffff_ffff_ffff_ffffn) {
      throw new UsageError(`--from-version: ${JSON.stringify(fromVersion)} is not a version (a u64)`);
    }
    options.fromVersion = BigInt(fromVersion);
  }
  for (const name of ["prefix", "start", "end"] as const) {
    const value = flags.get(name);
    if (value !== undefined) options[name] = value;
  }
  return { name: command as "put", args: positionals, options };
}

/** One word of a batch line: a JSON string in double quotes, or a run of non-space characters. */
const BATCH_WORD = /\s*("(?:[^"\\]|\\.)*"|\S+)/gy;

/** The operations of a batch line and the byte words each takes. */
const BATCH_OPS: Record<string, number> = { put: 2, rm: 1, "if-absent": 1, "if-present": 1, "if-equals": 2 };

/**
 * Parses a commit batch (see the module comment). `source` names it in error messages.
 * @throws InputError naming the line
 */
export function parseBatch(
  text: string,
  source: string,
): { mutations: BatchMutation[]; preconditions: BatchPrecondition[] } {
  const mutations: BatchMutation[] = [];
  const preconditions: BatchPrecondition[] = [];
  text.split(/\r?\n/).forEach((line, index) => {
    const where = `${source}:${index + 1}`;
    if (line.trim() === "" || line.trimStart().startsWith("#")) return;
    const words: string[] = [];
    BATCH_WORD.lastIndex = 0;
    // Where the last word ended: a failed sticky match resets lastIndex to 0.
    let end = 0;
    for (let match = BATCH_WORD.exec(line); match !== null; match = BATCH_WORD.exec(line)) {
      end = BATCH_WORD.lastIndex;
      const word = match[1] as string;
      if (word.startsWith('"')) {
        try {
          words.push(JSON.parse(word) as string);
        } catch {
          throw new InputError(`${where}: bad quoted word ${word}`);
        }
      } else {
        words.push(word);
      }
    }
    if (line.slice(end).trim() !== "") throw new InputError(`${where}: unterminated quote`);
    const [op, ...rest] = words as [string, ...string[]];
    const arity = BATCH_OPS[op];
    if (arity === undefined) {
      throw new InputError(
        `${where}: unknown operation ${JSON.stringify(op)} (${Object.keys(BATCH_OPS).join(", ")})`,
      );
    }
    if (rest.length !== arity) {
      throw new InputError(
        `${where}: ${op} takes ${arity === 1 ? "KEY" : "KEY VALUE"}, got ${rest.length} word(s)`,
      );
    }
    const key = parseBytes(rest[0] as string, `${where}: KEY`);
    const value = arity === 2 ? parseBytes(rest[1] as string, `${where}: VALUE`) : new Uint8Array();
    if (op === "put") mutations.push({ put: { key, value } });
    else if (op === "rm") mutations.push({ remove: { key } });
    else if (op === "if-absent") preconditions.push({ key, absent: true });
    else if (op === "if-present") preconditions.push({ key, present: true });
    else preconditions.push({ key, valueEquals: value });
  });
  if (mutations.length === 0 && preconditions.length === 0) throw new InputError(`${source}: empty batch`);
  return { mutations, preconditions };
}

/**
 * Where a command reads and writes; process.stdin / stdout / stderr when run from the shell.
 * `out` and `bytes` may return a promise that resolves when the reader is ready for more (a long
 * `keys` listing waits for it instead of buffering everything).
 */
export interface Output {
  out(line: string): undefined | Promise<void>;
  /** Writes bytes as they are (`get --raw`). */
  bytes(data: Uint8Array): undefined | Promise<void>;
  err(line: string): void;
  /** All of standard input (a VALUE or a batch given as `-`). */
  stdin(): Promise<Uint8Array>;
}

/** The bytes of a VALUE argument: `-` is stdin, `@FILE` a file, anything else `parseBytes`. */
async function readValue(text: string, output: Output): Promise<Uint8Array> {
  if (text === "-") return output.stdin();
  if (text.startsWith("@")) return readInputFile(text.slice(1));
  return parseBytes(text, "VALUE");
}

/** A file named on the command line. @throws InputError when it cannot be read */
async function readInputFile(path: string): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new InputError(
      `cannot read ${JSON.stringify(path)}: ${(err as NodeJS.ErrnoException).code ?? err}`,
    );
  }
}

const base64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString("base64");

/** A call prepared from the command line: every byte argument read, nothing sent yet. */
type Prepared = (client: MetadataClient, output: Output) => Promise<number>;

/**
 * Reads and checks every byte argument, file and batch of `command`, so that bad input is
 * refused (exit 2) before anything is sent. @throws InputError
 */
async function prepare(
  command: Extract<Command, { options: CliOptions }>,
  output: Output,
): Promise<Prepared> {
  const { options } = command;
  const json = options.output === "json";
  const call = {
    ...(options.deadlineMs === undefined ? {} : { deadlineMs: options.deadlineMs }),
    ...(options.partition === undefined ? {} : { partition: options.partition }),
  };
  const write = { ...call, durability: options.buffered ? Durability.BUFFERED : Durability.DURABLE };
  const version = (v: bigint): string =>
    v === 0n && options.buffered ? "version: 0 (buffered: committed by the next sync)" : `version: ${v}`;
  const bytesOption = (name: "prefix" | "start" | "end") => {
    const text = options[name];
    return text === undefined ? {} : { [name]: parseBytes(text, `--${name}`) };
  };
  /** Prints `removed` and `version` of a retain or clear. */
  const removedAndVersion = async (response: { removed: bigint; version: bigint }) => {
    if (json) {
      await output.out(
        JSON.stringify({ removed: String(response.removed), version: String(response.version) }),
      );
    } else {
      await output.out(`removed: ${response.removed}`);
      await output.out(version(response.version));
    }
    return 0;
  };
  switch (command.name) {
    case "put": {
      const key = parseBytes(command.args[0] as string, "KEY");
      const value = await readValue(command.args[1] as string, output);
      return async (client) => {
        const response = await client.put(key, value, write);
        if (json) {
          const previous = response.previous === undefined ? {} : { previous: base64(response.previous) };
          await output.out(JSON.stringify({ ...previous, version: String(response.version) }));
        } else {
          if (response.previous !== undefined) {
            await output.out(`previous: ${formatBytes(response.previous, "value")}`);
          }
          await output.out(version(response.version));
        }
        return 0;
      };
    }
    case "get": {
      const key = parseBytes(command.args[0] as string, "KEY");
      return async (client) => {
        const value = await client.get(key, call);
        if (value === undefined) {
          output.err("not found");
          return 1;
        }
        if (options.raw) await output.bytes(value);
        else if (json) await output.out(JSON.stringify({ value: base64(value) }));
        else await output.out(formatBytes(value, "value"));
        return 0;
      };
    }
    case "rm": {
      const key = parseBytes(command.args[0] as string, "KEY");
      return async (client) => {
        const response = await client.remove(key, write);
        if (json) {
          const previous = response.previous === undefined ? {} : { previous: base64(response.previous) };
          await output.out(JSON.stringify({ ...previous, version: String(response.version) }));
          return 0;
        }
        if (response.previous === undefined) output.err("not found (nothing removed)");
        else await output.out(`removed: ${formatBytes(response.previous, "value")}`);
        await output.out(version(response.version));
        return 0;
      };
    }
    case "keys": {
      const range = { ...bytesOption("prefix"), ...bytesOption("start"), ...bytesOption("end") };
      return async (client) => {
        const entries = client.keys({
          ...call,
          ...range,
          ...(options.limit === undefined ? {} : { limit: options.limit }),
          includeValues: options.values,
        });
        for await (const { key, value } of entries) {
          if (json) {
            const shown = options.values ? { value: base64(value ?? new Uint8Array()) } : {};
            await output.out(JSON.stringify({ key: base64(key), ...shown }));
          } else {
            const shown = formatBytes(key, "key");
            await output.out(
              options.values ? `${shown}\t${formatBytes(value ?? new Uint8Array(), "value")}` : shown,
            );
          }
        }
        return 0;
      };
    }
    case "sync":
      return async (client) => {
        const synced = (await client.sync(call)).version;
        await output.out(json ? JSON.stringify({ version: String(synced) }) : `version: ${synced}`);
        return 0;
      };
    case "retain": {
      const filter = {
        ...bytesOption("prefix"),
        ...bytesOption("start"),
        ...bytesOption("end"),
        invert: options.invert,
        keepNone: options.none,
      };
      return async (client) => removedAndVersion(await client.retain(filter, write));
    }
    case "clear":
      return async (client) => removedAndVersion(await client.clear(write));
    case "commit": {
      const source = command.args[0] as string;
      const text = Buffer.from(source === "-" ? await output.stdin() : await readInputFile(source)).toString(
        "utf8",
      );
      const batch = parseBatch(text, source === "-" ? "stdin" : source);
      return async (client) => {
        const committed = (await client.commit(batch.mutations, batch.preconditions, write)).version;
        await output.out(json ? JSON.stringify({ version: String(committed) }) : version(committed));
        return 0;
      };
    }
    case "watch": {
      const prefix = bytesOption("prefix");
      return async (client) => {
        const batches = client.watch({
          ...call,
          ...prefix,
          ...(options.fromVersion === undefined ? {} : { startVersion: options.fromVersion }),
          includeValues: options.values,
        });
        for await (const { version, events } of batches) {
          for (const { key, value } of events) {
            const shown = formatBytes(key, "key");
            if (value === undefined) await output.out(`${version}\trm\t${shown}`);
            else if (options.values)
              await output.out(`${version}\tput\t${shown}\t${formatBytes(value, "value")}`);
            else await output.out(`${version}\tput\t${shown}`);
          }
        }
        return 0;
      };
    }
    case "load": {
      const file = command.args[0] as string;
      return async (client) => load(client, file, options, output);
    }
    case "partitions":
      return async (client) => {
        const names = await client.listPartitions(call);
        if (json) await output.out(JSON.stringify({ partitions: names }));
        else for (const name of names) await output.out(name);
        return 0;
      };
  }
}

/**
 * Runs a client command against the server named in its options; resolves with the exit
 * status: 2 for bad input (printed with a pointer to the usage; nothing is sent), 1 for a server
 * error (`error: CODE: details`) or a server that cannot be reached.
 */
export async function runClientCommand(
  command: Extract<Command, { options: CliOptions }>,
  output: Output,
): Promise<number> {
  let prepared: Prepared;
  try {
    prepared = await prepare(command, output);
  } catch (err) {
    if (!(err instanceof InputError)) throw err;
    output.err(`error: ${err.message}\n${USAGE_HINT}`);
    return 2;
  }
  let client: MetadataClient;
  try {
    client = new MetadataClient(command.options.address, clientOptions(command.options));
  } catch (err) {
    output.err(`error: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
  try {
    return await prepared(client, output);
  } catch (err) {
    output.err(`error: ${describeError(err, command.options.address)}`);
    return 1;
  } finally {
    client.close();
  }
}

/** TLS and token options of the client: TLS when any of --cacert, --cert, --key is given. */
function clientOptions(options: CliOptions): ClientOptions {
  const tls =
    options.cacert === undefined && options.cert === undefined
      ? undefined
      : {
          ca: options.cacert === undefined ? undefined : readFileSync(options.cacert),
          cert: options.cert === undefined ? undefined : readFileSync(options.cert),
          key: options.key === undefined ? undefined : readFileSync(options.key),
        };
  return {
    ...(tls === undefined ? {} : { tls }),
    ...(options.token === undefined ? {} : { token: options.token }),
  };
}

/** Most failed lines `load` lists one by one; a count stands for the rest. */
const LOAD_LIST_FAILED = 20;
/** Requests of `load` in flight on its Write stream. */
const LOAD_WINDOW = 256;

/**
 * `load`: puts every `KEY<TAB>VALUE` line of `file` (`-`: stdin) through one Write stream, in
 * order (a later line with the same key wins), reading no further ahead than the writer's window.
 * The value is the rest of the line after the first tab (a trailing CR is dropped); empty lines
 * are skipped; a line without a tab or with bad bytes fails alone, as a refused put does.
 * Progress goes to stderr every second, the summary to stdout, each failed line to stderr.
 * Resolves with the exit status: 0 when every put was acknowledged (durable unless buffered), 1
 * otherwise. If the stream ends early, reading stops: the puts not yet answered have an unknown
 * outcome (failed lines), the later lines were not sent.
 */
export async function load(
  client: MetadataClient,
  file: string,
  options: CliOptions,
  output: Output,
): Promise<number> {
  const writer = client.writer({
    window: LOAD_WINDOW,
    durability: options.buffered ? Durability.BUFFERED : Durability.DURABLE,
    ...(options.partition === undefined ? {} : { partition: options.partition }),
    ...(options.deadlineMs === undefined ? {} : { deadlineMs: options.deadlineMs }),
  });
  const started = Date.now();
  const failed: { line: number; reason: string }[] = [];
  let lineNumber = 0;
  let puts = 0;
  let acknowledged = 0;
  let version = 0n;
  let inFlight = 0;
  let slotFreed: (() => void) | undefined;
  let stoppedAt: number | undefined;
  let streamError: string | undefined;
  const progress = setInterval(() => {
    const seconds = (Date.now() - started) / 1000;
    output.err(
      `load: ${lineNumber} lines read, ${acknowledged} puts acknowledged, ${failed.length} failed ` +
        `(${Math.round(acknowledged / seconds)}/s)`,
    );
  }, 1000);
  progress.unref();
  const input = file === "-" ? process.stdin : createReadStream(file);
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
  try {
    for await (const text of lines) {
      const line = ++lineNumber;
      const row = text.endsWith("\r") ? text.slice(0, -1) : text;
      if (row === "") continue;
      puts++;
      const tab = row.indexOf("\t");
      let key: Uint8Array;
      let value: Uint8Array;
      try {
        if (tab === -1) throw new InputError("no tab between KEY and VALUE");
        key = parseBytes(row.slice(0, tab), "KEY");
        value = parseBytes(row.slice(tab + 1), "VALUE");
      } catch (err) {
        failed.push({ line, reason: describeError(err) });
        continue;
      }
      // Read no further than the window allows: a long input never piles up in memory.
      while (inFlight >= LOAD_WINDOW) {
        await new Promise<void>((resolve) => {
          slotFreed = resolve;
        });
      }
      if (writer.streamEnded) {
        stoppedAt = line;
        puts--;
        break;
      }
      inFlight++;
      void writer
        .put(key, value)
        .then(
          (response) => {
            acknowledged++;
            if (response.version > version) version = response.version;
          },
          (err: unknown) => {
            failed.push({ line, reason: describeError(err) });
          },
        )
        .finally(() => {
          inFlight--;
          slotFreed?.();
          slotFreed = undefined;
        });
    }
  } catch (err) {
    writer.cancel();
    output.err(
      `error: reading ${file === "-" ? "stdin" : file}: ${err instanceof Error ? err.message : err}`,
    );
    return 1;
  } finally {
    clearInterval(progress);
    lines.close();
  }
  try {
    await writer.close();
  } catch (err) {
    streamError = describeError(err);
  }
  failed.sort((a, b) => a.line - b.line);
  for (const { line, reason } of failed.slice(0, LOAD_LIST_FAILED)) output.err(`line ${line}: ${reason}`);
  if (failed.length > LOAD_LIST_FAILED) {
    output.err(`... and ${failed.length - LOAD_LIST_FAILED} more failed lines`);
  }
  if (streamError !== undefined) output.err(`error: the stream ended: ${streamError}`);
  if (stoppedAt !== undefined)
    output.err(`stopped at line ${stoppedAt}: it and the lines after it were not sent`);
  const shown =
    options.buffered && version === 0n
      ? "version: 0 (buffered: committed by the next sync)"
      : `version: ${version}`;
  await output.out(`loaded: ${acknowledged} of ${puts} puts acknowledged, ${failed.length} failed; ${shown}`);
  return failed.length === 0 && stoppedAt === undefined && streamError === undefined ? 0 : 1;
}

/** Printed after a usage error. */
const USAGE_HINT = 'run "npm run cli -- help" for usage';

/**
 * `CODE: details` of a gRPC error, or `cannot reach the server at ADDR (reason)` when the
 * connection itself failed.
 */
function describeError(err: unknown, address?: string): string {
  if (err instanceof InputError) return `INVALID_ARGUMENT: ${err.message}`;
  if (typeof err === "object" && err !== null && "code" in err && typeof err.code === "number") {
    const details = "details" in err && typeof err.details === "string" ? err.details : "";
    // Only failures to reach the address at all; a refused TLS handshake, say, keeps its details.
    const reason =
      err.code !== status.UNAVAILABLE
        ? undefined
        : /ECONNREFUSED/.test(details)
          ? "connection refused"
          : /ENOTFOUND|EAI_AGAIN|Name resolution failed/.test(details)
            ? "name not resolved"
            : /ETIMEDOUT|EHOSTUNREACH|ENETUNREACH/.test(details)
              ? "no route or timed out"
              : undefined;
    if (reason !== undefined && address !== undefined) {
      return `cannot reach the server at ${address} (${reason})`;
    }
    return `${status[err.code] ?? `code ${err.code}`}: ${details}`;
  }
  return `UNKNOWN: ${err instanceof Error ? err.message : String(err)}`;
}

/**
 * `serve`: starts the service as server/main.ts does and stops it on SIGTERM/SIGINT (finish
 * in-flight calls, commit buffered changes, exit 0; a second signal exits at once with 1).
 */
async function serve(args: string[]): Promise<void> {
  // Loaded here rather than at the top: the client commands do not need the server, and a CLI
  // that starts quickly is nicer to use.
  const { serve: run } = await import("./serve.js");
  await run(args, "npm run cli -- serve [flags]");
}

/** `accept-data-loss PARTITION [server flags]`; resolves with the exit status. */
async function acceptLoss(args: string[]): Promise<number> {
  const [partition, ...flags] = args;
  const { ConfigError, parseConfig } = await import("./config.js");
  const { acceptDataLoss } = await import("./accept-data-loss.js");
  let config: ReturnType<typeof parseConfig>;
  try {
    if (partition === undefined || partition.startsWith("--"))
      throw new UsageError("accept-data-loss takes PARTITION");
    config = parseConfig(flags);
  } catch (err) {
    if (err instanceof UsageError || err instanceof ConfigError) {
      console.error(`error: ${err.message}\nrun "npm run cli -- help" for usage`);
      return 2;
    }
    throw err;
  }
  try {
    const result = await acceptDataLoss(config, partition, (message) => console.error(`warning: ${message}`));
    for (const path of result.kept) console.log(`kept ${path}`);
    console.log(
      result.accepted
        ? `accepted the data loss of partition ${partition}: it is empty now (version ${result.version}); start the server`
        : `partition ${partition} has no data loss (version ${result.version}): nothing accepted`,
    );
    return 0;
  } catch (err) {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

/** `check [PARTITION ...] [server flags]`; resolves with the exit status. */
async function checkData(args: string[]): Promise<number> {
  const first = args.findIndex((arg) => arg.startsWith("-"));
  const partitions = first === -1 ? args : args.slice(0, first);
  const flags = first === -1 ? [] : args.slice(first);
  const { ConfigError, parseConfig } = await import("./config.js");
  const { checkDataDir } = await import("./check-data-dir.js");
  let config: ReturnType<typeof parseConfig>;
  try {
    config = parseConfig(flags);
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(`error: ${err.message}\nrun "npm run cli -- help" for usage`);
      return 2;
    }
    throw err;
  }
  try {
    const results = await checkDataDir(config, partitions);
    const counts = { ok: 0, recoverable: 0, data_loss: 0, corrupt: 0 };
    for (const result of results) {
      counts[result.verdict]++;
      console.log(`${result.partition}: ${result.summary}`);
    }
    console.log(
      `checked ${results.length} partition(s) in ${config.dataDir}: ${counts.ok} ok, ${counts.recoverable} recoverable, ${counts.data_loss} with data loss, ${counts.corrupt} corrupt`,
    );
    return counts.data_loss + counts.corrupt > 0 ? 1 : 0;
  } catch (err) {
    console.error(`error: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  }
}

/** Resolves when stdout can take more, or has failed (the error handler then exits). */
async function drained(): Promise<void> {
  await new Promise<void>((resolve) => {
    const done = () => {
      process.stdout.off("drain", done);
      process.stdout.off("error", done);
      resolve();
    };
    process.stdout.on("drain", done);
    process.stdout.on("error", done);
  });
}

/** Runs the command line of this process; sets the exit status. */
async function main(): Promise<void> {
  let command: Command;
  try {
    command = parseCommandLine(process.argv.slice(2));
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`error: ${err.message}\n${USAGE_HINT}`);
      process.exitCode = 2;
      return;
    }
    throw err;
  }
  if (command.name === "help") {
    console.log(CLI_USAGE);
    return;
  }
  if (command.name === "serve") {
    await serve(command.args);
    return;
  }
  if (command.name === "accept-data-loss") {
    process.exitCode = await acceptLoss(command.args);
    return;
  }
  if (command.name === "check") {
    process.exitCode = await checkData(command.args);
    return;
  }
  // A reader that goes away (`keys | head`) ends the command quietly, as for other CLIs.
  process.stdout.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code !== "EPIPE") throw err;
    process.exit(process.exitCode ?? 0);
  });
  process.exitCode = await runClientCommand(command, {
    out: (line) => (process.stdout.write(`${line}\n`) ? undefined : drained()),
    bytes: (data) => (process.stdout.write(data) ? undefined : drained()),
    err: (line) => {
      process.stderr.write(`${line}\n`);
    },
    stdin: async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    },
  });
}

/** True when this file is the script node runs (not imported, e.g. by tests). */
function isMain(): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(script)).href;
  } catch {
    return false;
  }
}

if (isMain()) {
  main().catch((err: unknown) => {
    console.error("error:", err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
