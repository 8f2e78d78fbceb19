"""MCP over WebSocket (`/mcp/ws`, subprotocol `mcp`) through a real Envoy: the upgrade passes the
listener (upgrade_configs), takes the GET route (no ext_proc), and the broker serves the socket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from mcp_gateway.config import VirtualServer
from tests.support.routing import PROTOCOL, gateway_stack, probes

pytestmark = pytest.mark.integration


async def _request(socket: WebSocketConnection, rid: int | str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
    if params is not None:
        body["params"] = params
    await socket.send_message(json.dumps(body))
    with trio.fail_after(15):
        while True:
            frame = await socket.get_message()
            assert isinstance(frame, str)
            message: dict[str, Any] = json.loads(frame)
            if message.get("id") == rid and "method" not in message:
                return message


async def test_a_websocket_client_initializes_lists_and_calls_through_envoy(tmp_path: Path) -> None:
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path) as stack:
        ws_url = stack.url.replace("http://", "ws://", 1).rsplit("/mcp", 1)[0] + "/mcp/ws"
        async with open_websocket_url(ws_url, subprotocols=["mcp"]) as socket:
            assert socket.subprotocol == "mcp"
            init = await _request(
                socket, "init", "initialize",
                {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "ws", "version": "1"}},
            )
            assert init["result"]["protocolVersion"] == PROTOCOL
            await socket.send_message(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            tools = {t["name"] for t in (await _request(socket, 1, "tools/list"))["result"]["tools"]}
            assert {"a_add", "a_observe"} <= tools
            added = await _request(socket, 2, "tools/call", {"name": "a_add", "arguments": {"a": 2, "b": 3}})
            assert added["result"]["content"][0]["text"] == "5"
        # Envoy saw one upgraded GET to the broker (101), not a refused or ext_proc-failed request.
        upgrades = await stack.envoy.wait_for_access(lambda e: e["path"] == "/mcp/ws")
        assert upgrades[0]["method"] == "GET" and upgrades[0]["status"] == 101
        assert upgrades[0]["upstream_cluster"] == "mcp_broker"


async def test_the_upgrades_virtual_server_passes_envoy_and_narrows_the_socket(tmp_path: Path) -> None:
    narrow = VirtualServer(name="team/narrow", tools=["a_add"])
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path, [narrow]) as stack:
        ws_url = stack.url.replace("http://", "ws://", 1).rsplit("/mcp", 1)[0] + "/mcp/ws"
        selection = [(b"x-mcp-virtualserver", b"team/narrow")]
        async with open_websocket_url(ws_url, subprotocols=["mcp"], extra_headers=selection) as socket:
            await _request(
                socket, "init", "initialize",
                {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "ws", "version": "1"}},
            )
            tools = [t["name"] for t in (await _request(socket, 1, "tools/list"))["result"]["tools"]]
            assert tools == ["a_add"]
            outside = await _request(socket, 2, "tools/call", {"name": "a_observe", "arguments": {}})
            assert outside["error"]["code"] == -32602 and outside["id"] == 2
