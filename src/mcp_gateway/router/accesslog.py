"""Routed calls whose client left mid-answer, told by Envoy's access log (issue 7).

Once an upstream's SSE answer has begun, its body streams through Envoy without the router
(response body mode NONE, docs/invariants.md #12): the router sees neither the stream's end nor
its client leaving. Envoy sees both. So the router marks each such call with dynamic metadata
(namespace `mcp_gateway`, key `call`) in its response-headers reply, and Envoy's gRPC access
logger, filtered to requests that carry the mark and that the downstream ended (response flags
DC or DR), streams only those entries to the router
(`envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`, on the ext_proc's grpclib
server). A call that ends normally costs the mark (a few microseconds) and no message at all.

The mark names the call (server, gateway session, protocol version, request id) and carries an
HMAC under a key derived from the session keys (every replica holds it, nobody else): the router
keeps no table of calls (nothing to bound, nothing pushed out however long a call runs), and
whoever can reach the router's port cannot make up a mark to cancel others' calls. It is dynamic metadata, not a header: a client
cannot set it, the upstream never sees it, and the file access log does not print it. The
gateway session id in it is the store's key, not a credential (clients hold sealed tokens).
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import structlog
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2
from google.protobuf import struct_pb2
from grpclib.const import Cardinality, Handler
from grpclib.server import Stream

from mcp_gateway.protocol import RequestId

_log = structlog.get_logger(__name__)

STREAM_ACCESS_LOGS_METHOD: Final = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"
# The ext_proc filter accepts dynamic metadata only in the namespaces its `metadata_options`
# name, and the access logger's filter matches this key (envoy/bootstrap.yaml.tmpl).
METADATA_NAMESPACE: Final = "mcp_gateway"
CALL_KEY: Final = "call"
# A call whose mark would be longer (a request id of hundreds of characters) is not marked:
# its client leaving mid-answer is then not seen, rather than every log entry growing unbounded.
MAX_MARK_LENGTH: Final = 512
_MAC_BYTES: Final = 16  # 128 bits: not guessable
# Starts a session mark (`seal_session`); never the first character of a MAC (URL-safe base64).
_SESSION_MARK: Final = "~"


@dataclass(frozen=True, slots=True)
class MarkedCall:
    """A routed call as its mark names it: enough to tell its upstream it was cancelled."""

    server: str
    session_id: str
    protocol_version: str
    request_id: RequestId


class CallMarks:
    """Seals a call's identity into a mark, and opens only marks sealed here."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    def seal(self, call: MarkedCall) -> str | None:
        """The mark, or None when it would be longer than MAX_MARK_LENGTH."""
        identity = [call.server, call.session_id, call.protocol_version, call.request_id]
        payload = json.dumps(identity)  # the default encoder is cached: the fastest call
        mark = f"{self._mac(payload)}.{payload}"
        return mark if len(mark) <= MAX_MARK_LENGTH else None

    def seal_session(self, server: str, session_id: str, protocol_version: str) -> str:
        """A mark for every call of one session to one server, without its request id: Envoy's
        Lua fast path appends "\n" and the call's raw JSON id (router/fast_path.py). Only the
        request id is unsealed, and it can only name a call of the sealed session."""
        payload = json.dumps([server, session_id, protocol_version])
        return f"{_SESSION_MARK}{self._mac(_SESSION_MARK + payload)}.{payload}"

    def open(self, mark: str) -> MarkedCall | None:
        """The call a mark names, if it was sealed with this key; None for anything else."""
        if mark.startswith(_SESSION_MARK):
            return self._open_session_mark(mark[len(_SESSION_MARK) :])
        mac, _, payload = mark.partition(".")
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        server, session_id, protocol_version, request_id = json.loads(payload)
        return MarkedCall(server, session_id, protocol_version, request_id)

    def _open_session_mark(self, mark: str) -> MarkedCall | None:
        sealed, _, rest = mark.partition("\n")
        raw_id = rest.partition("\n")[0]  # the Lua filter's own call number may follow
        mac, _, payload = sealed.partition(".")
        if not hmac.compare_digest(mac, self._mac(_SESSION_MARK + payload)):
            return None
        try:
            request_id = json.loads(raw_id)
        except ValueError:
            return None
        if type(request_id) is not str and type(request_id) is not int:
            return None
        server, session_id, protocol_version = json.loads(payload)
        return MarkedCall(server, session_id, protocol_version, request_id)

    def _mac(self, payload: str) -> str:
        digest = hmac.digest(self._key, payload.encode(), "sha256")[:_MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def mark_call(dynamic_metadata: struct_pb2.Struct, mark: str) -> None:
    """Write the mark the access logger looks for into an ext_proc reply's `dynamic_metadata`
    (in place: a third of the cost of building a Struct and copying it in)."""
    dynamic_metadata.fields[METADATA_NAMESPACE].struct_value.fields[CALL_KEY].string_value = mark


@dataclass(frozen=True, slots=True)
class EndedCall:
    """What an access-log entry says of a marked call: its mark, and whether its client left
    before the upstream's answer ended."""

    mark: str
    abandoned: bool


def ended_call(entry: accesslog_pb2.HTTPAccessLogEntry) -> EndedCall | None:
    """The marked call an entry reports, if any.

    The flags are Envoy's filter's, checked again so that a misconfigured filter (or a stray
    logger pointed at us) never cancels a call whose client is still there. An answer Envoy had
    received whole (`time_to_last_upstream_rx_byte` set) is a call that is over: a client that
    closes its connection as soon as it has read the result has abandoned nothing.
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
        self, marks: CallMarks, on_abandoned: Callable[[MarkedCall], Awaitable[None]]
    ) -> None:
        self._marks = marks
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
                call = self._marks.open(ended.mark) if ended and ended.abandoned else None
                if call is None:
                    continue
                _log.info(
                    "client left a routed call mid-answer",
                    server=call.server,
                    request_id=call.request_id,
                )
                await self._on_abandoned(call)
        await stream.send_message(als_pb2.StreamAccessLogsResponse())
