"""Upstreams that speak MCP over WebSocket (trio-websocket, subprotocol `mcp`): one JSON-RPC
message per text frame, one MCP session per connection.

Everything above the link (request/response matching, routing of server→client messages,
reconnect with backoff and re-handshake, the UpstreamClient-shaped surface) is the shared
`MessageStreamClient` in `message_stream.py`; this module only opens the socket.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from mcp_gateway.upstream.credentials import upstream_authorization
from mcp_gateway.upstream.errors import UpstreamError
from mcp_gateway.upstream.message_stream import LinkUser, MessageStreamClient

SUBPROTOCOL = "mcp"
_CLOSE_TIMEOUT_SECONDS = 2.0


class WebSocketUpstreamClient(MessageStreamClient):
    """An MCP server at a `ws://` or `wss://` URL (`server.url`)."""

    link_errors = (
        *MessageStreamClient.link_errors,
        ConnectionClosed,
        HandshakeError,
        trio.TooSlowError,  # connecting or the opening handshake took too long
    )

    async def _open_link(self, use: LinkUser) -> None:
        target = _target_of(self.server.url)
        headers: list[tuple[bytes, bytes]] = []
        authorization = await upstream_authorization(self.server)
        if authorization:
            headers.append((b"authorization", authorization.encode()))
        connect_timeout = min(self.server.timeout_seconds, 10.0)
        # The TCP (or TLS) stream is ours, not trio-websocket's: when a peer vanishes without a
        # close frame, trio-websocket marks the connection closed but leaves the socket open.
        with trio.fail_after(connect_timeout):
            stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = (
                await trio.open_ssl_over_tcp_stream(
                    target.host, target.port, ssl_context=ssl.create_default_context()
                )
                if target.tls
                else await trio.open_tcp_stream(target.host, target.port)
            )
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(connect_timeout):
                    connection = await wrap_client_stream(
                        nursery,
                        stream,
                        target.host_header,
                        target.resource,
                        subprotocols=[SUBPROTOCOL],
                        extra_headers=headers,
                        message_queue_size=64,
                        max_message_size=self.limits.max_body_bytes,
                    )
                try:
                    if connection.subprotocol != SUBPROTOCOL:
                        # A server that ignores the subprotocol may not speak MCP at all.
                        raise UpstreamError(
                            f"{self.server.name}: server chose WebSocket subprotocol "
                            f"{connection.subprotocol!r}, not {SUBPROTOCOL!r}"
                        )
                    await use(_SocketLink(connection))
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_TIMEOUT_SECONDS):
                        await connection.aclose()
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    tls: bool
    host_header: str
    resource: str


def _target_of(url: str) -> _Target:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UpstreamError(f"not a WebSocket URL: {url!r}")
    tls = parts.scheme == "wss"
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return _Target(
        host=parts.hostname,
        port=parts.port or (443 if tls else 80),
        tls=tls,
        host_header=parts.netloc.rpartition("@")[2],  # never send userinfo
        resource=resource,
    )


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
