"""A modern upstream for tests: an official-SDK server (mcp 2.x) in stateless mode. It issues no
session, answers `server/discover` at MCP 2026-07-28 and tells list changes only on
`subscriptions/listen` streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import trio
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import Context, Elicit, MCPServer, Resolve
from mcp_types import ElicitRequestParams, ElicitResult
from pydantic import BaseModel

from tests.support.routing import Stack, gateway_stack, sdk_app, serve_asgi, serve_sdk_server


class Name(BaseModel):
    name: str


async def ask_name(ctx: Context) -> Elicit[Name]:
    return Elicit(f"{ctx.mcp_server.name}: what is your name?", Name)


def add_greeting(server: MCPServer, label: str) -> None:
    """A `greet` tool that asks the user's name. The SDK asks by the revision it speaks: an
    InputRequiredResult when stateless on 2026-07-28, elicitation/create mid-call in a session."""

    @server.tool(description="Greet whoever answers.")
    async def greet(who: Annotated[Name, Resolve(ask_name)]) -> str:
        return f"{label} greets {who.name}"


def answering(name: str, asked: list[str]) -> Any:
    """An elicitation callback that records each question and answers with `name`."""

    async def on_elicit(context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="accept", content={"name": name})

    return on_elicit


def modern_server(name: str, cache_hints: Mapping[Any, CacheHint] | None = None) -> MCPServer:
    server = MCPServer(name, version="2.0.0", cache_hints=cache_hints)

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Count to `steps`, reporting progress at each step.")
    async def count(steps: int, ctx: Context) -> str:
        for step in range(1, steps + 1):
            await ctx.report_progress(step, steps, f"step {step}")
        return f"{name} counted to {steps}"

    @server.tool(description="Report what reached the upstream: the mirrored headers and the _meta.")
    def observe(ctx: Context) -> str:
        headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
        return json.dumps(
            {
                "server": name,
                "session": headers.get("mcp-session-id"),
                "method": headers.get("mcp-method"),
                "name": headers.get("mcp-name"),
                "version": headers.get("mcp-protocol-version"),
                "servername": headers.get("x-mcp-servername"),
            }
        )

    @server.tool(description="Add a tool named `tool` and tell listeners that the list changed.")
    async def grow(tool: str, ctx: Context) -> str:
        def added() -> str:
            return f"{tool} was added"

        server.add_tool(added, name=tool, description="Added at run time.")
        await ctx.notify_tools_changed()
        return f"added {tool}"

    return server


async def serve_modern(
    server: MCPServer, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """`server` in the SDK's stateless mode on hypercorn, loopback, port 0
    (`task_status.started(port)`) until cancelled."""
    await serve_asgi(sdk_app(server, stateless=True), task_status=task_status)


@asynccontextmanager
async def modern_and_legacy(
    workdir: Path, modern: MCPServer, legacy: MCPServer, **gateway: Any
) -> AsyncIterator[Stack]:
    """A gateway stack (real Envoy) over `modern` served stateless under `new_` and `legacy`
    served with sessions under `old_`; keyword arguments go to the config's `gateway:`."""
    async with trio.open_nursery() as nursery:
        modern_port = await nursery.start(serve_modern, modern)
        legacy_port = await nursery.start(serve_sdk_server, legacy)
        servers = [
            ("modern", f"http://127.0.0.1:{modern_port}/mcp", "new_"),
            ("legacy", f"http://127.0.0.1:{legacy_port}/mcp", "old_"),
        ]
        async with gateway_stack(servers, workdir, **gateway) as running:
            yield running
        nursery.cancel_scope.cancel()
