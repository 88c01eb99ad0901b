"""Writer: a pipelined writer over one Write stream of the metadata service.

`put`, `remove` and `commit` send a request and return at once with a
`concurrent.futures.Future` settled by the server's answer to that request; at most `window`
requests are in flight, and a call waits for a free slot beyond that. A thread of grpcio feeds the
stream from a queue, and a thread of the writer settles the futures from the answers.

Promises (the same as the TypeScript writer, clients/ts/metadata-writer.ts):

- Requests are sent, and applied by the server, in the order the calls return (calls from one
  thread: the order made), so the versions of their answers never decrease in that order.
  Answers may arrive out of order; each settles its own future.
- A durable request is answered after the fsync of the sync that holds it, with its version.
- A failed request settles with a `WriteError` (`code()`, `details()`, as grpc.RpcError) and the
  stream goes on.
- If the stream ends first (server shutdown, broken connection, `cancel()`, the timeout), every
  request not yet answered fails with `OutcomeUnknownError` (a `WriteError` with the stream's
  code): it may or may not have been committed, as a unary call whose deadline passed.

Usage:

    with Writer(stub, window=256, partition="p") as writer:
        futures = [writer.put(key, value) for key in keys]
        for future in futures:
            future.result()          # durable once it returns
    # leaving the block half-closes and waits for every answer and the end of the stream
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import grpc

from commonware_metadata.gen.commonware.metadata.v1 import metadata_pb2 as pb
from commonware_metadata.gen.commonware.metadata.v1.metadata_pb2_grpc import MetadataServiceStub

DEFAULT_WINDOW = 256

_CODES: Dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


class WriteError(grpc.RpcError):
    """The status of one request of a Writer: `code()` and `details()`, as grpc.RpcError."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class OutcomeUnknownError(WriteError):
    """The stream ended before this request was answered: it may or may not have been committed."""


def _code_of(error: Optional[grpc.RpcError]) -> grpc.StatusCode:
    code = getattr(error, "code", None)
    result = code() if callable(code) else None
    return result if isinstance(result, grpc.StatusCode) else grpc.StatusCode.UNKNOWN


def _details_of(error: Optional[grpc.RpcError]) -> str:
    details = getattr(error, "details", None)
    result = details() if callable(details) else None
    return result if isinstance(result, str) else str(error)


