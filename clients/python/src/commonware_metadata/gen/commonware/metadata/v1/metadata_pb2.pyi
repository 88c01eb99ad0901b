from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Durability(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DURABILITY_UNSPECIFIED: _ClassVar[Durability]
    DURABILITY_DURABLE: _ClassVar[Durability]
    DURABILITY_BUFFERED: _ClassVar[Durability]
DURABILITY_UNSPECIFIED: Durability
DURABILITY_DURABLE: Durability
DURABILITY_BUFFERED: Durability

class PutRequest(_message.Message):
    __slots__ = ("partition", "key", "value", "durability")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    partition: str
    key: bytes
    value: bytes
    durability: Durability
    def __init__(self, partition: _Optional[str] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., durability: _Optional[_Union[Durability, str]] = ...) -> None: ...

class PutResponse(_message.Message):
    __slots__ = ("previous", "version")
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    previous: bytes
    version: int
    def __init__(self, previous: _Optional[bytes] = ..., version: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("partition", "key")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    partition: str
    key: bytes
    def __init__(self, partition: _Optional[str] = ..., key: _Optional[bytes] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("value", "version")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    version: int
    def __init__(self, value: _Optional[bytes] = ..., version: _Optional[int] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("partition", "key", "durability")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    partition: str
    key: bytes
    durability: Durability
    def __init__(self, partition: _Optional[str] = ..., key: _Optional[bytes] = ..., durability: _Optional[_Union[Durability, str]] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("previous", "version")
    PREVIOUS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    previous: bytes
    version: int
    def __init__(self, previous: _Optional[bytes] = ..., version: _Optional[int] = ...) -> None: ...

class KeyFilter(_message.Message):
    __slots__ = ("prefix", "start", "end")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    prefix: bytes
    start: bytes
    end: bytes
    def __init__(self, prefix: _Optional[bytes] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ...) -> None: ...

class RetainRequest(_message.Message):
    __slots__ = ("partition", "filter", "invert", "durability", "keep_none")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    INVERT_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    KEEP_NONE_FIELD_NUMBER: _ClassVar[int]
    partition: str
    filter: KeyFilter
    invert: bool
    durability: Durability
    keep_none: bool
    def __init__(self, partition: _Optional[str] = ..., filter: _Optional[_Union[KeyFilter, _Mapping]] = ..., invert: _Optional[bool] = ..., durability: _Optional[_Union[Durability, str]] = ..., keep_none: _Optional[bool] = ...) -> None: ...

class RetainResponse(_message.Message):
    __slots__ = ("removed", "version")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    removed: int
    version: int
    def __init__(self, removed: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class KeysRequest(_message.Message):
    __slots__ = ("partition", "prefix", "start", "end", "limit", "include_values")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VALUES_FIELD_NUMBER: _ClassVar[int]
    partition: str
    prefix: bytes
    start: bytes
    end: bytes
    limit: int
    include_values: bool
    def __init__(self, partition: _Optional[str] = ..., prefix: _Optional[bytes] = ..., start: _Optional[bytes] = ..., end: _Optional[bytes] = ..., limit: _Optional[int] = ..., include_values: _Optional[bool] = ...) -> None: ...

class KeysResponse(_message.Message):
    __slots__ = ("keys", "values", "version")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    values: _containers.RepeatedScalarFieldContainer[bytes]
    version: int
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., values: _Optional[_Iterable[bytes]] = ..., version: _Optional[int] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("partition",)
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    partition: str
    def __init__(self, partition: _Optional[str] = ...) -> None: ...

class SyncResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class ClearRequest(_message.Message):
    __slots__ = ("partition", "durability")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    partition: str
    durability: Durability
    def __init__(self, partition: _Optional[str] = ..., durability: _Optional[_Union[Durability, str]] = ...) -> None: ...

class ClearResponse(_message.Message):
    __slots__ = ("removed", "version")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    removed: int
    version: int
    def __init__(self, removed: _Optional[int] = ..., version: _Optional[int] = ...) -> None: ...

class Precondition(_message.Message):
    __slots__ = ("key", "absent", "present", "value_equals")
    KEY_FIELD_NUMBER: _ClassVar[int]
    ABSENT_FIELD_NUMBER: _ClassVar[int]
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    VALUE_EQUALS_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    absent: bool
    present: bool
    value_equals: bytes
    def __init__(self, key: _Optional[bytes] = ..., absent: _Optional[bool] = ..., present: _Optional[bool] = ..., value_equals: _Optional[bytes] = ...) -> None: ...

class Mutation(_message.Message):
    __slots__ = ("put", "remove")
    class Put(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: bytes
        value: bytes
        def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...
    class Remove(_message.Message):
        __slots__ = ("key",)
        KEY_FIELD_NUMBER: _ClassVar[int]
        key: bytes
        def __init__(self, key: _Optional[bytes] = ...) -> None: ...
    PUT_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    put: Mutation.Put
    remove: Mutation.Remove
    def __init__(self, put: _Optional[_Union[Mutation.Put, _Mapping]] = ..., remove: _Optional[_Union[Mutation.Remove, _Mapping]] = ...) -> None: ...

class CommitRequest(_message.Message):
    __slots__ = ("partition", "mutations", "preconditions", "durability")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    MUTATIONS_FIELD_NUMBER: _ClassVar[int]
    PRECONDITIONS_FIELD_NUMBER: _ClassVar[int]
    DURABILITY_FIELD_NUMBER: _ClassVar[int]
    partition: str
    mutations: _containers.RepeatedCompositeFieldContainer[Mutation]
    preconditions: _containers.RepeatedCompositeFieldContainer[Precondition]
    durability: Durability
    def __init__(self, partition: _Optional[str] = ..., mutations: _Optional[_Iterable[_Union[Mutation, _Mapping]]] = ..., preconditions: _Optional[_Iterable[_Union[Precondition, _Mapping]]] = ..., durability: _Optional[_Union[Durability, str]] = ...) -> None: ...

class CommitResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class ListPartitionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPartitionsResponse(_message.Message):
    __slots__ = ("partitions",)
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    partitions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, partitions: _Optional[_Iterable[str]] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("id", "put", "remove", "commit")
    ID_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    id: int
    put: PutRequest
    remove: RemoveRequest
    commit: CommitRequest
    def __init__(self, id: _Optional[int] = ..., put: _Optional[_Union[PutRequest, _Mapping]] = ..., remove: _Optional[_Union[RemoveRequest, _Mapping]] = ..., commit: _Optional[_Union[CommitRequest, _Mapping]] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("id", "status", "put", "remove", "commit")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    id: int
    status: _status_pb2.Status
    put: PutResponse
    remove: RemoveResponse
    commit: CommitResponse
    def __init__(self, id: _Optional[int] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., put: _Optional[_Union[PutResponse, _Mapping]] = ..., remove: _Optional[_Union[RemoveResponse, _Mapping]] = ..., commit: _Optional[_Union[CommitResponse, _Mapping]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("partition", "prefix", "start_version", "include_values")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    START_VERSION_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VALUES_FIELD_NUMBER: _ClassVar[int]
    partition: str
    prefix: bytes
    start_version: int
    include_values: bool
    def __init__(self, partition: _Optional[str] = ..., prefix: _Optional[bytes] = ..., start_version: _Optional[int] = ..., include_values: _Optional[bool] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("version", "events")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    version: int
    events: _containers.RepeatedCompositeFieldContainer[WatchEvent]
    def __init__(self, version: _Optional[int] = ..., events: _Optional[_Iterable[_Union[WatchEvent, _Mapping]]] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...
