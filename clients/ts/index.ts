/** The TypeScript client of MetadataService: the hand-written client and the generated schemas. */
export * from "./gen/commonware/metadata/v1/metadata_pb.js";
export * from "./metadata-client.js";
export * from "./metadata-writer.js";
export * from "./owner-resolver.js";
