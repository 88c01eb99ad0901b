/**
 * Config: every flag of the server in one table (`FLAGS`): its environment variable, default,
 * unit, description and parser. The command line is read by Node's `util.parseArgs`; `--help`
 * (`USAGE`) and the README's configuration table (`npm run docs:config`) are generated from the
 * table, so adding a flag is one entry there.
 *
 * Invariants:
 * - A flag wins over its environment variable (an empty variable counts as unset), which wins
 *   over the default. Defaults are written once, as text, and go through the same parser as user
 *   input, so a default can never be a value the flag would refuse.
 * - `parseConfig` either returns a complete, valid configuration or throws a `ConfigError` with
 *   a one-line message naming the flag and the bad value.
 * - A flag given twice is refused, except a `repeatable` one (whose variable is comma-separated).
 * - Without authentication (no --auth-tokens and no --tls-client-ca for gRPC, no
 *   --metrics-token-file for /metrics) only loopback addresses are accepted, unless
 *   --allow-unauthenticated is given: the error says so in one line.
 * - The files of the connection to etcd (--etcd-ca-file, --etcd-cert-file, --etcd-key-file,
 *   --etcd-password-file) are read here once, so one that cannot be read, is not PEM or holds no
 *   password is a ConfigError; only their paths are kept (server/cluster/etcd-client.ts reads
 *   them again, and the password file at every authentication).
 *
 * Adding a flag: add an entry to `FLAGS`; its key becomes the field of `ServerConfig` and the
 * type of that field is what `parse` returns. Then run `npm run docs:config` to update README.md.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { type KeyCodec, MAX_VALUE_BYTES, parseKeyCodec } from "./store/codec.js";
import { preview } from "./store/errors.js";
import type { NoChangeSync } from "./store/metadata.js";
import { type BlobLayout, parseBlobLayout } from "./store/storage/blob-header.js";
import { isValidPartitionName, MAX_PARTITION_NAME_BYTES } from "./store/storage/storage.js";

/** A bad flag or environment value. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

/** One flag of the table. */
export interface FlagSpec<T> {
  /** Name on the command line, without the leading `--`. */
  flag: string;
  /** Environment variable read when the flag is absent. */
  env: string;
  /** Placeholder of the value in `--help` and the README (`N`, `DIR`, `HOST:PORT`). */
  value: string;
  /** Default, as text given to `parse`; undefined: the flag is unset unless given. */
  default: string | undefined;
  /** How the default reads in `--help` and the README, when the text alone would not say. */
  defaultShown?: string;
  /** Unit of the value (`bytes`, `ms`), if any. */
  unit?: string;
  /** One line: what the flag sets. */
  description: string;
  /** May be given several times; its environment variable is then comma-separated. */
  repeatable?: boolean;
  /** Takes no value on the command line (given: "true"); its variable takes 1/true/0/false. */
  boolean?: boolean;
  /** Turns the given texts (one unless `repeatable`; none when unset) into the value. @throws ConfigError */
  parse(texts: readonly string[], name: string): T;
}

function spec<T>(flag: FlagSpec<T>): FlagSpec<T> {
  return flag;
}

/** The one text of a non-repeatable flag, or undefined when it is unset or empty. */
function single(texts: readonly string[]): string | undefined {
  const value = texts[0];
  return value === "" ? undefined : value;
}

/** A text flag with a default (never undefined). */
function text(texts: readonly string[]): string {
  return single(texts) ?? "";
}

/** A switch: one of `on` (true) or `off` (false), case-insensitive. */
function choice(on: string[], off: string[]): (texts: readonly string[], name: string) => boolean {
  return (texts, name) => {
    const value = text(texts).trim().toLowerCase();
    if (on.includes(value)) return true;
    if (off.includes(value)) return false;
    throw new ConfigError(`--${name}: ${JSON.stringify(value)} is not one of ${[...on, ...off].join(", ")}`);
  };
}

/** An integer flag in min..max. */
function integer(min: number, max: number): (texts: readonly string[], name: string) => number {
  return (texts, name) => {
    const value = text(texts);
    const n = Number(value);
    if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new ConfigError(`--${name}: ${JSON.stringify(value)} is not an integer in ${min}..${max}`);
    }
    return n;
  };
}

