/**
 * grpc.health.v1 Check over a plain grpc-js client, for tests that assert what a server reports.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import {
  HealthCheckRequestSchema,
  HealthCheckResponse_ServingStatus,
  HealthCheckResponseSchema,
} from "../../clients/ts/gen/grpc/health/v1/health_pb.js";

/** The serving status `address` reports for `service` ("" for the server as a whole), by name. */
export async function healthStatus(address: string, service = ""): Promise<string> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  try {
    const response = await new Promise<Buffer>((resolve, reject) =>
      client.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        (request: Uint8Array) => Buffer.from(request),
        (bytes: Buffer) => bytes,
        toBinary(HealthCheckRequestSchema, create(HealthCheckRequestSchema, { service })),
        new grpc.Metadata(),
        { deadline: Date.now() + 5_000 },
        (err, value) => (err || value === undefined ? reject(err) : resolve(value)),
      ),
    );
    const status = fromBinary(HealthCheckResponseSchema, response).status;
    return HealthCheckResponse_ServingStatus[status] ?? String(status);
  } finally {
    client.close();
  }
}
