"""Virtual servers through a real Envoy: the client's `X-Mcp-Virtualserver` passes Envoy's early
strip of x-mcp-* headers; the broker filters the lists by it and the router refuses a routed
call outside it (with the broker's answer) while one inside goes to its upstream."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from mcp_gateway.config import VirtualServer
from tests.support.routing import (
    call_body,
    gateway_stack,
    initialize_raw,
    probes,
    session_headers,
    sse_result,
)

pytestmark = pytest.mark.integration

NARROW = VirtualServer(name="team/narrow", tools=["a_add"])


async def test_the_broker_filters_the_list_and_the_router_refuses_calls_outside(tmp_path: Path) -> None:
    async with probes("alpha") as urls, gateway_stack(
        [("alpha", urls["alpha"], "a_")], tmp_path, [NARROW]
    ) as stack, httpx.AsyncClient(headers={"x-mcp-virtualserver": "team/narrow"}, timeout=15) as client:
        session = await initialize_raw(client, stack.url)
        listed = await client.post(
            stack.url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=session_headers(session)
        )
        assert [t["name"] for t in sse_result(listed)["result"]["tools"]] == ["a_add"]

        inside = await client.post(stack.url, json=call_body("a_add", {"a": 2, "b": 3}, 2), headers=session_headers(session))
        assert sse_result(inside)["result"]["content"][0]["text"] == "5"
        routed = await stack.envoy.wait_for_access(lambda e: e["mcp_tool"] == "add")
        assert routed[0]["upstream_cluster"] == "mcp_upstream_alpha"

        outside = await client.post(stack.url, json=call_body("a_observe", request_id=3), headers=session_headers(session))
        assert outside.status_code == 200
        assert sse_result(outside) == {
            "jsonrpc": "2.0", "id": 3, "error": {"code": -32602, "message": "Unknown tool: a_observe"}
        }

        unknown = await client.post(
            stack.url,
            json=call_body("a_add", {"a": 1, "b": 1}, 4),
            headers=session_headers(session, **{"x-mcp-virtualserver": "team/nope"}),
        )
        assert unknown.status_code == 400
        assert unknown.json()["id"] == 4 and unknown.json()["error"]["code"] == -32600
        # Both refusals are the router's own answers (its ext_proc immediate response): neither
        # reached the broker nor alpha (no upstream host).
        await stack.envoy.wait_for_access(lambda e: e["status"] == 400)
        refused = [e for e in stack.envoy.access_entries() if e["details"] == "mcp_gateway_router"]
        assert sorted(int(str(e["status"])) for e in refused) == [200, 400]
        assert all(e["upstream_host"] is None for e in refused)
