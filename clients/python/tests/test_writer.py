"""Tests of the pipelined Writer (commonware_metadata.writer) over the real server's Write stream.

Many pipelined puts answered in version order and present after a SIGKILL and restart; a failed
precondition and bad input answered with their status while the stream goes on; close (answers
first, later calls refused); requests left unanswered by a killed server or a cancel failing with
OutcomeUnknownError.
"""

from __future__ import annotations

from typing import Callable, List

import grpc
import pytest

from commonware_metadata import OutcomeUnknownError, WriteError, Writer
from commonware_metadata import metadata_pb2 as pb
from conftest import CALL_TIMEOUT_S, MAX_VALUE_BYTES, SERVER_FLAGS, Server

T = CALL_TIMEOUT_S


def get(s: Server, partition: str, key: bytes):
    reply = s.stub.Get(pb.GetRequest(partition=partition, key=key), timeout=T)
    return reply.value if reply.HasField("value") else None


def test_pipelined_puts_are_durable(start_server: Callable[..., Server]) -> None:
    server = start_server()
    partition, n = "stream", 3000
    writer = Writer(server.stub, window=64, partition=partition)
    futures = []
    for i in range(n):
        futures.append(writer.put(f"k{i % 1000:04d}".encode(), f"v{i}".encode()))
        assert writer.pending <= 64
    last = 0
    for i, future in enumerate(futures):
        reply = future.result(timeout=T)
        assert reply.version > 0 and reply.version >= last, f"put {i}: version {reply.version} after {last}"
        last = reply.version
        if i >= 1000:
            assert reply.previous == f"v{i - 1000}".encode(), f"put {i}: previous"
    writer.close(timeout=T)

    # Every acknowledged put survives a SIGKILL.
    server.kill()
    server = start_server(data_dir=server.data_dir)
    keys, values = [], []
    version = 0
    for chunk in server.stub.Keys(pb.KeysRequest(partition=partition, include_values=True), timeout=T):
        keys.extend(chunk.keys)
        values.extend(chunk.values)
        version = chunk.version
    assert keys == [f"k{i:04d}".encode() for i in range(1000)]
    assert values == [f"v{n - 1000 + i}".encode() for i in range(1000)]
    assert version >= last


def test_failures_do_not_end_the_stream(server: Server) -> None:
    partition = "goes-on"
    with Writer(server.stub, partition=partition) as writer:
        first = writer.put(b"a", b"1")
        refused = writer.commit(
            [pb.Mutation(put=pb.Mutation.Put(key=b"a", value=b"2"))], [pb.Precondition(key=b"a", absent=True)]
        )
        too_big = writer.put(b"b", bytes(MAX_VALUE_BYTES + 1))
        bad_name = writer.put(b"a", b"x", partition="bad name!")
        wrong_width = writer.remove(b"short", partition="fixed8")
        applied = writer.commit(
            [pb.Mutation(put=pb.Mutation.Put(key=b"a", value=b"3")), pb.Mutation(put=pb.Mutation.Put(key=b"c", value=b"C"))],
            [pb.Precondition(key=b"a", value_equals=b"1")],
        )
        last = writer.remove(b"c")

        assert not first.result(timeout=T).HasField("previous")
        with pytest.raises(WriteError) as failed:
            refused.result(timeout=T)
        assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert failed.value.details() == "precondition failed: key 61 is present"
        assert not isinstance(failed.value, OutcomeUnknownError)
        with pytest.raises(WriteError) as failed:
            too_big.result(timeout=T)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert failed.value.details() == f"value too large: {MAX_VALUE_BYTES + 1} bytes > {MAX_VALUE_BYTES}"
        for future in (bad_name, wrong_width):
            with pytest.raises(WriteError) as failed:
                future.result(timeout=T)
            assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        version = applied.result(timeout=T).version
        removed = last.result(timeout=T)
        assert removed.previous == b"C" and removed.version >= version
    assert get(server, partition, b"a") == b"3"
    assert get(server, partition, b"b") is None
    assert get(server, partition, b"c") is None


def test_close(server: Server) -> None:
    partition = "close"
    writer = Writer(server.stub, window=8, partition=partition, durability=pb.DURABILITY_BUFFERED)
    futures = [writer.put(f"k{i}".encode(), b"v") for i in range(100)]
    # close returns once every request is answered and the stream ended with OK.
    writer.close(timeout=T)
    for i, future in enumerate(futures):
        assert future.done(), f"put {i} unanswered after close"
        assert future.result().version == 0, "buffered puts answer with version 0"
    late = writer.put(b"late", b"v")
    with pytest.raises(WriteError) as failed:
        late.result(timeout=T)
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    writer.close(timeout=T)
    server.stub.Sync(pb.SyncRequest(partition=partition), timeout=T)
    assert get(server, partition, b"k99") == b"v"
    assert get(server, partition, b"late") is None


def _held_writes(start_server: Callable[..., Server], partition: str):
    """A server that holds durable writes back (batch delay of 30 s) and a writer with 10 of them."""
    server = start_server(flags=[*SERVER_FLAGS, "--batch-max-delay-ms", "30000"])
    writer = Writer(server.stub, partition=partition)
    futures = [writer.put(f"k{i}".encode(), b"v") for i in range(10)]
    return server, writer, futures


def _require_outcome_unknown(futures: List, code: grpc.StatusCode) -> None:
    for i, future in enumerate(futures):
        with pytest.raises(OutcomeUnknownError) as failed:
            future.result(timeout=T)
        assert failed.value.code() == code, f"put {i}: {failed.value}"
        assert failed.value.details().endswith("outcome unknown")


def test_stream_end_leaves_outcome_unknown(start_server: Callable[..., Server]) -> None:
    server, writer, futures = _held_writes(start_server, "held")
    # Sent and unanswered (held by the batch delay), or not even read yet: unknown either way.
    # SIGKILL the process only: Server.kill() would close the channel first (CANCELLED).
    assert server.proc is not None
    server.proc.kill()
    server.proc.wait(T)
    _require_outcome_unknown(futures, grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(WriteError) as failed:
        writer.close(timeout=T)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    late = writer.put(b"late", b"v")
    with pytest.raises(WriteError) as refused:
        late.result(timeout=T)
    assert not isinstance(refused.value, OutcomeUnknownError)


def test_cancel(start_server: Callable[..., Server]) -> None:
    _, writer, futures = _held_writes(start_server, "cancel")
    writer.cancel()
    _require_outcome_unknown(futures, grpc.StatusCode.CANCELLED)
