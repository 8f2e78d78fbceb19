"""Routed calls whose client left mid-answer, told by Envoy's access log (issue 7).

Once an upstream's SSE answer has begun, its body streams through Envoy without the router
(response body mode NONE, docs/invariants.md #12): the router sees neither the stream's end nor
its client leaving. Envoy sees both. So the router marks each such call with dynamic metadata
(namespace `mcp_gateway`, key `call`: an unguessable id of an entry in `WatchedCalls`) in its
response-headers reply, and Envoy's gRPC access logger, filtered to requests that carry the mark
and that the downstream ended (response flags DC or DR), streams only those entries to the router
(`envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`, on the ext_proc's grpclib
server). A call that ends normally costs a random id and a table entry, and no message at all.

The id is dynamic metadata, not a header: a client cannot set it, the upstream never sees it, and
the file access log does not print it. An id the router did not issue (or already used) is
ignored, so whoever can reach the router's port still cannot cancel others' calls by guessing.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import structlog
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import struct_pb2
from grpclib.const import Cardinality, Handler
from grpclib.server import Stream

from mcp_gateway.router.decision import NeedsBackend

_log = structlog.get_logger(__name__)

STREAM_ACCESS_LOGS_METHOD: Final = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"
# The ext_proc filter accepts dynamic metadata only in the namespaces its `metadata_options`
# name, and the access logger's filter matches this key (envoy/bootstrap.yaml.tmpl).
METADATA_NAMESPACE: Final = "mcp_gateway"
CALL_KEY: Final = "call"
MAX_WATCHED_CALLS: Final = 100_000


@dataclass(frozen=True, slots=True)
class WatchedCall:
    """What cancelling an abandoned call takes: the call (without its body) and its session."""

    need: NeedsBackend
    backend_id: str = dataclasses.field(repr=False)


class WatchedCalls:
    """Routed calls whose answer streams past the router, by the id Envoy will log if their
    client leaves.

    Bounded, oldest first out: a call that ends normally is never reported, so its entry stays
    until pushed out (100,000 later answers) or taken; a call running that long unseen is no
    longer cancelled when its client leaves (its upstream's own timeout still ends it).
    """

    def __init__(self, max_entries: int = MAX_WATCHED_CALLS) -> None:
        self._calls: OrderedDict[str, WatchedCall] = OrderedDict()
        self._max = max_entries

    def watch(self, need: NeedsBackend, backend_id: str) -> str:
        """Remember the call; return its id (128 random bits, URL-safe)."""
        call_id = secrets.token_urlsafe(16)
        if len(self._calls) >= self._max:
            self._calls.popitem(last=False)
        # The body (up to the body limit) is not needed to cancel: do not keep it alive.
        self._calls[call_id] = WatchedCall(dataclasses.replace(need, body=b""), backend_id)
        return call_id

    def take(self, call_id: str) -> WatchedCall | None:
        """The call with this id, once: an id reported twice, or never issued, gives None."""
        return self._calls.pop(call_id, None)

    def __len__(self) -> int:
        return len(self._calls)


def mark_call(dynamic_metadata: struct_pb2.Struct, call_id: str) -> None:
    """Write the mark the access logger looks for into an ext_proc reply's `dynamic_metadata`
    (in place: a third of the cost of building a Struct and copying it in)."""
    namespace = dynamic_metadata.fields[METADATA_NAMESPACE].struct_value
    namespace.fields[CALL_KEY].string_value = call_id


@dataclass(frozen=True, slots=True)
class EndedCall:
    """What an access-log entry says of a marked call: its id, and whether its client left
    before the upstream's answer ended."""

    call_id: str
    abandoned: bool


def ended_call(entry: accesslog_pb2.HTTPAccessLogEntry) -> EndedCall | None:
    """The marked call an entry reports, if any.

    The flags are Envoy's filter's, checked again so that a misconfigured filter (or a stray
    logger pointed at us) never cancels a call whose client is still there. An answer Envoy had
    received whole (`time_to_last_upstream_rx_byte` set) is a call that is over: a client that
    closes its connection as soon as it has read the result (the official SDK client does, so
    Envoy often sees it leave before the stream's last bytes) has abandoned nothing.
    """
    common = entry.common_properties
    fields = common.metadata.filter_metadata.get(METADATA_NAMESPACE)
    value = fields.fields.get(CALL_KEY) if fields is not None else None
    if value is None or value.WhichOneof("kind") != "string_value":
        return None
    flags = common.response_flags
    left = flags.downstream_connection_termination or flags.downstream_remote_reset
    finished = common.HasField("time_to_last_upstream_rx_byte")
    return EndedCall(str(value.string_value), bool(left) and not finished)


class AccessLogReceiver:
    """`envoy.service.accesslog.v3.AccessLogService`, served by grpclib next to the ext_proc.

    `on_abandoned` must return quickly (start the cancellation, not wait for it): one stream
    carries the entries of one Envoy worker in order.
    """

    def __init__(
        self, calls: WatchedCalls, on_abandoned: Callable[[WatchedCall], Awaitable[None]]
    ) -> None:
        self._calls = calls
        self._on_abandoned = on_abandoned

    def __mapping__(self) -> dict[str, Handler]:
        return {
            STREAM_ACCESS_LOGS_METHOD: Handler(
                self.stream_access_logs,
                Cardinality.STREAM_UNARY,
                als_pb2.StreamAccessLogsMessage,
                als_pb2.StreamAccessLogsResponse,
            )
        }

    async def stream_access_logs(
        self, stream: Stream[als_pb2.StreamAccessLogsMessage, als_pb2.StreamAccessLogsResponse]
    ) -> None:
        # Envoy keeps one stream per worker open for the process's life, and never reads the
        # response; it is sent only to end the call cleanly when Envoy half-closes.
        while (message := await stream.recv_message()) is not None:
            for entry in message.http_logs.log_entry:
                ended = ended_call(entry)
                # Taken either way: the call's stream is over, its entry is of no more use.
                call = self._calls.take(ended.call_id) if ended is not None else None
                if call is None or ended is None or not ended.abandoned:
                    continue
                _log.info(
                    "client left a routed call mid-answer",
                    server=call.need.upstream.server,
                    request_id=call.need.request_id,
                )
                await self._on_abandoned(call)
        await stream.send_message(als_pb2.StreamAccessLogsResponse())
