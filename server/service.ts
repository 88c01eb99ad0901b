/**
 * Service: assembles a running server from a ServerConfig: filesystem storage under the data
 * directory or etcd storage (`--storage etcd`), metered, the partitions with group commit, the
 * gRPC server and the HTTP endpoint, all reporting to one prom-client registry.
 *
 * Invariants:
 * - With the filesystem (no `storage` given), the data directory is locked for this process
 *   before anything is opened (data-dir-lock.ts): a second server on it refuses to start. The
 *   lock is released once everything is closed, or when starting fails.
 * - With etcd, the server first reads once under the prefix, over the connection the --etcd-*
 *   flags describe (TLS, client certificate, etcd user): if that fails it does not start, and
 *   the EtcdUnavailableError says why (server/cluster/etcd-client.ts), within its time limit.
 * - With etcd, no data directory is used or locked. The server campaigns for ownership of the
 *   prefix once it listens (server/cluster/ownership.ts): a standby answers UNAVAILABLE naming
 *   the owner and reports NOT_SERVING; only the owner serves, and only its syncs can commit.
 *   `stop()` resigns after the last commit, so a standby takes over at once, then closes the
 *   etcd client.
 * - With the filesystem, the data directory is created and probed before anything else: a
 *   server never starts on a directory it cannot write (`DataDirError`, within the probe's time
 *   limit). While it runs, gRPC health and /healthz say NOT_SERVING whenever the directory cannot
 *   be written (data-dir-probe.ts) and SERVING again once a probe succeeds.
 * - With etcd, etcd out of space (its NOSPACE alarm refused a write) sets
 *   `metadata_data_dir_writable` to 0, logs a warning saying what to do, and adds a line to
 *   /healthz; a probe write once a second finds when an operator has compacted, defragmented and
 *   disarmed, and sets it all back (etcd-space-probe.ts). gRPC health and /healthz's status stay
 *   SERVING: with etcd, health is how clients find the owner, so a NOT_SERVING owner would cut its
 *   reads off too, and no standby could do better on the same full etcd (etcd refuses it the
 *   lease it would need). Reads keep working; writes answer RESOURCE_EXHAUSTED.
 * - With the filesystem, recovery keeps damaged blobs in `<data-dir>/.quarantine/` before it
 *   cuts them (quarantine.ts); partitions with data loss are counted by /healthz (still 200)
 *   and named by `metadata_partition_data_loss` and the log.
 * - Unless `--recover-at-start off`, every partition is opened once in the background as soon
 *   as the server serves (with etcd: once it owns the partitions), so that damage is reported at
 *   start (engine/recovery-at-start.ts); `stop()` ends that check before closing the stores.
 * - `stop()` stops taking calls, lets in-flight ones finish, commits every buffered change,
 *   closes every store, then closes the HTTP endpoint; it is safe to call twice.
 * - A tokens file or metrics token file that does not load stops the start; `reload()` (SIGHUP)
 *   reads both again, keeping the previous one of each that fails and logging why.
 * - With `--tls-client-ca` the gRPC port takes only clients whose certificate that CA verifies:
 *   others are refused at the TLS handshake, before any call.
 * - TLS files (gRPC certificate, key and client CA; metrics certificate and key) that do not
 *   read, parse or match stop the start (`TlsFilesError`). `reload()` reads them again: a set
 *   that passes serves new connections, one that does not keeps the previous certificate
 *   (tls-files.ts); open connections and calls carry on either way. The etcd client
 *   certificate is read once, at start (etcd3 builds its channel credentials once).
 */
import { collectDefaultMetrics, Gauge, Registry } from "prom-client";
import { AccessControl } from "./auth/access-control.js";
import { loadTokenHashFile } from "./auth/policy.js";
import { checkEtcd, createEtcdClient } from "./cluster/etcd-client.js";
import { EtcdSpaceProbe } from "./cluster/etcd-space-probe.js";
import { Ownership } from "./cluster/ownership.js";
import type { EtcdConfig, ServerConfig } from "./config.js";
import { type DataDirLock, lockDataDir } from "./data-dir-lock.js";
import { checkDataDir, DataDirProbe } from "./data-dir-probe.js";
import { createGroupCommitMetrics } from "./engine/group-commit.js";
import { Engine } from "./engine/operations.js";
import { Partitions } from "./engine/partitions.js";
import { recoverAtStart } from "./engine/recovery-at-start.js";
import { type HttpServer, startHttpServer } from "./http/http-server.js";
import { RpcServer } from "./rpc/server.js";
import { createFileQuarantine } from "./store/quarantine.js";
import { EtcdStorage } from "./store/storage/etcd.js";
import { FilesystemStorage } from "./store/storage/filesystem.js";
import { MeteredStorage } from "./store/storage/metered.js";
import type { Storage } from "./store/storage/storage.js";
import { WatchedStorage } from "./store/storage/watched.js";
import { certificateExpiry, reloadTlsFiles, TlsFiles, TlsMetrics } from "./tls-files.js";