class Writer:
    """A pipelined writer over one Write stream; see the module docstring. Thread-safe."""

    def __init__(
        self,
        stub: MetadataServiceStub,
        *,
        window: int = DEFAULT_WINDOW,
        partition: str = "",
        durability: "pb.Durability.ValueType" = pb.DURABILITY_DURABLE,
        timeout: Optional[float] = None,
        metadata: Optional[Sequence[Tuple[str, str]]] = None,
    ) -> None:
        """Opens the stream. `window`: most requests in flight; `partition` and `durability`:
        defaults of the requests; `timeout`: deadline of the whole stream, in seconds."""
        self._window = max(1, window)
        self._partition = partition
        self._durability = durability
        # Requests to send, in order; None half-closes.
        self._requests: "queue.Queue[Optional[pb.WriteRequest]]" = queue.Queue()
        self._cond = threading.Condition()
        # Requests sent and not yet answered: id -> (future, the response field it resolves with).
        self._in_flight: Dict[int, Tuple[Future, str]] = {}
        self._next_id = 0
        self._closing = False
        self._ended = False
        # The stream's error, None once it ended with OK.
        self._end_error: Optional[grpc.RpcError] = None
        self._done = threading.Event()
        self._call = stub.Write(self._feed(), timeout=timeout, metadata=metadata)
        self._reader = threading.Thread(target=self._receive, name="metadata-writer", daemon=True)
        self._reader.start()

    def __enter__(self) -> "Writer":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.cancel()

    @property
    def pending(self) -> int:
        """Requests sent and not yet answered."""
        with self._cond:
            return len(self._in_flight)

    def put(
        self,
        key: bytes,
        value: bytes,
        *,
        partition: Optional[str] = None,
        durability: "Optional[pb.Durability.ValueType]" = None,
    ) -> "Future[pb.PutResponse]":
        """Stores `value` under `key`; the future resolves with the PutResponse (a durable put:
        after the fsync of the sync that holds it, with that version)."""
        request = pb.WriteRequest(
            put=pb.PutRequest(
                partition=self._partition if partition is None else partition,
                key=key,
                value=value,
                durability=self._durability if durability is None else durability,
            )
        )
        return self._send(request, "put")

    def remove(
        self,
        key: bytes,
        *,
        partition: Optional[str] = None,
        durability: "Optional[pb.Durability.ValueType]" = None,
    ) -> "Future[pb.RemoveResponse]":
        """Removes `key`; the future resolves with the RemoveResponse."""
        request = pb.WriteRequest(
            remove=pb.RemoveRequest(
                partition=self._partition if partition is None else partition,
                key=key,
                durability=self._durability if durability is None else durability,
            )
        )
        return self._send(request, "remove")

    def commit(
        self,
        mutations: List[pb.Mutation],
        preconditions: Sequence[pb.Precondition] = (),
        *,
        partition: Optional[str] = None,
        durability: "Optional[pb.Durability.ValueType]" = None,
    ) -> "Future[pb.CommitResponse]":
        """Applies `mutations` atomically if every precondition holds (as the unary Commit); a
        precondition that does not hold fails the future with FAILED_PRECONDITION."""
        request = pb.WriteRequest(
            commit=pb.CommitRequest(
                partition=self._partition if partition is None else partition,
                mutations=mutations,
                preconditions=list(preconditions),
                durability=self._durability if durability is None else durability,
            )
        )
        return self._send(request, "commit")

    def close(self, timeout: Optional[float] = None) -> None:
        """Half-closes the stream (later calls fail with FAILED_PRECONDITION), waits until every
        request is answered and the server ended the stream. Raises the stream's error as a
        WriteError if it did not end with OK, TimeoutError if `timeout` seconds pass first."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._requests.put(None)
                # Calls waiting for a slot fail now instead of after the next answer.
                self._cond.notify_all()
        if not self._done.wait(timeout):
            raise TimeoutError(f"the Write stream did not end within {timeout} s")
        if self._end_error is not None:
            raise WriteError(_code_of(self._end_error), _details_of(self._end_error))

    def cancel(self) -> None:
        """Cancels the stream: every request not yet answered fails with OutcomeUnknownError."""
        self._call.cancel()

    def _send(self, request: pb.WriteRequest, kind: str) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        error: Optional[WriteError] = None
        with self._cond:
            while len(self._in_flight) >= self._window and not self._ended and not self._closing:
                self._cond.wait()
            if self._closing or (self._ended and self._end_error is None):
                error = WriteError(grpc.StatusCode.FAILED_PRECONDITION, "the writer is closed")
            elif self._ended:
                error = WriteError(
                    _code_of(self._end_error), "the stream ended before this request was sent: not committed"
                )
            else:
                self._next_id += 1
                request.id = self._next_id
                self._in_flight[request.id] = (future, kind)
                # Under the lock: the queue's order is the order of the ids.
                self._requests.put(request)
        if error is not None:
            future.set_exception(error)
        return future

    def _feed(self) -> Iterator[pb.WriteRequest]:
        """The request iterator grpcio consumes; ends (half-close) at None."""
        while True:
            request = self._requests.get()
            if request is None:
                return
            yield request

    def _receive(self) -> None:
        error: Optional[grpc.RpcError] = None
        try:
            for response in self._call:
                self._answer(response)
        except grpc.RpcError as err:
            error = err
        self._end(error)

    def _answer(self, response: pb.WriteResponse) -> None:
        with self._cond:
            entry = self._in_flight.pop(response.id, None)
            self._cond.notify()
        if entry is None:
            return
        future, kind = entry
        if response.status.code != 0:
            code = _CODES.get(response.status.code, grpc.StatusCode.UNKNOWN)
            future.set_exception(WriteError(code, response.status.message))
        else:
            future.set_result(getattr(response, kind))

    def _end(self, error: Optional[grpc.RpcError]) -> None:
        with self._cond:
            self._ended = True
            self._end_error = error
            unanswered = [future for future, _ in self._in_flight.values()]
            self._in_flight.clear()
            self._cond.notify_all()
        # Unblock grpcio's thread if it still waits for a request.
        self._requests.put(None)
        if error is None:
            reason = OutcomeUnknownError(
                grpc.StatusCode.UNAVAILABLE, "the stream ended before this request was answered: outcome unknown"
            )
        else:
            reason = OutcomeUnknownError(_code_of(error), f"{_details_of(error)}: outcome unknown")
        for future in unanswered:
            future.set_exception(reason)
        self._done.set()
