"""Channels to a server that requires a bearer token (--auth-tokens) or mutual TLS (--tls-client-ca).

    from commonware_metadata import MetadataServiceStub, connect

    with connect("db.example.com:50051", token=os.environ["METADATA_TOKEN"],
                 root_certificates=open("ca.pem", "rb").read(),
                 certificate_chain=open("me.pem", "rb").read(),
                 private_key=open("me.key", "rb").read()) as channel:
        stub = MetadataServiceStub(channel)

The token is sent as ``authorization: Bearer <token>`` metadata on every call (grpc's access-token
call credentials). gRPC sends call credentials only over a secure channel: without TLS material
the channel uses local credentials, which carry the token over plain TCP to a loopback address
only (127.0.0.1, ::1, localhost).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import grpc

__all__ = ["connect"]


def connect(
    target: str,
    *,
    token: Optional[str] = None,
    tls: bool = False,
    root_certificates: Optional[bytes] = None,
    certificate_chain: Optional[bytes] = None,
    private_key: Optional[bytes] = None,
    options: Optional[Sequence[Tuple[str, object]]] = None,
) -> grpc.Channel:
    """Opens a channel to `target`.

    TLS is used when `tls` is true or any PEM argument is given (`root_certificates`: the CA to
    trust, the system roots when None; `certificate_chain` and `private_key`: a client certificate
    for mutual TLS, both or neither). `token`, when given, goes with every call. Raises ValueError
    for a certificate without its key.
    """
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("certificate_chain and private_key go together")
    secure = tls or root_certificates is not None or certificate_chain is not None
    call_credentials = None if token is None else grpc.access_token_call_credentials(token)
    if secure:
        credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
    elif call_credentials is not None:
        credentials = grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP)
    else:
        return grpc.insecure_channel(target, options=options)
    if call_credentials is not None:
        credentials = grpc.composite_channel_credentials(credentials, call_credentials)
    return grpc.secure_channel(target, credentials, options=options)
