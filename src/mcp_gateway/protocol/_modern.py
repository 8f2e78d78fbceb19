"""MCP 2026-07-28 ("modern") requests: no initialize, no session; every request carries its
protocol version, client capabilities and client info in `params._meta`.

A request is modern when its `MCP-Protocol-Version` header names a revision that has no
handshake (the official SDK routes on that header too). `read_modern_envelope` is the server
side's validation ladder for one, in the revision's order, first failure wins:

1. `params._meta` carries the protocol version and the client capabilities → else -32602;
2. `MCP-Protocol-Version` equals the `_meta` version → else -32020 (HeaderMismatch), so a
   client that disagrees with itself is told that, not that its version is unsupported;
3. the version is one we serve → else -32022 with `{"supported", "requested"}`.

`Mcp-Method` / `Mcp-Name` are checked by `check_header_body_mismatch` (_headers.py).
HTTP statuses follow the revision: 400 for every refusal here, 404 for an unknown method.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from mcp_gateway.protocol._errors import ErrorCode, ProtocolError
from mcp_gateway.protocol._messages import RequestId

PROTOCOL_VERSION_META: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_META: Final = "io.modelcontextprotocol/clientInfo"
# Revisions without a handshake that we serve, oldest first.
MODERN_VERSIONS: Final[tuple[str, ...]] = ("2026-07-28",)
# Revisions that open with initialize: a request naming one of these (or none) is legacy.
HANDSHAKE_VERSIONS: Final = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})

# The revision's HTTP status per JSON-RPC error code on a modern exchange; anything else is 200.
_MODERN_STATUS: Final[Mapping[int, int]] = {
    ErrorCode.PARSE_ERROR: 400,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.INVALID_PARAMS: 400,
    ErrorCode.HEADER_MISMATCH: 400,
    ErrorCode.MISSING_REQUIRED_CLIENT_CAPABILITY: 400,
    ErrorCode.UNSUPPORTED_PROTOCOL_VERSION: 400,
    ErrorCode.METHOD_NOT_FOUND: 404,
}


@dataclass(frozen=True, slots=True)
class ModernEnvelope:
    """What one modern request says about its client, as sent (shapes not checked further)."""

    protocol_version: str
    client_capabilities: Any
    client_info: Any = None


def is_modern(protocol_version_header: str | None) -> bool:
    """Does a request with this `MCP-Protocol-Version` header take the modern path? Any value
    but a handshake revision does, so that an unknown one is told what we serve (-32022)."""
    return protocol_version_header is not None and protocol_version_header not in HANDSHAKE_VERSIONS


def session_version_refusal(protocol_version_header: str | None) -> str | None:
    """Why a request carrying a session may not have this `MCP-Protocol-Version` header (the
    message of a 400/-32600), or None when it may. A session belongs to a handshake revision:
    absent (2025-03-26 clients send none) or one of those is fine; a revision without a
    handshake has no sessions, and anything else is not a revision we serve. Router and broker
    answer alike, so a routed call and a broker-served one in the same session agree."""
    header = protocol_version_header
    if header is None or header in HANDSHAKE_VERSIONS:
        return None
    if header in MODERN_VERSIONS:
        return f"Bad Request: MCP-Protocol-Version {header!r} has no sessions; a request in a session names its handshake revision"
    return f"Bad Request: unsupported MCP-Protocol-Version {header[:40]!r}"


def modern_http_status(code: int) -> int:
    """The HTTP status of a modern answer carrying JSON-RPC error `code` (200 if not listed)."""
    return _MODERN_STATUS.get(code, 200)


def read_modern_envelope(
    params: Any, protocol_version_header: str | None, request_id: RequestId | None
) -> ModernEnvelope:
    """The envelope of a modern request, or the ProtocolError that refuses it (see above)."""
    meta = params.get("_meta") if isinstance(params, Mapping) else None
    if not isinstance(meta, Mapping):
        raise ProtocolError(
            ErrorCode.INVALID_PARAMS,
            f"params._meta must be an object carrying {PROTOCOL_VERSION_META!r} and "
            f"{CLIENT_CAPABILITIES_META!r}",
            id=request_id,
        )
    missing = [k for k in (PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META) if k not in meta]
    if missing:
        raise ProtocolError(
            ErrorCode.INVALID_PARAMS,
            f"params._meta is missing {', '.join(missing)}",
            id=request_id,
        )
    version = meta[PROTOCOL_VERSION_META]
    if protocol_version_header is None or protocol_version_header != version:
        raise ProtocolError(
            ErrorCode.HEADER_MISMATCH,
            "Header mismatch: MCP-Protocol-Version does not match params._meta's protocol version",
            id=request_id,
        )
    if version not in MODERN_VERSIONS:
        raise unsupported_version(version, request_id)
    return ModernEnvelope(version, meta[CLIENT_CAPABILITIES_META], meta.get(CLIENT_INFO_META))


def unsupported_version(requested: Any, request_id: RequestId | None) -> ProtocolError:
    """-32022 naming what we serve: the modern revisions (a client that speaks only older
    ones opens with initialize instead, which still works)."""
    return ProtocolError(
        ErrorCode.UNSUPPORTED_PROTOCOL_VERSION,
        "Unsupported protocol version",
        id=request_id,
        data={"supported": list(MODERN_VERSIONS), "requested": requested},
    )


def missing_capability(capability: str, request_id: RequestId | None) -> ProtocolError:
    """-32021: the request needs a client capability its `_meta` did not declare."""
    return ProtocolError(
        ErrorCode.MISSING_REQUIRED_CLIENT_CAPABILITY,
        f"Missing required client capability: {capability}",
        id=request_id,
        # A ClientCapabilities object, as the revision defines the error data (and SDKs parse it).
        data={"requiredCapabilities": {capability: {}}},
    )
