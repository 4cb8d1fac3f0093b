"""Many MI commands on one gRPC stream (sipd.mi.v1.Management/Session).

    from sipd_mi import Client

    with Client("127.0.0.1:8090") as client, client.session() as session:
        version = session.submit("version")                 # a Future, sent at once
        stats = session.submit("get_statistics", "core:")   # pipelined behind it
        late = session.submit("async_echo", "500", "pong")  # answered later, out of order
        print(version.result().nodes[0].value)
        dump = session.run("ul_dump", stream=True)          # chunks reassembled
        session.cancel(late)                                 # its future: SessionRequestError

Each request carries an id chosen here; the server answers every request exactly once,
in the order the replies are ready (not the order of the requests), several results per
message when they are ready together. That removes the per-call HTTP/2 and gRPC cost for
clients that poll many commands.

A future resolves to a Reply (2xx), or raises MiError (the command ran or was looked up
and MI answered a non-2xx code; `error.reply` is the whole reply), or
SessionRequestError (the request never reached MI: invalid, too many in flight,
cancelled, timed out; `error.status` is a grpc.StatusCode). If the whole session ends
(server cut it, deadline, channel closed), every future still waiting raises the
grpc.RpcError, or SessionClosed when the session was closed normally.

Thread-safety: submit(), run() and cancel() may be called from any thread.
"""

import concurrent.futures
import itertools
import queue
import threading
from typing import Dict, List, Optional

import grpc

from sipd_mi._stubs import mi_pb2
from sipd_mi.client import MiError, Node, Reply, reply_from_proto

_STATUS_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class SessionRequestError(Exception):
    """A request of a Session that did not reach MI (see the module docstring)."""

    def __init__(self, status: grpc.StatusCode, message: str):
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message


class SessionClosed(Exception):
    """The session ended before this request was answered."""


class _ChunkTree:
    """Rebuilds a reply from ReplyChunk messages (pre-order nodes with depths)."""

    def __init__(self):
        self.reply = Reply()
        self._stack: List[List[Node]] = [self.reply.nodes]

    def add(self, chunk) -> None:
        if chunk.has_status:
            self.reply.code, self.reply.reason = chunk.code, chunk.reason
            self.reply.is_array = chunk.is_array
        for flat in chunk.nodes:
            node = Node(
                name=flat.name,
                value=flat.value,
                attributes=[(a.name, a.value) for a in flat.attributes],
                is_array=flat.is_array,
            )
            del self._stack[flat.depth + 1 :]
            self._stack[flat.depth].append(node)
            self._stack.append(node.kids)


def _status(number: int) -> grpc.StatusCode:
    return _STATUS_BY_NUMBER.get(number, grpc.StatusCode.UNKNOWN)


def result_outcome(result, chunks: Optional[_ChunkTree] = None):
    """The value of a final SessionResult: a Reply, or the exception to raise."""
    status = _status(result.status)
    if chunks is not None:
        reply = chunks.reply
    elif result.HasField("reply"):
        reply = reply_from_proto(result.reply)
    else:
        reply = None
    if status == grpc.StatusCode.OK:
        return reply if reply is not None else Reply()
    if result.outcome:  # MI answered (or looked the command up): an MI error
        if reply is None:
            reply = Reply(code=500, reason=result.message)
        return MiError(reply.code, reply.reason or result.message, reply, result.outcome)
    return SessionRequestError(status, result.message)


class Session:
    """One Session call; see the module docstring. Use Client.session() to make one."""

    def __init__(self, stub, timeout: Optional[float] = None):
        self._requests: "queue.Queue" = queue.Queue()
        self._lock = threading.Lock()
        self._pending: Dict[int, concurrent.futures.Future] = {}
        self._chunks: Dict[int, _ChunkTree] = {}
        self._ids = itertools.count()
        self._closed = False
        self._call = stub.Session(self._request_iterator(), timeout=timeout)
        self._reader = threading.Thread(target=self._read, name="sipd_mi session", daemon=True)
        self._reader.start()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _request_iterator(self):
        while True:
            request = self._requests.get()
            if request is None:
                return
            yield request

    def submit(
        self, command: str, *params, stream: bool = False, timeout_ms: int = 0
    ) -> concurrent.futures.Future:
        """Sends `command` with positional `params`; returns a Future of its Reply.

        stream=True: the reply comes in chunks (for ul_dump and other large replies) and
        is reassembled. timeout_ms: this request's own deadline on the server.
        """
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise SessionClosed("the session is closed")
            request_id = next(self._ids) & 0xFFFFFFFF
            future.request_id = request_id
            self._pending[request_id] = future
            if stream:
                self._chunks[request_id] = _ChunkTree()
        self._requests.put(
            mi_pb2.SessionRequest(
                id=request_id,
                command=command,
                params=[str(p) for p in params],
                stream=stream,
                timeout_ms=timeout_ms,
            )
        )
        return future

    def run(self, command: str, *params, check: bool = True, stream: bool = False) -> Reply:
        """submit() and wait. With check=False an MI error is returned as its Reply."""
        try:
            return self.submit(command, *params, stream=stream).result()
        except MiError as error:
            if check:
                raise
            return error.reply

    def cancel(self, future: concurrent.futures.Future) -> None:
        """Asks the server to cancel a submitted request (its async wait or stream ends);
        its future then raises SessionRequestError(CANCELLED). A request already answered
        is left as it is."""
        self._requests.put(mi_pb2.SessionRequest(id=future.request_id, cancel=True))

    def close(self) -> None:
        """Says that no more requests come, waits for the answers of those sent, and ends
        the session."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._requests.put(None)
        self._reader.join()

    def abort(self) -> None:
        """Cancels the whole session: every request still waiting is cancelled."""
        self._call.cancel()
        self.close()

    def _read(self) -> None:
        error: Exception = SessionClosed("the session ended before the reply")
        try:
            for message in self._call:
                for result in message.results:
                    self._deliver(result)
        except grpc.RpcError as rpc_error:
            error = rpc_error
        with self._lock:
            self._closed = True
            waiting = list(self._pending.values())
            self._pending.clear()
            self._chunks.clear()
        self._requests.put(None)
        for future in waiting:
            if not future.done():
                future.set_exception(error)

    def _deliver(self, result) -> None:
        with self._lock:
            chunks = self._chunks.get(result.id)
            if result.HasField("chunk") and chunks is not None:
                chunks.add(result.chunk)
            if not result.done:
                return
            future = self._pending.pop(result.id, None)
            self._chunks.pop(result.id, None)
        if future is None or future.done():
            return
        value = result_outcome(result, chunks)
        if isinstance(value, Exception):
            future.set_exception(value)
        else:
            future.set_result(value)
