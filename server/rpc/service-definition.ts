/**
 * Service definition: the bridge from a protobuf-es v2 service descriptor (`GenService`, as
 * generated into clients/ts/gen by protoc-gen-es) to a @grpc/grpc-js `ServiceDefinition`, plus the
 * handler types that make a grpc-js implementation of that service type-checked.
 *
 * protoc-gen-es v2 emits descriptors and message types only, no grpc-js stubs; this module is the
 * glue. It reads nothing but the descriptor, so every service generated into clients/ts/gen can be
 * served with it (MetadataService here; health and reflection bring their own definitions).
 *
 * Invariants:
 * - One grpc-js method per descriptor method, keyed by the method's `localName` (`get`,
 *   `listPartitions`), with `originalName` set to the proto name (`Get`) and the path
 *   `/<package>.<Service>/<Method>` (`/commonware.metadata.v1.MetadataService/Get`), which is the
 *   gRPC wire name every other client (Go, Python, buf curl) uses.
 * - Request and response streaming flags follow the descriptor's `methodKind`.
 * - The wire codec is the protobuf binary format through `toBinary`/`fromBinary` of the method's
 *   own input and output schemas. Unknown fields are kept when decoding. Serialized bytes are
 *   wrapped in a Buffer without copying. A response of a server-streaming method is serialized
 *   once however many streams send that same message object (Watch shares them); such messages
 *   must not be modified once written.
 * - A request whose bytes do not decode is never given to a handler: `addService` answers it with
 *   the status its `rejectMalformed` option makes (INVALID_ARGUMENT in this server), or else
 *   grpc-js's INTERNAL. Handlers still validate the meaning of decoded messages themselves.
 * - A method with no handler in the implementation answers UNIMPLEMENTED (grpc-js default), but
 *   `ServiceImpl` requires every method, so that only happens through a cast.
 *
 * Usage:
 *   const server = new grpc.Server();
 *   addService(server, MetadataService, {
 *     get(call, callback) {
 *       callback(null, create(GetResponseSchema, { version: 0n }));
 *     },
 *     // ...one handler per RPC, each typed from the descriptor
 *   });
 */