/** A started service. */
export interface RunningService {
  /** gRPC port bound. */
  port: number;
  /** HTTP port bound, if any. */
  metricsPort: number | undefined;
  registry: Registry;
  partitions: Partitions;
  engine: Engine;
  /** Authentication and authorization of the gRPC calls. */
  access: AccessControl;
  /** With etcd storage: this server's standing in the ownership election. */
  ownership?: Ownership;
  /** With etcd storage: resolves with the reason once this server lost ownership (it then refuses every call). */
  ownershipLost?: Promise<string>;
  /**
   * Reads the tokens file, the metrics token file and the TLS files again (SIGHUP); see the
   * module comment.
   */
  reload(): void;
  /** Whether the data directory can be written (filesystem), or etcd has space (etcd). */
  probe: DataDirProbe | EtcdSpaceProbe | undefined;
  stop(): Promise<void>;
}

/**
 * Starts the service described by `config`. `storage` replaces the filesystem under
 * `config.dataDir` (tests pass a faulty or gated storage).
 */
export async function startService(config: ServerConfig, storage?: Storage): Promise<RunningService> {
  if (storage === undefined && config.etcd !== undefined) return startOnEtcd(config, config.etcd);
  if (storage === undefined) await checkDataDir(config.dataDir, config.dataDirProbeTimeoutMs);
  const lock = storage === undefined ? await lockDataDir(config.dataDir) : undefined;
  try {
    return await startLocked(config, storage, lock, undefined);
  } catch (err) {
    await lock?.release();
    throw err;
  }
}

/** What the etcd backend adds to a service: ownership gating calls, and its own teardown. */
interface ClusterHooks {
  ownership: Ownership;
  lost: Promise<string>;
  /** Resolves once this server owns the partitions (never for a standby that stays one). */
  owned: Promise<void>;
  /** Starts campaigning once the gRPC server listens on `port`. */
  started(rpc: RpcServer, port: number): Promise<void>;
  /** After the stores are closed: resign and close the client. */
  stop(): Promise<void>;
  /** Follows whether etcd has space for writes. */
  spaceProbe(onChange: (writable: boolean, reason: string | undefined) => void): EtcdSpaceProbe;
}

async function startOnEtcd(config: ServerConfig, etcd: EtcdConfig): Promise<RunningService> {
  // One client, so the election and the storage share the connection, its TLS and its login.
  const client = createEtcdClient(etcd);
  try {
    await checkEtcd(client, etcd);
  } catch (err) {
    client.close();
    throw err;
  }
  let rpcServer: RpcServer | undefined;
  let reportLost: (reason: string) => void = () => undefined;
  const lost = new Promise<string>((resolve) => {
    reportLost = resolve;
  });
  let reportOwned: () => void = () => undefined;
  const owned = new Promise<void>((resolve) => {
    reportOwned = resolve;
  });
  const ownership = new Ownership({
    client,
    prefix: etcd.prefix,
    leaseTtlSeconds: etcd.leaseTtlSeconds,
    onChange: (state, reason) => {
      rpcServer?.updateHealth();
      if (state === "owner") {
        console.log("ownership: this server owns the partitions and serves them");
        reportOwned();
      }
      if (state === "lost") reportLost(reason ?? "unknown");
    },
    // Health says NOT_SERVING for as long as the owner refuses calls for want of a confirmed lease.
    onLeaseChange: (confirmed) => {
      rpcServer?.updateHealth();
      if (confirmed) console.log("ownership: etcd confirmed the lease again: serving");
      else console.error("ownership: etcd no longer confirms the lease: refusing calls until it does");
    },
  });
  const storage = new EtcdStorage({
    client,
    prefix: etcd.prefix,
    fence: () => ownership.fence(),
    // A standby's fence fails by design; only an owner's failing means it was overtaken.
    onFenceLost: (what) => {
      if (ownership.current === "owner") ownership.lose(`${what}: the ownership key is gone`);
    },
  });
  const hooks: ClusterHooks = {
    ownership,
    lost,
    owned,
    started: async (rpc, port) => {
      rpcServer = rpc;
      const identity = config.advertiseAddress ?? config.listen.replace(/:\d+$/, `:${port}`);
      await ownership.start(identity);
      rpc.updateHealth();
    },
    stop: async () => {
      await ownership.stop();
      client.close();
    },
    spaceProbe: (onChange) =>
      new EtcdSpaceProbe(client, etcd.prefix, {
        intervalMs: Math.min(config.dataDirProbeIntervalMs, 1000),
        timeoutMs: config.dataDirProbeTimeoutMs,
        onChange,
      }),
  };
  try {
    return await startLocked(config, storage, undefined, hooks);
  } catch (err) {
    await ownership.stop();
    client.close();
    throw err;
  }
}

