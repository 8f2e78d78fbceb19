"""The `x-mcp-header` parameters each upstream's tools declare (MCP 2026-07-28, SEP-2243), by
server and tool name as the upstream knows it.

Whoever sends a tools/call to a modern upstream on a client's behalf needs them per call: the
router checks a modern client's `Mcp-Param-*` headers against them and mirrors them for a legacy
client (router/modern_upstreams.py); the broker's own calls mirror them (upstream/client.py).
So they are read out of the schemas once per listing, when the supervisor publishes a catalog,
and a call costs one dict lookup (most tools declare none, and are not even in the map).

Held in this process, like the upstream modes (upstream/modern.py): a router in a process of its
own (`--role router`) has none, and sends a legacy client's call to such a tool without the
headers (the upstream refuses it, -32020); a modern client's headers still pass as it sent them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mcp_gateway.protocol import ParamHeader, mirror_param_headers, param_headers
from mcp_gateway.upstream.catalog import TOOLS, ServerCatalog

NONE: tuple[ParamHeader, ...] = ()

_declared: dict[str, Mapping[str, tuple[ParamHeader, ...]]] = {}


def record_tool_params(server: str, catalog: ServerCatalog) -> None:
    """What `server`'s tools declare, from its base listing and its capability variants (a
    variant's version of a tool wins, as in `ServerCatalog.for_client`)."""
    found: dict[str, tuple[ParamHeader, ...]] = {}
    tools = [*catalog.of(TOOLS), *(item for v in catalog.variants for item in v.items.get(TOOLS.kind, ()))]
    for tool in tools:
        schema = tool.get("inputSchema")
        try:
            declared = param_headers(schema) if isinstance(schema, Mapping) else NONE
        except ValueError:
            # Annotations that break the rules: a conforming client sends no headers for the
            # tool, and the SDK server then checks none.
            declared = NONE
        if declared:
            found[str(tool.get("name"))] = declared
        else:
            found.pop(str(tool.get("name")), None)
    if found:
        _declared[server] = found
    else:
        _declared.pop(server, None)


def declared_params(server: str, tool: str) -> tuple[ParamHeader, ...]:
    """The parameters `server`'s tool `tool` mirrors into headers (empty: none, or unknown)."""
    of_server = _declared.get(server)
    return NONE if of_server is None else of_server.get(tool, NONE)


def call_param_headers(server: str, params: Mapping[str, Any]) -> dict[str, str]:
    """The Mcp-Param-* headers of a tools/call (its params, the tool's name as `server` knows
    it) that the gateway sends itself: mirrored from its arguments (none when the tool declares
    none); the upstream refuses the call without them."""
    declared = declared_params(server, str(params.get("name")))
    if not declared:
        return {}
    arguments = params.get("arguments")
    return mirror_param_headers(arguments if isinstance(arguments, Mapping) else None, declared)


__all__ = ["call_param_headers", "declared_params", "record_tool_params"]
