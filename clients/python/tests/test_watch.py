"""Watch through commonware_metadata.watch against the real server (see conftest.py).

Put, overwrite and remove events in version order after a listing (list-then-watch), a Commit
as one response, concurrent writers seen exactly once from a listing, and OUT_OF_RANGE with the
version to resume from when the history no longer holds the start version.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, List

import grpc
import pytest

from commonware_metadata import list_with_version, metadata_pb2 as pb, oldest_available_version, watch
from conftest import CALL_TIMEOUT_S, SERVER_FLAGS, Server

T = CALL_TIMEOUT_S


def show(response: pb.WatchResponse) -> str:
    """A response as "v: a=1 b-" ("-" for a removal)."""
    events = [
        f"{e.key.decode()}={e.value.decode()}" if e.HasField("value") else f"{e.key.decode()}-"
        for e in response.events
    ]
    return f"{response.version}: " + " ".join(events)


def test_watch_events_after_a_listing(server: Server) -> None:
    stub = server.stub
    first = stub.Put(pb.PutRequest(partition="w", key=b"a", value=b"0"), timeout=T)
    version, entries = list_with_version(stub, partition="w", include_values=True, timeout=T)
    assert (version, entries) == (first.version, [(b"a", b"0")])

    want: List[str] = []
    v = stub.Put(pb.PutRequest(partition="w", key=b"a", value=b"1"), timeout=T).version
    want.append(f"{v}: a=1")
    v = stub.Remove(pb.RemoveRequest(partition="w", key=b"a"), timeout=T).version
    want.append(f"{v}: a-")
    mutations = [
        pb.Mutation(put=pb.Mutation.Put(key=b"c", value=b"3")),
        pb.Mutation(put=pb.Mutation.Put(key=b"b", value=b"2")),
    ]
    v = stub.Commit(pb.CommitRequest(partition="w", mutations=mutations), timeout=T).version
    want.append(f"{v}: b=2 c=3")

    got: List[str] = []
    for response in watch(stub, partition="w", start_version=version + 1, include_values=True, timeout=T):
        got.append(show(response))
        if len(got) == len(want):
            break
    assert got == want

    # Without include_values a put carries an empty value, present all the same.
    response = next(watch(stub, partition="w", start_version=version + 1, timeout=T))
    assert response.events[0].HasField("value") and response.events[0].value == b""


def test_watch_with_concurrent_writers(server: Server) -> None:
    stub = server.stub
    writers, per_writer = 6, 40
    errors: List[BaseException] = []

    def write(w: int) -> None:
        try:
            for i in range(per_writer):
                key = f"k{(w * 7 + i) % 15:02d}".encode()
                stub.Put(pb.PutRequest(partition="busy", key=key, value=f"{w}/{i}".encode()), timeout=T)
        except BaseException as err:  # noqa: BLE001 - reported by the test thread
            errors.append(err)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads[: writers // 2]:
        thread.start()
    version, entries = list_with_version(stub, partition="busy", include_values=True, timeout=T)
    for thread in threads[writers // 2 :]:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    final, final_entries = list_with_version(stub, partition="busy", include_values=True, timeout=T)

    state: Dict[bytes, bytes] = {k: v or b"" for k, v in entries}
    last = version
    if final > version:
        for response in watch(stub, partition="busy", start_version=version + 1, include_values=True, timeout=T):
            assert response.version > last
            last = response.version
            for event in response.events:
                if event.HasField("value"):
                    state[event.key] = event.value
                else:
                    state.pop(event.key, None)
            if last >= final:
                break
    assert last == final
    assert state == {k: v or b"" for k, v in final_entries}


def test_watch_out_of_range(start_server: Callable[..., Server]) -> None:
    server = start_server(flags=[*SERVER_FLAGS, "--watch-history-syncs", "2"])
    versions = [
        server.stub.Put(pb.PutRequest(key=f"k{i}".encode(), value=b"v"), timeout=T).version for i in range(5)
    ]
    with pytest.raises(grpc.RpcError) as info:
        next(watch(server.stub, start_version=versions[0], timeout=T))
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE, info.value.details()
    assert oldest_available_version(info.value) == versions[3]
