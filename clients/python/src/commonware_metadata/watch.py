"""Watch and the list-then-watch recipe over the generated stub.

`watch(stub, ...)` iterates over the committed changes of a partition: one `WatchResponse` per
committed sync that changed a watched key, in version order (an event without `value` is a
removal). Leaving the loop (or closing the generator) cancels the stream. It never ends by
itself; it raises `grpc.RpcError` with OUT_OF_RANGE when the server no longer holds the start
version or the watcher fell too far behind (`oldest_available_version(err)` reads what is left:
list again), or UNAVAILABLE when the server shuts down (watch again from the last version + 1).

    version, entries = list_with_version(stub, partition="p", include_values=True)
    for response in watch(stub, partition="p", start_version=version + 1, include_values=True):
        for event in response.events:
            ...  # event.HasField("value"): a put; otherwise a removal
"""

from __future__ import annotations

import re
from typing import Iterator, List, Optional, Tuple

import grpc

from commonware_metadata.gen.commonware.metadata.v1 import metadata_pb2
from commonware_metadata.gen.commonware.metadata.v1.metadata_pb2_grpc import MetadataServiceStub

_OLDEST = re.compile(r"oldest available version (\d+)")


def watch(
    stub: MetadataServiceStub,
    partition: str = "",
    prefix: bytes = b"",
    start_version: int = 0,
    include_values: bool = False,
    **call_options: object,
) -> Iterator[metadata_pb2.WatchResponse]:
    """Yields each WatchResponse of a Watch stream; `call_options` go to the stub (metadata, ...)."""
    request = metadata_pb2.WatchRequest(
        partition=partition, prefix=prefix, start_version=start_version, include_values=include_values
    )
    call = stub.Watch(request, **call_options)
    try:
        for response in call:
            yield response
    finally:
        call.cancel()


def list_with_version(
    stub: MetadataServiceStub, partition: str = "", prefix: bytes = b"", include_values: bool = False, **call_options: object
) -> Tuple[int, List[Tuple[bytes, Optional[bytes]]]]:
    """Lists a partition (every chunk of a Keys stream) with the committed version it was read at:
    a watch from version + 1 sees every later change exactly once."""
    request = metadata_pb2.KeysRequest(partition=partition, prefix=prefix, include_values=include_values)
    version = 0
    entries: List[Tuple[bytes, Optional[bytes]]] = []
    for chunk in stub.Keys(request, **call_options):
        version = chunk.version
        for i, key in enumerate(chunk.keys):
            entries.append((key, chunk.values[i] if include_values else None))
    return version, entries


def oldest_available_version(err: BaseException) -> Optional[int]:
    """The oldest version the server could still give, from the OUT_OF_RANGE error that ended a
    watch; None for any other error."""
    if not isinstance(err, grpc.RpcError) or err.code() != grpc.StatusCode.OUT_OF_RANGE:  # type: ignore[attr-defined]
        return None
    match = _OLDEST.search(err.details() or "")  # type: ignore[attr-defined]
    return int(match.group(1)) if match else None
