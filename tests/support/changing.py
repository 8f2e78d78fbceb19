"""An upstream whose tool set changes at runtime and that tells only the session that changed it.

This is what an official-SDK server does by default (`ctx.session.send_tool_list_changed()`):
the notification goes to the calling session's GET stream, or inside the call's own SSE answer,
never to the gateway's discovery session. The server is served in the test's Trio run, so the
test reads `ChangingServer.lists` (every `tools/list` it answered) directly.

    async with changing_upstream() as upstream:
        upstream.url, upstream.lists
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from mcp import types
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer

from tests.support.routing import serve_sdk_server

BURST_DONE = "changing://burst-done"


@dataclass
class ChangingServer:
    url: str = ""
    lists: int = 0  # tools/list requests answered, from any session
    # Set (and replaced) on every tools/list: a test waits on it instead of sleeping.
    listed: trio.Event = field(default_factory=trio.Event)


def build(state: ChangingServer) -> MCPServer:
    async def count_lists(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if getattr(ctx, "method", None) == "tools/list":
            state.lists += 1
            state.listed.set()
            state.listed = trio.Event()
        return await call_next(ctx)

    server = MCPServer("changing", version="1.0.0", middleware=[count_lists])

    def register(name: str) -> None:
        def added() -> str:
            return name

        server.add_tool(added, name=name, description=f"Added at runtime: {name}.")

    @server.tool(description="Register tool `name`; tell this session's GET stream.")
    async def add_tool(name: str, ctx: Context) -> str:
        register(name)
        await ctx.session.send_tool_list_changed()
        return f"added {name}"

    @server.tool(description="Register tool `name`; tell this call's answer.")
    async def add_tool_in_answer(name: str, ctx: Context) -> str:
        register(name)
        related = ctx.request_context.request_id
        await ctx.session.send_notification(
            types.ToolListChangedNotification(), related_request_id=related
        )
        return f"added {name}"

    @server.tool(description="Register tool `name` and tell nobody.")
    def add_tool_quietly(name: str) -> str:
        register(name)
        return f"added {name}"

    @server.tool(description="Register tool `name`; tell this session's GET stream `count` times.")
    async def burst(name: str, count: int, ctx: Context) -> str:
        register(name)
        for _ in range(count):
            await ctx.session.send_tool_list_changed()
        # A marker after the burst on the same stream: once a client sees it relayed, the
        # gateway has read every notification before it.
        await ctx.session.send_resource_updated(f"{BURST_DONE}/{name}")
        return f"added {name}"

    return server


@asynccontextmanager
async def changing_upstream() -> AsyncIterator[ChangingServer]:
    state = ChangingServer()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_sdk_server, build(state))
        state.url = f"http://127.0.0.1:{port}/mcp"
        yield state
        nursery.cancel_scope.cancel()
