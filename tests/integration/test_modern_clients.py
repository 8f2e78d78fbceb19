"""2026-07-28 ("modern") clients through real Envoy + the gateway: the official SDK client in its
default mode (server/discover, then it stays modern) and pinned to 2026-07-28, and raw requests
for every refusal the revision defines (status and JSON-RPC code exact)."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer

from mcp_gateway.protocol import encode_header_value
from tests.support.routing import Stack, gateway_stack, probes, serve_sdk_server, sse_result

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx2.:ResourceWarning",
        "ignore:Async generator 'httpcore2.:ResourceWarning",
    ),
]

MODERN = "2026-07-28"
CAPS = "io.modelcontextprotocol/clientCapabilities"
VERSION = "io.modelcontextprotocol/protocolVersion"


def counter_server() -> MCPServer:
    server = MCPServer("counter", version="1.0.0")

    @server.tool(description="Count to n, reporting progress at each step.")
    async def count(n: int, ctx: Context) -> str:
        for step in range(1, n + 1):
            await ctx.report_progress(step, n)
        return f"counted to {n}"

    @server.tool(description="Say hello.")
    def hello(who: str) -> str:
        return f"hello {who}"

    return server


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with probes("alpha") as urls, trio.open_nursery() as nursery:
        port = await nursery.start(serve_sdk_server, counter_server())
        servers = [("alpha", urls["alpha"], "a_"), ("counter", f"http://127.0.0.1:{port}/mcp", "c_")]
        # serve_discover: the SDK's auto mode then stays on 2026-07-28 (off by default).
        async with gateway_stack(servers, tmp_path, page_size=2, serve_discover=True) as running:
            yield running
        nursery.cancel_scope.cancel()


async def _all_tools(client: Client) -> tuple[list[str], int]:
    names: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await client.list_tools(cursor=cursor, cache_mode="bypass")
        pages += 1
        names += [t.name for t in page.tools]
        cursor = page.next_cursor
        if cursor is None:
            return names, pages


@pytest.mark.parametrize("mode", ["auto", MODERN])
async def test_sdk_client_discovers_lists_pages_and_calls_with_progress(stack: Stack, mode: str) -> None:
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    with trio.fail_after(30):
        async with Client(streamable_http_client(stack.url), mode=mode) as client:
            # The default mode probed server/discover and stayed on the modern revision.
            assert client.protocol_version == MODERN
            names, pages = await _all_tools(client)
            added = await client.call_tool("a_add", {"a": 2, "b": 3})
            counted = await client.call_tool("c_count", {"n": 3}, progress_callback=on_progress)
            hello = await client.call_tool("c_hello", {"who": "modern"})
    gc.collect()
    assert sorted(names) == ["a_add", "a_observe", "a_roots", "a_wait", "c_count", "c_hello"]
    assert pages == 3  # page_size 2
    assert added.structured_content == {"result": 5}
    assert counted.content[0].text == "counted to 3"  # type: ignore[union-attr]
    assert progress == [1.0, 2.0, 3.0]
    assert hello.content[0].text == "hello modern"  # type: ignore[union-attr]


def modern_body(method: str, params: dict[str, Any] | None = None, rid: Any = 7, caps: dict[str, Any] | None = None,
                version: str = MODERN) -> dict[str, Any]:
    meta = {VERSION: version, CAPS: caps or {}, "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": {**(params or {}), "_meta": meta}}


def modern_headers(method: str, name: str | None = None, version: str = MODERN) -> dict[str, str]:
    headers = {"accept": "application/json, text/event-stream", "mcp-protocol-version": version, "mcp-method": method}
    if name is not None:
        headers["mcp-name"] = name
    return headers


async def test_discover_and_lists_carry_the_revision_fields(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        discovered = await http.post(stack.url, json=modern_body("server/discover"), headers=modern_headers("server/discover"))
        listed = await http.post(stack.url, json=modern_body("tools/list"), headers=modern_headers("tools/list"))
    assert discovered.status_code == 200
    result = discovered.json()["result"]
    assert result["supportedVersions"][0] == MODERN and "2025-11-25" in result["supportedVersions"]
    assert "tools" in result["capabilities"] and result["resultType"] == "complete"
    assert "mcp-session-id" not in discovered.headers
    page = listed.json()["result"]
    assert page["resultType"] == "complete"
    # Legacy upstreams give no cache hints: the gateway cannot promise the list for any time.
    assert page["ttlMs"] == 0 and page["cacheScope"] == "public"


async def test_a_base64_mcp_name_is_decoded_and_routed(stack: Stack) -> None:
    body = modern_body("tools/call", {"name": "a_add", "arguments": {"a": 1, "b": 1}})
    headers = modern_headers("tools/call", "=?base64?" + "YV9hZGQ=" + "?=")  # "a_add"
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(stack.url, json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    # Routed straight to the upstream (router/modern_clients.py): its JSON or SSE answer.
    assert sse_result(answer)["result"]["structuredContent"] == {"result": 2}
    assert encode_header_value("a_add") == "a_add"  # plain names travel plain


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        # Mcp-Name disagreeing with the body's tool: 400 / -32020, never the call.
        (modern_body("tools/call", {"name": "a_add", "arguments": {}}), modern_headers("tools/call", "a_wait"), 400, -32020),
        # A base64 Mcp-Name of another name.
        (modern_body("tools/call", {"name": "a_add", "arguments": {}}),
         modern_headers("tools/call", "=?base64?YV93YWl0?="), 400, -32020),
        # Mcp-Name missing on tools/call; Mcp-Method missing; Mcp-Method disagreeing.
        (modern_body("tools/call", {"name": "a_add", "arguments": {}}), modern_headers("tools/call"), 400, -32020),
        (modern_body("tools/list"), {"accept": "application/json", "mcp-protocol-version": MODERN}, 400, -32020),
        (modern_body("tools/list"), modern_headers("prompts/list"), 400, -32020),
        # MCP-Protocol-Version disagreeing with _meta.
        (modern_body("tools/list", version="2026-07-28"), modern_headers("tools/list", version="2099-01-01"), 400, -32020),
        # A modern version we do not serve, header and _meta agreeing.
        (modern_body("tools/list", version="2099-01-01"), modern_headers("tools/list", version="2099-01-01"), 400, -32022),
        # No _meta envelope.
        ({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}}, modern_headers("tools/list"), 400, -32602),
        # Methods the revision removed or never had: 404 / -32601.
        (modern_body("ping"), modern_headers("ping"), 404, -32601),
        (modern_body("logging/setLevel", {"level": "info"}), modern_headers("logging/setLevel"), 404, -32601),
        (modern_body("no/such"), modern_headers("no/such"), 404, -32601),
    ],
)
async def test_refusals_have_the_revisions_status_and_code(
    stack: Stack, body: dict[str, Any], headers: dict[str, str], status: int, code: int
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(stack.url, json=body, headers=headers)
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["id"] == 7 and error["error"]["code"] == code
    if code == -32022:
        assert error["error"]["data"] == {"supported": [MODERN], "requested": "2099-01-01"}


async def test_a_duplicated_routing_header_is_a_mismatch(stack: Stack) -> None:
    body = json.dumps(modern_body("tools/list")).encode()
    headers = [("accept", "application/json"), ("content-type", "application/json"),
               ("mcp-protocol-version", MODERN), ("mcp-method", "tools/list"), ("mcp-method", "tools/list")]
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(stack.url, content=body, headers=headers)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == -32020


@pytest.mark.parametrize("verb", ["GET", "DELETE"])
async def test_get_and_delete_of_a_modern_request_are_405(stack: Stack, verb: str) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.request(verb, stack.url, headers={"accept": "text/event-stream", "mcp-protocol-version": MODERN})
    assert answer.status_code == 405
    assert answer.headers["allow"] == "POST"


async def test_modern_calls_share_the_gateway_held_backend_session(stack: Stack) -> None:
    hashes = []
    async with httpx.AsyncClient(timeout=10) as http:
        for rid, caps in enumerate([{}, {}, {"sampling": {}}]):
            body = modern_body("tools/call", {"name": "a_observe", "arguments": {}}, rid=rid, caps=caps)
            answer = await http.post(stack.url, json=body, headers=modern_headers("tools/call", "a_observe"))
            assert answer.status_code == 200, answer.text
            assert "mcp-session-id" not in answer.headers
            hashes.append(json.loads(sse_result(answer)["result"]["content"][0]["text"])["session_hash"])
    # Clients share one backend session per declared feature set: it declares what a legacy
    # upstream may ask during a call (broker/input_required.py), so sampling gets its own.
    assert hashes[0] is not None and hashes[0] == hashes[1]
    assert hashes[2] is not None and hashes[2] != hashes[0]