async function startLocked(
  config: ServerConfig,
  storage: Storage | undefined,
  lock: DataDirLock | undefined,
  cluster: ClusterHooks | undefined,
): Promise<RunningService> {
  if (lock !== undefined && !lock.held) {
    console.error(
      `warning: no lock on ${lock.path}: run one server per data directory (${process.platform})`,
    );
  }
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // prom-client also exposes these three gauges under a counter's `_total` suffix, which
  // `promtool check metrics` rejects; the same values stay as nodejs_active_{handles,requests,resources}.
  for (const name of [
    "nodejs_active_handles_total",
    "nodejs_active_requests_total",
    "nodejs_active_resources_total",
  ]) {
    registry.removeSingleMetric(name);
  }
  // The limit beside its gauge (metadata_operations_waiting), for alerts on a queue near it.
  new Gauge({
    name: "metadata_operations_waiting_max",
    help: "Most operations waiting per partition (--max-queued-operations); more are refused.",
    registers: [registry],
  }).set(config.maxQueuedOperations);
  const warn = (message: string) => console.warn(`warning: ${message}`);
  const writableGauge = new Gauge({
    name: "metadata_data_dir_writable",
    help: "1 while the data directory can be written (last write probe or store operation), else 0; with --storage etcd, 0 while etcd is out of space.",
    registers: [registry],
  });
  writableGauge.set(1);
  let rpc: RpcServer | undefined;
  const probe =
    storage === undefined
      ? new DataDirProbe(config.dataDir, {
          intervalMs: config.dataDirProbeIntervalMs,
          timeoutMs: config.dataDirProbeTimeoutMs,
          onChange: (writable, reason) => {
            writableGauge.set(writable ? 1 : 0);
            rpc?.setHealthy(writable);
            if (writable) console.warn(`data directory ${config.dataDir} is writable again: serving`);
            else warn(`data directory ${config.dataDir} cannot be written (${reason}): not serving`);
          },
        })
      : cluster?.spaceProbe((writable, reason) => {
          writableGauge.set(writable ? 1 : 0);
          if (writable) console.warn("etcd takes writes again");
          else warn(`${reason ?? "etcd out of space"}; reads are served meanwhile`);
        });
  const base = storage ?? new FilesystemStorage(config.dataDir);
  const watched = probe === undefined ? base : new WatchedStorage(base, (err) => probe.report(err));
  const metered = new MeteredStorage(watched, registry);
  const partitions = new Partitions(
    metered,
    {
      defaultPartition: config.defaultPartition,
      defaultKeyCodec: config.defaultKeyCodec,
      keyCodecs: config.keyCodecs,
      blobLayouts: {
        default: config.blobLayout,
        layouts: config.blobLayouts,
        ...(config.noChangeSync === undefined ? {} : { noChangeSync: config.noChangeSync }),
      },
      maxValueBytes: config.maxValueBytes,
      maxOpenPartitions: config.maxOpenPartitions,
      maxPartitions: config.maxPartitions,
      groupCommit: {
        batchMaxMutations: config.batchMaxMutations,
        batchMaxBytes: config.batchMaxBytes,
        batchMaxDelayMs: config.batchMaxDelayMs,
        flushIntervalMs: config.flushIntervalMs,
        maxQueuedOperations: config.maxQueuedOperations,
      },
      watchHistory: { historyMaxSyncs: config.watchHistorySyncs, historyMaxBytes: config.watchHistoryBytes },
      recovery: storage === undefined ? { quarantine: createFileQuarantine(config.dataDir), warn } : { warn },
    },
    registry,
    createGroupCommitMetrics(registry),
  );
  const access = AccessControl.open({
    tokensFile: config.authTokensFile,
    clientCertificates: config.tlsClientCaFile !== undefined,
    registry,
  });
  let metricsTokenHash =
    config.metricsTokenFile === undefined ? undefined : loadTokenHashFile(config.metricsTokenFile);
  const tlsMetrics = new TlsMetrics(registry);
  const grpcTls =
    config.tls === undefined ? undefined : TlsFiles.open({ ...config.tls, caFile: config.tlsClientCaFile });
  const metricsTls = config.metricsTls === undefined ? undefined : TlsFiles.open(config.metricsTls);
  if (grpcTls !== undefined) tlsMetrics.inUse("grpc", grpcTls.current.notAfter);
  if (metricsTls !== undefined) tlsMetrics.inUse("metrics", metricsTls.current.notAfter);
  const etcdClientCert = config.etcd?.tls?.client?.certFile;
  const etcdExpiry = etcdClientCert === undefined ? undefined : certificateExpiry(etcdClientCert);
  if (etcdExpiry !== undefined) tlsMetrics.inUse("etcd-client", etcdExpiry);
  const credentials = grpcTls?.serverCredentials();
  const engine = new Engine(partitions);
  const started = await RpcServer.start(config.listen, engine, registry, {
    maxConcurrentStreams: config.maxConcurrentStreams,
    maxStreams: config.maxStreams,
    maxConnections: config.maxConnections,
    streamBufferBytes: config.streamBufferBytes,
    writeStreamMaxInFlight: config.writeStreamMaxInFlight,
    writeStreamMaxInFlightBytes: config.writeStreamMaxInFlightBytes,
    maxMessageBytes: config.maxMessageBytes,
    reflection: config.reflection,
    access,
    ...(credentials === undefined ? {} : { credentials }),
    ...(cluster === undefined ? {} : { refusal: () => cluster.ownership.refusal() }),
  });
  rpc = started;
  let http: HttpServer | undefined;
  try {
    if (config.metricsListen !== undefined) {
      http = await startHttpServer(
        config.metricsListen.host,
        config.metricsListen.port,
        registry,
        () => started.serving && (!(probe instanceof DataDirProbe) || probe.writable),
        {
          ...(metricsTls === undefined
            ? {}
            : { tls: { cert: metricsTls.current.certificate, key: metricsTls.current.privateKey } }),
          ...(config.metricsTokenFile === undefined ? {} : { metricsTokenHash: () => metricsTokenHash }),
          // /healthz is open to anyone: the lines name no partition and no path.
          problems: () => [
            ...(cluster?.ownership.current === "owner" && cluster.ownership.refusal() !== undefined
              ? ["ownership lease unconfirmed by etcd: calls refused until etcd confirms it"]
              : []),
            ...(probe === undefined || probe.writable
              ? []
              : probe instanceof EtcdSpaceProbe
                ? ["etcd is out of space (NOSPACE alarm): writes refused, reads served"]
                : [`data directory cannot be written (${errnoName(probe.reason)}): not serving`]),
            ...(partitions.dataLoss().length === 0
              ? []
              : [
                  `data loss: ${partitions.dataLoss().length} partition(s) not served (metadata_partition_data_loss, server log)`,
                ]),
          ],
        },
      );
    }
    await cluster?.started(started, started.port);
  } catch (err) {
    await started.shutdown(0);
    throw err;
  }
  probe?.start();
  // Only an owner may open partitions (recovery may cut a damaged blob): with etcd, once owner.
  let recovery: Promise<unknown> | undefined;
  if (config.recoverAtStart) {
    const begin = () => {
      recovery = recoverAtStart(partitions, { registry, warn });
    };
    if (cluster === undefined) begin();
    else void cluster.owned.then(begin);
  }
  let stopping: Promise<void> | undefined;
  return {
    port: started.port,
    probe,
    metricsPort: http?.port,
    registry,
    partitions,
    engine,
    access,
    ...(cluster === undefined ? {} : { ownership: cluster.ownership, ownershipLost: cluster.lost }),
    reload: () => {
      if (config.authTokensFile !== undefined) access.reload();
      if (config.metricsTokenFile !== undefined) {
        try {
          metricsTokenHash = loadTokenHashFile(config.metricsTokenFile);
          console.error(`metrics: reloaded the token hash from ${config.metricsTokenFile}`);
        } catch (err) {
          console.error(`metrics: keeping the previous token: ${(err as Error).message}`);
        }
      }
      // The gRPC listeners take new material from the provider itself (TlsFiles.reload).
      if (grpcTls !== undefined) reloadTlsFiles(grpcTls, "grpc", tlsMetrics);
      if (metricsTls !== undefined && reloadTlsFiles(metricsTls, "metrics", tlsMetrics)) {
        http?.setTls({ cert: metricsTls.current.certificate, key: metricsTls.current.privateKey });
      }
    },
    stop: () => {
      stopping ??= (async () => {
        probe?.stop();
        await started.shutdown(config.shutdownGraceMs);
        await recovery;
        await http?.close();
        await cluster?.stop();
        await lock?.release();
      })();
      return stopping;
    },
  };
}

/** The errno name in an error message (`... EROFS: read-only ...`), else "probe failed". */
function errnoName(reason: string | undefined): string {
  return /\bE[A-Z]{2,}\b/.exec(reason ?? "")?.[0] ?? "probe failed";
}
