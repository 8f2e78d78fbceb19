"""`echo`: two trivial tools, the smallest useful upstream."""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer


def build() -> MCPServer:
    server = MCPServer("echo", version="1.0.0")

    @server.tool(description="Return the text unchanged.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    return server
