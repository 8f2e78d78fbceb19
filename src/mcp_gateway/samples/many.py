"""`many`: a large tool set (MCP_SAMPLE_TOOLS tools, default 150) for pagination tests."""

from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer

TOOL_COUNT_ENV = "MCP_SAMPLE_TOOLS"


def build() -> MCPServer:
    server = MCPServer("many", version="1.0.0")
    count = int(os.environ.get(TOOL_COUNT_ENV, "150"))
    for index in range(count):
        server.add_tool(
            _numbered(index), name=f"tool_{index:04d}", description=f"Tool number {index}."
        )
    return server


def _numbered(index: int):  # type: ignore[no-untyped-def]
    def tool() -> int:
        return index

    return tool
