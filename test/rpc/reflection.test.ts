/**
 * Server reflection as a client sees it (grpc.reflection.v1, the protocol grpcurl and buf curl
 * speak): the file defining MetadataService comes back with its source comments, so
 * `grpcurl describe` shows what Put does, and the health service stays resolvable.
 */
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { startTestServer, type TestServer } from "../support/in-process-server.js";

const REFLECTION = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
let server: TestServer;

before(async () => {
  server = await startTestServer();
});
after(async () => {
  await server?.stop();
});

/**
 * Asks for the files defining `symbol` (ServerReflectionRequest.file_containing_symbol, field 4)
 * and decodes the FileDescriptorResponse (field 4) of the answer.
 */
async function filesContaining(symbol: string): Promise<FileDescriptorProto[]> {
  const client = new grpc.Client(server.address, grpc.credentials.createInsecure());
  try {
    const answer = await new Promise<Buffer>((resolve, reject) => {
      const call = client.makeBidiStreamRequest(
        REFLECTION,
        (request: Uint8Array) => Buffer.from(request),
        (bytes: Buffer) => bytes,
        new grpc.Metadata(),
        { deadline: Date.now() + 10_000 },
      );
      call.once("data", (bytes: Buffer) => {
        resolve(bytes);
        call.end();
      });
      call.once("error", reject);
      call.write(new BinaryWriter().tag(4, 2).string(symbol).finish());
    });
    const files: FileDescriptorProto[] = [];
    const reader = new BinaryReader(answer);
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === 7) assert.fail(`reflection error for ${symbol}`);
      if (field !== 4) {
        reader.skip(wireType);
        continue;
      }
      const response = new BinaryReader(reader.bytes());
      while (response.pos < response.len) {
        const [inner, innerType] = response.tag();
        if (inner === 1) files.push(fromBinary(FileDescriptorProtoSchema, response.bytes()));
        else response.skip(innerType);
      }
    }
    return files;
  } finally {
    client.close();
  }
}

test("reflection returns MetadataService with the proto comment of Put", async () => {
  const files = await filesContaining("commonware.metadata.v1.MetadataService");
  const file = files.find((f) => f.name === "commonware/metadata/v1/metadata.proto");
  assert.ok(file, `files: ${files.map((f) => f.name).join(", ")}`);
  const serviceIndex = file.service.findIndex((s) => s.name === "MetadataService");
  const methodIndex = file.service[serviceIndex]?.method.findIndex((m) => m.name === "Put") ?? -1;
  assert.ok(methodIndex >= 0);
  // SourceCodeInfo path of a method: service (6), its index, method (2), its index.
  const location = file.sourceCodeInfo?.location.find(
    (l) => l.path.join(".") === `6.${serviceIndex}.2.${methodIndex}`,
  );
  assert.match(location?.leadingComments ?? "", /Put stores value under key and returns the previous value/);
  // The service paragraph comes back too.
  const service = file.sourceCodeInfo?.location.find((l) => l.path.join(".") === `6.${serviceIndex}`);
  assert.ok((service?.leadingComments ?? "").length > 100);
});

test("reflection resolves the health service with its comments and imports", async () => {
  const files = await filesContaining("grpc.health.v1.Health");
  const health = files.find((f) => f.name === "grpc/health/v1/health.proto");
  assert.ok(health);
  assert.ok((health.sourceCodeInfo?.location.length ?? 0) > 0);
});
