"""Test harness: runs the real TypeScript server against the installed Python client.

The server is `node --import tsx server/main.ts`, started from the repository root (found
relative to this file) on a free 127.0.0.1 port, with its data in a pytest temporary directory.
A server is ready once it answers a call; a standby of the etcd backend (`serving=False`) once it
answers a gRPC health check at all, since it refuses calls and reports NOT_SERVING.
`Server.stop()` sends SIGTERM and requires exit status 0; every server is killed at the end of its
test in any case, and on Linux it also dies with the pytest process (PR_SET_PDEATHSIG), so a
killed test run leaves no server behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import grpc
import pytest

from commonware_metadata import MetadataServiceStub, metadata_pb2

REPO_ROOT = Path(__file__).resolve().parents[3]
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
# Deadline of every RPC made by the tests.
CALL_TIMEOUT_S = 15.0
START_ATTEMPTS = 3

HEALTH_CHECK_METHOD = "/grpc.health.v1.Health/Check"
SERVICE_NAME = "commonware.metadata.v1.MetadataService"
# grpc.health.v1.HealthCheckResponse.ServingStatus values.
HEALTH_SERVING = 1
HEALTH_NOT_SERVING = 2

MAX_VALUE_BYTES = 4096
# Flags of every test server: a fixed:8 partition, a small value limit (to test the boundary
# cheaply) and a short flush interval (buffered writes commit quickly).
SERVER_FLAGS = [
    "--partition-key-codec",
    "fixed8=fixed:8",
    "--max-value-bytes",
    str(MAX_VALUE_BYTES),
    "--flush-interval-ms",
    "20",
]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the pytest process dies (Linux only)."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def health_status(channel: grpc.Channel, service: str = SERVICE_NAME, timeout: float = CALL_TIMEOUT_S) -> int:
    """The grpc.health.v1 Check status of `service` (HEALTH_SERVING, HEALTH_NOT_SERVING, ...).

    The two messages are encoded by hand, as the client ships no health stubs: the request is
    field 1 (string service), the response field 1 (enum status, omitted when 0 = UNKNOWN).
    """
    name = service.encode()
    assert len(name) < 128, "one-byte length prefix"
    reply = channel.unary_unary(HEALTH_CHECK_METHOD)(bytes([0x0A, len(name)]) + name, timeout=timeout)
    if reply == b"":
        return 0
    assert reply[0] == 0x08 and len(reply) == 2, f"unexpected HealthCheckResponse {reply!r}"
    return reply[1]


class Server:
    """One running server process with a channel and a stub connected to it."""

    def __init__(self, data_dir: Path, flags: List[str], serving: bool = True) -> None:
        self.data_dir = data_dir
        self.flags = list(flags)
        self.serving = serving
        self.addr = ""
        self.proc: Optional[subprocess.Popen] = None
        self.channel: Optional[grpc.Channel] = None
        self.stub: MetadataServiceStub
        self._log = tempfile.TemporaryFile()

    def output(self) -> str:
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def start(self) -> "Server":
        last = ""
        for _ in range(START_ATTEMPTS):
            error = self._try_start()
            if error is None:
                return self
            last = error
            if "EADDRINUSE" not in error:
                break
        raise RuntimeError(f"server did not start: {last}")

    def _try_start(self) -> Optional[str]:
        self.addr = f"127.0.0.1:{_free_port()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("METADATA_")}
        node = os.environ.get("NODE", "node")
        args = [
            node,
            "--import",
            "tsx",
            str(Path("server") / "main.ts"),
            "--data-dir",
            str(self.data_dir),
            "--listen",
            self.addr,
            "--metrics-listen",
            "off",
            *self.flags,
        ]
        self._log.seek(0)
        self._log.truncate()
        self.proc = subprocess.Popen(
            args,
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                return f"server exited with {self.proc.returncode} before serving:\n{self.output()}"
            if self._answers():
                break
            if time.monotonic() > deadline:
                self.kill()
                return f"server not serving on {self.addr} after {START_TIMEOUT_S}s:\n{self.output()}"
            time.sleep(0.05)
        self.channel = grpc.insecure_channel(self.addr)
        self.stub = MetadataServiceStub(self.channel)
        return None

    def _answers(self) -> bool:
        try:
            host, port = self.addr.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=1):
                pass
        except OSError:
            return False
        with grpc.insecure_channel(self.addr) as channel:
            if not self.serving:
                try:
                    health_status(channel, timeout=2)
                    return True
                except grpc.RpcError:
                    return False
            try:
                MetadataServiceStub(channel).ListPartitions(metadata_pb2.ListPartitionsRequest(), timeout=2)
                return True
            except grpc.RpcError as err:
                # A server with --auth-tokens answers, and refuses a call without a token.
                return err.code() == grpc.StatusCode.UNAUTHENTICATED

    def stop(self) -> None:
        """SIGTERM, then require exit status 0 within STOP_TIMEOUT_S."""
        assert self.proc is not None
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"server did not exit within {STOP_TIMEOUT_S}s of SIGTERM:\n{self.output()}")
        assert code == 0, f"server exited with {code} after SIGTERM:\n{self.output()}"

    def restart(self) -> "Server":
        """Stops with SIGTERM and starts a new server on the same data dir and flags."""
        began = time.monotonic()
        self.stop()
        stopped = time.monotonic()
        self.start()
        print(f"restart: SIGTERM to exit {stopped - began:.3f}s, start to serving {time.monotonic() - stopped:.3f}s")
        return self

    def kill(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT_S)


@pytest.fixture
def start_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Server]]:
    """Starts servers (data in tmp_path unless given); kills them all at the end of the test.

    `serving=False` waits only for a health answer, for a server that may start as a standby.
    """
    started: List[Server] = []

    def start(data_dir: Optional[Path] = None, flags: Optional[List[str]] = None, serving: bool = True) -> Server:
        directory = data_dir if data_dir is not None else tmp_path / f"data{len(started)}"
        directory.mkdir(parents=True, exist_ok=True)
        server = Server(directory, SERVER_FLAGS if flags is None else flags, serving)
        started.append(server)
        return server.start()

    yield start
    failed = getattr(request.node, "rep_call", None)
    for server in started:
        server.kill()
        if failed is not None and failed.failed:
            print(f"server {server.addr} output:\n{server.output()}")


@pytest.fixture
def server(start_server: Callable[..., Server]) -> Server:
    """A server with SERVER_FLAGS and a fresh data directory."""
    return start_server()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """Keeps each phase's report on the item, so fixtures can tell whether the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
