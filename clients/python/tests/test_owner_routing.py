"""Owner routing as the README ("Deployment on etcd", Clients) documents it for Python.

A channel given both servers of an etcd-backed pair (`ipv4:A,B`) with the round_robin +
healthCheckConfig service config sends its calls to the owner only (the standby reports
NOT_SERVING), and after the owner is SIGKILLed, to the standby once it took over, with no change
on the client's side. Runs a real single-member etcd (Debian's etcd-server) on free 127.0.0.1
ports; skipped, saying why, when etcd is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterator

import grpc
import pytest

from commonware_metadata import MetadataServiceStub
from commonware_metadata import metadata_pb2 as pb
from conftest import (
    CALL_TIMEOUT_S,
    HEALTH_NOT_SERVING,
    HEALTH_SERVING,
    Server,
    _die_with_parent,
    _free_port,
    health_status,
)

pytestmark = pytest.mark.skipif(
    shutil.which("etcd") is None,
    reason="etcd is not installed (run scripts/install-etcd.sh as root: Debian's etcd-server)",
)

# The service config of the README, byte for byte.
OWNER_SERVICE_CONFIG = """{
  "loadBalancingConfig": [{ "round_robin": {} }],
  "healthCheckConfig": { "serviceName": "commonware.metadata.v1.MetadataService" }
}"""

# The servers' --etcd-lease-ttl-seconds.
LEASE_TTL_S = 2
# How long after the owner's SIGKILL a Put must succeed again: the lease TTL, then the standby's
# election and its health watch turning SERVING.
TAKEOVER_BOUND_S = LEASE_TTL_S + 4
ETCD_START_TIMEOUT_S = 30.0
PARTITION = "routing"


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[str]:
    """A single-member etcd on free 127.0.0.1 ports, data in tmp_path; yields host:port."""
    endpoint = f"127.0.0.1:{_free_port()}"
    client_url = f"http://{endpoint}"
    peer_url = f"http://127.0.0.1:{_free_port()}"
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [
            "etcd",
            "--name=m0",
            f"--data-dir={tmp_path / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=m0={peer_url}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent,
    )

    def output() -> str:
        log.seek(0)
        return log.read().decode("utf-8", "replace")

    try:
        # etcd answers /health with {"health":"true"} once the member has a leader and serves.
        deadline = time.monotonic() + ETCD_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {proc.returncode} before serving:\n{output()}")
            try:
                with urllib.request.urlopen(f"{client_url}/health", timeout=1) as reply:
                    if b'"health":"true"' in reply.read():
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd not healthy on {endpoint} after {ETCD_START_TIMEOUT_S}s:\n{output()}")
            time.sleep(0.05)
        yield endpoint
    finally:
        proc.kill()
        proc.wait(10)
        log.close()


def test_calls_reach_the_owner_then_the_standby_after_a_sigkill(
    etcd: str, start_server: Callable[..., Server]
) -> None:
    flags = [
        "--storage",
        "etcd",
        "--etcd-endpoints",
        etcd,
        "--etcd-prefix",
        f"py-owner-routing-{time.time_ns()}",
        "--etcd-lease-ttl-seconds",
        str(LEASE_TTL_S),
    ]
    # The first server to start owns the prefix; the second is its standby.
    owner = start_server(flags=flags)
    standby = start_server(flags=flags, serving=False)
    assert health_status(standby.channel) == HEALTH_NOT_SERVING
    # Without routing a call to the standby fails, naming the owner.
    with pytest.raises(grpc.RpcError) as refused:
        standby.stub.Put(pb.PutRequest(partition=PARTITION, key=b"x", value=b"y"), timeout=CALL_TIMEOUT_S)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details().endswith(f"the owner is {owner.addr}"), refused.value.details()

    # The channel of the README: both addresses, the standby first (round_robin without health
    # checking would send every other call to it).
    channel = grpc.insecure_channel(
        f"ipv4:{standby.addr},{owner.addr}", options=[("grpc.service_config", OWNER_SERVICE_CONFIG)]
    )
    stub = MetadataServiceStub(channel)
    acked: Dict[bytes, bytes] = {}

    def put_durable(key: bytes, value: bytes, timeout: float = CALL_TIMEOUT_S) -> None:
        reply = stub.Put(
            pb.PutRequest(partition=PARTITION, key=key, value=value, durability=pb.DURABILITY_DURABLE),
            timeout=timeout,
        )
        assert reply.version > 0, f"durable Put {key!r} answered version 0"
        acked[key] = value

    try:
        # Every call succeeds at the first attempt: each one went to the owner.
        for i in range(20):
            put_durable(b"a%02d" % i, b"owner-%d" % i)

        owner.kill()  # SIGKILL, then wait for the exit
        killed = time.monotonic()

        # Until the lease expires and the standby takes over, calls fail UNAVAILABLE (no server
        # reports SERVING); then the same channel reaches the new owner.
        attempts = 0
        last = ""
        while True:
            attempts += 1
            try:
                put_durable(b"failover", b"standby", timeout=1)
                break
            except grpc.RpcError as err:
                assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), err
                last = f"{err.code()}: {err.details()}"
            assert time.monotonic() - killed <= TAKEOVER_BOUND_S, (
                f"no Put succeeded within {TAKEOVER_BOUND_S}s of the owner's SIGKILL "
                f"({attempts} attempts, last: {last})"
            )
            time.sleep(0.05)
        print(
            f"first Put through the new owner {time.monotonic() - killed:.3f}s after the SIGKILL "
            f"({attempts} attempts, last error: {last})"
        )
        assert health_status(standby.channel) == HEALTH_SERVING
        for i in range(20):
            put_durable(b"b%02d" % i, b"standby-%d" % i)

        # Every acknowledged Put, the owner's and the new owner's, reads back through the channel.
        for key, value in acked.items():
            reply = stub.Get(pb.GetRequest(partition=PARTITION, key=key), timeout=CALL_TIMEOUT_S)
            assert reply.HasField("value") and reply.value == value, (key, reply)
    finally:
        channel.close()
