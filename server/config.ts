/**
 * Config: every flag and environment variable of the server, with its unit and default, parsed
 * in one place. A flag wins over its environment variable, which wins over the default.
 *
 *   flag                          env                              default
 *   --data-dir DIR                METADATA_DATA_DIR                ./data
 *   --listen HOST:PORT            METADATA_LISTEN                  127.0.0.1:50051
 *   --metrics-listen HOST:PORT    METADATA_METRICS_LISTEN          127.0.0.1:9464 ("" or "off": none)
 *   --default-partition NAME      METADATA_DEFAULT_PARTITION       default
 *   --default-key-codec CODEC     METADATA_DEFAULT_KEY_CODEC       variable  (fixed:N | variable)
 *   --partition-key-codec N=CODEC METADATA_PARTITION_KEY_CODECS    none      (repeatable; env: comma-separated)
 *   --blob-layout v0|v1           METADATA_BLOB_LAYOUT             v1       (layout of new partitions;
 *                                                                             v0 for a 2026.4.0 node)
 *   --partition-blob-layout N=L   METADATA_PARTITION_BLOB_LAYOUTS  none      (repeatable; env: comma-separated)
 *   --no-change-sync MODE         METADATA_NO_CHANGE_SYNC          auto     (auto | bump | skip: a sync
 *                                                                             with nothing to write bumps
 *                                                                             the version as 2026.4.0, or
 *                                                                             writes nothing as 2026.7+;
 *                                                                             auto: skip on V1, bump on V0)
 *   --max-value-bytes N           METADATA_MAX_VALUE_BYTES         1048576
 *   --flush-interval-ms N         METADATA_FLUSH_INTERVAL_MS       100
 *   --batch-max-mutations N       METADATA_BATCH_MAX_MUTATIONS     10000
 *   --batch-max-bytes N           METADATA_BATCH_MAX_BYTES         16777216
 *   --batch-max-delay-ms N        METADATA_BATCH_MAX_DELAY_MS      0
 *   --max-queued-operations N     METADATA_MAX_QUEUED_OPERATIONS   100000   (per partition: calls
 *                                                                             waiting for an answer)
 *   --max-concurrent-streams N    METADATA_MAX_CONCURRENT_STREAMS  128      (per connection)
 *   --max-streams N               METADATA_MAX_STREAMS             1000     (server-wide open Keys,
 *                                                                             Write, Watch streams)
 *   --stream-buffer-bytes N       METADATA_STREAM_BUFFER_BYTES     67108864 (server-wide streamed bytes
 *                                                                             not yet taken by clients)
 *   --max-open-partitions N       METADATA_MAX_OPEN_PARTITIONS     256      (least recently used idle
 *                                                                             ones are closed beyond it)
 *   --max-partitions N            METADATA_MAX_PARTITIONS          10000    (creating more is refused)
 *   --write-stream-max-in-flight N        METADATA_WRITE_STREAM_MAX_IN_FLIGHT        1024
 *                                 (per Write stream: requests read and not yet answered)
 *   --write-stream-max-in-flight-bytes N  METADATA_WRITE_STREAM_MAX_IN_FLIGHT_BYTES  16777216
 *                                 (per Write stream: key and value bytes of those requests)
 *   --watch-history-syncs N       METADATA_WATCH_HISTORY_SYNCS     4096     (per partition: committed syncs
 *                                                                             a Watch can resume from)
 *   --watch-history-bytes N       METADATA_WATCH_HISTORY_BYTES     4194304  (per partition: bytes of them;
 *                                                                             open partitions only)
 *   --max-message-bytes N         METADATA_MAX_MESSAGE_BYTES       33554432
 *   --shutdown-grace-ms N         METADATA_SHUTDOWN_GRACE_MS       10000
 *   --tls-cert FILE, --tls-key FILE  METADATA_TLS_CERT, METADATA_TLS_KEY  none (insecure)
 *   --tls-client-ca FILE          METADATA_TLS_CLIENT_CA           none     (PEM CA bundle: require and
 *                                                                             verify client certificates)
 *   --auth-tokens FILE            METADATA_AUTH_TOKENS             none     (JSON, server/auth/policy.ts;
 *                                                                             reloaded on SIGHUP)
 *   --allow-unauthenticated       METADATA_ALLOW_UNAUTHENTICATED   off      (no value; env: 1/true)
 *   --reflection on|off           METADATA_REFLECTION              on
 *   --metrics-tls-cert FILE, --metrics-tls-key FILE
 *                                 METADATA_METRICS_TLS_CERT/_KEY   none     (HTTPS for /metrics, /healthz)
 *   --metrics-token-file FILE     METADATA_METRICS_TOKEN_FILE      none     (hex SHA-256 of the bearer
 *                                                                             token /metrics requires;
 *                                                                             reloaded on SIGHUP)
 *   --storage filesystem|etcd     METADATA_STORAGE                 filesystem (--data-dir, or an etcd
 *                                                                             cluster: see below)
 *   --etcd-endpoints H:P,...      METADATA_ETCD_ENDPOINTS          none     (required with --storage etcd)
 *   --etcd-prefix P               METADATA_ETCD_PREFIX             metadata (keys under P/; no trailing '/')
 *   --etcd-lease-ttl-seconds N    METADATA_ETCD_LEASE_TTL_SECONDS  10       (ownership lease: how long a dead
 *                                                                             owner holds the partitions)
 *   --advertise-address H:P       METADATA_ADVERTISE_ADDRESS       the listen address, bound port
 *                                                                            (how standbys name the owner)
 *
 * Invariants:
 * - `parseConfig` either returns a complete, valid configuration or throws a `ConfigError`
 *   naming the flag and the bad value.
 * - Without authentication (no --auth-tokens and no --tls-client-ca for gRPC, no
 *   --metrics-token-file for /metrics) only loopback addresses are accepted, unless
 *   --allow-unauthenticated is given: the error says so in one line.
 */
