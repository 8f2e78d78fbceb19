"""`slow`: a tool that takes its time and reports progress, for streaming and timeout tests."""

from __future__ import annotations

import anyio
from mcp.server.mcpserver import Context, MCPServer


def build() -> MCPServer:
    server = MCPServer("slow", version="1.0.0")

    @server.tool(description="Count to `steps`, one progress notification per step, then answer.")
    async def count(steps: int = 3, delay_seconds: float = 0.2, ctx: Context | None = None) -> str:
        steps = max(1, min(steps, 100))
        delay_seconds = max(0.0, min(delay_seconds, 10.0))
        for step in range(1, steps + 1):
            await anyio.sleep(delay_seconds)
            if ctx is not None:
                await ctx.report_progress(step, steps, f"step {step} of {steps}")
        return f"counted to {steps}"

    @server.tool(description="Answer after `seconds` (at most 60) without progress.")
    async def sleep(seconds: float = 1.0) -> str:
        await anyio.sleep(max(0.0, min(seconds, 60.0)))
        return f"slept {seconds}"

    return server