function partitionName(name: string, value: string): string {
  if (!isValidPartitionName(value)) {
    throw new ConfigError(
      `--${name}: invalid partition name ${preview(value)}: use 1 to ${MAX_PARTITION_NAME_BYTES} of [A-Za-z0-9_-]`,
    );
  }
  return value;
}

function blobLayout(name: string, value: string): BlobLayout {
  try {
    return parseBlobLayout(value);
  } catch (err) {
    throw new ConfigError(`--${name}: ${(err as Error).message}`);
  }
}

function keyCodec(name: string, value: string): KeyCodec {
  try {
    return parseKeyCodec(value);
  } catch (err) {
    throw new ConfigError(`--${name}: ${(err as Error).message}`);
  }
}

/** Parses `HOST:PORT` (an IPv6 host in brackets). @throws ConfigError */
function hostPort(name: string, value: string): { host: string; port: number; text: string } {
  const match = /^(.*):(\d+)$/.exec(value);
  const port = Number(match?.[2]);
  if (match === null || match[1] === "" || port > 65535) {
    throw new ConfigError(`--${name}: ${JSON.stringify(value)} is not HOST:PORT`);
  }
  return { host: (match[1] as string).replace(/^\[(.*)\]$/, "$1"), port, text: value };
}

/**
 * Every flag of the server; see the module comment. The order is the order of `--help` and of
 * the README table.
 */
