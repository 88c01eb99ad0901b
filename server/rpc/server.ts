/**
 * RpcServer: the grpc-js server with MetadataService, grpc.health.v1 health, server reflection
 * and a metrics interceptor (`metadata_rpc_duration_seconds{service,method,code}` and the standard
 * `grpc_server_*` metrics of go-grpc-prometheus).
 *
 * Invariants:
 * - At most `maxConcurrentStreams` calls run at once on one HTTP/2 connection; clients open more
 *   connections for more concurrency.
 * - `shutdown()` marks health NOT_SERVING, stops taking calls, lets in-flight calls finish (up to
 *   `graceMs`, then cancels them), then commits every partition's pending changes and closes
 *   the stores. Calls arriving meanwhile are refused by grpc-js with UNAVAILABLE.
 * - Shutdown does not wait out the grace period once no call is active: grpc-js's graceful
 *   shutdown never completes when a client dropped its connection just before (a session already
 *   destroyed but not yet reported closed), so once every call has been answered the connections
 *   get SETTLE_MS to close by themselves and are then closed. Health watches (clients that route
 *   by health keep one open per server) do not count as active calls.
 * - Health (both "" and the MetadataService name) is SERVING only while `refusal()` (a standby or
 *   a server that lost ownership, see server/cluster/ownership.ts) has nothing to say; meanwhile
 *   every MetadataService call answers UNAVAILABLE with its message. Health and reflection stay open.
 */
import * as grpc from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { MetadataService } from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import type { AccessControl } from "../auth/access-control.js";
import type { Engine } from "../engine/operations.js";
import { limitConnections } from "./connection-limit.js";
import { createMetadataService } from "./metadata-service.js";
import { createReflectionService } from "./reflection.js";
import { addService } from "./service-definition.js";
import { invalidArgument } from "./status.js";
import { StreamLimits } from "./stream-limits.js";
import { createWatchMetrics } from "./watch-stream.js";
import type { WriteStreamHandle } from "./write-stream.js";

/** Options of the gRPC server (defaults and units: server/config.ts). */
export interface RpcServerOptions {
  /** Most concurrent calls per HTTP/2 connection. */
  maxConcurrentStreams: number;
  /** Largest request message accepted. */
  maxMessageBytes: number;
  /** Most streaming calls (Keys, Write) open at once, server-wide. */
  maxStreams: number;
  /** Most HTTP/2 connections open at once (more are closed when they open). */
  maxConnections: number;
  /** Most bytes of streamed responses handed to the transport and not yet flushed, server-wide. */
  streamBufferBytes: number;
  /** Most requests read and not yet answered on one Write stream. */
  writeStreamMaxInFlight: number;
  /** Most key and value bytes of requests read and not yet answered on one Write stream. */
  writeStreamMaxInFlightBytes: number;
  /** TLS credentials; insecure when absent. */
  credentials?: grpc.ServerCredentials;
  /** Serve server reflection (default true). */
  reflection?: boolean;
  /** Authentication and authorization of MetadataService calls; none when absent. */
  access?: AccessControl;
  /**
   * Why MetadataService calls are refused right now (a standby: "... the owner is host:port"), or
   * undefined to serve them. Refused calls answer UNAVAILABLE with that message before any
   * handler runs, and health reports NOT_SERVING; call `updateHealth()` when the answer changes.
   */
  refusal?: () => string | undefined;
}

const SERVICE_NAME = MetadataService.typeName;
const HEALTH_WATCH = "/grpc.health.v1.Health/Watch";

/** Time the connections get to close by themselves once no call is active at shutdown. */
const SETTLE_MS = 250;

/** Counts calls from their start to their status or cancellation. */
class ActiveCalls {
  private count = 0;
  private waiters: (() => void)[] = [];

  get active(): number {
    return this.count;
  }

  /** Counts one call; the returned function ends it (only its first use counts). */
  begin(): () => void {
    this.count++;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.count--;
      if (this.count === 0) for (const wake of this.waiters.splice(0)) wake();
    };
  }

  /** Resolves once no call is active. */
  idle(): Promise<void> {
    return this.count === 0 ? Promise.resolve() : new Promise((resolve) => this.waiters.push(resolve));
  }
}

/** A running gRPC server; see the module comment. */
export class RpcServer {
  private constructor(
    private readonly server: grpc.Server,
    private readonly health: HealthImplementation,
    private readonly engine: Engine,
    private readonly calls: ActiveCalls,
    private readonly writeStreams: Set<WriteStreamHandle>,
    /** The port bound. */
    readonly port: number,
    private readonly refusal: () => string | undefined,
  ) {}

