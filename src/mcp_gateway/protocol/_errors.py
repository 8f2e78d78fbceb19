"""JSON-RPC error codes and the one exception type the protocol core raises."""

from __future__ import annotations

import enum
from typing import Any

from mcp_gateway.protocol._messages import RequestId


class ErrorCode(enum.IntEnum):
    PARSE_ERROR = -32700
    INVALID_REQUEST = -32600
    METHOD_NOT_FOUND = -32601
    INVALID_PARAMS = -32602
    INTERNAL_ERROR = -32603
    # MCP: resources/read of a URI the server does not know.
    RESOURCE_NOT_FOUND = -32002
    # MCP 2026-07-28: mirrored request headers missing, malformed or disagreeing with the body.
    HEADER_MISMATCH = -32020
    # MCP 2026-07-28: the request needs a client capability its `_meta` did not declare.
    MISSING_REQUIRED_CLIENT_CAPABILITY = -32021
    # MCP 2026-07-28: a `_meta` protocol version the server does not serve; `data` names the
    # supported ones (`{"supported": [...], "requested": ...}`), which auto-negotiating clients
    # read to retry at a mutual version.
    UNSUPPORTED_PROTOCOL_VERSION = -32022
    # The gateway's: a rate limit refused the request (HTTP 429 with Retry-After; Envoy answers it,
    # envoy/bootstrap.yaml.tmpl). In JSON-RPC's range for implementation-defined server errors.
    RATE_LIMITED = -32029


class ProtocolError(Exception):
    """Bad input, already decided: the JSON-RPC code, the request id (when it could be
    recovered from the body) and the HTTP status to answer with.

    Every rejection the parser and the peek make is one of these; nothing else escapes them.
    """

    def __init__(
        self,
        code: int,
        message: str,
        *,
        id: RequestId | None = None,
        http_status: int = 400,
        data: Any = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.id = id
        self.http_status = http_status
        self.data = data

    def to_json(self) -> bytes:
        """The JSON-RPC error response body that answers this error."""
        from mcp_gateway.protocol._serialize import error_response

        return error_response(self.id, self.code, self.message, self.data)

    def __repr__(self) -> str:
        return (
            f"ProtocolError(code={self.code}, message={self.message!r}, id={self.id!r}, "
            f"http_status={self.http_status})"
        )
