"""MCP 2026-07-28 end to end, the issue's must-show: one gateway behind real Envoy federating a
modern upstream (the official SDK 2.x server in stateless mode: no initialize, no session) and
legacy ones (the same SDK stateful, and the conformance fixture), used by the official SDK 2.x
client in its default mode, pinned to 2026-07-28, and pinned to the handshake (legacy).

Every client, whatever it speaks, does the same things on both kinds of upstream: discover (or
the handshake), list with pagination, call with progress, a call that asks the user something
(elicitation: an InputRequiredResult round trip or a mid-call elicitation/create, translated
both ways by the gateway), hear a tool-list change made at an upstream, and hear a resource
update."""

from __future__ import annotations

import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated, ToolsListChanged
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning

from mcp_gateway.samples import serve_sample
from tests.support.modern import add_greeting, answering, modern_server, serve_modern
from tests.support.routing import (
    SDK_CLIENT_WARNINGS,
    Stack,
    gateway_stack,
    serve_sdk_server,
    text_of,
)

pytestmark = [pytest.mark.integration, SDK_CLIENT_WARNINGS]

MODERN = "2026-07-28"
HANDSHAKE = "2025-11-25"
MODERN_URI = "mcp-gateway:new_fleet://notes"
LEGACY_URI = "mcp-gateway:fx_test://watched-resource"



def fleet_server(name: str) -> MCPServer:
    """modern_server's tools (add, count with progress, observe, grow) plus a tool that asks the
    user (the SDK asks by the revision it speaks: an InputRequiredResult when stateless on
    2026-07-28, elicitation/create mid-call on a session) and a resource it can announce."""
    server = modern_server(name)
    add_greeting(server, name)

    @server.resource("fleet://notes", description="Notes that change.")
    def notes() -> str:
        return f"{name} notes"

    @server.tool(description="Tell listeners that fleet://notes changed.")
    async def touch(ctx: Context) -> str:
        await ctx.notify_resource_updated("fleet://notes")
        return "touched"

    return server


@dataclass
class Fleet:
    stack: Stack
    urls: dict[str, str]


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with trio.open_nursery() as nursery:
        ports = {
            "modern": await nursery.start(serve_modern, fleet_server("modern")),
            "legacy": await nursery.start(serve_sdk_server, fleet_server("legacy")),
            "fx": await nursery.start(serve_sample, "conformance"),
        }
        urls = {name: f"http://127.0.0.1:{port}/mcp" for name, port in ports.items()}
        servers = [("modern", urls["modern"], "new_"), ("legacy", urls["legacy"], "old_"), ("fx", urls["fx"], "fx_")]
        # A small page so that every list below takes several pages.
        async with gateway_stack(servers, tmp_path, page_size=3, serve_discover=True) as stack:
            yield Fleet(stack, urls)
        nursery.cancel_scope.cancel()



async def call_upstream(url: str, tool: str, arguments: dict[str, Any]) -> str:
    """Call an upstream's tool directly: the change is the upstream's doing, not the gateway's."""
    async with Client(streamable_http_client(url)) as client:
        return text_of(await client.call_tool(tool, arguments))


async def every_tool(client: Client) -> tuple[set[str], int]:
    names: set[str] = set()
    pages = 0
    cursor = None
    while True:
        page = await client.list_tools(cursor=cursor, cache_mode="bypass") if _modern(client) else (
            await client.list_tools(cursor=cursor)
        )
        pages += 1
        names |= {tool.name for tool in page.tools}
        cursor = page.next_cursor
        if cursor is None:
            return names, pages


def _modern(client: Client) -> bool:
    return client.protocol_version == MODERN


async def progress_of_counting(client: Client, tool: str) -> list[float]:
    """The progress `tool` (modern_server's count) reports while counting to 3."""
    seen: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        seen.append(value)

    counted = await client.call_tool(tool, {"steps": 3}, progress_callback=on_progress)
    assert text_of(counted).endswith("counted to 3")
    return seen


async def the_same_calls(client: Client, fleet: Fleet, asked: list[str]) -> None:
    """What every client does, through the gateway, on both kinds of upstream."""
    names, pages = await every_tool(client)
    assert {"new_count", "new_greet", "old_count", "old_greet", "fx_test_tool_with_progress"} <= names
    assert pages >= 3

    for prefix in ("new_", "old_"):
        assert await progress_of_counting(client, f"{prefix}count") == [1, 2, 3]

    # Elicitation: each upstream asks in its own revision, the client answers in its own.
    assert text_of(await client.call_tool("new_greet", {})) == "modern greets Ada"
    assert text_of(await client.call_tool("old_greet", {})) == "legacy greets Ada"
    assert asked == ["modern: what is your name?", "legacy: what is your name?"]


