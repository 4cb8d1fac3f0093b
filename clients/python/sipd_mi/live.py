"""Live streams of sipd.events.v1.EventService: events as they are raised, statistics
samples with rates (proto/sipd/events/v1/events.proto).

    with Client("127.0.0.1:8090") as client:
        with client.subscribe("E_UL_AOR_INSERT", filter={"aor": "alice"}) as events:
            events.wait_active()            # the subscription is in place from here on
            for event in events:            # blocks; ends when cancelled or sipd stops
                print(event.seq, event.name, event.params["aor"], event.dropped_before)
        for sample in client.watch_statistics("core:", interval=0.5, on_change=True):
            for stat in sample.statistics:
                print(stat.group, stat.name, stat.value, stat.rate_per_second)

Both return iterators that are also context managers (leaving the block, or cancel(),
ends the call). A subscriber that reads too slowly loses events on the server: the
next event says how many (`dropped_before`; `seq` jumps by as much).
Errors of the stream (NOT_FOUND for an unknown event or statistic, INVALID_ARGUMENT,
PERMISSION_DENIED, UNAVAILABLE when sipd stops) raise grpc.RpcError from the iteration.
"""

import dataclasses
import datetime
import importlib
from typing import Dict, Iterator, List, Optional


def _stubs():
    # Imported on first use: the package is importable with the sipd.mi.v1 stubs alone.
    from sipd_mi import _stubs as _  # noqa: F401 (puts the stubs directory on sys.path)

    return (
        importlib.import_module("sipd.events.v1.events_pb2"),
        importlib.import_module("sipd.events.v1.events_pb2_grpc"),
    )


@dataclasses.dataclass
class Event:
    name: str
    time: datetime.datetime
    seq: int
    params: Dict[str, str]
    # Events lost (buffer full) since the previous message, reported on the first event
    # of the message that carried the count.
    dropped_before: int = 0


@dataclasses.dataclass
class Statistic:
    group: str
    name: str
    value: int
    kind: str  # "counter" or "gauge"
    delta: int
    rate_per_second: float


@dataclasses.dataclass
class Sample:
    time: datetime.datetime
    elapsed: float  # seconds since the previous sample taken (0 for the first)
    seq: int
    statistics: List[Statistic]


class _Stream:
    def __init__(self, call):
        self._call = call
        self._messages = iter(call)

    def wait_active(self) -> None:
        """Waits until the server accepted the stream (its headers arrived). Raises
        grpc.RpcError if it was refused."""
        self._call.initial_metadata()
        if self._call.done() and self._call.code() is not None:
            code = self._call.code()
            if code.name != "OK":
                raise self._call

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.cancel()

    def __iter__(self):
        return self


class EventStream(_Stream):
    """Iterator of Event (see Client.subscribe)."""

    def __init__(self, call):
        super().__init__(call)
        self._pending: List[Event] = []

    def __next__(self) -> Event:
        while not self._pending:
            message = next(self._messages)
            dropped = message.dropped
            for event in message.events:
                self._pending.append(
                    Event(
                        name=event.name,
                        time=event.time.ToDatetime(tzinfo=datetime.timezone.utc),
                        seq=event.seq,
                        params=dict(event.params),
                        dropped_before=dropped,
                    )
                )
                dropped = 0
        return self._pending.pop(0)


class SampleStream(_Stream):
    """Iterator of Sample (see Client.watch_statistics)."""

    def __next__(self) -> Sample:
        message = next(self._messages)
        return Sample(
            time=message.time.ToDatetime(tzinfo=datetime.timezone.utc),
            elapsed=message.elapsed.ToTimedelta().total_seconds(),
            seq=message.seq,
            statistics=[
                Statistic(
                    group=s.group,
                    name=s.name,
                    value=s.value,
                    kind={1: "counter", 2: "gauge"}.get(s.kind, "unspecified"),
                    delta=s.delta,
                    rate_per_second=s.rate_per_second,
                )
                for s in message.statistics
            ],
        )


def subscribe(channel, events, filter: Optional[Dict[str, str]] = None,
              timeout: Optional[float] = None) -> EventStream:
    events_pb2, events_pb2_grpc = _stubs()
    stub = events_pb2_grpc.EventServiceStub(channel)
    request = events_pb2.SubscribeRequest(events=list(events), filter=dict(filter or {}))
    return EventStream(stub.Subscribe(request, timeout=timeout))


def watch_statistics(channel, names, interval: float = 1.0, on_change: bool = False,
                     timeout: Optional[float] = None) -> SampleStream:
    events_pb2, events_pb2_grpc = _stubs()
    stub = events_pb2_grpc.EventServiceStub(channel)
    request = events_pb2.WatchStatisticsRequest(names=list(names), on_change=on_change)
    request.interval.FromMilliseconds(int(round(interval * 1000)))
    return SampleStream(stub.WatchStatistics(request, timeout=timeout))


def iter_lines_events(stream: EventStream, count: int = 0) -> Iterator[str]:
    """`TIME NAME seq=N key=value...` per event (the CLI's text form)."""
    seen = 0
    for event in stream:
        params = " ".join(f"{k}={v}" for k, v in sorted(event.params.items()))
        stamp = event.time.strftime("%Y-%m-%dT%H:%M:%S.") + f"{event.time.microsecond // 1000:03d}Z"
        yield f"{stamp} {event.name} seq={event.seq}" + (f" {params}" if params else "")
        seen += 1
        if count and seen >= count:
            return
