/**
 * RpcServer: the grpc-js server with MetadataService, grpc.health.v1 health, server reflection
 * and a metrics interceptor (`metadata_rpc_duration_seconds{method,code}`).
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
import { Gauge, Histogram, type Registry } from "prom-client";
import { MetadataService } from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import type { AccessControl } from "../auth/access-control.js";
import type { Engine } from "../engine/operations.js";
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
      observeUnary: observe,
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

/** Stream limits reported as `metadata_streams_open` and `metadata_stream_buffered_bytes`. */
function streamLimits(registry: Registry, maxStreams: number, maxBufferedBytes: number): StreamLimits {
  const limits = new StreamLimits(maxStreams, maxBufferedBytes);
  for (const [name, help, read] of [
    [
      "metadata_streams_open",
      "Streaming calls (Keys, Write) open now; at most --max-streams.",
      () => limits.open,
    ],
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

/** Starts observing one call of `path`; the returned function ends it with its status code. */
type ObserveCall = (path: string) => (code: grpc.status) => void;

/**
 * Observes every call's duration by method and status code into
 * `metadata_rpc_duration_seconds`, and counts the calls active in `calls`.
 */
function callObserver(registry: Registry, calls: ActiveCalls): ObserveCall {
  const name = "metadata_rpc_duration_seconds";
  const histogram =
    (registry.getSingleMetric(name) as Histogram<"method" | "code"> | undefined) ??
    new Histogram({
      name,
      help: "gRPC call duration by method and status code.",
      labelNames: ["method", "code"],
      buckets: [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
      ],
      registers: [registry],
    });
  return (path) => {
    const method = path.slice(path.lastIndexOf("/") + 1);
    const started = process.hrtime.bigint();
    // A health watch lasts as long as its client: shutdown must not wait for it to end.
    const end = path === HEALTH_WATCH ? () => undefined : calls.begin();
    let ended = false;
    return (code) => {
      if (ended) return;
      ended = true;
      histogram.observe(
        { method, code: grpc.status[code] ?? String(code) },
        Number(process.hrtime.bigint() - started) / 1e9,
      );
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
          end = observe(descriptor.path);
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
