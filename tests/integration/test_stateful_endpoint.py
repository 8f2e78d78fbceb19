"""`/mcp/stateful` through real Envoy + the gateway with `serve_discover` on: the endpoint for
clients that must stay on the handshake revisions. The SDK client in its default (auto) mode
ends up on an initialize session there, and every 2026-07-28 request is refused as a server
that does not speak that revision refuses it, while /mcp serves the same client statelessly."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.integration.test_modern_clients import (
    MODERN,
    counter_server,
    modern_body,
    modern_headers,
)
from tests.support.routing import Stack, gateway_stack, probes, serve_sdk_server, sse_result

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx2.:ResourceWarning",
        "ignore:Async generator 'httpcore2.:ResourceWarning",
    ),
]

INIT = {
    "jsonrpc": "2.0",
    "id": "init",
    "method": "initialize",
    "params": {"protocolVersion": MODERN, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
JSON_AND_SSE = {"accept": "application/json, text/event-stream"}


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with probes("alpha") as urls, trio.open_nursery() as nursery:
        port = await nursery.start(serve_sdk_server, counter_server())
        servers = [("alpha", urls["alpha"], "a_"), ("counter", f"http://127.0.0.1:{port}/mcp", "c_")]
        async with gateway_stack(servers, tmp_path, serve_discover=True) as running:
            yield running
        nursery.cancel_scope.cancel()


def stateful(stack: Stack) -> str:
    return stack.url.removesuffix("/mcp") + "/mcp/stateful"


async def test_sdk_client_in_auto_mode_takes_the_handshake_on_mcp_stateful(stack: Stack) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    with trio.fail_after(30):
        async with Client(streamable_http_client(stateful(stack)), mode="auto") as client:
            # server/discover got -32601, so the client fell back to initialize.
            assert client.protocol_version == "2025-11-25"
            assert client.session.initialize_result is not None
            assert client.session.discover_result is None
            names = sorted(t.name for t in (await client.list_tools()).tools)
            # Routed by the router on the client's session, as on /mcp.
            hello = await client.call_tool("c_hello", {"who": "stateful"})
            counted = await client.call_tool("c_count", {"n": 3}, progress_callback=on_progress)
            added = await client.call_tool("a_add", {"a": 2, "b": 3})
        # The same client on /mcp stays on the modern revision (serve_discover is on).
        async with Client(streamable_http_client(stack.url), mode="auto") as modern:
            assert modern.protocol_version == MODERN
            assert modern.session.discover_result is not None
    gc.collect()
    assert names == ["a_add", "a_observe", "a_roots", "a_wait", "c_count", "c_hello"]
    assert hello.content[0].text == "hello stateful"  # type: ignore[union-attr]
    assert counted.content[0].text == "counted to 3"  # type: ignore[union-attr]
    assert progress == [1.0, 2.0, 3.0]
    assert added.structured_content == {"result": 5}


async def test_mcp_stateful_refuses_2026_07_28_requests_as_a_handshake_only_server(stack: Stack) -> None:
    url = stateful(stack)
    async with httpx.AsyncClient(timeout=10) as http:
        # The probe: -32601, on which a dual-era client falls back (404 under the modern header).
        probe = await http.post(url, json=modern_body("server/discover", rid=1), headers=modern_headers("server/discover"))
        assert probe.status_code == 404
        assert probe.json()["id"] == 1 and probe.json()["error"]["code"] == -32601
        plain = await http.post(url, json={"jsonrpc": "2.0", "id": 2, "method": "server/discover"}, headers=JSON_AND_SSE)
        assert plain.status_code == 200 and plain.json()["error"]["code"] == -32601
        # Any other 2026-07-28 request, routed or not: the 400 of an unsupported version, never
        # -32022 (which would say we are modern) and never forwarded to the upstream.
        for rid, method, params, name in (
            (3, "tools/call", {"name": "c_hello", "arguments": {"who": "x"}}, "c_hello"),
            (4, "tools/list", None, None),
        ):
            refused = await http.post(url, json=modern_body(method, params, rid=rid), headers=modern_headers(method, name))
            assert refused.status_code == 400, refused.text
            error = refused.json()
            assert error["id"] == rid and error["error"]["code"] == -32600
            assert "unsupported MCP-Protocol-Version '2026-07-28'" in error["error"]["message"]
            assert "2025-11-25" in error["error"]["message"]
            assert "mcp-session-id" not in refused.headers
        # A GET in the modern style: no stream without a session.
        get = await http.get(url, headers={"accept": "text/event-stream", "mcp-protocol-version": MODERN})
        assert get.status_code == 405
        # initialize asking for 2026-07-28 is answered with the latest handshake revision.
        init = await http.post(url, json=INIT, headers=JSON_AND_SSE)
        assert init.status_code == 200
        assert init.json()["result"]["protocolVersion"] == "2025-11-25"
        session = {"mcp-session-id": init.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        # In that session, a routed call over raw HTTP: the router's, as on /mcp.
        call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "c_hello", "arguments": {"who": "raw"}}}
        answer = await http.post(url, json=call, headers={**JSON_AND_SSE, **session})
        assert answer.status_code == 200
        assert sse_result(answer)["result"]["content"][0]["text"] == "hello raw"
        # The session's version is checked like any handshake session's.
        listing = {"jsonrpc": "2.0", "id": 6, "method": "tools/list"}
        bad = await http.post(url, json=listing, headers={**JSON_AND_SSE, **session, "mcp-protocol-version": "1999-01-01"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == -32600, bad.text
        # Origin is checked as on /mcp, before anything else.
        foreign = await http.post(url, json=INIT, headers={**JSON_AND_SSE, "origin": "https://evil.example"})
        assert foreign.status_code == 403
        ended = await http.delete(url, headers=session)
        assert ended.status_code == 200
        gone = await http.post(url, json=call, headers={**JSON_AND_SSE, **session})
        assert gone.status_code == 404