  /** Builds the server and binds it to `address` ("host:port"; port 0 picks a free one). */
  static async start(
    address: string,
    engine: Engine,
    registry: Registry,
    options: RpcServerOptions,
  ): Promise<RpcServer> {
    const calls = new ActiveCalls();
    const writeStreams = new Set<WriteStreamHandle>();
    const observe = callObserver(registry, calls);
    const unaryPaths = new Set(
      MetadataService.methods
        .filter((method) => method.methodKind === "unary")
        .map((method) => `/${MetadataService.typeName}/${method.name}`),
    );
    const server = new grpc.Server({
      "grpc.max_concurrent_streams": options.maxConcurrentStreams,
      "grpc.max_receive_message_length": options.maxMessageBytes,
      "grpc.max_send_message_length": options.maxMessageBytes,
      interceptors: [
        ...(options.refusal === undefined ? [] : [refusalInterceptor(options.refusal)]),
        metricsInterceptor(observe, unaryPaths),
      ],
    });
    const service = createMetadataService(engine, {
      writeStream: {
        maxInFlight: options.writeStreamMaxInFlight,
        maxInFlightBytes: options.writeStreamMaxInFlightBytes,
        open: writeStreams,
      },
      streams: streamLimits(registry, options.maxStreams, options.streamBufferBytes),
      ...(options.access === undefined ? {} : { access: options.access }),
      watch: createWatchMetrics(registry),
    });
    addService(server, MetadataService, service, {
      observeUnary: (path) => observe(path, "unary"),
      rejectMalformed: (reason) => invalidArgument(`malformed request: ${reason}`),
    });
    const refusal = options.refusal ?? (() => undefined);
    const initial = refusal() === undefined ? "SERVING" : "NOT_SERVING";
    const health = new HealthImplementation({ "": initial, [SERVICE_NAME]: initial });
    health.addToServer(server);
    if (options.reflection ?? true) createReflectionService().addToServer(server);
    const credentials = options.credentials ?? grpc.ServerCredentials.createInsecure();
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync(address, credentials, (err, bound) => (err ? reject(err) : resolve(bound))),
    );
    connectionMetrics(registry, server, options.maxConnections);
    return new RpcServer(server, health, engine, calls, writeStreams, port, refusal);
  }

  /**
   * Sets whether the server is healthy for a reason other than shutdown and `refusal` (the data
   * directory cannot be written): health is SERVING only while all three allow it. Calls are not
   * refused for it (reads still work).
   */
  setHealthy(healthy: boolean): void {
    this.healthy = healthy;
    this.updateHealth();
  }

  private healthy = true;

  /** True until shutdown starts, while MetadataService calls are not refused (`refusal`). */
  get serving(): boolean {
    return this.health !== undefined && !this.stopping && this.refusal() === undefined;
  }

  /** Sets health to SERVING or NOT_SERVING after `refusal` changed its answer. */
  updateHealth(): void {
    const status = this.serving && this.healthy ? "SERVING" : "NOT_SERVING";
    this.health.setStatus("", status);
    this.health.setStatus(SERVICE_NAME, status);
  }

  private stopping = false;

  /** Stops serving and commits everything pending; see the module comment. */
  async shutdown(graceMs = 10_000): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.health.setStatus("", "NOT_SERVING");
    this.health.setStatus(SERVICE_NAME, "NOT_SERVING");
    // In-flight calls must not wait out a gathering delay or a flush interval.
    await this.engine.partitions.expedite();
    // Write streams stop reading and end once their pending requests are answered.
    for (const stream of [...this.writeStreams]) stream.shutdown();
    await new Promise<void>((resolve) => {
      let finished = false;
      let settle: NodeJS.Timeout | undefined;
      const finish = (force: boolean) => {
        if (finished) return;
        finished = true;
        clearTimeout(grace);
        clearTimeout(settle);
        if (force) this.server.forceShutdown();
        resolve();
      };
      const grace = setTimeout(() => finish(true), graceMs);
      this.server.tryShutdown(() => finish(false));
      const whenIdle = (): void => {
        void this.calls.idle().then(() => {
          if (finished) return;
          settle = setTimeout(() => (this.calls.active === 0 ? finish(true) : whenIdle()), SETTLE_MS);
        });
      };
      whenIdle();
    });
    await this.engine.partitions.close();
  }
}

