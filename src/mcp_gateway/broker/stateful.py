"""`/mcp/stateful`: the gateway's MCP endpoint for clients that must stay on the handshake
revisions (2025-11-25 and before), whatever `gateway.serve_discover` says for `/mcp`.

Everything is as on `/mcp` (the same handlers in broker/http.py, the same sessions, Envoy routes
and checks) but for 2026-07-28: `server/discover` is always -32601, so an SDK client in its
default auto mode takes the initialize handshake, and any other 2026-07-28 request is refused
as a server that does not speak that revision refuses it. An initialize asking for a modern
revision is answered with the latest handshake one.
"""

from __future__ import annotations

from collections.abc import Callable

from quart import Response, request

from mcp_gateway.broker.modern import DISCOVER
from mcp_gateway.protocol import (
    LATEST_STABLE,
    SUPPORTED_VERSIONS,
    ErrorCode,
    Limits,
    ProtocolError,
    Request,
    error_response,
    is_modern,
    peek,
)

PATH = "/mcp/stateful"
DISCOVER_NOT_SERVED = f"server/discover is not served on {PATH} (handshake revisions only); use initialize"
HANDSHAKE_VERSIONS = tuple(v for v in SUPPORTED_VERSIONS if not is_modern(v))
JSON = "application/json"


def modern_refused(body: bytes, limits: Limits, record: Callable[[str, int, float], None], started: float) -> Response:
    """A 2026-07-28 POST on /mcp/stateful (a modern version header, no session).

    An MCP-Protocol-Version a 2025-11-25 server does not support is 400 Bad Request (its
    transport says so), with -32600 and never the modern -32022, which would tell a dual-era
    client the server is modern and stop its fallback to initialize. server/discover is -32601,
    what the SDK's auto mode falls back on (404 under that header, as /mcp answers it with
    serve_discover off). `record` and `started`: broker/http.py's request metrics."""
    try:
        seen = peek(body, limits)
    except ProtocolError as error:
        record("invalid", error.http_status, started)
        return Response(error.to_json(), error.http_status, content_type=JSON)
    request_id = seen.id if seen.kind == "request" else None
    if seen.method == DISCOVER:
        record(DISCOVER, 404, started)
        return Response(error_response(request_id, ErrorCode.METHOD_NOT_FOUND, DISCOVER_NOT_SERVED), 404, content_type=JSON)
    version = request.headers.get("mcp-protocol-version", "")
    message = (
        f"Bad Request: unsupported MCP-Protocol-Version {version[:40]!r} on {PATH} "
        f"(supported: {', '.join(HANDSHAKE_VERSIONS)})"
    )
    record("refused", 400, started)
    return Response(error_response(request_id, ErrorCode.INVALID_REQUEST, message), 400, content_type=JSON)


def negotiated_down(message: Request) -> Request:
    """An initialize as this endpoint answers it: one asking for a modern revision (or an
    unknown one) negotiates the latest handshake revision, as a server without it would."""
    requested = (message.params or {}).get("protocolVersion")
    if request.path != PATH or not isinstance(requested, str) or not is_modern(requested):
        return message
    return Request(message.id, message.method, {**(message.params or {}), "protocolVersion": LATEST_STABLE})


__all__ = ["DISCOVER_NOT_SERVED", "PATH", "modern_refused", "negotiated_down"]
