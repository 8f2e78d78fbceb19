"""The broker: the gateway's own MCP server for /mcp, federated lists, fan-out and status."""
