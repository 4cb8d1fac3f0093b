"""A Python client for the sipd Management Interface over gRPC (sipd.mi.v1.Management).

    from sipd_mi import Client, MiError

    with Client("127.0.0.1:8090") as client:
        reply = client.execute("get_statistics", "core:")
        for node in reply.nodes:
            print(node.name, node.value)
        try:
            client.execute("help", "nosuchcmd")
        except MiError as error:
            print(error.code, error.reason)          # 404 unknown MI command
        for depth, node in client.stream("ul_dump"):  # as the command flushes
            print("\\t" * depth + node.line())
        with client.session() as session:             # many commands, one stream
            futures = [session.submit("get_statistics", name) for name in names]
        for event in client.subscribe("E_UL_AOR_INSERT"):      # sipd_mi.live
            print(event.seq, event.params["aor"])
        for sample in client.watch_statistics("core:", interval=1):
            print([(s.name, s.rate_per_second) for s in sample.statistics])

Replies keep the MI model (spec section 1.3): a code, a reason and a tree of nodes, each
with a name, a value, ordered attributes and kids. An empty name or value means absent.

Errors: a reply whose MI code is not 2xx raises MiError (code, reason and, when the
server sent it, the whole error reply); so does an unknown command (code 500, outcome
"not-available") and a handler that returned nothing (code 500, outcome "failed").
Problems below MI (server down, deadline) raise grpc.RpcError unchanged.

Thread-safety: a Client may be shared between threads (gRPC channels are thread-safe).
"""

import collections
import dataclasses
import os
import urllib.parse
from typing import Dict, Iterator, List, Optional, Tuple

import grpc

from sipd_mi._stubs import mi_pb2, mi_pb2_grpc

# Trailing metadata set by the server on every Execute/ExecuteStream (see mi.proto).
_MD_CODE = "sipd-mi-code"
_MD_REASON = "sipd-mi-reason"
_MD_OUTCOME = "sipd-mi-outcome"
_MD_REPLY_BIN = "sipd-mi-reply-bin"


