"""How the supervisor makes and opens a client for one upstream session, whatever the
transport: Streamable HTTP (`client.py`), stdio (`stdio.py`) or WebSocket (`websocket.py`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx

from mcp_gateway.config import ServerConfig
from mcp_gateway.protocol import LATEST_STABLE
from mcp_gateway.upstream.client import HttpUpstreamClient
from mcp_gateway.upstream.rpc import UpstreamClient

GATEWAY_CLIENT_INFO: Mapping[str, str] = {"name": "mcp-gateway-discovery", "version": "0.1.0"}

# Makes the client of one session: HTTP here, stdio/WebSocket in their own modules.
# Called as `factory(server, http)` for the base session and, for capability variants of an
# HTTP upstream, `factory(server, http, capabilities=...)` (the client capabilities to declare).
ClientFactory = Callable[..., UpstreamClient]

# A stdio/WebSocket link is one session shared by every client whose calls the broker forwards
# on it; the broker relays these requests to the calling client (docs/broker.md), so the link
# announces them. A client that cannot answer one says so itself (or the broker does).
RELAYED_CLIENT_CAPABILITIES: Mapping[str, Any] = {"sampling": {}, "elicitation": {}, "roots": {}}


def default_client_factory(
    server: ServerConfig,
    http: httpx.AsyncClient | None,
    *,
    capabilities: Mapping[str, Any] | None = None,
) -> UpstreamClient:
    """Streamable HTTP, or the message-stream clients of `stdio.py` and `websocket.py`."""
    if server.transport in ("stdio", "websocket"):
        from mcp_gateway.upstream.stdio import StdioUpstreamClient
        from mcp_gateway.upstream.websocket import WebSocketUpstreamClient

        link_client = (
            StdioUpstreamClient if server.transport == "stdio" else WebSocketUpstreamClient
        )
        return link_client(
            server,
            protocol_version=LATEST_STABLE,
            client_info=GATEWAY_CLIENT_INFO,
            capabilities=RELAYED_CLIENT_CAPABILITIES,
        )
    return HttpUpstreamClient(
        server,
        http=http,
        protocol_version=LATEST_STABLE,
        client_info=GATEWAY_CLIENT_INFO,
        capabilities=capabilities,
    )


__all__ = [
    "GATEWAY_CLIENT_INFO",
    "RELAYED_CLIENT_CAPABILITIES",
    "ClientFactory",
    "default_client_factory",
]
