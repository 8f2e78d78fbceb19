"""mcp-gateway: many MCP servers behind one Streamable HTTP endpoint, on Trio and Envoy."""

__version__ = "0.1.0"
