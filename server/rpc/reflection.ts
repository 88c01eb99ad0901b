/**
 * Reflection: the gRPC server reflection service (grpc.reflection.v1 and v1alpha, from
 * @grpc/reflection), fed from the protobuf-es descriptors generated into clients/ts/gen, so that
 * `buf curl`, grpcurl and other reflection clients can list and call the services without a copy
 * of the .proto files.
 *
 * @grpc/reflection expects a @grpc/proto-loader PackageDefinition but reads only one thing from
 * it: the `fileDescriptorProtos` array (binary google.protobuf.FileDescriptorProto) of each entry.
 * This module builds a package definition that holds exactly that: for each file, the descriptor
 * `buf build` wrote with its source comments (clients/ts/gen/descriptor_set.ts, from
 * `npm run generate`), or the `proto` of the protobuf-es file descriptor for a file not in it.
 *
 * Invariants:
 * - Every file is encoded after all of its imports, each file once (by name), so that a
 *   reflection client always receives the files a symbol needs.
 * - Descriptors come from the generated code, never from proto-loader: proto-loader renames map
 *   entry messages (`Statuses` instead of `StatusesEntry`), and `buf curl` then fails to resolve
 *   grpc.health.v1.Health.
 * - Files of proto/ (MetadataService, health) are served with SourceCodeInfo, so `grpcurl describe`
 *   and `buf curl` show the proto comments; generated code carries none.
 * - Reflection lists every service found in the given files; it does not check that the server
 *   actually serves them, so pass only the files of services added to the server.
 *
 * Usage:
 *   createReflectionService().addToServer(server);   // MetadataService and grpc.health.v1.Health
 */
import type { DescFile } from "@bufbuild/protobuf";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  type FileDescriptorProto,
  FileDescriptorProtoSchema,
  FileDescriptorSetSchema,
} from "@bufbuild/protobuf/wkt";
import { ReflectionService } from "@grpc/reflection";
import { file_commonware_metadata_v1_metadata } from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { descriptorSetBase64 } from "../../clients/ts/gen/descriptor_set.js";
import { file_grpc_health_v1_health } from "../../clients/ts/gen/grpc/health/v1/health_pb.js";

/** What the ReflectionService constructor accepts (a @grpc/proto-loader PackageDefinition). */
export type ReflectionPackageDefinition = ConstructorParameters<typeof ReflectionService>[0];

/** The files served by default: this project's API and the standard health protocol. */
export const defaultReflectionFiles: readonly DescFile[] = [
  file_commonware_metadata_v1_metadata,
  file_grpc_health_v1_health,
];

/** The descriptors of proto/ with their source comments, by file name; decoded on first use. */
let commented: Map<string, FileDescriptorProto> | undefined;

function commentedDescriptors(): Map<string, FileDescriptorProto> {
  if (commented === undefined) {
    const set = fromBinary(FileDescriptorSetSchema, Buffer.from(descriptorSetBase64, "base64"));
    commented = new Map(set.file.map((file) => [file.name, file]));
  }
  return commented;
}

/**
 * Encodes `files` and, transitively, their imports (the well-known types included) as binary
 * FileDescriptorProtos, imports first, each file once.
 */
export function encodeFileDescriptors(files: readonly DescFile[]): Buffer[] {
  const seen = new Set<string>();
  const encoded: Buffer[] = [];
  const visit = (file: DescFile): void => {
    if (seen.has(file.name)) {
      return;
    }
    seen.add(file.name);
    for (const dependency of file.dependencies) {
      visit(dependency);
    }
    const proto = commentedDescriptors().get(file.proto.name) ?? file.proto;
    encoded.push(Buffer.from(toBinary(FileDescriptorProtoSchema, proto)));
  };
  for (const file of files) {
    visit(file);
  }
  return encoded;
}

/**
 * Builds the input of `new ReflectionService(...)` from protobuf-es file descriptors (for example
 * `MetadataService.file` and `Health.file`). The single entry is shaped like a proto-loader message
 * type definition so that it satisfies the PackageDefinition type; only `fileDescriptorProtos` is
 * read.
 */
export function createReflectionPackageDefinition(files: readonly DescFile[]): ReflectionPackageDefinition {
  return {
    "commonware.reflection.files": {
      format: "Protocol Buffer 3 DescriptorProto",
      type: {},
      fileDescriptorProtos: encodeFileDescriptors(files),
    },
  };
}

/**
 * Creates the reflection service for `files` (default: MetadataService and grpc.health.v1.Health).
 * Add it to a grpc-js server with `.addToServer(server)` before `bindAsync`; it registers both
 * grpc.reflection.v1.ServerReflection and grpc.reflection.v1alpha.ServerReflection.
 */
export function createReflectionService(
  files: readonly DescFile[] = defaultReflectionFiles,
): ReflectionService {
  return new ReflectionService(createReflectionPackageDefinition(files));
}
