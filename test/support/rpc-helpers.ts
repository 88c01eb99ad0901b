/**
 * Helpers shared by the RPC tests: servers on a shared data directory (for restarts), metric
 * reads from the /metrics text, waiting for a condition, telling a pending call from a settled
 * one, and the server's own call counters (grpc-js channelz) for a bound port.
 */
import * as grpc from "@grpc/grpc-js";
import { MetadataClient } from "../../clients/ts/metadata-client.js";
import { parseConfig } from "../../server/config.js";
import { type RunningService, startService } from "../../server/service.js";
import type { Storage } from "../../server/store/storage/storage.js";

/** A server on a data directory the caller owns: `stop()` leaves the directory in place. */
export interface DirServer {
  address: string;
  service: RunningService;
  client: MetadataClient;
  /** Text of /metrics, fetched over HTTP. */
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts a server on `dataDir` with `flags`, on free loopback ports (gRPC and /metrics), through
 * parseConfig and startService as main.ts does. `storage` replaces the
 * filesystem (tests restart on one MemoryStorage).
 */
export async function startDirServer(
  dataDir: string,
  flags: string[] = [],
  storage?: Storage,
): Promise<DirServer> {
  const config = parseConfig(
    ["--data-dir", dataDir, "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0", ...flags],
    {},
  );
  const service = await startService(config, storage);
  const address = `127.0.0.1:${service.port}`;
  const client = new MetadataClient(address);
  let stopping: Promise<void> | undefined;
  return {
    address,
    service,
    client,
    metrics: async () => (await fetch(`http://127.0.0.1:${service.metricsPort}/metrics`)).text(),
    stop: () => {
      stopping ??= (async () => {
        client.close();
        await service.stop();
      })();
      return stopping;
    },
  };
}

/**
 * Value of the sample `name{labels}` in a Prometheus text exposition (`labels` as written
 * between the braces, e.g. `partition="default"`); throws when absent, so a missing metric fails
 * the test instead of reading as 0.
 */
export function metricValue(text: string, name: string, labels?: string): number {
  const prefix = labels === undefined ? `${name} ` : `${name}{${labels}} `;
  for (const row of text.split("\n")) {
    if (row.startsWith(prefix)) return Number(row.slice(prefix.length));
  }
  throw new Error(`metric ${prefix.trim()} not found in:\n${text}`);
}

/**
 * Resolves once `condition()` holds, checking it on every turn of the event loop; rejects after
 * `timeoutMs` naming `what`. For conditions no event announces (a request reaching the server).
 */
export async function waitUntil(
  condition: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** A promise together with whether it has settled yet. */
export interface Tracked<T> {
  promise: Promise<T>;
  settled(): boolean;
}

/** Wraps `promise` so a test can ask whether it settled, without leaving a rejection unhandled. */
export function track<T>(promise: Promise<T>): Tracked<T> {
  let done = false;
  const observed = promise.then(
    (value) => {
      done = true;
      return value;
    },
    (err: unknown) => {
      done = true;
      throw err;
    },
  );
  // The test awaits `promise` later; until then a rejection must not count as unhandled.
  observed.catch(() => undefined);
  return { promise: observed, settled: () => done };
}

/** Calls and messages the grpc-js server bound to `port` has seen (from its channelz entries). */
export interface ServerCallStats {
  callsStarted: number;
  callsSucceeded: number;
  callsFailed: number;
  /** Messages sent over every connection of the server. */
  messagesSent: number;
}

type Handler = (
  call: { request: Record<string, unknown> },
  callback: (err: unknown, value: unknown) => void,
) => void;

function channelz(
  name: "GetServers" | "GetServerSockets" | "GetSocket",
  request: Record<string, unknown>,
): unknown {
  const handler = (grpc.getChannelzHandlers() as unknown as Record<string, Handler>)[name] as Handler;
  let out: unknown;
  handler({ request }, (err, value) => {
    if (err) throw new Error(`channelz ${name}: ${JSON.stringify(err)}`);
    out = value;
  });
  return out;
}

interface ChannelzServer {
  ref: { server_id: number };
  data: { calls_started: number; calls_succeeded: number; calls_failed: number };
  listen_socket: { name: string }[];
}

/** See `ServerCallStats`. @throws when no server of this process listens on `port` */
export function serverCallStats(port: number): ServerCallStats {
  const { server: servers } = channelz("GetServers", { start_server_id: "0", max_results: "1000" }) as {
    server: ChannelzServer[];
  };
  const server = servers.find((s) => s.listen_socket.some((l) => l.name.endsWith(`:${port}`)));
  if (server === undefined) throw new Error(`no grpc-js server listens on port ${port}`);
  const { socket_ref: sockets } = channelz("GetServerSockets", {
    server_id: String(server.ref.server_id),
    start_socket_id: "0",
    max_results: "1000",
  }) as { socket_ref: { socket_id: number }[] };
  let messagesSent = 0;
  for (const ref of sockets) {
    const { socket } = channelz("GetSocket", { socket_id: String(ref.socket_id) }) as {
      socket: { data: { messages_sent: number } };
    };
    messagesSent += socket.data.messages_sent;
  }
  return {
    callsStarted: server.data.calls_started,
    callsSucceeded: server.data.calls_succeeded,
    callsFailed: server.data.calls_failed,
    messagesSent,
  };
}
