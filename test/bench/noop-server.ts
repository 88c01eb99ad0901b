/**
 * No-op MetadataService (`node --import tsx test/bench/noop-server.ts`): a bare grpc-js server
 * whose Put answers at once with an empty PutResponse, touching no store. It is the ceiling of what
 * grpc-js reaches on this machine with the load generator of test/bench/loadgen, so that
 * `npm run bench:rpc` can say how much of our Put's cost is the store and how much is gRPC itself.
 *
 * Behaviour:
 * - Listens on 127.0.0.1 (port 0 by default, `--port N` to choose) with grpc-js default options,
 *   and prints `noop-server: listening on 127.0.0.1:<port>` on stdout once it accepts calls.
 * - Put decodes the request (through the same adapter and generated schemas as the real server,
 *   server/rpc/service-definition.ts and clients/ts/gen) and replies with one shared empty
 *   response. Write answers each request at once with its id, status OK and an empty Put
 *   answer (the ceiling of the Write stream). Every other RPC answers UNIMPLEMENTED.
 * - Exits on SIGTERM or SIGINT, and with `--exit-with-stdin` when its stdin closes (so it never
 *   outlives a parent that died without killing it). Shutdown waits at most 2 s for calls in
 *   flight, then forces.
 */
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  MetadataService,
  PutResponseSchema,
  type WriteRequest,
  WriteResponseSchema,
} from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { StatusSchema } from "../../clients/ts/gen/google/rpc/status_pb.js";
import { addService } from "../../server/rpc/service-definition.js";
import { parsePort, stopOnSignals } from "./fixture-process.js";

const EMPTY_PUT = create(PutResponseSchema, {});
const OK = create(StatusSchema, { code: grpc.status.OK });

function unimplemented(name: string): grpc.ServiceError {
  const error = new Error(`noop-server implements only Put, not ${name}`) as grpc.ServiceError;
  error.code = grpc.status.UNIMPLEMENTED;
  error.details = error.message;
  error.metadata = new grpc.Metadata();
  return error;
}

/** Builds the server with the no-op MetadataService registered (not yet bound). */
export function createNoopServer(): grpc.Server {
  const server = new grpc.Server();
  const refuse = (name: string) => (_call: unknown, callback: grpc.sendUnaryData<never>) =>
    callback(unimplemented(name));
  addService(server, MetadataService, {
    put(_call, callback) {
      callback(null, EMPTY_PUT);
    },
    get: refuse("Get"),
    remove: refuse("Remove"),
    retain: refuse("Retain"),
    keys(call) {
      call.emit("error", unimplemented("Keys"));
    },
    watch(call) {
      call.emit("error", unimplemented("Watch"));
    },
    sync: refuse("Sync"),
    clear: refuse("Clear"),
    commit: refuse("Commit"),
    listPartitions: refuse("ListPartitions"),
    write(call) {
      call.on("data", (request: WriteRequest) => {
        call.write(
          create(WriteResponseSchema, {
            id: request.id,
            status: OK,
            response: { case: "put", value: EMPTY_PUT },
          }),
        );
      });
      call.on("end", () => call.end());
    },
  });
  return server;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const server = createNoopServer();
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${parsePort(argv)}`, grpc.ServerCredentials.createInsecure(), (err, bound) =>
      err ? reject(err) : resolve(bound),
    );
  });
  process.stdout.write(`noop-server: listening on 127.0.0.1:${port}\n`);

  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    const force = setTimeout(() => {
      server.forceShutdown();
      process.exit(0);
    }, 2000);
    server.tryShutdown(() => {
      clearTimeout(force);
      process.exit(0);
    });
  };
  stopOnSignals(argv, stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`noop-server: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
