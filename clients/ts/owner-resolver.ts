/**
 * ownerTarget: a grpc-js channel target that reaches whichever of several servers owns an etcd
 * prefix (--storage etcd), by their grpc.health.v1 status.
 *
 * gRPC's health-checked load balancing (`healthCheckConfig` in the service config) does this in
 * Go and Python; grpc-js does not implement it, so this module plugs the same rule into grpc-js's
 * name resolution: a resolver for the `metadata-owner:` scheme watches `Health.Watch` of
 * MetadataService on every address and hands the channel only the addresses that report
 * SERVING (the owner; during a handover possibly two). The channel then connects to the owner
 * alone, and moves to the new one when health says so.
 *
 * Invariants:
 * - While no address reports SERVING (an owner died and its lease has not expired yet) the
 *   resolver reports UNAVAILABLE: calls fail fast, or wait with `waitForReady`; the retry policy
 *   of `OWNER_SERVICE_CONFIG` rides over short gaps.
 * - A watch that ends or fails counts as not serving and is restarted after 100 ms to 2 s.
 *
 * Usage:
 *   const client = new MetadataClient(ownerTarget(["10.0.0.1:50051", "10.0.0.2:50051"]), {
 *     channelOptions: { "grpc.service_config": JSON.stringify(OWNER_SERVICE_CONFIG) },
 *   });
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { MetadataService } from "./gen/commonware/metadata/v1/metadata_pb.js";
import {
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "./gen/grpc/health/v1/health_pb.js";

const SCHEME = "metadata-owner";

/**
 * Service config for a channel on `ownerTarget`: retry UNAVAILABLE (a standby's refusal, a sync
 * that did not commit, no owner for a moment) up to 5 attempts with backoff to 1 s. Go and Python
 * clients use the same with `healthCheckConfig` and round_robin over the plain addresses.
 */
export const OWNER_SERVICE_CONFIG = {
  loadBalancingConfig: [{ pick_first: {} }],
  methodConfig: [
    {
      name: [{ service: MetadataService.typeName }],
      retryPolicy: {
        maxAttempts: 5,
        initialBackoff: "0.1s",
        maxBackoff: "1s",
        backoffMultiplier: 2,
        retryableStatusCodes: ["UNAVAILABLE"],
      },
    },
  ],
};

const credentialsByTarget = new Map<string, grpc.ChannelCredentials>();

/**
 * The channel target reaching the owner among `addresses` (host:port each, IP literals or names).
 * `credentials` (insecure by default) are the ones the health watches use: pass the channel's.
 */
export function ownerTarget(addresses: readonly string[], credentials?: grpc.ChannelCredentials): string {
  if (addresses.length === 0) throw new Error("ownerTarget needs at least one address");
  registerOnce();
  const target = `${SCHEME}:///${addresses.join(",")}`;
  if (credentials !== undefined) credentialsByTarget.set(target, credentials);
  return target;
}

let registered = false;
function registerOnce(): void {
  if (registered) return;
  registered = true;
  grpc.experimental.registerResolver(SCHEME, OwnerResolver);
}

function parseAddress(text: string): { host: string; port: number } {
  const match = /^\[?(.*?)\]?:(\d+)$/.exec(text);
  if (match === null) throw new Error(`not host:port: ${text}`);
  return { host: match[1] as string, port: Number(match[2]) };
}

/** Health of one address, kept current by a Watch stream. */
class Watch {
  serving = false;
  private client: grpc.Client;
  private call: grpc.ClientReadableStream<Buffer> | undefined;
  private retry: NodeJS.Timeout | undefined;
  private backoffMs = 100;
  private stopped = false;

  constructor(
    readonly address: string,
    credentials: grpc.ChannelCredentials,
    private readonly changed: () => void,
  ) {
    this.client = new grpc.Client(address, credentials);
    this.start();
  }

  private start(): void {
    if (this.stopped) return;
    const request = toBinary(
      HealthCheckRequestSchema,
      create(HealthCheckRequestSchema, { service: MetadataService.typeName }),
    );
    const call = this.client.makeServerStreamRequest(
      "/grpc.health.v1.Health/Watch",
      (bytes: Uint8Array) => Buffer.from(bytes),
      (bytes: Buffer) => bytes,
      request,
    );
    this.call = call;
    call.on("data", (bytes: Buffer) => {
      this.backoffMs = 100;
      const status = fromBinary(HealthCheckResponseSchema, bytes).status;
      this.set(status === HealthCheckResponse_ServingStatus.SERVING);
    });
    const restart = (): void => {
      if (this.call !== call) return;
      this.call = undefined;
      this.set(false);
      if (this.stopped) return;
      this.retry = setTimeout(() => this.start(), this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, 2_000);
    };
    call.on("error", restart);
    call.on("end", restart);
  }

  private set(serving: boolean): void {
    if (serving === this.serving) return;
    this.serving = serving;
    this.changed();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.retry);
    this.call?.cancel();
    this.client.close();
  }
}

class OwnerResolver implements grpc.experimental.Resolver {
  private readonly addresses: string[];
  private readonly credentials: grpc.ChannelCredentials;
  private watches: Watch[] = [];
  private lastReported: string | undefined;

  constructor(
    target: grpc.experimental.GrpcUri,
    private readonly listener: grpc.experimental.ResolverListener,
  ) {
    this.addresses = target.path.split(",").filter((a) => a !== "");
    const key = `${SCHEME}://${target.authority ?? ""}/${target.path}`;
    this.credentials = credentialsByTarget.get(key) ?? grpc.credentials.createInsecure();
  }

  static getDefaultAuthority(target: grpc.experimental.GrpcUri): string {
    return target.path.split(",")[0] ?? "";
  }

  updateResolution(): void {
    if (this.watches.length === 0) {
      this.watches = this.addresses.map(
        (address) => new Watch(address, this.credentials, () => this.report(false)),
      );
    }
    // Never synchronously from here (the Resolver contract).
    setImmediate(() => this.report(true));
  }

  destroy(): void {
    for (const watch of this.watches) watch.stop();
    this.watches = [];
    this.lastReported = undefined;
  }

  private report(force: boolean): void {
    if (this.watches.length === 0) return;
    const serving = this.watches.filter((w) => w.serving).map((w) => w.address);
    const summary = serving.join(",");
    if (!force && summary === this.lastReported) return;
    this.lastReported = summary;
    if (serving.length === 0) {
      this.listener(
        grpc.experimental.statusOrFromError({
          code: grpc.status.UNAVAILABLE,
          details: `no server of ${this.addresses.join(",")} reports SERVING (failing over?)`,
        }),
        {},
        null,
        "",
      );
      return;
    }
    const endpoints = serving.map((address) => ({ addresses: [parseAddress(address)] }));
    this.listener(grpc.experimental.statusOrFromValue(endpoints), {}, null, "");
  }
}