/** Applies --max-connections and reports it as `metadata_connections_open` and `_refused_total`. */
function connectionMetrics(registry: Registry, server: grpc.Server, max: number): void {
  const counts = limitConnections(server, max);
  if (counts === undefined) {
    console.error(
      "warning: --max-connections is not applied: this grpc-js does not expose its HTTP/2 servers",
    );
    return;
  }
  registry.removeSingleMetric("metadata_connections_open");
  new Gauge({
    name: "metadata_connections_open",
    help: "HTTP/2 connections open on the gRPC port; at most --max-connections.",
    registers: [registry],
    collect() {
      this.set(counts.open);
    },
  });
  registry.removeSingleMetric("metadata_connections_refused_total");
  new Counter({
    name: "metadata_connections_refused_total",
    help: "HTTP/2 connections closed at once because --max-connections were open.",
    registers: [registry],
    collect() {
      this.reset();
      this.inc(counts.refused);
    },
  });
}

/** Stream limits reported as `metadata_streams_open` and `metadata_stream_buffered_bytes`. */
function streamLimits(registry: Registry, maxStreams: number, maxBufferedBytes: number): StreamLimits {
  const limits = new StreamLimits(maxStreams, maxBufferedBytes);
  for (const [name, help, read] of [
    [
      "metadata_streams_open",
      "Streaming calls (Keys, Write) open now; at most --max-streams.",
      () => limits.open,
    ],
    ["metadata_streams_max", "Most streaming calls open at once (--max-streams).", () => maxStreams],
    [
      "metadata_stream_buffered_bytes",
      "Bytes of streamed responses handed to the transport and not yet taken; at most --stream-buffer-bytes.",
      () => limits.buffered,
    ],
  ] as const) {
    registry.removeSingleMetric(name);
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(read());
      },
    });
  }
  return limits;
}

/** The kind of a call, as the gRPC ecosystem's Prometheus interceptors label it (`grpc_type`). */
export type GrpcType = "unary" | "client_stream" | "server_stream" | "bidi_stream";

/** Starts observing one call of `path`; the returned function ends it with its status code. */
type ObserveCall = (path: string, type: GrpcType) => (code: grpc.status) => void;

/**
 * Status code names as grpc-go spells them (`codes.Code.String()`), which is what
 * go-grpc-prometheus writes into `grpc_code` and what stock gRPC dashboards filter on.
 */
const GO_CODE_NAMES: readonly string[] = [
  "OK",
  "Canceled",
  "Unknown",
  "InvalidArgument",
  "DeadlineExceeded",
  "NotFound",
  "AlreadyExists",
  "PermissionDenied",
  "ResourceExhausted",
  "FailedPrecondition",
  "Aborted",
  "OutOfRange",
  "Unimplemented",
  "Internal",
  "Unavailable",
  "DataLoss",
  "Unauthenticated",
];

/** Buckets of `grpc_server_handling_seconds`: Prometheus' DefBuckets, as go-grpc-prometheus uses. */
const GRPC_HANDLING_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Returns the metric `name` already in `registry` (a second server on it), or makes it. */
function reuse<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/** The metric children of one method path, bound once; per-code children bound on first use. */
interface PathMetrics {
  started: { inc(): void };
  handling: { observe(seconds: number): void };
  /** By status code: `grpc_server_handled_total` and `metadata_rpc_duration_seconds` children. */
  byCode: ({ handled: { inc(): void }; duration: { observe(seconds: number): void } } | undefined)[];
  service: string;
  method: string;
  type: GrpcType;
}

/**
 * Observes every call twice: into our `metadata_rpc_duration_seconds{service,method,code}`, and
 * into the standard gRPC server metrics as go-grpc-prometheus (grpc-ecosystem) names them:
 * `grpc_server_started_total` and `grpc_server_handling_seconds` by `grpc_type`, `grpc_service`
 * and `grpc_method`, and `grpc_server_handled_total` by those and `grpc_code`. Counts the calls
 * active in `calls`.
 *
 * The label children of a path are bound on its first call and those of a (path, code) on its
 * first end, so a call costs a map lookup and a clock read at each end, and no label objects.
 * Only registered methods reach it (grpc-js answers an unknown path UNIMPLEMENTED before any
 * interceptor runs), so the label sets, and the map of paths, stay bounded.
 */