import { type KeyCodec, MAX_VALUE_BYTES, parseKeyCodec } from "./store/codec.js";
import type { NoChangeSync } from "./store/metadata.js";
import { type BlobLayout, parseBlobLayout } from "./store/storage/blob-header.js";
import { isValidPartitionName } from "./store/storage/storage.js";

/** The server's whole configuration. */
export interface ServerConfig {
  dataDir: string;
  listen: string;
  /** Host and port of the HTTP endpoint, or undefined for none. */
  metricsListen: { host: string; port: number } | undefined;
  defaultPartition: string;
  defaultKeyCodec: KeyCodec;
  keyCodecs: Map<string, KeyCodec>;
  /** Layout of the blobs of partitions created from now on; existing ones keep theirs. */
  blobLayout: BlobLayout;
  /** Layout of new partitions per partition name, overriding `blobLayout`. */
  blobLayouts: Map<string, BlobLayout>;
  /** What a sync with nothing to write does; undefined: by the partition's layout (V1 skip, V0 bump). */
  noChangeSync: NoChangeSync | undefined;
  maxValueBytes: number;
  flushIntervalMs: number;
  batchMaxMutations: number;
  batchMaxBytes: number;
  batchMaxDelayMs: number;
  maxQueuedOperations: number;
  maxConcurrentStreams: number;
  maxOpenPartitions: number;
  maxPartitions: number;
  maxStreams: number;
  streamBufferBytes: number;
  writeStreamMaxInFlight: number;
  writeStreamMaxInFlightBytes: number;
  /** Most committed syncs (that changed something) kept per partition for Watch to resume from. */
  watchHistorySyncs: number;
  /** Most bytes of those (keys, values and a fixed overhead per change) per partition. */
  watchHistoryBytes: number;
  maxMessageBytes: number;
  shutdownGraceMs: number;
  tls: { certFile: string; keyFile: string } | undefined;
  /** CA bundle verifying client certificates (mutual TLS); certificates are optional when absent. */
  tlsClientCaFile: string | undefined;
  /** Tokens file of bearer tokens and certificate grants; no authentication when absent. */
  authTokensFile: string | undefined;
  /** Serve without authentication on a non-loopback address. */
  allowUnauthenticated: boolean;
  /** Serve gRPC server reflection. */
  reflection: boolean;
  /** HTTPS for the metrics listener; plain HTTP when absent. */
  metricsTls: { certFile: string; keyFile: string } | undefined;
  /** File holding the hex SHA-256 of the bearer token /metrics requires; /metrics open when absent. */
  metricsTokenFile: string | undefined;
  /** How clients reach this server, host:port; undefined: the listen address with the bound port. */
  advertiseAddress: string | undefined;
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
}

