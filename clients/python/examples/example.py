"""Uses the generated Python client of MetadataService against a running server.

A Put, a Get, an atomic Commit batch, a Keys listing by prefix, and a Commit whose precondition
fails (FAILED_PRECONDITION). It can run any number of times on the same data.

    npm start -- --data-dir /tmp/metadata-example --metrics-listen off   # in another terminal
    python clients/python/examples/example.py --addr 127.0.0.1:50051
"""

from __future__ import annotations

import argparse
import sys

import grpc

from commonware_metadata import MetadataServiceStub, metadata_pb2 as pb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="127.0.0.1:50051", help="server address (host:port)")
    parser.add_argument("--partition", default="example", help="partition to use")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline of each call, in seconds")
    args = parser.parse_args()
    partition, timeout = args.partition, args.timeout

    with grpc.insecure_channel(args.addr) as channel:
        stub = MetadataServiceStub(channel)

        # Put (durable by default: answered after the fsync).
        put = stub.Put(pb.PutRequest(partition=partition, key=b"greeting", value=b"hello, world"), timeout=timeout)
        previous = repr(put.previous.decode()) if put.HasField("previous") else "none"
        print(f"put greeting (previous {previous}) at version {put.version}")

        # Get: the value field is absent when the key is.
        got = stub.Get(pb.GetRequest(partition=partition, key=b"greeting"), timeout=timeout)
        if not got.HasField("value"):
            print("get: greeting is absent", file=sys.stderr)
            return 1
        print(f"get greeting = {got.value.decode()!r} (version {got.version})")

        # Commit: puts and removes applied atomically by one sync, if the preconditions hold.
        committed = stub.Commit(
            pb.CommitRequest(
                partition=partition,
                mutations=[
                    pb.Mutation(put=pb.Mutation.Put(key=b"user/1", value=b"alice")),
                    pb.Mutation(put=pb.Mutation.Put(key=b"user/2", value=b"bob")),
                    pb.Mutation(put=pb.Mutation.Put(key=b"user/3", value=b"carol")),
                    pb.Mutation(remove=pb.Mutation.Remove(key=b"user/0")),
                ],
                preconditions=[pb.Precondition(key=b"greeting", present=True)],
            ),
            timeout=timeout,
        )
        print(f"commit applied at version {committed.version}")

        # Keys: a server stream of chunks, keys in ascending byte order.
        keys, entries = [], []
        for chunk in stub.Keys(
            pb.KeysRequest(partition=partition, prefix=b"user/", include_values=True), timeout=timeout
        ):
            for key, value in zip(chunk.keys, chunk.values):
                keys.append(key.decode())
                entries.append(f"{key.decode()}={value.decode()}")
        print(f"keys with prefix {'user/'!r}: {' '.join(keys)}")
        print(f"entries: {', '.join(entries)}")

        # A Commit whose precondition does not hold changes nothing: FAILED_PRECONDITION.
        try:
            stub.Commit(
                pb.CommitRequest(
                    partition=partition,
                    mutations=[pb.Mutation(put=pb.Mutation.Put(key=b"greeting", value=b"overwritten"))],
                    preconditions=[pb.Precondition(key=b"greeting", absent=True)],
                ),
                timeout=timeout,
            )
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            print(f"precondition failed as expected: {err.details()}")
        else:
            print("conditional commit applied, but its precondition does not hold", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