export const FLAGS = {
  dataDir: spec({
    flag: "data-dir",
    env: "METADATA_DATA_DIR",
    value: "DIR",
    default: "./data",
    description: "directory holding one subdirectory per partition",
    parse: text,
  }),
  listen: spec({
    flag: "listen",
    env: "METADATA_LISTEN",
    value: "HOST:PORT",
    default: "127.0.0.1:50051",
    description: "gRPC address (port 0: any free port)",
    parse: (texts, name) => hostPort(name, text(texts)).text,
  }),
  metricsListen: spec({
    flag: "metrics-listen",
    env: "METADATA_METRICS_LISTEN",
    value: "HOST:PORT",
    default: "127.0.0.1:9464",
    description: "HTTP address of /metrics and /healthz, or `off`",
    parse: (texts, name): { host: string; port: number } | undefined => {
      const value = text(texts);
      if (value === "" || value === "off") return undefined;
      const { host, port } = hostPort(name, value);
      return { host, port };
    },
  }),
  defaultPartition: spec({
    flag: "default-partition",
    env: "METADATA_DEFAULT_PARTITION",
    value: "NAME",
    default: "default",
    description: "partition of requests that name none",
    parse: (texts, name) => partitionName(name, text(texts)),
  }),
  defaultKeyCodec: spec({
    flag: "default-key-codec",
    env: "METADATA_DEFAULT_KEY_CODEC",
    value: "fixed:N|variable",
    default: "variable",
    description: "key codec of new partitions",
    parse: (texts, name) => keyCodec(name, text(texts)),
  }),
  keyCodecs: spec({
    flag: "partition-key-codec",
    env: "METADATA_PARTITION_KEY_CODECS",
    value: "NAME=CODEC",
    default: undefined,
    defaultShown: "none",
    description: "key codec of one partition (repeatable; env: comma-separated)",
    repeatable: true,
    parse: (texts, name) => {
      const codecs = new Map<string, KeyCodec>();
      for (const entry of texts) {
        const eq = entry.indexOf("=");
        if (eq <= 0) throw new ConfigError(`--${name}: ${JSON.stringify(entry)} is not NAME=CODEC`);
        codecs.set(partitionName(name, entry.slice(0, eq)), keyCodec(name, entry.slice(eq + 1)));
      }
      return codecs;
    },
  }),
  blobLayout: spec({
    flag: "blob-layout",
    env: "METADATA_BLOB_LAYOUT",
    value: "v0|v1",
    default: "v1",
    description: "blob layout of new partitions (v0 for a 2026.4.0 node); existing ones keep theirs",
    parse: (texts, name) => blobLayout(name, text(texts)),
  }),
  blobLayouts: spec({
    flag: "partition-blob-layout",
    env: "METADATA_PARTITION_BLOB_LAYOUTS",
    value: "NAME=v0|v1",
    default: undefined,
    defaultShown: "none",
    description: "blob layout of one new partition (repeatable; env: comma-separated)",
    repeatable: true,
    parse: (texts, name) => {
      const layouts = new Map<string, BlobLayout>();
      for (const entry of texts) {
        const eq = entry.indexOf("=");
        if (eq <= 0) throw new ConfigError(`--${name}: ${JSON.stringify(entry)} is not NAME=v0|v1`);
        layouts.set(partitionName(name, entry.slice(0, eq)), blobLayout(name, entry.slice(eq + 1)));
      }
      return layouts;
    },
  }),
  noChangeSync: spec({
    flag: "no-change-sync",
    env: "METADATA_NO_CHANGE_SYNC",
    value: "auto|bump|skip",
    default: "auto",
    description:
      "a sync with nothing to write bumps the version (as 2026.4.0) or writes nothing (as 2026.7+); auto: skip on v1, bump on v0",
    parse: (texts, name): NoChangeSync | undefined => {
      const value = text(texts);
      if (value === "auto") return undefined;
      if (value === "bump" || value === "skip") return value;
      throw new ConfigError(`--${name}: ${JSON.stringify(value)} is not auto, bump or skip`);
    },
  }),
  maxValueBytes: spec({
    flag: "max-value-bytes",
    env: "METADATA_MAX_VALUE_BYTES",
    value: "N",
    default: "1048576",
    unit: "bytes",
    description: "largest value a write may store",
    parse: integer(0, MAX_VALUE_BYTES),
  }),
  flushIntervalMs: spec({
    flag: "flush-interval-ms",
    env: "METADATA_FLUSH_INTERVAL_MS",
    value: "N",
    default: "100",
    unit: "ms",
    description: "longest time a buffered write waits for its sync",
    parse: integer(1, 3_600_000),
  }),
  batchMaxMutations: spec({
    flag: "batch-max-mutations",
    env: "METADATA_BATCH_MAX_MUTATIONS",
    value: "N",
    default: "10000",
    unit: "mutations",
    description: "most mutations one sync commits (also the largest Commit)",
    parse: integer(1, 10_000_000),
  }),
  batchMaxBytes: spec({
    flag: "batch-max-bytes",
    env: "METADATA_BATCH_MAX_BYTES",
    value: "N",
    default: "16777216",
    unit: "bytes",
    description: "most key and value bytes one sync commits",
    parse: integer(1, 2 ** 40),
  }),
  batchMaxDelayMs: spec({
    flag: "batch-max-delay-ms",
    env: "METADATA_BATCH_MAX_DELAY_MS",
    value: "N",
    default: "0",
    unit: "ms",
    description: "extra time a sync waits to gather more mutations",
    parse: integer(0, 60_000),
  }),
  maxQueuedOperations: spec({
    flag: "max-queued-operations",
    env: "METADATA_MAX_QUEUED_OPERATIONS",
    value: "N",
    default: "100000",
    unit: "calls per partition",
    description: "calls waiting for an answer before RESOURCE_EXHAUSTED",
    parse: integer(1, 100_000_000),
  }),
  maxConcurrentStreams: spec({
    flag: "max-concurrent-streams",
    env: "METADATA_MAX_CONCURRENT_STREAMS",
    value: "N",
    default: "128",
    unit: "streams per connection",
    description: "concurrent calls on one HTTP/2 connection",
    parse: integer(1, 1_000_000),
  }),
  maxConnections: spec({
    flag: "max-connections",
    env: "METADATA_MAX_CONNECTIONS",
    value: "N",
    default: "1000",
    unit: "connections",
    description: "HTTP/2 connections open at once on the gRPC port; more are closed at once",
    parse: integer(1, 10_000_000),
  }),
  maxStreams: spec({
    flag: "max-streams",
    env: "METADATA_MAX_STREAMS",
    value: "N",
    default: "1000",
    unit: "streams",
    description: "server-wide open Keys, Write and Watch streams",
    parse: integer(1, 10_000_000),
  }),
  streamBufferBytes: spec({
    flag: "stream-buffer-bytes",
    env: "METADATA_STREAM_BUFFER_BYTES",
    value: "N",
    default: "67108864",
    unit: "bytes",
    description: "server-wide streamed bytes not yet taken by clients",
    parse: integer(1024, 2 ** 40),
  }),
  maxOpenPartitions: spec({
    flag: "max-open-partitions",
    env: "METADATA_MAX_OPEN_PARTITIONS",
    value: "N",
    default: "256",
    unit: "partitions",
    description: "open partitions; least recently used idle ones are closed beyond it",
    parse: integer(1, 1_000_000),
  }),
  recoverAtStart: spec({
    flag: "recover-at-start",
    env: "METADATA_RECOVER_AT_START",
    value: "on|off",
    default: "on",
    description:
      "open every partition once after start, in the background, so damage is found and reported then, not on first use",
    parse: choice(["on", "true", "1"], ["off", "false", "0"]),
  }),
  maxPartitions: spec({
    flag: "max-partitions",
    env: "METADATA_MAX_PARTITIONS",
    value: "N",
    default: "10000",
    unit: "partitions",
    description: "partitions in all; creating more is refused",
    parse: integer(1, 100_000_000),
  }),
  writeStreamMaxInFlight: spec({
    flag: "write-stream-max-in-flight",
    env: "METADATA_WRITE_STREAM_MAX_IN_FLIGHT",
    value: "N",
    default: "1024",
    unit: "requests per Write stream",
    description: "requests read from a Write stream and not yet answered",
    parse: integer(1, 1_000_000),
  }),
  writeStreamMaxInFlightBytes: spec({
    flag: "write-stream-max-in-flight-bytes",
    env: "METADATA_WRITE_STREAM_MAX_IN_FLIGHT_BYTES",
    value: "N",
    default: "16777216",
    unit: "bytes per Write stream",
    description: "key and value bytes of those requests",
    parse: integer(1, 2 ** 40),
  }),
  watchHistorySyncs: spec({
    flag: "watch-history-syncs",
    env: "METADATA_WATCH_HISTORY_SYNCS",
    value: "N",
    default: "4096",
    unit: "syncs per partition",
    description: "committed syncs a Watch can resume from",
    parse: integer(1, 100_000_000),
  }),
  watchHistoryBytes: spec({
    flag: "watch-history-bytes",
    env: "METADATA_WATCH_HISTORY_BYTES",
    value: "N",
    default: "4194304",
    unit: "bytes per partition",
    description: "bytes of that history (open partitions only)",
    parse: integer(1, 2 ** 40),
  }),
  maxMessageBytes: spec({
    flag: "max-message-bytes",
    env: "METADATA_MAX_MESSAGE_BYTES",
    value: "N",
    default: "33554432",
    unit: "bytes",
    description: "largest gRPC message received or sent",
    parse: integer(1024, 2 ** 31 - 1),
  }),
  dataDirProbeIntervalMs: spec({
    flag: "data-dir-probe-interval-ms",
    env: "METADATA_DATA_DIR_PROBE_INTERVAL_MS",
    value: "N",
    default: "5000",
    unit: "ms",
    description: "time between two write probes of the data directory (health; every second while failing)",
    parse: integer(10, 3_600_000),
  }),
  dataDirProbeTimeoutMs: spec({
    flag: "data-dir-probe-timeout-ms",
    env: "METADATA_DATA_DIR_PROBE_TIMEOUT_MS",
    value: "N",
    default: "10000",
    unit: "ms",
    description: "a slower write probe fails; also the limit of the start-up check of the data directory",
    parse: integer(10, 600_000),
  }),
  shutdownGraceMs: spec({
    flag: "shutdown-grace-ms",
    env: "METADATA_SHUTDOWN_GRACE_MS",
    value: "N",
    default: "10000",
    unit: "ms",
    description: "longest wait for in-flight calls on SIGTERM/SIGINT",
    parse: integer(0, 3_600_000),
  }),
  tlsCert: spec({
    flag: "tls-cert",
    env: "METADATA_TLS_CERT",
    value: "FILE",
    default: undefined,
    defaultShown: "none (insecure)",
    description: "PEM certificate chain; with --tls-key, serves TLS; reloaded on SIGHUP",
    parse: single,
  }),
  tlsKey: spec({
    flag: "tls-key",
    env: "METADATA_TLS_KEY",
    value: "FILE",
    default: undefined,
    defaultShown: "none (insecure)",
    description: "PEM private key of --tls-cert, reloaded on SIGHUP",
    parse: single,
  }),
  tlsClientCaFile: spec({
    flag: "tls-client-ca",
    env: "METADATA_TLS_CLIENT_CA",
    value: "FILE",
    default: undefined,
    defaultShown: "none (client certificates not asked for)",
    description: "PEM CA bundle: require and verify client certificates (mutual TLS); reloaded on SIGHUP",
    parse: single,
  }),
  authTokensFile: spec({
    flag: "auth-tokens",
    env: "METADATA_AUTH_TOKENS",
    value: "FILE",
    default: undefined,
    defaultShown: "none (no authentication)",
    description: "tokens file (JSON, server/auth/policy.ts), reloaded on SIGHUP",
    parse: single,
  }),
  allowUnauthenticated: spec({
    flag: "allow-unauthenticated",
    env: "METADATA_ALLOW_UNAUTHENTICATED",
    value: "",
    default: "false",
    defaultShown: "off",
    description: "serve a non-loopback address without authentication (no value; env: 1/true)",
    boolean: true,
    parse: choice(["true", "1"], ["false", "0"]),
  }),
  reflection: spec({
    flag: "reflection",
    env: "METADATA_REFLECTION",
    value: "on|off",
    default: "on",
    description: "serve gRPC server reflection",
    parse: choice(["on", "true", "1"], ["off", "false", "0"]),
  }),
  metricsTlsCert: spec({
    flag: "metrics-tls-cert",
    env: "METADATA_METRICS_TLS_CERT",
    value: "FILE",
    default: undefined,
    defaultShown: "none (HTTP)",
    description:
      "PEM certificate chain; with --metrics-tls-key, HTTPS for /metrics and /healthz; reloaded on SIGHUP",
    parse: single,
  }),
  metricsTlsKey: spec({
    flag: "metrics-tls-key",
    env: "METADATA_METRICS_TLS_KEY",
    value: "FILE",
    default: undefined,
    defaultShown: "none (HTTP)",
    description: "PEM private key of --metrics-tls-cert, reloaded on SIGHUP",
    parse: single,
  }),
  metricsTokenFile: spec({
    flag: "metrics-token-file",
    env: "METADATA_METRICS_TOKEN_FILE",
    value: "FILE",
    default: undefined,
    defaultShown: "none (open)",
    description: "hex SHA-256 of the bearer token /metrics requires, reloaded on SIGHUP",
    parse: single,
  }),
  storage: spec({
    flag: "storage",
    env: "METADATA_STORAGE",
    value: "filesystem|etcd",
    default: "filesystem",
    description: "where blobs live: files under --data-dir, or an etcd cluster (--etcd-*)",
    parse: (texts, name): "filesystem" | "etcd" => {
      const value = text(texts);
      if (value === "filesystem" || value === "etcd") return value;
      throw new ConfigError(`--${name}: ${JSON.stringify(value)} is not one of filesystem, etcd`);
    },
  }),
  etcdEndpoints: spec({
    flag: "etcd-endpoints",
    env: "METADATA_ETCD_ENDPOINTS",
    value: "HOST:PORT,...",
    default: undefined,
    defaultShown: "none",
    description: "etcd client endpoints, comma-separated (required with --storage etcd)",
    parse: (texts, name) => {
      const endpoints = (single(texts) ?? "")
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s !== "");
      for (const endpoint of endpoints) hostPort(name, endpoint);
      return endpoints;
    },
  }),
  etcdPrefix: spec({
    flag: "etcd-prefix",
    env: "METADATA_ETCD_PREFIX",
    value: "P",
    default: "metadata",
    description: "etcd keys live under P/ (no trailing '/')",
    parse: text,
  }),
  etcdLeaseTtlSeconds: spec({
    flag: "etcd-lease-ttl-seconds",
    env: "METADATA_ETCD_LEASE_TTL_SECONDS",
    value: "N",
    default: "10",
    unit: "s",
    description: "ownership lease: how long a dead owner holds the partitions",
    parse: integer(2, 3600),
  }),
  etcdCaFile: spec({
    flag: "etcd-ca-file",
    env: "METADATA_ETCD_CA_FILE",
    value: "FILE",
    default: undefined,
    defaultShown: "none (plain gRPC to etcd)",
    description: "PEM CA of etcd's server certificates: talk to etcd over TLS (https endpoints)",
    parse: single,
  }),
  etcdCertFile: spec({
    flag: "etcd-cert-file",
    env: "METADATA_ETCD_CERT_FILE",
    value: "FILE",
    default: undefined,
    defaultShown: "none (no client certificate)",
    description:
      "PEM client certificate for etcd's --client-cert-auth; with --etcd-key-file and --etcd-ca-file; read at start only",
    parse: single,
  }),
  etcdKeyFile: spec({
    flag: "etcd-key-file",
    env: "METADATA_ETCD_KEY_FILE",
    value: "FILE",
    default: undefined,
    defaultShown: "none (no client certificate)",
    description: "PEM private key of --etcd-cert-file",
    parse: single,
  }),
  etcdUsername: spec({
    flag: "etcd-username",
    env: "METADATA_ETCD_USERNAME",
    value: "NAME",
    default: undefined,
    defaultShown: "none (no etcd authentication)",
    description: "etcd user to log in as (etcd auth enabled); with --etcd-password-file",
    parse: single,
  }),
  etcdPasswordFile: spec({
    flag: "etcd-password-file",
    env: "METADATA_ETCD_PASSWORD_FILE",
    value: "FILE",
    default: undefined,
    defaultShown: "none",
    description: "file holding the password of --etcd-username; read again at every login to etcd",
    parse: single,
  }),
  advertiseAddress: spec({
    flag: "advertise-address",
    env: "METADATA_ADVERTISE_ADDRESS",
    value: "HOST:PORT",
    default: undefined,
    defaultShown: "the listen address, bound port",
    description: "how clients and standbys reach this server",
    parse: (texts, name) => {
      const value = single(texts);
      if (value !== undefined) hostPort(name, value);
      return value;
    },
  }),
} as const;

