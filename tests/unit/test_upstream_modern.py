"""The upstream client and supervisor against a modern upstream (MCP 2026-07-28): the official
SDK's server in stateless mode on loopback (real protocol on both sides), and a scripted one that
refuses initialize outright (httpx's MockTransport)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from mcp_gateway.config import GatewayConfig
from mcp_gateway.upstream import HttpUpstreamClient, Supervisor, UpstreamState
from mcp_gateway.upstream.modern import (
    CLIENT_CAPABILITIES_META,
    MODERN_VERSION,
    PROTOCOL_VERSION_META,
    body_with_meta,
    mode_of,
    request_meta,
)
from tests.support.modern import modern_server, serve_modern
from tests.support.servers import FAST_TIMING, gateway_config

pytestmark = pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx2.:ResourceWarning",
    "ignore:Async generator 'httpcore2.:ResourceWarning",
)


async def _modern_config(nursery: trio.Nursery, name: str = "modern") -> GatewayConfig:
    port = await nursery.start(serve_modern, modern_server(name))
    return gateway_config([(name, f"http://127.0.0.1:{port}/mcp", f"{name}_")])


async def test_a_stateless_sdk_server_is_spoken_to_in_the_modern_revision() -> None:
    async with trio.open_nursery() as nursery:
        server = (await _modern_config(nursery)).servers[0]
        async with HttpUpstreamClient(server, capabilities={"roots": {}}) as client:
            result = await client.initialize()
            assert client.modern and client.stateless
            assert client.session_id is None
            assert result["protocolVersion"] == MODERN_VERSION == client.protocol_version
            assert result["capabilities"]["tools"]["listChanged"] is True
            assert result["serverInfo"]["name"] == "modern"
            tools = await client.list_all("tools/list", "tools")
            assert {t["name"] for t in tools} >= {"add", "count", "observe", "grow"}
            called = await client.request("tools/call", {"name": "observe", "arguments": {}})
            seen = json.loads(called["content"][0]["text"])
            # The revision's mirrored headers, no session, the version in the header too.
            assert seen == {
                "server": "modern", "session": None, "method": "tools/call", "name": "observe",
                "version": MODERN_VERSION, "servername": None,
            }
            progress: list[Any] = []

            async def on_message(message: dict[str, Any]) -> None:
                progress.append(message["params"]["progress"])

            counted = await client.request(
                "tools/call",
                {"name": "count", "arguments": {"steps": 3}, "_meta": {"progressToken": "p"}},
                on_message,
            )
            assert counted["content"][0]["text"] == "modern counted to 3"
            assert progress == [1, 2, 3]
            await client.ping()  # server/discover: 2026-07-28 has no ping
        nursery.cancel_scope.cancel()


async def test_list_changes_come_on_subscriptions_listen() -> None:
    async with trio.open_nursery() as nursery:
        server = (await _modern_config(nursery)).servers[0]
        async with HttpUpstreamClient(server) as client:
            await client.initialize()
            heard = trio.Event()

            async def on_message(message: dict[str, Any]) -> None:
                if message.get("method") == "notifications/tools/list_changed":
                    heard.set()

            # started() only once the upstream acknowledged the subscription.
            await nursery.start(client.listen, on_message)
            await client.request("tools/call", {"name": "grow", "arguments": {"tool": "fresh"}})
            with trio.fail_after(5):
                await heard.wait()
        nursery.cancel_scope.cancel()


async def test_the_supervisor_serves_a_modern_upstream_and_relists_on_its_listen_stream() -> None:
    async with trio.open_nursery() as nursery:
        config = await _modern_config(nursery)
        supervisor = Supervisor(config, timing=FAST_TIMING)
        await nursery.start(supervisor.run)
        with trio.fail_after(10):
            await supervisor.wait_first_round()
        status = supervisor.status_of("modern")
        assert status is not None and status.state is UpstreamState.READY, status
        document = status.to_json()
        assert document["protocolVersion"] == MODERN_VERSION and document["stateless"] is True
        mode = mode_of(config.servers[0])
        assert mode is not None and mode.modern and mode.stateless
        changes = supervisor.changes()
        async with HttpUpstreamClient(config.servers[0]) as client:
            await client.initialize()
            await client.request("tools/call", {"name": "grow", "arguments": {"tool": "late"}})
        with trio.fail_after(10):
            while "late" not in _tool_names(supervisor):
                await changes.receive()
        nursery.cancel_scope.cancel()


def _tool_names(supervisor: Supervisor) -> set[str]:
    return {t["name"] for _, catalog in supervisor.catalog() for t in catalog.items.get("tools", ())}


async def test_an_upstream_that_refuses_initialize_is_asked_server_discover() -> None:
    seen: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((body["method"], dict(request.headers), body.get("params") or {}))
        if body["method"] == "initialize":
            error = {"code": -32022, "message": "Unsupported protocol version",
                     "data": {"supported": [MODERN_VERSION]}}
            return httpx.Response(400, json={"jsonrpc": "2.0", "id": body["id"], "error": error})
        result = {"supportedVersions": [MODERN_VERSION], "capabilities": {"tools": {}}}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    server = gateway_config([("m", "http://m.test/mcp", "m_")]).servers[0]
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with HttpUpstreamClient(server, http=http, capabilities={"sampling": {}}) as client:
        result = await client.initialize()
        await client.notify("notifications/initialized")  # nothing to send at 2026-07-28
    assert result["protocolVersion"] == MODERN_VERSION and client.modern
    assert [method for method, _, _ in seen] == ["initialize", "server/discover"]
    _, headers, params = seen[1]
    assert headers["mcp-protocol-version"] == MODERN_VERSION
    assert headers["mcp-method"] == "server/discover"
    assert "mcp-session-id" not in headers
    assert params["_meta"][PROTOCOL_VERSION_META] == MODERN_VERSION
    assert params["_meta"][CLIENT_CAPABILITIES_META] == {"sampling": {}}


async def test_a_stateless_legacy_upstream_without_discover_stays_legacy() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        if body.get("method") == "initialize":
            result = {"protocolVersion": "2025-11-25", "capabilities": {"tools": {}},
                      "serverInfo": {"name": "old", "version": "1"}}
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})
        if "id" not in body:
            return httpx.Response(202)
        error = {"code": -32601, "message": "Method not found"}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "error": error})

    server = gateway_config([("old", "http://old.test/mcp", "o_")]).servers[0]
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with HttpUpstreamClient(server, http=http) as client:
        result = await client.initialize()
    assert result["protocolVersion"] == "2025-11-25" == client.protocol_version
    assert not client.modern and client.stateless


def test_a_routed_body_gets_the_envelope_and_keeps_its_own_meta() -> None:
    body = b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","_meta":{"progressToken":1}}}'
    meta = request_meta(MODERN_VERSION, {"roots": {}}, {"name": "c", "version": "1"})
    message = json.loads(body_with_meta(body, meta))
    assert message["id"] == 7 and message["params"]["name"] == "add"
    assert message["params"]["_meta"]["progressToken"] == 1
    assert message["params"]["_meta"][PROTOCOL_VERSION_META] == MODERN_VERSION
    assert message["params"]["_meta"][CLIENT_CAPABILITIES_META] == {"roots": {}}