@dataclasses.dataclass
class Node:
    """One node of a reply tree."""

    name: str = ""
    value: str = ""
    # Ordered (name, value) pairs; MI allows repeated names, so this is not a dict.
    attributes: List[Tuple[str, str]] = dataclasses.field(default_factory=list)
    kids: List["Node"] = dataclasses.field(default_factory=list)
    is_array: bool = False

    def attribute(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The value of the first attribute called `name`."""
        for attr_name, attr_value in self.attributes:
            if attr_name == name:
                return attr_value
        return default

    def line(self) -> str:
        """The node's own line in the MI text layout (spec 2), without indent or LF."""
        text = f"{self.name}:: " if self.name else ""
        text += self.value
        for attr_name, attr_value in self.attributes:
            text += f" {attr_name}={attr_value}"
        return text

    def to_dict(self) -> Dict:
        return {
            "name": self.name,
            "value": self.value,
            "attributes": [list(pair) for pair in self.attributes],
            "kids": [kid.to_dict() for kid in self.kids],
            "is_array": self.is_array,
        }


@dataclasses.dataclass
class Reply:
    """A whole MI reply."""

    code: int = 200
    reason: str = "OK"
    nodes: List[Node] = dataclasses.field(default_factory=list)
    is_array: bool = False

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    def to_text(self, indent: str = "\t") -> str:
        """The reply as FIFO prints it: status line, one line per node (spec 2)."""
        lines = [f"{self.code} {self.reason}"]

        def walk(nodes: List[Node], depth: int) -> None:
            for node in nodes:
                lines.append(indent * depth + node.line())
                walk(node.kids, depth + 1)

        walk(self.nodes, 0)
        return "\n".join(lines) + "\n"

    def to_dict(self) -> Dict:
        return {
            "code": self.code,
            "reason": self.reason,
            "is_array": self.is_array,
            "nodes": [node.to_dict() for node in self.nodes],
        }


class MiError(Exception):
    """The command ran (or was looked up) and MI answered with a non-2xx code."""

    def __init__(self, code: int, reason: str, reply: Optional[Reply] = None, outcome: str = ""):
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason
        self.reply = reply if reply is not None else Reply(code=code, reason=reason)
        # "reply", "not-available" or "failed" (see mi.proto / service docs).
        self.outcome = outcome


def _node_from_proto(message) -> Node:
    return Node(
        name=message.name,
        value=message.value,
        attributes=[(a.name, a.value) for a in message.attributes],
        kids=[_node_from_proto(kid) for kid in message.kids],
        is_array=message.is_array,
    )


def reply_from_proto(message) -> Reply:
    return Reply(
        code=message.code,
        reason=message.reason,
        nodes=[_node_from_proto(node) for node in message.nodes],
        is_array=message.is_array,
    )


def _metadata(error: grpc.RpcError) -> Dict[str, object]:
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return {key: value for key, value in (trailing or ())}


def _mi_error_or_none(error: grpc.RpcError) -> Optional[MiError]:
    """Turns a gRPC error that carries an MI answer into MiError (else None)."""
    metadata = _metadata(error)
    if _MD_CODE not in metadata:
        return None
    code = int(metadata[_MD_CODE])
    reason = urllib.parse.unquote(str(metadata.get(_MD_REASON, "")), errors="replace")
    reply = None
    if _MD_REPLY_BIN in metadata:
        message = mi_pb2.Reply()
        message.ParseFromString(metadata[_MD_REPLY_BIN])
        reply = reply_from_proto(message)
        reason = reply.reason or reason
    return MiError(code, reason, reply, str(metadata.get(_MD_OUTCOME, "")))


class StreamedReply:
    """The reply of Client.stream(): iterate it for (depth, Node) pairs in pre-order,
    as the server flushes them (nodes come without kids; a node at depth d is a kid of
    the last node seen at depth d-1). `code`, `reason` and `is_array` are known once the
    first chunk arrived (reading them waits for it)."""

    def __init__(self, call):
        self._call = call
        self._chunks = iter(call)
        self._pending = collections.deque()
        self._status_seen = False
        self._code = 0
        self._reason = ""
        self._is_array = False

    def _next_chunk(self) -> bool:
        try:
            chunk = next(self._chunks)
        except StopIteration:
            return False
        except grpc.RpcError as error:
            mi_error = _mi_error_or_none(error)
            if mi_error is not None:
                raise mi_error from error
            raise
        if chunk.has_status:
            self._status_seen = True
            self._code, self._reason, self._is_array = chunk.code, chunk.reason, chunk.is_array
        self._pending.extend(chunk.nodes)
        return True

    def _ensure_status(self) -> None:
        while not self._status_seen and self._next_chunk():
            pass

    @property
    def code(self) -> int:
        self._ensure_status()
        return self._code

    @property
    def reason(self) -> str:
        self._ensure_status()
        return self._reason

    @property
    def is_array(self) -> bool:
        self._ensure_status()
        return self._is_array

    def __iter__(self) -> Iterator[Tuple[int, Node]]:
        while True:
            while self._pending:
                flat = self._pending.popleft()
                yield flat.depth, Node(
                    name=flat.name,
                    value=flat.value,
                    attributes=[(a.name, a.value) for a in flat.attributes],
                    is_array=flat.is_array,
                )
            if not self._next_chunk():
                return

    def collect(self) -> Reply:
        """Reads the rest of the stream and rebuilds the tree."""
        reply = Reply()
        stack: List[List[Node]] = [reply.nodes]
        for depth, node in self:
            del stack[depth + 1 :]
            stack[depth].append(node)
            stack.append(node.kids)
        reply.code, reply.reason, reply.is_array = self.code, self.reason, self.is_array
        return reply

    def cancel(self) -> None:
        self._call.cancel()


def default_run_dir() -> str:
    """Where sipd keeps its files: $SIPD_RUN_DIR, else $XDG_RUNTIME_DIR/sipd, else
    /tmp/sipd-<uid> (as sipd/api/paths.h)."""
    run_dir = os.environ.get("SIPD_RUN_DIR", "")
    if run_dir:
        return run_dir
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg.startswith("/"):
        return xdg + "/sipd"
    return "/tmp/sipd-%d" % os.geteuid()


def _run_dir_serves(run_dir: str, target: str) -> bool:
    """Whether the sipd of run_dir serves gRPC at target (its listeners file names it): its
    admin token goes to that sipd only, not to another local sipd, which would refuse it."""
    wanted = "127.0.0.1:" + target[len("localhost:"):] if target.startswith("localhost:") else target
    try:
        with open(os.path.join(run_dir, "listeners"), "r", encoding="utf-8") as f:
            for line in f:
                words = line.split()
                if len(words) >= 3 and words[0] == "mi_grpc":
                    if words[2] == wanted or "unix:" + words[2] == wanted:
                        return True
    except OSError:
        pass
    return False


def _read_first_line(path: str) -> str:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return f.readline().strip()
    except OSError:
        return ""


def _is_local(target: str) -> bool:
    return target.startswith(("unix:", "127.", "localhost:", "[::1]:"))


class _AuthorizationInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer TOKEN` to every call (typed stubs included)."""

    def __init__(self, token: str):
        self._header = ("authorization", "Bearer " + token)

    def _details(self, details):
        metadata = list(details.metadata or []) + [self._header]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else (
            _CallDetails(details, metadata))

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


class _CallDetails(grpc.ClientCallDetails):
    def __init__(self, details, metadata):
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


def make_channel(
    target: str,
    token: Optional[str] = None,
    token_file: Optional[str] = None,
    tls_ca: Optional[str] = None,
    cert: Optional[str] = None,
    key: Optional[str] = None,
) -> grpc.Channel:
    """A channel to mi_grpc with sipd's credentials: TLS when tls_ca or cert is given,
    and a bearer token: `token`, else the first line of `token_file`, else
    $SIPD_MI_TOKEN, else the admin token in default_run_dir() when it is readable (sent
    only to a local target or over TLS). Without a token sipd lets local callers read."""
    tls = bool(tls_ca or cert)
    if not token and token_file:
        token = _read_first_line(token_file)
        if not token:
            raise ValueError("no token in %s" % token_file)
    if not token:
        token = os.environ.get("SIPD_MI_TOKEN", "")
    if not token and (tls or _is_local(target)) and _run_dir_serves(default_run_dir(), target):
        token = _read_first_line(os.path.join(default_run_dir(), "admin.token"))
    if tls:

        def read(path):
            if not path:
                return None
            with open(path, "rb") as f:
                return f.read()

        channel = grpc.secure_channel(
            target,
            grpc.ssl_channel_credentials(
                root_certificates=read(tls_ca), private_key=read(key), certificate_chain=read(cert)
            ),
        )
    else:
        channel = grpc.insecure_channel(target)
    if token:
        channel = grpc.intercept_channel(channel, _AuthorizationInterceptor(token))
    return channel


class Client:
    """A connection to one sipd's mi_grpc (target "host:port"); see make_channel() for
    the credentials it sends."""

    def __init__(
        self,
        target: str,
        timeout: Optional[float] = 30.0,
        channel: Optional[grpc.Channel] = None,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        tls_ca: Optional[str] = None,
        cert: Optional[str] = None,
        key: Optional[str] = None,
    ):
        self.target = target
        self.timeout = timeout
        self._channel = (
            channel
            if channel is not None
            else make_channel(target, token, token_file, tls_ca, cert, key)
        )
        self._stub = mi_pb2_grpc.ManagementStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _request(command: str, params) -> object:
        return mi_pb2.ExecuteRequest(command=command, params=[str(p) for p in params])

    def execute(self, command: str, *params, check: bool = True) -> Reply:
        """Runs `command` with positional `params` and returns the whole reply.

        A non-2xx MI answer raises MiError, or with check=False is returned as a Reply
        (the server's error reply when it sent one, else code and reason only).
        """
        try:
            return reply_from_proto(
                self._stub.Execute(self._request(command, params), timeout=self.timeout)
            )
        except grpc.RpcError as error:
            mi_error = _mi_error_or_none(error)
            if mi_error is None:
                raise
            if check:
                raise mi_error from error
            return mi_error.reply

    def stream(self, command: str, *params) -> StreamedReply:
        """Runs `command` and returns its reply as it is produced (for large replies)."""
        call = self._stub.ExecuteStream(self._request(command, params), timeout=self.timeout)
        return StreamedReply(call)

    def session(self, timeout: Optional[float] = None):
        """Opens a Session: many commands pipelined on one stream (see sipd_mi.session).
        `timeout` bounds the whole session (default: none)."""
        from sipd_mi.session import Session

        return Session(self._stub, timeout=timeout)

    def subscribe(self, *events: str, filter: Optional[Dict[str, str]] = None,
                  timeout: Optional[float] = None):
        """Events as they are raised (sipd.events.v1 Subscribe): an iterator of
        sipd_mi.live.Event that is also a context manager; wait_active() returns once
        the subscription is in place. `filter`: parameter values that must match.
        `timeout` bounds the whole stream (default: none)."""
        from sipd_mi import live

        return live.subscribe(self._channel, events, filter=filter, timeout=timeout)

    def watch_statistics(self, *names: str, interval: float = 1.0, on_change: bool = False,
                         timeout: Optional[float] = None):
        """Samples of the statistics every `interval` seconds (>= 0.1) with counters'
        rates (sipd.events.v1 WatchStatistics): an iterator of sipd_mi.live.Sample.
        `names` as get_statistics takes them ("core:", "rcv_requests", "all"; none:
        all)."""
        from sipd_mi import live

        return live.watch_statistics(
            self._channel, names, interval=interval, on_change=on_change, timeout=timeout
        )

    def list_commands(self) -> List[Dict]:
        """Every loaded command, in registration order (as `which`)."""
        response = self._stub.ListCommands(mi_pb2.ListCommandsRequest(), timeout=self.timeout)
        return [_command_info(info) for info in response.commands]

    def describe(self, command: str) -> Dict:
        """One command's declaration; grpc.RpcError NOT_FOUND if it is not loaded."""
        info = self._stub.DescribeCommand(
            mi_pb2.DescribeCommandRequest(command=command), timeout=self.timeout
        )
        return _command_info(info)


def _command_info(info) -> Dict:
    arity = {1: "required", 2: "optional", 3: "repeated"}
    return {
        "name": info.name,
        "module": info.module,
        "help": info.help,
        "parameters": [
            {"name": p.name, "arity": arity.get(p.arity, "unspecified"), "help": p.help}
            for p in info.parameters
        ],
        "no_input": info.no_input,
        "mutating": info.mutating,
        "async": getattr(info, "async"),
        "streaming": info.streaming,
        "calls": info.calls,
    }