/** A bad flag or environment value. */
export class ConfigError extends Error {
  override readonly name = "ConfigError";
}

interface FlagSpec {
  env: string;
  repeatable?: boolean;
  /** Takes no value on the command line (its env var takes 1/true/0/false). */
  boolean?: boolean;
}

const FLAGS: Record<string, FlagSpec> = {
  "data-dir": { env: "METADATA_DATA_DIR" },
  listen: { env: "METADATA_LISTEN" },
  "metrics-listen": { env: "METADATA_METRICS_LISTEN" },
  "default-partition": { env: "METADATA_DEFAULT_PARTITION" },
  "default-key-codec": { env: "METADATA_DEFAULT_KEY_CODEC" },
  "partition-key-codec": { env: "METADATA_PARTITION_KEY_CODECS", repeatable: true },
  "blob-layout": { env: "METADATA_BLOB_LAYOUT" },
  "partition-blob-layout": { env: "METADATA_PARTITION_BLOB_LAYOUTS", repeatable: true },
  "no-change-sync": { env: "METADATA_NO_CHANGE_SYNC" },
  "max-value-bytes": { env: "METADATA_MAX_VALUE_BYTES" },
  "flush-interval-ms": { env: "METADATA_FLUSH_INTERVAL_MS" },
  "batch-max-mutations": { env: "METADATA_BATCH_MAX_MUTATIONS" },
  "batch-max-bytes": { env: "METADATA_BATCH_MAX_BYTES" },
  "batch-max-delay-ms": { env: "METADATA_BATCH_MAX_DELAY_MS" },
  "max-queued-operations": { env: "METADATA_MAX_QUEUED_OPERATIONS" },
  "max-concurrent-streams": { env: "METADATA_MAX_CONCURRENT_STREAMS" },
  "max-streams": { env: "METADATA_MAX_STREAMS" },
  "stream-buffer-bytes": { env: "METADATA_STREAM_BUFFER_BYTES" },
  "max-open-partitions": { env: "METADATA_MAX_OPEN_PARTITIONS" },
  "max-partitions": { env: "METADATA_MAX_PARTITIONS" },
  "write-stream-max-in-flight": { env: "METADATA_WRITE_STREAM_MAX_IN_FLIGHT" },
  "write-stream-max-in-flight-bytes": { env: "METADATA_WRITE_STREAM_MAX_IN_FLIGHT_BYTES" },
  "watch-history-syncs": { env: "METADATA_WATCH_HISTORY_SYNCS" },
  "watch-history-bytes": { env: "METADATA_WATCH_HISTORY_BYTES" },
  "max-message-bytes": { env: "METADATA_MAX_MESSAGE_BYTES" },
  "shutdown-grace-ms": { env: "METADATA_SHUTDOWN_GRACE_MS" },
  "tls-cert": { env: "METADATA_TLS_CERT" },
  "tls-key": { env: "METADATA_TLS_KEY" },
  "tls-client-ca": { env: "METADATA_TLS_CLIENT_CA" },
  "auth-tokens": { env: "METADATA_AUTH_TOKENS" },
  "allow-unauthenticated": { env: "METADATA_ALLOW_UNAUTHENTICATED", boolean: true },
  reflection: { env: "METADATA_REFLECTION" },
  "metrics-tls-cert": { env: "METADATA_METRICS_TLS_CERT" },
  "metrics-tls-key": { env: "METADATA_METRICS_TLS_KEY" },
  "metrics-token-file": { env: "METADATA_METRICS_TOKEN_FILE" },
  storage: { env: "METADATA_STORAGE" },
  "etcd-endpoints": { env: "METADATA_ETCD_ENDPOINTS" },
  "etcd-prefix": { env: "METADATA_ETCD_PREFIX" },
  "etcd-lease-ttl-seconds": { env: "METADATA_ETCD_LEASE_TTL_SECONDS" },
  "advertise-address": { env: "METADATA_ADVERTISE_ADDRESS" },
};