import type { DescMessage, DescMethod, Message, MessageShape } from "@bufbuild/protobuf";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { GenService, GenServiceMethods } from "@bufbuild/protobuf/codegenv2";
import {
  type handleBidiStreamingCall,
  type handleClientStreamingCall,
  type handleServerStreamingCall,
  type handleUnaryCall,
  type MethodDefinition,
  type Server,
  type ServiceDefinition,
  type StatusObject,
  status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";

/** The method table of a service: `T` itself, or `T["method"]` when `T` is a `GenService`. */
type MethodsOf<T> = T extends { readonly kind: "service"; readonly method: infer M } ? M : T;

/** The grpc-js handler type for one method shape `{ methodKind, input, output }`. */
type Handler<M> = M extends {
  readonly methodKind: infer Kind;
  readonly input: infer I extends DescMessage;
  readonly output: infer O extends DescMessage;
}
  ? Kind extends "unary"
    ? handleUnaryCall<MessageShape<I>, MessageShape<O>>
    : Kind extends "server_streaming"
      ? handleServerStreamingCall<MessageShape<I>, MessageShape<O>>
      : Kind extends "client_streaming"
        ? handleClientStreamingCall<MessageShape<I>, MessageShape<O>>
        : handleBidiStreamingCall<MessageShape<I>, MessageShape<O>>
  : never;

/**
 * A grpc-js implementation of a protobuf-es service: one handler per RPC, keyed by the generated
 * `localName`. `T` is either the service (`ServiceImpl<typeof MetadataService>`) or its method
 * table (the type argument of `GenService`).
 *
 * Requests arrive as the generated message type (`call.request` of `get` is a `GetRequest`), and
 * responses must be that exact message type, built with `create(GetResponseSchema, ...)`: the
 * `$typeName` brand makes a response of another RPC a type error.
 */
export type ServiceImpl<T extends GenServiceMethods | GenService<GenServiceMethods>> = {
  [K in keyof MethodsOf<T>]: Handler<MethodsOf<T>[K]>;
};

/** Wraps encoded bytes in a Buffer that shares their memory (grpc-js wants a Buffer). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Stands for a request whose bytes are not a valid message of the method's input type. */
export class MalformedRequest {
  constructor(
    /** What the protobuf decoder said. */
    readonly reason: string,
  ) {}
}

/** The grpc-js method definition of one descriptor method, with the binary protobuf codec. */
function methodDefinition(method: DescMethod): MethodDefinition<Message, Message> {
  const serializeResponse = (message: Message) => asBuffer(toBinary(method.output, message));
  let responseSerialize = serializeResponse;
  if (method.methodKind === "server_streaming") {
    const serialized = new WeakMap<Message, Buffer>();
    responseSerialize = (message) => {
      let bytes = serialized.get(message);
      if (bytes === undefined) {
        bytes = serializeResponse(message);
        serialized.set(message, bytes);
      }
      return bytes;
    };
  }
  return {
    path: `/${method.parent.typeName}/${method.name}`,
    originalName: method.name,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: (message) => asBuffer(toBinary(method.input, message)),
    requestDeserialize: (bytes) => {
      try {
        return fromBinary(method.input, bytes);
      } catch (err) {
        // Handed to the handler wrapper of addService, which answers it without the handler.
        return new MalformedRequest(err instanceof Error ? err.message : String(err)) as unknown as Message;
      }
    },
    responseSerialize,
    responseDeserialize: (bytes) => fromBinary(method.output, bytes),
  };
}

/**
 * Builds the grpc-js `ServiceDefinition` of a protobuf-es service (see the module comment for the
 * keys, paths and codec). Pure: it only reads the descriptor, and two calls give equal results.
 * Use it with `server.addService(definition, implementation)`, or with `addService` below, which
 * also type-checks the implementation.
 */
export function createServiceDefinition<T extends GenServiceMethods>(
  service: GenService<T>,
): ServiceDefinition {
  const definition: Record<string, MethodDefinition<Message, Message>> = {};
  for (const method of service.methods) {
    definition[method.localName] = methodDefinition(method);
  }
  return definition;
}

/** Options of `addService`. */
export interface AddServiceOptions {
  /** The status answered to a request whose bytes do not decode (default: INTERNAL). */
  rejectMalformed?: (reason: string) => Partial<StatusObject>;
  /**
   * Observes each unary call: called with the method path when the call starts, it returns the
   * function called once with the status code the call ends with (its answer, or CANCELLED).
   */
  observeUnary?: (path: string) => (code: status) => void;
}

/**
 * Registers a protobuf-es service on a grpc-js server with a fully typed implementation.
 * Call it before `server.bindAsync`. Throws (from grpc-js) when a method path of the service is
 * already registered on this server, e.g. when the same service is added twice.
 */
export function addService<T extends GenServiceMethods>(
  server: Pick<Server, "addService">,
  service: GenService<T>,
  implementation: ServiceImpl<T>,
  options: AddServiceOptions = {},
): void {
  const reject =
    options.rejectMalformed ??
    ((reason: string) => ({ code: status.INTERNAL, details: `error deserializing request: ${reason}` }));
  // grpc-js types its registry loosely (handlers of `any`), which TypeScript cannot relate to the
  // mapped type ServiceImpl<T> for a generic T.
  const handlers = implementation as UntypedServiceImplementation;
  const guarded: UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const handler = handlers[method.localName];
    if (
      handler === undefined ||
      method.methodKind === "client_streaming" ||
      method.methodKind === "bidi_streaming"
    ) {
      if (handler !== undefined) guarded[method.localName] = handler;
      continue;
    }
    const path = `/${method.parent.typeName}/${method.name}`;
    const observe = method.methodKind === "unary" ? options.observeUnary : undefined;
    guarded[method.localName] = ((
      call: {
        request: unknown;
        emit(event: "error", e: unknown): void;
        once(event: "cancelled", listener: () => void): void;
      },
      callback?: (e: { code?: status } | null, value?: unknown) => void,
    ) => {
      if (observe !== undefined && callback !== undefined) {
        const end = observe(path);
        call.once("cancelled", () => end(status.CANCELLED));
        const answer = callback;
        callback = (e, value) => {
          end(e === null ? status.OK : (e.code ?? status.UNKNOWN));
          answer(e, value);
        };
      }
      if (call.request instanceof MalformedRequest) {
        const answer = reject(call.request.reason);
        if (callback !== undefined) callback(answer as { code?: status });
        else call.emit("error", answer);
        return;
      }
      (handler as (call: unknown, callback?: unknown) => void)(call, callback);
    }) as UntypedServiceImplementation[string];
  }
  server.addService(createServiceDefinition(service), guarded);
}