type Flags = typeof FLAGS;

/** The values of the flags, one field per entry of `FLAGS`. */
export type FlagValues = { -readonly [K in keyof Flags]: ReturnType<Flags[K]["parse"]> };

/** Flags that `parseConfig` folds into one field of `ServerConfig` (`tls`, `metricsTls`, `etcd`). */
type FoldedFlags =
  | "tlsCert"
  | "tlsKey"
  | "metricsTlsCert"
  | "metricsTlsKey"
  | "storage"
  | "etcdEndpoints"
  | "etcdPrefix"
  | "etcdLeaseTtlSeconds"
  | "etcdCaFile"
  | "etcdCertFile"
  | "etcdKeyFile"
  | "etcdUsername"
  | "etcdPasswordFile";

/** The server's whole configuration: the flags, with each pair of TLS files as one optional pair. */
export interface ServerConfig extends Omit<FlagValues, FoldedFlags> {
  tls: { certFile: string; keyFile: string } | undefined;
  /** HTTPS for the metrics listener; plain HTTP when absent. */
  metricsTls: { certFile: string; keyFile: string } | undefined;
  /** Blobs in an etcd cluster instead of files under `dataDir` (`--storage etcd`); absent: files. */
  etcd: EtcdConfig | undefined;
}

/** Where the etcd backend keeps its blobs. */
export interface EtcdConfig {
  /** Client endpoints, host:port each. */
  endpoints: string[];
  /** Key prefix, without a trailing '/'. */
  prefix: string;
  /** Time to live of the ownership lease, in seconds. */
  leaseTtlSeconds: number;
  /** TLS to etcd (`--etcd-ca-file`), with a client certificate when `client` is set. */
  tls?: { caFile: string; client?: { certFile: string; keyFile: string } };
  /** etcd user authentication; the password stays in its file. */
  auth?: { username: string; passwordFile: string };
}