/** Text of `--help`. */
export const USAGE = `Flags (each also read from its environment variable):
${Object.entries(FLAGS)
  .map(([flag, spec]) => `  --${flag.padEnd(33)} ${spec.env}`)
  .join("\n")}
See server/config.ts for units and defaults.`;

/** Parses `argv` (without node and script) and `env` into a ServerConfig. @throws ConfigError */
export function parseConfig(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const given = new Map<string, string[]>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (!arg.startsWith("--")) throw new ConfigError(`unexpected argument ${JSON.stringify(arg)}`);
    const eq = arg.indexOf("=");
    const flag = eq === -1 ? arg.slice(2) : arg.slice(2, eq);
    const spec = FLAGS[flag];
    if (spec === undefined) throw new ConfigError(`unknown flag --${flag}\n${USAGE}`);
    let value: string;
    if (spec.boolean) {
      if (eq !== -1) throw new ConfigError(`--${flag} takes no value`);
      value = "true";
    } else if (eq !== -1) {
      value = arg.slice(eq + 1);
    } else {
      const next = argv[++i];
      if (next === undefined) throw new ConfigError(`--${flag} needs a value`);
      value = next;
    }
    const list = given.get(flag) ?? [];
    if (list.length > 0 && !spec.repeatable) throw new ConfigError(`--${flag} given twice`);
    list.push(value);
    given.set(flag, list);
  }
  const get = (flag: string, fallback: string): string => {
    const fromFlag = given.get(flag)?.[0];
    if (fromFlag !== undefined) return fromFlag;
    const fromEnv = env[(FLAGS[flag] as FlagSpec).env];
    return fromEnv !== undefined && fromEnv !== "" ? fromEnv : fallback;
  };
  const int = (flag: string, fallback: number, min: number, max: number): number => {
    const text = get(flag, String(fallback));
    const value = Number(text);
    if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(value) || value < min || value > max) {
      throw new ConfigError(`--${flag}: ${JSON.stringify(text)} is not an integer in ${min}..${max}`);
    }
    return value;
  };
  const codec = (flag: string, text: string): KeyCodec => {
    try {
      return parseKeyCodec(text);
    } catch (err) {
      throw new ConfigError(`--${flag}: ${(err as Error).message}`);
    }
  };
  const partition = (flag: string, name: string): string => {
    if (!isValidPartitionName(name)) {
      throw new ConfigError(`--${flag}: invalid partition name ${JSON.stringify(name)}: use [A-Za-z0-9_-]+`);
    }
    return name;
  };

  const keyCodecs = new Map<string, KeyCodec>();
  const codecEntries =
    given.get("partition-key-codec") ??
    (env.METADATA_PARTITION_KEY_CODECS ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
  for (const entry of codecEntries) {
    const eq = entry.indexOf("=");
    if (eq <= 0) throw new ConfigError(`--partition-key-codec: ${JSON.stringify(entry)} is not NAME=CODEC`);
    keyCodecs.set(
      partition("partition-key-codec", entry.slice(0, eq)),
      codec("partition-key-codec", entry.slice(eq + 1)),
    );
  }

  const layout = (flag: string, text: string): BlobLayout => {
    try {
      return parseBlobLayout(text);
    } catch (err) {
      throw new ConfigError(`--${flag}: ${(err as Error).message}`);
    }
  };
  const blobLayouts = new Map<string, BlobLayout>();
  const layoutEntries =
    given.get("partition-blob-layout") ??
    (env.METADATA_PARTITION_BLOB_LAYOUTS ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
  for (const entry of layoutEntries) {
    const eq = entry.indexOf("=");
    if (eq <= 0) throw new ConfigError(`--partition-blob-layout: ${JSON.stringify(entry)} is not NAME=v0|v1`);
    blobLayouts.set(
      partition("partition-blob-layout", entry.slice(0, eq)),
      layout("partition-blob-layout", entry.slice(eq + 1)),
    );
  }
  const noChangeSync = get("no-change-sync", "auto");
  if (noChangeSync !== "auto" && noChangeSync !== "bump" && noChangeSync !== "skip") {
    throw new ConfigError(`--no-change-sync: ${JSON.stringify(noChangeSync)} is not auto, bump or skip`);
  }

  const metricsText = get("metrics-listen", "127.0.0.1:9464");
  const tlsCert = get("tls-cert", "");
  const tlsKey = get("tls-key", "");
  if ((tlsCert === "") !== (tlsKey === "")) throw new ConfigError("--tls-cert and --tls-key go together");
  const clientCa = get("tls-client-ca", "");
  if (clientCa !== "" && tlsCert === "") {
    throw new ConfigError("--tls-client-ca needs --tls-cert and --tls-key (client certificates need TLS)");
  }
  const metricsTlsCert = get("metrics-tls-cert", "");
  const metricsTlsKey = get("metrics-tls-key", "");
  if ((metricsTlsCert === "") !== (metricsTlsKey === "")) {
    throw new ConfigError("--metrics-tls-cert and --metrics-tls-key go together");
  }
  const switchFlag = (flag: string, fallback: boolean, on: string[], off: string[]): boolean => {
    const text = get(flag, fallback ? (on[0] as string) : (off[0] as string))
      .trim()
      .toLowerCase();
    if (on.includes(text)) return true;
    if (off.includes(text)) return false;
    throw new ConfigError(`--${flag}: ${JSON.stringify(text)} is not one of ${[...on, ...off].join(", ")}`);
  };
  const authTokens = get("auth-tokens", "");
  const metricsTokenFile = get("metrics-token-file", "");
  const allowUnauthenticated = switchFlag("allow-unauthenticated", false, ["true", "1"], ["false", "0"]);
  const listen = hostPort("listen", get("listen", "127.0.0.1:50051"));
  const metricsListen =
    metricsText === "" || metricsText === "off" ? undefined : hostPort("metrics-listen", metricsText);
  if (!allowUnauthenticated) {
    if (authTokens === "" && clientCa === "" && !isLoopback(listen.host)) {
      throw new ConfigError(
        `refusing to listen on ${listen.text} without authentication: give --auth-tokens or --tls-client-ca, or --allow-unauthenticated to serve anyone who can reach it`,
      );
    }
    if (metricsListen !== undefined && metricsTokenFile === "" && !isLoopback(metricsListen.host)) {
      throw new ConfigError(
        `refusing to serve /metrics on ${metricsListen.text} without authentication: give --metrics-token-file, or --allow-unauthenticated to serve anyone who can reach it`,
      );
    }
  }

  const storage = get("storage", "filesystem");
  if (storage !== "filesystem" && storage !== "etcd") {
    throw new ConfigError(`--storage: ${JSON.stringify(storage)} is not one of filesystem, etcd`);
  }
  const etcdEndpoints = get("etcd-endpoints", "");
  const etcdPrefix = get("etcd-prefix", "metadata");
  let etcd: EtcdConfig | undefined;
  if (storage === "etcd") {
    const endpoints = etcdEndpoints
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
    if (endpoints.length === 0) throw new ConfigError("--storage etcd needs --etcd-endpoints HOST:PORT,...");
    for (const endpoint of endpoints) hostPort("etcd-endpoints", endpoint);
    if (etcdPrefix === "" || etcdPrefix.endsWith("/")) {
      throw new ConfigError(
        `--etcd-prefix: ${JSON.stringify(etcdPrefix)} must be non-empty, without a trailing '/'`,
      );
    }
    etcd = { endpoints, prefix: etcdPrefix, leaseTtlSeconds: int("etcd-lease-ttl-seconds", 10, 2, 3600) };
  } else if (given.has("etcd-endpoints") || given.has("etcd-prefix") || given.has("etcd-lease-ttl-seconds")) {
    throw new ConfigError(
      "--etcd-endpoints, --etcd-prefix and --etcd-lease-ttl-seconds go with --storage etcd",
    );
  }
  const advertise = get("advertise-address", "");
  if (advertise !== "") hostPort("advertise-address", advertise);

  return {
    dataDir: get("data-dir", "./data"),
    listen: listen.text,
    metricsListen,
    defaultPartition: partition("default-partition", get("default-partition", "default")),
    defaultKeyCodec: codec("default-key-codec", get("default-key-codec", "variable")),
    keyCodecs,
    blobLayout: layout("blob-layout", get("blob-layout", "v1")),
    blobLayouts,
    noChangeSync: noChangeSync === "auto" ? undefined : noChangeSync,
    maxValueBytes: int("max-value-bytes", 1024 * 1024, 0, MAX_VALUE_BYTES),
    flushIntervalMs: int("flush-interval-ms", 100, 1, 3_600_000),
    batchMaxMutations: int("batch-max-mutations", 10_000, 1, 10_000_000),
    batchMaxBytes: int("batch-max-bytes", 16 * 1024 * 1024, 1, 2 ** 40),
    batchMaxDelayMs: int("batch-max-delay-ms", 0, 0, 60_000),
    maxQueuedOperations: int("max-queued-operations", 100_000, 1, 100_000_000),
    maxConcurrentStreams: int("max-concurrent-streams", 128, 1, 1_000_000),
    maxStreams: int("max-streams", 1000, 1, 10_000_000),
    streamBufferBytes: int("stream-buffer-bytes", 64 * 1024 * 1024, 1024, 2 ** 40),
    maxOpenPartitions: int("max-open-partitions", 256, 1, 1_000_000),
    maxPartitions: int("max-partitions", 10_000, 1, 100_000_000),
    writeStreamMaxInFlight: int("write-stream-max-in-flight", 1024, 1, 1_000_000),
    writeStreamMaxInFlightBytes: int("write-stream-max-in-flight-bytes", 16 * 1024 * 1024, 1, 2 ** 40),
    watchHistorySyncs: int("watch-history-syncs", 4096, 1, 100_000_000),
    watchHistoryBytes: int("watch-history-bytes", 4 * 1024 * 1024, 1, 2 ** 40),
    maxMessageBytes: int("max-message-bytes", 32 * 1024 * 1024, 1024, 2 ** 31 - 1),
    shutdownGraceMs: int("shutdown-grace-ms", 10_000, 0, 3_600_000),
    tls: tlsCert === "" ? undefined : { certFile: tlsCert, keyFile: tlsKey },
    tlsClientCaFile: clientCa === "" ? undefined : clientCa,
    authTokensFile: authTokens === "" ? undefined : authTokens,
    allowUnauthenticated,
    reflection: switchFlag("reflection", true, ["on", "true", "1"], ["off", "false", "0"]),
    metricsTls: metricsTlsCert === "" ? undefined : { certFile: metricsTlsCert, keyFile: metricsTlsKey },
    metricsTokenFile: metricsTokenFile === "" ? undefined : metricsTokenFile,
    advertiseAddress: advertise === "" ? undefined : advertise,
    etcd,
  };
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

function hostPort(flag: string, text: string): { host: string; port: number; text: string } {
  const match = /^(.*):(\d+)$/.exec(text);
  const port = Number(match?.[2]);
  if (match === null || match[1] === "" || port > 65535) {
    throw new ConfigError(`--${flag}: ${JSON.stringify(text)} is not HOST:PORT`);
  }
  return { host: (match[1] as string).replace(/^\[(.*)\]$/, "$1"), port, text };
}
