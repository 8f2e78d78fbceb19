"""The public listener serves MCP and nothing else; status, metrics and probes live on the
admin address (gateway.admin_listen), which Envoy has no route to."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.routing import gateway_stack, initialize_raw, probes, session_headers

pytestmark = pytest.mark.integration

ADMIN_PATHS = ("/status", "/status/alpha", "/metrics", "/healthz", "/readyz")


async def test_the_public_port_answers_404_for_admin_paths_and_the_admin_address_serves_them(
    tmp_path: Path,
) -> None:
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path) as stack, \
            httpx.AsyncClient(timeout=10) as client:
        public = stack.url.removesuffix("/mcp")
        streams = await stack.envoy.stat("http.mcp.ext_proc.streams_started")
        for path in ADMIN_PATHS:
            for method in ("GET", "POST", "HEAD"):
                answer = await client.request(method, public + path, headers={"x-mcp-servername": "alpha"})
                assert answer.status_code == 404, (method, path, answer.status_code)
                if method != "HEAD":
                    assert answer.json() == {"error": "not found: MCP is served at /mcp"}
        # Envoy answered those itself: no ext_proc stream, nothing reached the broker or alpha.
        assert await stack.envoy.stat("http.mcp.ext_proc.streams_started") == streams
        # Paths near /mcp are not /mcp.
        for path in ("/mcp/", "/mcpx", "/mcp/../status", "/MCP", "/mcp/ws/x"):
            assert (await client.get(public + path)).status_code == 404, path

        # The broker's MCP port (what Envoy routes to) does not serve them either...
        for path in ADMIN_PATHS:
            assert (await client.get(stack.broker.base + path)).status_code == 404, path
        # ...the admin address does.
        admin = stack.broker.admin
        status = (await client.get(f"{admin}/status")).json()
        assert [u["name"] for u in status["upstreams"]] == ["alpha"]
        assert (await client.get(f"{admin}/status/alpha")).json()["state"] == "ready"
        assert (await client.get(f"{admin}/healthz")).status_code == 200
        assert (await client.get(f"{admin}/readyz")).status_code == 200
        assert "mcp_gateway_" in (await client.get(f"{admin}/metrics")).text
        # ...and has no MCP endpoint.
        assert (await client.post(f"{admin}/mcp", json={})).status_code == 404

        # MCP itself still works through the public port, query string and all.
        session = await initialize_raw(client, stack.url + "?client=x")
        listed = await client.post(
            stack.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=session_headers(session)
        )
        assert listed.status_code == 200 and "a_add" in listed.text
