"""Bearer tokens against a server started with --auth-tokens, through `commonware_metadata.connect`.

No token and an unknown token get UNAUTHENTICATED; a read token reads but cannot write
(PERMISSION_DENIED naming the partition and the access); a write token writes within its grant.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Optional

import grpc
import pytest

from commonware_metadata import MetadataServiceStub, connect
from commonware_metadata import metadata_pb2 as pb
from conftest import CALL_TIMEOUT_S, Server

READ_TOKEN = "py-read-token"
WRITE_TOKEN = "py-write-token"


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def test_bearer_tokens(start_server: Callable[..., Server], tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": "reader", "sha256": _sha256(READ_TOKEN), "grants": [{"partitions": "team-*", "access": "read"}]},
                    {"name": "writer", "sha256": _sha256(WRITE_TOKEN), "grants": [{"partitions": "team-a", "access": "write"}]},
                ]
            }
        )
    )
    server = start_server(flags=["--auth-tokens", str(tokens)])

    def stub(token: Optional[str]) -> MetadataServiceStub:
        channel = connect(server.addr, token=token)
        return MetadataServiceStub(channel)

    put = pb.PutRequest(partition="team-a", key=b"k", value=b"v")
    get = pb.GetRequest(partition="team-a", key=b"k")
    assert _code(lambda: stub(None).Get(get, timeout=CALL_TIMEOUT_S)) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: stub("wrong").Get(get, timeout=CALL_TIMEOUT_S)) == grpc.StatusCode.UNAUTHENTICATED

    reader = stub(READ_TOKEN)
    with pytest.raises(grpc.RpcError) as refused:
        reader.Put(put, timeout=CALL_TIMEOUT_S)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert '"team-a"' in refused.value.details() and "write" in refused.value.details()

    writer = stub(WRITE_TOKEN)
    assert writer.Put(put, timeout=CALL_TIMEOUT_S).version >= 1
    other = pb.PutRequest(partition="team-b", key=b"k", value=b"v")
    assert _code(lambda: writer.Put(other, timeout=CALL_TIMEOUT_S)) == grpc.StatusCode.PERMISSION_DENIED
    assert reader.Get(get, timeout=CALL_TIMEOUT_S).value == b"v"
    assert READ_TOKEN not in server.output() and WRITE_TOKEN not in server.output()


def test_connect_refuses_a_certificate_without_its_key() -> None:
    with pytest.raises(ValueError):
        connect("127.0.0.1:1", certificate_chain=b"pem")
