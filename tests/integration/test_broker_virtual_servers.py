"""Virtual servers (Kuadrant's MCPVirtualServer): a client selecting one with the
`X-Mcp-Virtualserver` header sees and reaches only its items through the broker; an unknown
one is refused precisely. Real SDK sample servers; the official SDK client and raw HTTP."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_gateway.config import GatewayConfig
from tests.support.servers import (
    JSON_AND_SSE,
    Broker,
    initialize_body,
    open_session,
    running_broker,
    sample_in_process,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx2.:ResourceWarning",
        "ignore:Async generator 'httpcore2.:ResourceWarning",
    ),
]

ECHO_ONLY = "team-a/echo-only"


@asynccontextmanager
async def broker() -> AsyncIterator[Broker]:
    async with sample_in_process("echo") as echo, sample_in_process("conformance") as fixture:
        config = GatewayConfig.model_validate(
            {
                "servers": [
                    {"name": "echo", "url": echo, "prefix": "echo_"},
                    {"name": "fx", "url": fixture, "prefix": "fx_"},
                ],
                "virtualServers": [
                    {
                        "name": ECHO_ONLY,
                        "tools": ["echo_echo", "fx_test_simple_text", "not_a_tool"],
                        "prompts": ["fx_test_simple_prompt"],
                        "resources": ["mcp-gateway:fx_test://static-text"],
                    },
                    {"name": "team-b/nothing", "tools": []},
                ],
                "gateway": {"broker_listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "page_size": 1000},
            }
        )
        async with running_broker(config) as running:
            yield running


async def _rpc(http: httpx.AsyncClient, url: str, headers: dict[str, str], rid: int, method: str, params: Any = None) -> httpx.Response:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        body["params"] = params
    return await http.post(url, json=body, headers=headers)


async def test_the_official_client_with_the_header_lists_and_calls_only_its_virtual_server() -> None:
    async with broker() as running:
        async with httpx2.AsyncClient(headers={"X-MCP-VirtualServer": ECHO_ONLY}) as http2, Client(
            streamable_http_client(running.url, http_client=http2)
        ) as client:
            tools = sorted(tool.name for tool in (await client.list_tools()).tools)
            prompts = [prompt.name for prompt in (await client.list_prompts()).prompts]
            resources = [str(r.uri) for r in (await client.list_resources()).resources]
            echoed = await client.call_tool("echo_echo", {"text": "inside"})
        async with Client(running.url) as everything:
            all_tools = {tool.name for tool in (await everything.list_tools()).tools}
        gc.collect()
    assert tools == ["echo_echo", "fx_test_simple_text"]  # a listed name no upstream serves is absent
    assert prompts == ["fx_test_simple_prompt"]
    assert resources == ["mcp-gateway:fx_test://static-text"]
    assert echoed.content[0].text == "inside"  # type: ignore[union-attr]
    assert {"echo_add", "fx_test_error_handling"} <= all_tools  # without the header: everything


async def test_outside_items_are_unknown_and_an_unknown_virtual_server_is_refused() -> None:
    async with broker() as running, httpx.AsyncClient(timeout=20) as http:
        inside = await open_session(http, running.url, **{"x-mcp-virtualserver": ECHO_ONLY})
        outside_tool = await _rpc(http, running.url, inside, 2, "tools/call", {"name": "echo_add", "arguments": {"a": 1, "b": 2}})
        assert outside_tool.json() == {
            "jsonrpc": "2.0",
            "id": 2,
            "error": {"code": -32602, "message": "Unknown tool: echo_add"},
        }
        outside_prompt = await _rpc(http, running.url, inside, 3, "prompts/get", {"name": "fx_test_prompt_with_arguments", "arguments": {"arg1": "a", "arg2": "b"}})
        assert outside_prompt.json()["error"]["code"] == -32602
        outside_read = await _rpc(http, running.url, inside, 4, "resources/read", {"uri": "mcp-gateway:fx_test://static-binary"})
        assert outside_read.json()["error"]["code"] == -32002
        inside_read = await _rpc(http, running.url, inside, 5, "resources/read", {"uri": "mcp-gateway:fx_test://static-text"})
        assert inside_read.json()["result"]["contents"][0]["uri"] == "mcp-gateway:fx_test://static-text"
        # The same session without the header reaches everything (the header selects, per request).
        plain = {k: v for k, v in inside.items() if k != "x-mcp-virtualserver"}
        added = await _rpc(http, running.url, plain, 6, "tools/call", {"name": "echo_add", "arguments": {"a": 1, "b": 2}})
        assert "result" in added.json()
        empty = await _rpc(http, running.url, {**plain, "x-mcp-virtualserver": "team-b/nothing"}, 7, "tools/list")
        assert empty.json()["result"] == {"tools": []}

        for headers, rid, method in ((plain, 8, "tools/list"), (JSON_AND_SSE, 1, "initialize")):
            unknown = await _rpc(
                http, running.url, {**headers, "x-mcp-virtualserver": "team-a/ECHO-ONLY"}, rid, method,
                initialize_body()["params"] if method == "initialize" else None,
            )
            assert unknown.status_code == 400
            assert unknown.json()["id"] == rid
            assert unknown.json()["error"]["code"] == -32600
            assert "unknown virtual server 'team-a/ECHO-ONLY'" in unknown.json()["error"]["message"]