async def test_a_modern_client_in_each_mode_gets_everything_from_both_kinds_of_upstream(fleet: Fleet) -> None:
    for mode in ("auto", MODERN):
        asked: list[str] = []
        async with Client(
            streamable_http_client(fleet.stack.url), mode=mode, elicitation_callback=answering("Ada", asked)
        ) as client:
            # The default mode discovers the gateway and stays on 2026-07-28.
            assert client.protocol_version == MODERN, mode
            await the_same_calls(client, fleet, asked)

            # A tool added at the modern upstream reaches the listen stream, then the list.
            async with client.listen(tools_list_changed=True) as subscription:
                added = f"added_{mode.replace('-', '_')}"
                assert await call_upstream(fleet.urls["modern"], "grow", {"tool": added}) == f"added {added}"
                with trio.fail_after(10):
                    assert await subscription.__anext__() == ToolsListChanged()
                assert f"new_{added}" in (await every_tool(client))[0]

            # Resource updates from each kind of upstream, on one listen stream.
            async with client.listen(resource_subscriptions=[MODERN_URI, LEGACY_URI]) as subscription:
                assert subscription.honored.resource_subscriptions == [MODERN_URI, LEGACY_URI]
                assert await call_upstream(fleet.urls["modern"], "touch", {}) == "touched"
                with trio.fail_after(10):
                    assert await subscription.__anext__() == ResourceUpdated(MODERN_URI)
                notified = await call_upstream(fleet.urls["fx"], "test_update_watched_resource", {})
                assert notified == "notified 1 subscriber(s)"
                with trio.fail_after(10):
                    assert await subscription.__anext__() == ResourceUpdated(LEGACY_URI)
            # The stream ended: the backend session it held at the legacy upstream ends with it
            # (asynchronously: the broker notices the client left, then DELETEs it).
            with trio.fail_after(10):
                # Another process's count: polling under a deadline is the only way to read it.
                while True:
                    notified = await call_upstream(fleet.urls["fx"], "test_update_watched_resource", {})
                    if notified == "notified 0 subscriber(s)":
                        break
                    await trio.sleep(0.05)


async def test_a_legacy_client_gets_the_same_from_both_kinds_of_upstream(fleet: Fleet) -> None:
    list_changed = anyio.Event()
    updated: list[str] = []
    resource_updated = anyio.Event()

    async def on_message(message: Any) -> None:
        method = getattr(message, "method", None)
        if method == "notifications/tools/list_changed":
            list_changed.set()
        elif method == "notifications/resources/updated":
            updated.append(str(message.params.uri))
            resource_updated.set()

    asked: list[str] = []
    async with Client(
        streamable_http_client(fleet.stack.url),
        mode="legacy",
        elicitation_callback=answering("Ada", asked),
        message_handler=on_message,
    ) as client:
        assert client.protocol_version == HANDSHAKE
        await the_same_calls(client, fleet, asked)

        # A tool added at the modern upstream (learnt on its subscriptions/listen) is announced
        # on the session's stream, and the next list has it.
        assert await call_upstream(fleet.urls["modern"], "grow", {"tool": "added_legacy"}) == "added added_legacy"
        with trio.fail_after(10):
            await list_changed.wait()
        assert "new_added_legacy" in (await every_tool(client))[0]

        # resources/subscribe is how a handshake-era client hears a resource change: at a legacy
        # upstream on its backend session, at a modern one on a subscriptions/listen of its own.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)
            await client.subscribe_resource(LEGACY_URI)
            await client.subscribe_resource(MODERN_URI)
        assert await call_upstream(fleet.urls["fx"], "test_update_watched_resource", {}) == "notified 1 subscriber(s)"
        with trio.fail_after(10):
            await resource_updated.wait()
        resource_updated = anyio.Event()
        assert await call_upstream(fleet.urls["modern"], "touch", {}) == "touched"
        with trio.fail_after(10):
            await resource_updated.wait()
        assert updated == [LEGACY_URI, MODERN_URI]
