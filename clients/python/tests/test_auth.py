"""Bearer tokens and mutual TLS through `commonware_metadata.connect`.

Against a server started with --auth-tokens: no token and an unknown token get UNAUTHENTICATED; a
read token reads but cannot write (PERMISSION_DENIED naming the partition and the access); a
write token writes within its grant. Against a server with --tls-client-ca: a client certificate
holds its grants, a token over TLS decides over it, and no certificate fails the handshake.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import grpc
import pytest

from commonware_metadata import MetadataServiceStub, connect
from commonware_metadata import metadata_pb2 as pb
from conftest import CALL_TIMEOUT_S, REPO_ROOT, Server

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


def _openssl(directory: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)


def _issue(directory: Path, name: str, subject: str, extensions: str, ca: Optional[str] = None) -> None:
    """Writes name.crt and name.key (P-256): self-signed when `ca` is None, else signed by it."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key"]
    if ca is None:
        _openssl(directory, "req", "-x509", *ec, "-out", f"{name}.crt", "-days", "2", "-subj", subject)
        return
    (directory / f"{name}.ext").write_text(extensions)
    _openssl(directory, "req", *ec, "-out", f"{name}.csr", "-subj", subject)
    _openssl(directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
             "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_mutual_tls(tmp_path: Path) -> None:
    """`connect` with a client certificate (and with a token over TLS) against --tls-client-ca."""
    _issue(tmp_path, "ca", "/CN=py test CA", "")
    _issue(tmp_path, "server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n", ca="ca")
    _issue(tmp_path, "client", "/CN=py-client", "extendedKeyUsage=clientAuth\n", ca="ca")
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tokens": [
        {"name": "py-client", "client_cert": "CN=py-client", "grants": [{"partitions": "certs", "access": "write"}]},
        {"name": "admin", "sha256": _sha256(WRITE_TOKEN), "grants": [{"partitions": "*", "access": "admin"}]},
    ]}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("METADATA_")}
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [os.environ.get("NODE", "node"), "--import", "tsx", "server/main.ts",
             "--data-dir", str(tmp_path / "data"), "--listen", f"127.0.0.1:{port}", "--metrics-listen", "off",
             "--tls-cert", str(tmp_path / "server.crt"), "--tls-key", str(tmp_path / "server.key"),
             "--tls-client-ca", str(tmp_path / "ca.crt"), "--auth-tokens", str(tokens)],
            cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "listening on" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        ca = (tmp_path / "ca.crt").read_bytes()
        cert = (tmp_path / "client.crt").read_bytes()
        key = (tmp_path / "client.key").read_bytes()
        target = f"localhost:{port}"
        put = pb.PutRequest(partition="certs", key=b"k", value=b"v")
        other = pb.PutRequest(partition="other", key=b"k", value=b"v")
        with connect(target, root_certificates=ca, certificate_chain=cert, private_key=key) as channel:
            stub = MetadataServiceStub(channel)
            assert stub.Put(put, timeout=CALL_TIMEOUT_S).version >= 1
            assert _code(lambda: stub.Put(other, timeout=CALL_TIMEOUT_S)) == grpc.StatusCode.PERMISSION_DENIED
        with connect(target, token=WRITE_TOKEN, root_certificates=ca, certificate_chain=cert, private_key=key) as channel:
            assert MetadataServiceStub(channel).Put(other, timeout=CALL_TIMEOUT_S).version >= 1
        with connect(target, root_certificates=ca) as channel:
            refused = _code(lambda: MetadataServiceStub(channel).Put(put, timeout=5))
            assert refused == grpc.StatusCode.UNAVAILABLE
    finally:
        proc.kill()
        proc.wait(30)
