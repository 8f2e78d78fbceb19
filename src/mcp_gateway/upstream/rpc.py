"""What every upstream client (HTTP, stdio, WebSocket) does the same way above its transport:
read a JSON-RPC answer into a result or an `UpstreamError`, and page through a list method."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

import trio

from mcp_gateway.config import ServerConfig
from mcp_gateway.upstream.errors import UpstreamError

JsonObject = dict[str, Any]
# Takes each server→client message of an exchange (progress, logs, requests to relay).
MessageHandler = Callable[[JsonObject], Awaitable[None]]
# Sends one request and returns its result (an UpstreamError otherwise): `client.request`.
Requester = Callable[[str, Mapping[str, Any] | None], Awaitable[JsonObject]]

DEFAULT_CLIENT_INFO: Mapping[str, str] = {"name": "mcp-gateway", "version": "0.1.0"}
# A list method that keeps handing out cursors is a bug or an attack; stop following it.
MAX_LIST_PAGES = 1000


def result_of(name: str, method: str, answer: JsonObject) -> JsonObject:
    """The result of a JSON-RPC answer; an error answer raises (with rpc_code/rpc_data)."""
    if "error" in answer:
        error = answer["error"] if isinstance(answer["error"], dict) else {}
        code = error.get("code")
        raise UpstreamError(
            f"{name}: {method} failed: {error.get('message', 'error')}",
            rpc_code=code if isinstance(code, int) else None,
            rpc_data=error.get("data"),
        )
    result = answer.get("result")
    if not isinstance(result, dict):
        raise UpstreamError(f"{name}: {method} answered without a result object")
    return result


async def list_all(
    request: Requester,
    name: str,
    method: str,
    key: str,
    on_result: Callable[[JsonObject], None] | None = None,
) -> list[JsonObject]:
    """Every item of a paginated list method, following nextCursor to the end. `on_result`
    sees each page's whole result (what else it says: a 2026-07-28 upstream's cache hints)."""
    items: list[JsonObject] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(MAX_LIST_PAGES):
        result = await request(method, {"cursor": cursor} if cursor else None)
        page = result.get(key)
        if not isinstance(page, list):
            raise UpstreamError(f"{name}: {method} result has no {key!r} list")
        if on_result is not None:
            on_result(result)
        items.extend(item for item in page if isinstance(item, dict))
        next_cursor = result.get("nextCursor")
        if not next_cursor:
            return items
        if not isinstance(next_cursor, str) or next_cursor in seen:
            raise UpstreamError(f"{name}: {method} repeats or mangles its cursor")
        seen.add(next_cursor)
        cursor = next_cursor
    raise UpstreamError(f"{name}: {method} has more than {MAX_LIST_PAGES} pages")


class RequestShortcuts:
    """`ping` and `list_all`, written once for every upstream client (HTTP, stdio, WebSocket):
    each is only requests through the client's own `request`."""

    server: ServerConfig
    request: Callable[..., Awaitable[JsonObject]]

    async def ping(self) -> None:
        await self.request("ping")

    async def list_all(
        self, method: str, key: str, on_result: Callable[[JsonObject], None] | None = None
    ) -> list[JsonObject]:
        """Every item of a paginated list method, following nextCursor to the end."""
        return await list_all(self.request, self.server.name, method, key, on_result)


class UpstreamClient(Protocol):
    """What every upstream client offers, whatever its transport: Streamable HTTP
    (`client.HttpUpstreamClient`), stdio (`stdio.StdioUpstreamClient`) and WebSocket
    (`websocket.WebSocketUpstreamClient`). Every failure is an `UpstreamError`."""

    server: ServerConfig
    session_id: str | None
    protocol_version: str | None

    def opened(self) -> AbstractAsyncContextManager[None]:
        """The client open for one session (and whatever task its link needs); the session
        ends with the block. The supervisor, not the client, decides when to reconnect."""
        ...

    async def initialize(self) -> JsonObject: ...

    async def request(
        self,
        method: str,
        params: Mapping[str, Any] | None = None,
        on_message: MessageHandler | None = None,
        *,
        request_id: int | str | None = None,
    ) -> JsonObject:
        """Send one request; return its result (an error answer raises, with rpc_code)."""
        ...

    async def request_raw(
        self, message: JsonObject, on_message: MessageHandler | None = None
    ) -> JsonObject:
        """Send a request as given (id included) and return the whole response message."""
        ...

    async def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None: ...

    async def respond(self, message: JsonObject) -> None:
        """Answer a server→client request."""
        ...

    async def listen(
        self, on_message: MessageHandler, *, task_status: trio.TaskStatus[None] = ...
    ) -> None:
        """Take the session's unsolicited messages until the upstream ends the stream."""
        ...

    async def ping(self) -> None: ...

    async def list_all(
        self, method: str, key: str, on_result: Callable[[JsonObject], None] | None = None
    ) -> list[JsonObject]: ...

    async def aclose(self, *, end_session: bool = True) -> None: ...
