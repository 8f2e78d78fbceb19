"""Server→client requests during a routed call, and the client's answers to them (pure code).

While a routed call runs, its upstream may ask the client something on the call's SSE stream
(`sampling/createMessage`, `elicitation/create`, `roots/list`). The client POSTs its answer as a
JSON-RPC response: a body with an id and no method, which by itself says nothing about where it
belongs. So on the way out every such request's id is replaced by a gateway id naming the server
that asked, `mcpgw:["<server>",<original id>]` (JSON: server names may hold colons); the client echoes it in its response, and the
router sends that response to the same server (the client's backend session there) with the
original id restored. Two upstreams may both use id 0: their gateway ids still differ.

Only the answers of clients that can be asked anything (capabilities `sampling`, `elicitation`
or `roots`) are rewritten; all others stream through Envoy untouched (body mode NONE).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from mcp_gateway.protocol import Limits, ProtocolError, RequestId, peek, replace_id

ID_MARK: Final = "mcpgw:"
# What lets an upstream send requests to a client (MCP 2025-11-25, client capabilities).
ASKABLE_CAPABILITIES: Final = ("sampling", "elicitation", "roots")
EVENT_STREAM: Final = "text/event-stream"

_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\n|\r")
_LIMITS = Limits()


def can_be_asked(client: Mapping[str, Any] | None) -> bool:
    """Whether the client declared a capability under which an upstream may send it requests."""
    capabilities = (client or {}).get("capabilities")
    return isinstance(capabilities, dict) and any(c in capabilities for c in ASKABLE_CAPABILITIES)


def gateway_id(server: str, original: RequestId) -> str:
    return ID_MARK + json.dumps([server, original], separators=(",", ":"))


def original_of(request_id: RequestId | None) -> tuple[str, RequestId] | None:
    """(server, the upstream's own id) behind a gateway id; None for any other id."""
    if type(request_id) is not str or not request_id.startswith(ID_MARK):
        return None
    try:
        pair = json.loads(request_id[len(ID_MARK) :])
    except ValueError:
        return None
    if type(pair) is not list or len(pair) != 2:
        return None
    server, original = pair
    if type(server) is str and server and (type(original) is str or type(original) is int):
        return server, original
    return None


class SseIdTagger:
    """Rewrites the ids of server→client requests in an SSE body, chunk by chunk.

    Envoy hands the body over in arbitrary chunks; only complete events (up to a blank line)
    are rewritten, the rest waits for the next chunk. An event that never ends within
    `max_pending` bytes is passed on as it is (bounded memory; such an event is no request).
    """

    def __init__(self, server: str, *, max_pending: int = 1_048_576) -> None:
        self._server = server
        self._pending = b""
        self._max_pending = max_pending

    def feed(self, chunk: bytes, end_of_stream: bool = False) -> bytes:
        data = self._pending + chunk
        out: list[bytes] = []
        position = 0
        while (boundary := _EVENT_END.search(data, position)) is not None:
            out.append(self._event(data[position : boundary.start()]))
            out.append(boundary.group())
            position = boundary.end()
        rest = data[position:]
        if end_of_stream or len(rest) > self._max_pending:
            out.append(rest)
            rest = b""
        self._pending = rest
        return b"".join(out)

    def _event(self, event: bytes) -> bytes:
        if b"data:" not in event:
            return event
        lines = _LINE.split(event)
        newline = _LINE.search(event)
        data_lines = [i for i, line in enumerate(lines) if line.startswith(b"data:")]
        payload = b"\n".join(_field_value(lines[i]) for i in data_lines)
        tagged = self._tag(payload)
        if tagged is None:
            return event
        # The data lines are replaced where the first one stood (a payload spread over several
        # lines keeps its line breaks, each line its own data field).
        rewritten = [b"data: " + part for part in tagged.split(b"\n")]
        out = lines[: data_lines[0]] + rewritten
        out += [line for i, line in enumerate(lines) if i > data_lines[0] and i not in data_lines]
        return (newline.group() if newline else b"\n").join(out)

    def _tag(self, payload: bytes) -> bytes | None:
        try:
            seen = peek(payload, _LIMITS)
        except ProtocolError:
            return None
        if seen.kind != "request" or seen.id is None:
            return None
        return replace_id(payload, gateway_id(self._server, seen.id))


class InFlightCalls:
    """Which upstream runs a client's routed request: (gateway session, request id) → server.

    What a client's `notifications/cancelled` is routed by. Bounded: the oldest entries go first
    (an SSE answer's end is not seen on the NONE path, so entries of finished calls stay until
    pushed out or replaced; a cancellation of a finished request is ignored by its upstream).
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self._calls: dict[tuple[str, RequestId], str] = {}
        self._max = max_entries

    def started(self, sid: str, request_id: RequestId, server: str) -> None:
        key = (sid, request_id)
        self._calls.pop(key, None)
        if len(self._calls) >= self._max:
            del self._calls[next(iter(self._calls))]
        self._calls[key] = server

    def finished(self, sid: str, request_id: RequestId) -> None:
        self._calls.pop((sid, request_id), None)

    def server_of(self, sid: str, request_id: RequestId) -> str | None:
        return self._calls.get((sid, request_id))

    def __len__(self) -> int:
        return len(self._calls)


def _field_value(line: bytes) -> bytes:
    value = line[len(b"data:") :]
    return value[1:] if value.startswith(b" ") else value