/**
 * Reads a password file: its text less trailing line breaks. @throws Error naming the file when
 * it cannot be read or holds no password.
 */
export function readPasswordFile(path: string): string {
  const password = readFileSync(path, "utf8").replace(/[\r\n]+$/, "");
  if (password === "") throw new Error(`${path} holds no password`);
  return password;
}

/** Reads `path` once to refuse a file that is missing, unreadable or not PEM. @throws ConfigError */
function checkPemFile(flag: string, path: string): void {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(`--${flag}: cannot read ${path}: ${fileError(err)}`);
  }
  if (!text.includes("-----BEGIN "))
    throw new ConfigError(`--${flag}: ${path} is not PEM (no -----BEGIN line)`);
}

/** The errno code of a failed read (`ENOENT`, `EACCES`, `EISDIR`), else its message. */
function fileError(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

const ENTRIES = Object.entries(FLAGS) as [keyof Flags, FlagSpec<unknown>][];

/** `--flag VALUE` as shown in `--help` and the README. */
export function flagSynopsis(flag: FlagSpec<unknown>): string {
  return flag.value === "" ? `--${flag.flag}` : `--${flag.flag} ${flag.value}`;
}

/** The default as shown in `--help` and the README. */
export function defaultText(flag: FlagSpec<unknown>): string {
  return flag.defaultShown ?? flag.default ?? "none";
}

/** Text of `--help`: every flag with its variable, default, unit and description. */
export const USAGE = `Flags (each also read from its environment variable; a flag wins over its variable):
${ENTRIES.map(([, flag]) => {
  const unit = flag.unit === undefined ? "" : ` ${flag.unit}`;
  return `  ${flagSynopsis(flag).padEnd(42)} ${flag.env}\n      ${flag.description}; default: ${defaultText(flag)}${unit}`;
}).join("\n")}
  --help                                     print this text`;

/** Node's parseArgs message, first line, as a ConfigError. */
function argsError(err: unknown): ConfigError {
  const message = (err instanceof Error ? err.message : String(err)).split("\n")[0] as string;
  const unknown = /^Unknown option '(.*)'/.exec(message);
  if (unknown !== null) return new ConfigError(`unknown flag ${unknown[1]} (--help lists the flags)`);
  const noValue = /^Option '(--[^ ']+)' does not take an argument/.exec(message);
  if (noValue !== null) return new ConfigError(`${noValue[1]} takes no value`);
  const missing = /^Option '(--[^ ']+)/.exec(message);
  if (missing !== null) {
    return new ConfigError(`${missing[1]} needs a value (write ${missing[1]}=-X for one starting with -)`);
  }
  const positional = /^Unexpected argument '(.*)'/.exec(message);
  if (positional !== null) return new ConfigError(`unexpected argument ${JSON.stringify(positional[1])}`);
  return new ConfigError(message);
}

