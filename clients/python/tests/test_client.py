"""End-to-end tests of the generated Python client against the real server (see conftest.py).

Put/Get/Remove, Keys (streamed in several chunks, ascending order, prefix/start/end/limit),
Commit (atomic batches, preconditions -> FAILED_PRECONDITION), the status codes of bad input,
durability across a SIGTERM restart, and the example program of the README.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import grpc
import pytest

from commonware_metadata import metadata_pb2 as pb
from conftest import CALL_TIMEOUT_S, MAX_VALUE_BYTES, Server

T = CALL_TIMEOUT_S
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "example.py"


def put(key: bytes, value: bytes) -> pb.Mutation:
    return pb.Mutation(put=pb.Mutation.Put(key=key, value=value))


def remove(key: bytes) -> pb.Mutation:
    return pb.Mutation(remove=pb.Mutation.Remove(key=key))


def absent(key: bytes) -> pb.Precondition:
    return pb.Precondition(key=key, absent=True)


def present(key: bytes) -> pb.Precondition:
    return pb.Precondition(key=key, present=True)


def value_equals(key: bytes, value: bytes) -> pb.Precondition:
    return pb.Precondition(key=key, value_equals=value)


def u64(n: int) -> bytes:
    return n.to_bytes(8, "big")


def get(s: Server, partition: str, key: bytes) -> Optional[bytes]:
    reply = s.stub.Get(pb.GetRequest(partition=partition, key=key), timeout=T)
    return reply.value if reply.HasField("value") else None


def list_keys(s: Server, **request: object) -> Tuple[List[bytes], List[bytes], List[int]]:
    """Keys, values and the version of each chunk of one Keys stream."""
    keys: List[bytes] = []
    values: List[bytes] = []
    versions: List[int] = []
    include_values = bool(request.get("include_values"))
    for chunk in s.stub.Keys(pb.KeysRequest(**request), timeout=T):  # type: ignore[arg-type]
        versions.append(chunk.version)
        assert len(chunk.values) == (len(chunk.keys) if include_values else 0)
        keys.extend(chunk.keys)
        values.extend(chunk.values)
    return keys, values, versions


def partitions(s: Server) -> List[str]:
    return list(s.stub.ListPartitions(pb.ListPartitionsRequest(), timeout=T).partitions)


def assert_code(code: grpc.StatusCode, call, *args, **kwargs) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, timeout=T, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)  # a server stream fails on reading
    assert info.value.code() == code, info.value.details()
    return info.value


def test_put_get_remove(server: Server) -> None:
    s, p, k = server, "kv", b"greeting"

    reply = s.stub.Get(pb.GetRequest(partition=p, key=k), timeout=T)
    assert not reply.HasField("value") and reply.version == 0
    assert p not in partitions(s), "a Get created the partition"

    first = s.stub.Put(pb.PutRequest(partition=p, key=k, value=b"hello"), timeout=T)
    assert not first.HasField("previous") and first.version > 0
    got = s.stub.Get(pb.GetRequest(partition=p, key=k), timeout=T)
    assert got.value == b"hello" and got.version >= first.version

    second = s.stub.Put(
        pb.PutRequest(partition=p, key=k, value=b"world", durability=pb.DURABILITY_DURABLE), timeout=T
    )
    assert second.previous == b"hello" and second.version > first.version
    assert get(s, p, k) == b"world"

    # An empty value is a value: present, and distinct from absent.
    s.stub.Put(pb.PutRequest(partition=p, key=b"empty", value=b""), timeout=T)
    assert get(s, p, b"empty") == b""

    removed = s.stub.Remove(pb.RemoveRequest(partition=p, key=k), timeout=T)
    assert removed.previous == b"world" and removed.version > second.version
    assert get(s, p, k) is None
    again = s.stub.Remove(pb.RemoveRequest(partition=p, key=k), timeout=T)
    assert not again.HasField("previous")

    # A buffered write is answered at version 0 and committed by the next sync.
    buffered = s.stub.Put(
        pb.PutRequest(partition=p, key=b"buffered", value=b"later", durability=pb.DURABILITY_BUFFERED),
        timeout=T,
    )
    assert buffered.version == 0
    synced = s.stub.Sync(pb.SyncRequest(partition=p), timeout=T)
    assert synced.version > removed.version
    assert get(s, p, b"buffered") == b"later"

    # The empty partition name is the server's default partition ("default").
    s.stub.Put(pb.PutRequest(key=b"d", value=b"1"), timeout=T)
    assert get(s, "default", b"d") == b"1"

    names = partitions(s)
    assert p in names and "default" in names and names == sorted(names)


def test_keys(server: Server) -> None:
    s, p = server, "listing"
    # 2,500 keys under "item/" and 3 under "other/", written in random order in one batch: more
    # than one Keys chunk (the server sends at most 1,000 keys per message).
    want: Dict[bytes, bytes] = {f"item/{i:05d}".encode(): f"value {i}".encode() for i in range(2500)}
    for k in (b"other/a", b"other/b", b"other/c"):
        want[k] = b"v-" + k
    order = sorted(want)
    random.Random(1).shuffle(order)
    committed = s.stub.Commit(
        pb.CommitRequest(partition=p, mutations=[put(k, want[k]) for k in order]), timeout=T
    )

    keys, values, versions = list_keys(s, partition=p, include_values=True)
    assert len(versions) >= 3, f"{len(want)} keys came in {len(versions)} chunks"
    assert len(set(versions)) == 1 and versions[0] >= committed.version
    assert all(a < b for a, b in zip(keys, keys[1:])), "keys not strictly ascending"
    assert keys == sorted(want)
    assert values == [want[k] for k in keys]

    def names(**request: object) -> List[bytes]:
        return list_keys(s, partition=p, **request)[0]

    assert names(prefix=b"other/") == [b"other/a", b"other/b", b"other/c"]
    assert names(prefix=b"nothing") == []
    assert names(start=b"item/00998", end=b"item/01001") == [b"item/00998", b"item/00999", b"item/01000"]
    assert names(prefix=b"other/", start=b"other/b") == [b"other/b", b"other/c"]
    assert names(prefix=b"item/", limit=2) == [b"item/00000", b"item/00001"]
    assert names(start=b"other/", end=b"item/") == []
    assert names(limit=1500) == sorted(want)[:1500]  # ends inside the second chunk

    # Keys of a partition that does not exist: an empty listing, and nothing is created.
    assert list_keys(s, partition="nowhere")[0] == []
    assert "nowhere" not in partitions(s)

    s.stub.Remove(pb.RemoveRequest(partition=p, key=b"other/b"), timeout=T)
    assert names(prefix=b"other/") == [b"other/a", b"other/c"]


@pytest.mark.parametrize(
    "condition",
    [
        pytest.param(absent(b"a"), id="absent-on-present-key"),
        pytest.param(present(b"c"), id="present-on-absent-key"),
        pytest.param(value_equals(b"b", b"other"), id="value-equals-other-value"),
        pytest.param(value_equals(b"c", b"3"), id="value-equals-absent-key"),
    ],
)
def test_commit_failed_precondition_changes_nothing(server: Server, condition: pb.Precondition) -> None:
    s, p = server, "batch"
    s.stub.Commit(pb.CommitRequest(partition=p, mutations=[put(b"a", b"1"), put(b"b", b"2")]), timeout=T)
    before = list_keys(s, partition=p, include_values=True)
    err = assert_code(
        grpc.StatusCode.FAILED_PRECONDITION,
        s.stub.Commit,
        pb.CommitRequest(
            partition=p,
            mutations=[put(b"a", b"changed"), remove(b"b"), put(b"new", b"x")],
            preconditions=[present(b"a"), condition],
        ),
    )
    assert "precondition" in err.details()
    after = list_keys(s, partition=p, include_values=True)
    assert after == before, "a refused batch changed the partition"


def test_commit(server: Server) -> None:
    s, p = server, "batch"
    first = s.stub.Commit(
        pb.CommitRequest(
            partition=p,
            mutations=[put(b"a", b"1"), put(b"b", b"2"), put(b"c", b"3"), remove(b"c"), put(b"a", b"1b")],
            preconditions=[absent(b"a"), absent(b"b")],
        ),
        timeout=T,
    )
    assert first.version > 0
    assert (get(s, p, b"a"), get(s, p, b"b"), get(s, p, b"c")) == (b"1b", b"2", None)

    # Compare-and-set: value_equals with the current value applies.
    cas = s.stub.Commit(
        pb.CommitRequest(
            partition=p,
            mutations=[put(b"b", b"2b"), remove(b"a")],
            preconditions=[value_equals(b"b", b"2"), present(b"a"), absent(b"c")],
        ),
        timeout=T,
    )
    assert cas.version > first.version
    assert (get(s, p, b"a"), get(s, p, b"b")) == (None, b"2b")

    # The stale compare-and-set now fails.
    assert_code(
        grpc.StatusCode.FAILED_PRECONDITION,
        s.stub.Commit,
        pb.CommitRequest(partition=p, mutations=[put(b"b", b"2c")], preconditions=[value_equals(b"b", b"2")]),
    )
    assert get(s, p, b"b") == b"2b"

    # A buffered batch answers at version 0; a Sync makes it visible.
    buffered = s.stub.Commit(
        pb.CommitRequest(partition=p, mutations=[put(b"d", b"4")], durability=pb.DURABILITY_BUFFERED), timeout=T
    )
    assert buffered.version == 0
    s.stub.Sync(pb.SyncRequest(partition=p), timeout=T)
    assert get(s, p, b"d") == b"4"

    # A batch on a fixed:8 partition.
    s.stub.Commit(pb.CommitRequest(partition="fixed8", mutations=[put(u64(1), b"one"), put(u64(2), b"two")]), timeout=T)
    assert list_keys(s, partition="fixed8", include_values=True)[:2] == ([u64(1), u64(2)], [b"one", b"two"])


@pytest.mark.parametrize("name", ["bad name", "../escape", "a/b", "dot.ted", "ünïcode", "x" * 300 + "/"])
def test_invalid_partition_name(server: Server, name: str) -> None:
    s, k, bad = server, b"k", grpc.StatusCode.INVALID_ARGUMENT
    assert_code(bad, s.stub.Put, pb.PutRequest(partition=name, key=k, value=b"v"))
    assert_code(bad, s.stub.Get, pb.GetRequest(partition=name, key=k))
    assert_code(bad, s.stub.Remove, pb.RemoveRequest(partition=name, key=k))
    assert_code(bad, s.stub.Commit, pb.CommitRequest(partition=name, mutations=[put(k, b"")]))
    assert_code(bad, s.stub.Sync, pb.SyncRequest(partition=name))
    assert_code(bad, s.stub.Keys, pb.KeysRequest(partition=name))
    assert partitions(s) == []


@pytest.mark.parametrize("key", [u64(7)[:7], u64(9) + b"\0", b""], ids=["7-bytes", "9-bytes", "empty"])
def test_wrong_key_width_on_fixed8(server: Server, key: bytes) -> None:
    s, f, bad = server, "fixed8", grpc.StatusCode.INVALID_ARGUMENT
    err = assert_code(bad, s.stub.Put, pb.PutRequest(partition=f, key=key, value=b"v"))
    assert "width" in err.details()
    assert_code(bad, s.stub.Get, pb.GetRequest(partition=f, key=key))
    assert_code(bad, s.stub.Remove, pb.RemoveRequest(partition=f, key=key))
    assert_code(bad, s.stub.Commit, pb.CommitRequest(partition=f, mutations=[put(u64(1), b"ok"), put(key, b"v")]))
    assert_code(
        bad,
        s.stub.Commit,
        pb.CommitRequest(partition=f, mutations=[put(u64(1), b"ok")], preconditions=[absent(key)]),
    )
    assert get(s, f, u64(1)) is None, "the good mutation of a refused batch was applied"
    s.stub.Put(pb.PutRequest(partition=f, key=u64(1), value=b"ok"), timeout=T)
    assert get(s, f, u64(1)) == b"ok"


def test_empty_key_and_oversize_value(server: Server) -> None:
    s, bad = server, grpc.StatusCode.INVALID_ARGUMENT
    assert_code(bad, s.stub.Put, pb.PutRequest(partition="var", key=b"", value=b"v"))
    err = assert_code(bad, s.stub.Put, pb.PutRequest(partition="var", key=b"k", value=bytes(MAX_VALUE_BYTES + 1)))
    assert "too large" in err.details()
    assert_code(
        bad,
        s.stub.Commit,
        pb.CommitRequest(partition="var", mutations=[put(b"small", b"v"), put(b"k", bytes(MAX_VALUE_BYTES + 1))]),
    )
    assert "var" not in partitions(s), "refused writes created a partition"
    big = b"\xab" * MAX_VALUE_BYTES
    s.stub.Put(pb.PutRequest(partition="var", key=b"k", value=big), timeout=T)
    assert get(s, "var", b"k") == big
    assert get(s, "var", b"small") is None


def test_durability_across_restart(server: Server) -> None:
    s, p = server, "durable"
    want: Dict[bytes, bytes] = {}
    for i in range(20):
        k, v = f"key-{i:02d}".encode(), f"value-{i:02d}".encode()
        s.stub.Put(pb.PutRequest(partition=p, key=k, value=v), timeout=T)
        want[k] = v
    for k in (b"key-03", b"key-07"):
        s.stub.Remove(pb.RemoveRequest(partition=p, key=k), timeout=T)
        del want[k]
    s.stub.Commit(
        pb.CommitRequest(
            partition=p,
            mutations=[put(b"key-00", b"rewritten"), remove(b"key-19"), put(b"batch", b"yes")],
            preconditions=[absent(b"batch")],
        ),
        timeout=T,
    )
    want[b"key-00"], want[b"batch"] = b"rewritten", b"yes"
    del want[b"key-19"]
    s.stub.Put(pb.PutRequest(partition="fixed8", key=u64(42), value=b"answer"), timeout=T)
    # Acknowledged buffered writes are committed by the shutdown at the latest.
    s.stub.Put(
        pb.PutRequest(partition=p, key=b"buffered", value=b"flushed at stop", durability=pb.DURABILITY_BUFFERED),
        timeout=T,
    )
    want[b"buffered"] = b"flushed at stop"

    s.restart()

    for k, v in want.items():
        assert get(s, p, k) == v, k
    for k in (b"key-03", b"key-07", b"key-19"):
        assert get(s, p, k) is None, k
    assert get(s, "fixed8", u64(42)) == b"answer"
    keys, values, versions = list_keys(s, partition=p, include_values=True)
    assert dict(zip(keys, values)) == want
    assert {p, "fixed8"} <= set(partitions(s))
    after = s.stub.Put(pb.PutRequest(partition=p, key=b"after", value=b"restart"), timeout=T)
    assert after.version > versions[0], "versions continue after a restart"


def test_durable_writes_survive_kill(server: Server, start_server: Callable[..., Server]) -> None:
    """Acknowledged durable writes survive a SIGKILL of the server."""
    s, p = server, "crash"
    want = {f"k{i}".encode(): f"v{i}".encode() for i in range(10)}
    for k, v in want.items():
        s.stub.Put(pb.PutRequest(partition=p, key=k, value=v), timeout=T)
    s.stub.Remove(pb.RemoveRequest(partition=p, key=b"k4"), timeout=T)
    del want[b"k4"]
    s.stub.Commit(pb.CommitRequest(partition=p, mutations=[put(b"k0", b"new"), put(b"k10", b"v10")]), timeout=T)
    want[b"k0"], want[b"k10"] = b"new", b"v10"

    s.kill()
    restarted = start_server(s.data_dir)
    keys, values, _ = list_keys(restarted, partition=p, include_values=True)
    assert dict(zip(keys, values)) == want


def test_example(server: Server) -> None:
    for run in (1, 2):  # a second run finds the first one's data
        done = subprocess.run(
            [sys.executable, str(EXAMPLE), "--addr", server.addr],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"run {run}: {done.stdout}\n{done.stderr}"
        for line in (
            "put greeting",
            "get greeting = 'hello, world'",
            "keys with prefix 'user/': user/1 user/2 user/3",
            "commit applied at version",
            "precondition failed as expected",
        ):
            assert line in done.stdout, f"run {run} lacks {line!r}:\n{done.stdout}"