function callObserver(registry: Registry, calls: ActiveCalls): ObserveCall {
  const duration = reuse(
    registry,
    "metadata_rpc_duration_seconds",
    () =>
      new Histogram<"service" | "method" | "code">({
        name: "metadata_rpc_duration_seconds",
        help: "gRPC call duration by service, method and status code.",
        labelNames: ["service", "method", "code"],
        buckets: [
          0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
        ],
        registers: [registry],
      }),
  );
  const started = reuse(
    registry,
    "grpc_server_started_total",
    () =>
      new Counter<"grpc_type" | "grpc_service" | "grpc_method">({
        name: "grpc_server_started_total",
        help: "Total number of RPCs started on the server.",
        labelNames: ["grpc_type", "grpc_service", "grpc_method"],
        registers: [registry],
      }),
  );
  const handled = reuse(
    registry,
    "grpc_server_handled_total",
    () =>
      new Counter<"grpc_type" | "grpc_service" | "grpc_method" | "grpc_code">({
        name: "grpc_server_handled_total",
        help: "Total number of RPCs completed on the server, regardless of success or failure.",
        labelNames: ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        registers: [registry],
      }),
  );
  const handling = reuse(
    registry,
    "grpc_server_handling_seconds",
    () =>
      new Histogram<"grpc_type" | "grpc_service" | "grpc_method">({
        name: "grpc_server_handling_seconds",
        help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
        labelNames: ["grpc_type", "grpc_service", "grpc_method"],
        buckets: GRPC_HANDLING_BUCKETS,
        registers: [registry],
      }),
  );
  const paths = new Map<string, PathMetrics>();
  const bind = (path: string, type: GrpcType): PathMetrics => {
    const slash = path.lastIndexOf("/");
    const service = path.slice(1, slash);
    const method = path.slice(slash + 1);
    const metrics: PathMetrics = {
      started: started.labels(type, service, method),
      handling: handling.labels(type, service, method),
      byCode: [],
      service,
      method,
      type,
    };
    paths.set(path, metrics);
    return metrics;
  };
  const byCode = (metrics: PathMetrics, code: grpc.status) => {
    const bound = {
      handled: handled.labels(
        metrics.type,
        metrics.service,
        metrics.method,
        GO_CODE_NAMES[code] ?? String(code),
      ),
      duration: duration.labels(metrics.service, metrics.method, grpc.status[code] ?? String(code)),
    };
    metrics.byCode[code] = bound;
    return bound;
  };
  return (path, type) => {
    const metrics = paths.get(path) ?? bind(path, type);
    metrics.started.inc();
    const startedAt = process.hrtime.bigint();
    // A health watch lasts as long as its client: shutdown must not wait for it to end.
    const end = path === HEALTH_WATCH ? () => undefined : calls.begin();
    let ended = false;
    return (code) => {
      if (ended) return;
      ended = true;
      const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9;
      const bound = metrics.byCode[code] ?? byCode(metrics, code);
      bound.handled.inc();
      bound.duration.observe(seconds);
      metrics.handling.observe(seconds);
      end();
    };
  };
}

/**
 * Server interceptor answering MetadataService calls UNAVAILABLE with `refusal()`'s message, when
 * it has one, as soon as their metadata arrives: no handler runs, nothing is read or changed.
 */
function refusalInterceptor(refusal: () => string | undefined): grpc.ServerInterceptor {
  const prefix = `/${SERVICE_NAME}/`;
  return (descriptor, call) => {
    if (!descriptor.path.startsWith(prefix)) return call as grpc.ServerInterceptingCall;
    return new grpc.ServerInterceptingCall(call, {
      start: (next) => {
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            const reason = refusal();
            if (reason === undefined) nextMetadata(metadata);
            else
              call.sendStatus({
                code: grpc.status.UNAVAILABLE,
                details: reason,
                metadata: new grpc.Metadata(),
              });
          },
        });
      },
    });
  };
}

/**
 * Server interceptor observing the calls `addService` does not observe itself: streaming calls
 * and the other services (health, reflection). Unary MetadataService calls pass straight through
 * (their handlers are observed by addService), sparing each of them a layer of interception.
 */
function metricsInterceptor(observe: ObserveCall, unobserved: ReadonlySet<string>): grpc.ServerInterceptor {
  return (descriptor, call) => {
    // grpc-js chains interceptors through the call interface; handing back the call it gave is a pass-through.
    if (unobserved.has(descriptor.path)) return call as grpc.ServerInterceptingCall;
    let end: ((code: grpc.status) => void) | undefined;
    return new grpc.ServerInterceptingCall(
      call,
      new grpc.ResponderBuilder()
        .withStart((next) => {
          end = observe(descriptor.path, grpcType(descriptor));
          next({ onCancel: () => end?.(grpc.status.CANCELLED) });
        })
        .withSendStatus((status, next) => {
          end?.(status.code);
          next(status);
        })
        .build(),
    );
  };
}

/** The `grpc_type` of a method from its streaming sides. */
function grpcType(method: { requestStream: boolean; responseStream: boolean }): GrpcType {
  if (method.requestStream) return method.responseStream ? "bidi_stream" : "client_stream";
  return method.responseStream ? "server_stream" : "unary";
}