/**
 * Parses `argv` (without node and script) and `env` into a ServerConfig. `--help` is not
 * handled here (serve.ts prints `USAGE`). @throws ConfigError
 */
export function parseConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ServerConfig {
  let given: Record<string, (string | boolean)[] | undefined>;
  try {
    given = parseArgs({
      args: [...argv],
      options: Object.fromEntries(
        ENTRIES.map(([, f]) => [f.flag, { type: f.boolean ? "boolean" : "string", multiple: true }]),
      ),
      strict: true,
      allowPositionals: false,
    }).values as Record<string, (string | boolean)[] | undefined>;
  } catch (err) {
    throw argsError(err);
  }
  const values: Record<string, unknown> = {};
  for (const [key, flag] of ENTRIES) {
    let texts = given[flag.flag]?.map(String);
    if (texts !== undefined && texts.length > 1 && flag.repeatable !== true) {
      throw new ConfigError(`--${flag.flag} given twice`);
    }
    const fromEnv = env[flag.env];
    if (texts === undefined && fromEnv !== undefined && fromEnv !== "") {
      texts = flag.repeatable
        ? fromEnv
            .split(",")
            .map((s) => s.trim())
            .filter((s) => s !== "")
        : [fromEnv];
    }
    texts ??= flag.default === undefined ? [] : [flag.default];
    values[key] = flag.parse(texts, flag.flag);
  }
  const {
    tlsCert,
    tlsKey,
    metricsTlsCert,
    metricsTlsKey,
    storage,
    etcdEndpoints,
    etcdPrefix,
    etcdLeaseTtlSeconds,
    etcdCaFile,
    etcdCertFile,
    etcdKeyFile,
    etcdUsername,
    etcdPasswordFile,
    ...rest
  } = values as FlagValues;
  if ((tlsCert === undefined) !== (tlsKey === undefined)) {
    throw new ConfigError("--tls-cert and --tls-key go together");
  }
  if (rest.tlsClientCaFile !== undefined && tlsCert === undefined) {
    throw new ConfigError("--tls-client-ca needs --tls-cert and --tls-key (client certificates need TLS)");
  }
  if ((metricsTlsCert === undefined) !== (metricsTlsKey === undefined)) {
    throw new ConfigError("--metrics-tls-cert and --metrics-tls-key go together");
  }
  if (!rest.allowUnauthenticated) {
    const listen = hostPort("listen", rest.listen);
    if (rest.authTokensFile === undefined && rest.tlsClientCaFile === undefined && !isLoopback(listen.host)) {
      throw new ConfigError(
        `refusing to listen on ${listen.text} without authentication: give --auth-tokens or --tls-client-ca, or --allow-unauthenticated to serve anyone who can reach it`,
      );
    }
    const metrics = rest.metricsListen;
    if (metrics !== undefined && rest.metricsTokenFile === undefined && !isLoopback(metrics.host)) {
      throw new ConfigError(
        `refusing to serve /metrics on ${metricsText(metrics)} without authentication: give --metrics-token-file, or --allow-unauthenticated to serve anyone who can reach it`,
      );
    }
  }
  let etcd: EtcdConfig | undefined;
  if (storage === "etcd") {
    if (etcdEndpoints.length === 0)
      throw new ConfigError("--storage etcd needs --etcd-endpoints HOST:PORT,...");
    if (etcdPrefix === "" || etcdPrefix.endsWith("/")) {
      throw new ConfigError(
        `--etcd-prefix: ${JSON.stringify(etcdPrefix)} must be non-empty, without a trailing '/'`,
      );
    }
    etcd = { endpoints: etcdEndpoints, prefix: etcdPrefix, leaseTtlSeconds: etcdLeaseTtlSeconds };
    if ((etcdCertFile === undefined) !== (etcdKeyFile === undefined)) {
      throw new ConfigError("--etcd-cert-file and --etcd-key-file go together");
    }
    if (etcdCertFile !== undefined && etcdCaFile === undefined) {
      throw new ConfigError(
        "--etcd-cert-file needs --etcd-ca-file (the CA of etcd's server certificate: a client certificate needs TLS)",
      );
    }
    if (etcdCaFile !== undefined) {
      checkPemFile("etcd-ca-file", etcdCaFile);
      etcd.tls = { caFile: etcdCaFile };
      if (etcdCertFile !== undefined && etcdKeyFile !== undefined) {
        checkPemFile("etcd-cert-file", etcdCertFile);
        checkPemFile("etcd-key-file", etcdKeyFile);
        etcd.tls.client = { certFile: etcdCertFile, keyFile: etcdKeyFile };
      }
    }
    if (etcdUsername !== undefined && etcdPasswordFile === undefined) {
      throw new ConfigError("--etcd-username needs --etcd-password-file (the password is read from a file)");
    }
    if (etcdPasswordFile !== undefined && etcdUsername === undefined) {
      throw new ConfigError("--etcd-password-file needs --etcd-username");
    }
    if (etcdUsername !== undefined && etcdPasswordFile !== undefined) {
      try {
        readPasswordFile(etcdPasswordFile);
      } catch (err) {
        const reason = (err as NodeJS.ErrnoException).code === undefined ? "it is empty" : fileError(err);
        throw new ConfigError(`--etcd-password-file: cannot use ${etcdPasswordFile}: ${reason}`);
      }
      etcd.auth = { username: etcdUsername, passwordFile: etcdPasswordFile };
    }
  } else if (ETCD_FLAGS.some((f) => given[f] !== undefined)) {
    throw new ConfigError(`${ETCD_FLAGS.map((f) => `--${f}`).join(", ")} go with --storage etcd`);
  }
  return {
    ...rest,
    etcd,
    tls: tlsCert === undefined || tlsKey === undefined ? undefined : { certFile: tlsCert, keyFile: tlsKey },
    metricsTls:
      metricsTlsCert === undefined || metricsTlsKey === undefined
        ? undefined
        : { certFile: metricsTlsCert, keyFile: metricsTlsKey },
  };
}

/** Flags that mean nothing without `--storage etcd`. */
const ETCD_FLAGS = [
  "etcd-endpoints",
  "etcd-prefix",
  "etcd-lease-ttl-seconds",
  "etcd-ca-file",
  "etcd-cert-file",
  "etcd-key-file",
  "etcd-username",
  "etcd-password-file",
];

/** HOST:PORT of a parsed address, with an IPv6 host in brackets again. */
function metricsText(address: { host: string; port: number }): string {
  return address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/**
 * True for an address that only this machine can reach: `localhost`, 127.0.0.0/8, ::1 (also
 * IPv4-mapped). Any other name is taken as reachable from elsewhere, since resolving it could
 * give anything.
 */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  return (
    h === "localhost" ||
    h === "::1" ||
    /^(?:::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) ||
    /^0{0,4}(?::0{0,4}){6}:0{0,3}1$/.test(h)
  );
}
