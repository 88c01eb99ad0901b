/**
 * Translate: protobuf messages of MetadataService <-> engine inputs and results. The one place
 * that knows both shapes; unary handlers and the Write stream share it, so a request means the
 * same thing however it arrives.
 *
 * Invariants:
 * - Translation checks only the message's shape (a oneof that must be set); every meaning
 *   (partition name, key width, sizes, limits) is validated by the engine.
 * - Bytes are passed through as views of the request; the engine copies what it keeps.
 */
import { create } from "@bufbuild/protobuf";
import {
  type CommitRequest,
  type CommitResponse,
  CommitResponseSchema,
  Durability,
  type KeyFilter,
  type PutRequest,
  type PutResponse,
  PutResponseSchema,
  type RemoveRequest,
  type RemoveResponse,
  RemoveResponseSchema,
} from "../../clients/ts/gen/commonware/metadata/v1/metadata_pb.js";
import { EngineError } from "../engine/errors.js";
import type {
  BatchMutation,
  ChangeResult,
  CommitInput,
  Condition,
  PutInput,
  RemoveInput,
  VersionResult,
} from "../engine/operations.js";
import type { KeyRange } from "../store/metadata.js";

/** DURABILITY_UNSPECIFIED and DURABILITY_DURABLE are durable; DURABILITY_BUFFERED is not. */
export function isDurable(durability: Durability): boolean {
  return durability !== Durability.BUFFERED;
}

/** A KeyRange with only the parts of `filter` that are set. */
export function rangeOf(
  filter: KeyFilter | { prefix: Uint8Array; start: Uint8Array; end: Uint8Array } | undefined,
): KeyRange {
  if (filter === undefined) return {};
  return {
    ...(filter.prefix.length > 0 ? { prefix: filter.prefix } : {}),
    ...(filter.start.length > 0 ? { start: filter.start } : {}),
    ...(filter.end.length > 0 ? { end: filter.end } : {}),
  };
}

export function putInput(request: PutRequest): PutInput {
  return {
    partition: request.partition,
    key: request.key,
    value: request.value,
    durable: isDurable(request.durability),
  };
}

export function removeInput(request: RemoveRequest): RemoveInput {
  return { partition: request.partition, key: request.key, durable: isDurable(request.durability) };
}

/** @throws EngineError InvalidRequest for a mutation or precondition with nothing set */
export function commitInput(request: CommitRequest): CommitInput {
  const mutations = request.mutations.map((mutation, index): BatchMutation => {
    const kind = mutation.kind;
    if (kind.case === "put") return { key: kind.value.key, value: kind.value.value };
    if (kind.case === "remove") return { key: kind.value.key, value: undefined };
    throw new EngineError("InvalidRequest", `mutation ${index} has neither put nor remove`);
  });
  const preconditions = request.preconditions.map((condition, index): Condition => {
    switch (condition.condition.case) {
      case "absent":
        return { key: condition.key, require: "absent" };
      case "present":
        return { key: condition.key, require: "present" };
      case "valueEquals":
        return { key: condition.key, require: "equals", value: condition.condition.value };
      default:
        throw new EngineError("InvalidRequest", `precondition ${index} has no condition`);
    }
  });
  return {
    partition: request.partition,
    mutations,
    preconditions,
    durable: isDurable(request.durability),
  };
}

export function putResponse(result: ChangeResult): PutResponse {
  return create(PutResponseSchema, {
    ...(result.previous === undefined ? {} : { previous: result.previous }),
    version: result.version,
  });
}

export function removeResponse(result: ChangeResult): RemoveResponse {
  return create(RemoveResponseSchema, {
    ...(result.previous === undefined ? {} : { previous: result.previous }),
    version: result.version,
  });
}

export function commitResponse(result: VersionResult): CommitResponse {
  return create(CommitResponseSchema, { version: result.version });
}
