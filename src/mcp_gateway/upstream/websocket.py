"""Upstreams that speak MCP over WebSocket (trio-websocket, subprotocol `mcp`): one JSON-RPC
message per text frame, one MCP session per connection.

Everything above the link (request/response matching, routing of server→client messages,
reconnect with backoff and re-handshake, the UpstreamClient-shaped surface) is the shared
`MessageStreamClient` in `stdio.py`; this module only opens the socket.
"""

from __future__ import annotations

from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from mcp_gateway.upstream.errors import UpstreamError
from mcp_gateway.upstream.stdio import LinkUser, MessageStreamClient

SUBPROTOCOL = "mcp"
_CLOSE_TIMEOUT_SECONDS = 2.0


class WebSocketUpstreamClient(MessageStreamClient):
    """An MCP server at a `ws://` or `wss://` URL (`server.url`)."""

    link_errors = (*MessageStreamClient.link_errors, ConnectionClosed, HandshakeError)

    async def _open_link(self, use: LinkUser) -> None:
        headers: list[tuple[bytes, bytes]] = []
        if self.server.credential:
            headers.append((b"authorization", f"Bearer {self.server.credential}".encode()))
        async with open_websocket_url(
            self.server.url,
            subprotocols=[SUBPROTOCOL],
            extra_headers=headers,
            message_queue_size=64,
            max_message_size=self.limits.max_body_bytes,
            connect_timeout=min(self.server.timeout_seconds, 10.0),
            disconnect_timeout=_CLOSE_TIMEOUT_SECONDS,
        ) as connection:
            if connection.subprotocol != SUBPROTOCOL:
                # A server that ignores the subprotocol may not speak MCP at all.
                raise UpstreamError(
                    f"{self.server.name}: server chose WebSocket subprotocol "
                    f"{connection.subprotocol!r}, not {SUBPROTOCOL!r}"
                )
            await use(_SocketLink(connection))


class _SocketLink:
    def __init__(self, connection: WebSocketConnection) -> None:
        self._connection = connection

    async def send(self, data: bytes) -> None:
        # MCP messages are UTF-8 JSON: text frames, as the subprotocol expects.
        try:
            await self._connection.send_message(data.decode("utf-8"))
        except ConnectionClosed as exc:
            raise UpstreamError(f"WebSocket closed ({exc.reason})") from exc

    async def receive(self) -> bytes | None:
        try:
            message = await self._connection.get_message()
        except ConnectionClosed:
            return None
        return message.encode("utf-8") if isinstance(message, str) else message


__all__ = ["SUBPROTOCOL", "WebSocketUpstreamClient"]
