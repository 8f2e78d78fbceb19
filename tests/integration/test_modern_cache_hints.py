"""Cache hints on a 2026-07-28 client's lists reflect the gateway's view: the most conservative
of what the upstreams whose items are in the list said (the shortest ttlMs; private if any says
private), and ttlMs 0 as soon as one upstream that opens with initialize is in it (it gives no
hint, and its list can change at any moment). Through real Envoy, stateless SDK 2.x upstreams
with their own cache hints."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import trio
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer

from tests.support.modern import modern_server, serve_modern
from tests.support.routing import gateway_stack, serve_sdk_server

pytestmark = pytest.mark.integration

MODERN = "2026-07-28"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
}


async def tools_list(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    answer = await http.post(
        url,
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": ENVELOPE}},
        headers={"accept": "application/json, text/event-stream", "mcp-protocol-version": MODERN, "mcp-method": "tools/list"},
    )
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()["result"]
    return result


def hinted(name: str, ttl_ms: int, scope: Literal["public", "private"]) -> MCPServer:
    return modern_server(name, cache_hints={"tools/list": CacheHint(ttl_ms=ttl_ms, scope=scope)})


async def test_the_shortest_ttl_and_the_narrowest_scope_of_the_upstreams_win(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        long_lived = await nursery.start(serve_modern, hinted("long", 60_000, "public"))
        short_lived = await nursery.start(serve_modern, hinted("short", 5_000, "private"))
        servers = [
            ("long", f"http://127.0.0.1:{long_lived}/mcp", "l_"),
            ("short", f"http://127.0.0.1:{short_lived}/mcp", "s_"),
        ]
        async with gateway_stack(servers, tmp_path) as stack, httpx.AsyncClient(timeout=10) as http:
            listed = await tools_list(http, stack.url)
        nursery.cancel_scope.cancel()
    assert {"l_add", "s_add"} <= {tool["name"] for tool in listed["tools"]}
    assert listed["ttlMs"] == 5_000 and listed["cacheScope"] == "private"


async def test_one_public_upstream_gives_its_own_hint_and_a_handshake_upstream_makes_it_0(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        modern = await nursery.start(serve_modern, hinted("modern", 30_000, "public"))
        legacy = await nursery.start(serve_sdk_server, modern_server("legacy"))
        alone = [("modern", f"http://127.0.0.1:{modern}/mcp", "m_")]
        async with gateway_stack(alone, tmp_path / "alone") as stack, httpx.AsyncClient(timeout=10) as http:
            listed = await tools_list(http, stack.url)
        assert (listed["ttlMs"], listed["cacheScope"]) == (30_000, "public")
        mixed = [*alone, ("legacy", f"http://127.0.0.1:{legacy}/mcp", "o_")]
        async with gateway_stack(mixed, tmp_path / "mixed") as stack, httpx.AsyncClient(timeout=10) as http:
            listed = await tools_list(http, stack.url)
        assert (listed["ttlMs"], listed["cacheScope"]) == (0, "public")
        nursery.cancel_scope.cancel()
