"""2026-07-28 `x-mcp-header` tools (SEP-2243) behind the gateway, through a real Envoy: a modern
upstream (the official SDK 2.x server, stateless; it refuses a call whose `Mcp-Param-*` headers
are missing or disagree with the arguments, -32020) gets correct headers on every path the
gateway sends a tools/call on: the router's (a modern client), Envoy's Lua fast path (its later
calls), the broker's (a modern client declaring elicitation), a legacy client's routed call and
its call through the broker (mirrored by the gateway: such a client sends none). A modern
client's mismatching header is refused by the gateway with its id; a header no annotation
declares reaches the upstream as it was sent. docs/router.md, "Modern upstreams"."""

from __future__ import annotations

import gc
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import ElicitRequestParams, ElicitResult
from pydantic import Field

from mcp_gateway.protocol import encode_header_value
from tests.integration.test_modern_routing import TO_BROKER, modern_call, modern_headers
from tests.support.modern import serve_modern
from tests.support.routing import SDK_CLIENT_WARNINGS, Stack, gateway_stack, sse_result

pytestmark = [pytest.mark.integration, SDK_CLIENT_WARNINGS]

MODERN = "2026-07-28"
EXT_PROC_STREAMS = "http.mcp.ext_proc.streams_started"
# Decisions that outlive a test on a loaded machine (test_modern_fast_path.py says why).
LONG_LIVED: dict[str, Any] = {"envoy": {"fast_path": {"ttl_seconds": 30}}}


def region_server() -> MCPServer:
    server = MCPServer("regions", version="2.0.0")

    @server.tool(description="Report the region and the Mcp-Param-* headers that reached the upstream.")
    def where(region: Annotated[str, Field(json_schema_extra={"x-mcp-header": "Region"})], ctx: Context) -> str:
        headers = {k.lower(): v for k, v in (ctx.headers or {}).items() if k.lower().startswith("mcp-param-")}
        return json.dumps({"region": region, "headers": headers})

    return server


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_modern, region_server())
        async with gateway_stack([("regions", f"http://127.0.0.1:{port}/mcp", "new_")], tmp_path, **LONG_LIVED) as running:
            yield running
        nursery.cancel_scope.cancel()


def seen(result: Any) -> dict[str, Any]:
    assert not result.is_error, result
    return dict(json.loads(result.content[0].text))


async def decline(context: Any, params: ElicitRequestParams) -> ElicitResult:
    return ElicitResult(action="decline")


async def test_an_sdk_client_of_either_revision_calls_an_x_mcp_header_tool_on_every_path(stack: Stack) -> None:
    envoy = stack.envoy
    with trio.fail_after(60):
        async with Client(streamable_http_client(stack.url), mode=MODERN) as client:
            await client.list_tools()  # the SDK client mirrors only the tools it has listed
            streams, to_broker = await envoy.stat(EXT_PROC_STREAMS), await envoy.stat(TO_BROKER)
            routed = seen(await client.call_tool("new_where", {"region": "eu-west1"}))
            assert await envoy.stat(EXT_PROC_STREAMS) > streams  # the router's call
            streams = await envoy.stat(EXT_PROC_STREAMS)
            fast = seen(await client.call_tool("new_where", {"region": " eu-central1"}))  # base64: padded
            assert await envoy.stat(EXT_PROC_STREAMS) == streams, "the second call went through the ext_proc"
            assert await envoy.stat(TO_BROKER) == to_broker
        # Declaring elicitation: the broker forwards the call (docs/router.md, "Modern clients").
        async with Client(streamable_http_client(stack.url), mode=MODERN, elicitation_callback=decline) as client:
            await client.list_tools()
            to_broker = await envoy.stat(TO_BROKER)
            brokered = seen(await client.call_tool("new_where", {"region": "Zürich"}))
            assert await envoy.stat(TO_BROKER) > to_broker
        # A legacy client sends no Mcp-Param-* header: the gateway mirrors them, on the router's
        # path (a session that cannot be asked anything) and on the broker's (one that can).
        async with Client(streamable_http_client(stack.url), mode="legacy") as client:
            assert client.protocol_version != MODERN
            legacy = seen(await client.call_tool("new_where", {"region": "us-east1"}))
        async with Client(streamable_http_client(stack.url), mode="legacy", elicitation_callback=decline) as client:
            to_broker = await envoy.stat(TO_BROKER)
            legacy_brokered = seen(await client.call_tool("new_where", {"region": "日本"}))
            assert await envoy.stat(TO_BROKER) > to_broker
    gc.collect()  # the SDK client's warnings surface here, not in another test
    assert routed == {"region": "eu-west1", "headers": {"mcp-param-region": "eu-west1"}}
    assert fast == {"region": " eu-central1", "headers": {"mcp-param-region": encode_header_value(" eu-central1")}}
    assert brokered == {"region": "Zürich", "headers": {"mcp-param-region": encode_header_value("Zürich")}}
    assert legacy == {"region": "us-east1", "headers": {"mcp-param-region": "us-east1"}}
    assert legacy_brokered == {"region": "日本", "headers": {"mcp-param-region": encode_header_value("日本")}}


def refused(response: httpx.Response, request_id: Any) -> str:
    assert response.status_code == 400, response.text
    message = response.json()
    assert (message["id"], message["error"]["code"]) == (request_id, -32020), message
    return str(message["error"]["message"])


async def test_a_mismatching_mcp_param_header_is_the_clients_400_and_an_undeclared_one_passes(stack: Stack) -> None:
    elicitation = {"elicitation": {}}
    async with httpx.AsyncClient(timeout=15) as http:
        for request_id, capabilities in ((21, None), ("broker", elicitation)):
            body = modern_call("new_where", {"region": "eu"}, request_id=request_id, capabilities=capabilities)
            wrong = await http.post(stack.url, json=body, headers=modern_headers("new_where", **{"mcp-param-region": "us"}))
            assert "Mcp-Param-Region" in refused(wrong, request_id)
            missing = await http.post(stack.url, json=body, headers=modern_headers("new_where"))
            assert "missing" in refused(missing, request_id)
            malformed = modern_headers("new_where", **{"mcp-param-region": "=?base64?%%?="})
            assert "malformed" in refused(await http.post(stack.url, json=body, headers=malformed), request_id)
        # The router's call, then the same on Envoy's fast path: an Mcp-Param-* header no
        # annotation declares reaches the upstream untouched, beside the declared one.
        headers = modern_headers("new_where", **{"mcp-param-region": "=?base64?ZXU=?=", "mcp-param-trace": "t 1"})
        for request_id in (22, 23):
            answer = await http.post(stack.url, json=modern_call("new_where", {"region": "eu"}, request_id=request_id), headers=headers)
            message = sse_result(answer)
            assert message["id"] == request_id
            reported = json.loads(message["result"]["content"][0]["text"])
            assert reported["headers"] == {"mcp-param-region": "=?base64?ZXU=?=", "mcp-param-trace": "t 1"}
        # On the fast path the modern upstream checks them itself (docs/router.md, "Modern
        # upstreams"): the same 400/-32020 with the client's id, without the ext_proc.
        streams = await stack.envoy.stat(EXT_PROC_STREAMS)
        mismatch = {**headers, "mcp-param-region": "us"}
        answer = await http.post(stack.url, json=modern_call("new_where", {"region": "eu"}, request_id=24), headers=mismatch)
        refused(answer, 24)
        assert await stack.envoy.stat(EXT_PROC_STREAMS) == streams
