"""`dynamic`: a tool set that changes at runtime, to exercise `notifications/tools/list_changed`.

`add_tool(name)` registers a tool `name` (it returns its own name), `remove_tool(name)` drops it.
Each change is announced to every connected client: on the standalone GET stream of every
handshake-era session (a middleware remembers each session from its first message) and on the
`subscriptions/listen` streams of 2026-07-28 clients.
"""

from __future__ import annotations

from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer

BUILT_IN = ("add_tool", "remove_tool", "hello")


def build() -> MCPServer:
    # Sessions by Mcp-Session-Id. A gateway's discovery session never calls a tool, so sessions
    # are remembered from any message (notifications/initialized, tools/list), not from calls.
    sessions: dict[str, Any] = {}

    async def remember_sessions(
        ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        headers = getattr(ctx.request, "headers", None)
        session_id = headers.get("mcp-session-id") if headers is not None else None
        if session_id:
            sessions[session_id] = ctx.session
        return await call_next(ctx)

    server = MCPServer("dynamic", version="1.0.0", middleware=[remember_sessions])

    async def announce(ctx: Context) -> None:
        await ctx.notify_tools_changed()
        for session_id, session in list(sessions.items()):
            try:
                await session.send_tool_list_changed()
            except Exception:  # that session is gone; forget it and keep notifying the others
                sessions.pop(session_id, None)

    @server.tool(description="Register a new tool `name` that returns its own name.")
    async def add_tool(name: str, ctx: Context) -> str:
        def added() -> str:
            return name

        server.add_tool(added, name=name, description=f"Added at runtime: {name}.")
        await announce(ctx)
        return f"added {name}"

    @server.tool(description="Remove a tool added earlier by add_tool.")
    async def remove_tool(name: str, ctx: Context) -> str:
        if name in BUILT_IN:
            return f"{name} is built in"
        try:
            server.remove_tool(name)
        except Exception:
            return f"no tool {name}"
        await announce(ctx)
        return f"removed {name}"

    @server.tool(description="Say hello.")
    def hello() -> str:
        return "hello"

    return server
