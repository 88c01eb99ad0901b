"""Python client for the commonware metadata service.

The messages and gRPC stubs are generated from proto/commonware/metadata/v1/metadata.proto into
the subpackage `commonware_metadata.gen` by `npm run generate` (never edit gen/ by hand). This
module re-exports the two generated modules and the most used names:

    import grpc
    from commonware_metadata import MetadataServiceStub, metadata_pb2

    with grpc.insecure_channel("127.0.0.1:50051") as channel:
        stub = MetadataServiceStub(channel)
        reply = stub.Get(metadata_pb2.GetRequest(partition="p", key=b"k"), timeout=5)
        print(reply.HasField("value"), reply.version)

`connect(target, token=..., root_certificates=..., certificate_chain=..., private_key=...)`
(commonware_metadata.auth) opens a channel to a server that requires a token or mutual TLS.

`Writer` (commonware_metadata.writer) pipelines many puts, removes and commits over one Write
stream, each answered through a future:

    from commonware_metadata import Writer

    with Writer(stub, window=256, partition="p") as writer:
        futures = [writer.put(key, b"value") for key in keys]
        versions = [future.result().version for future in futures]   # each durable

`watch`, `list_with_version` and `oldest_available_version` (commonware_metadata.watch) follow
committed changes from a listing on, exactly once.
"""

from commonware_metadata.auth import connect
from commonware_metadata.gen.commonware.metadata.v1 import metadata_pb2, metadata_pb2_grpc
from commonware_metadata.gen.commonware.metadata.v1.metadata_pb2_grpc import (
    MetadataServiceServicer,
    MetadataServiceStub,
    add_MetadataServiceServicer_to_server,
)
from commonware_metadata.watch import list_with_version, oldest_available_version, watch
from commonware_metadata.writer import OutcomeUnknownError, WriteError, Writer

__all__ = [
    "MetadataServiceServicer",
    "MetadataServiceStub",
    "OutcomeUnknownError",
    "WriteError",
    "Writer",
    "add_MetadataServiceServicer_to_server",
    "connect",
    "list_with_version",
    "metadata_pb2",
    "metadata_pb2_grpc",
    "oldest_available_version",
    "watch",
]
