"""`/mcp/ws`: a WebSocket client (trio-websocket, subprotocol `mcp`) on the same gateway sessions
and dispatch as POST /mcp, against real SDK sample servers (the SDK 2.3.0 ships no WebSocket
client transport, so the client here speaks JSON-RPC frames itself)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
    wrap_client_stream,
)

from mcp_gateway.config import GatewayConfig
from tests.support.servers import Broker, running_broker, sample_in_process

pytestmark = pytest.mark.integration

FIXTURE_STDIO = [sys.executable, "-m", "mcp_gateway.samples.conformance_fixture", "--transport", "stdio"]
INIT = {
    "jsonrpc": "2.0",
    "id": "init",
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {"sampling": {}},
        "clientInfo": {"name": "ws-test", "version": "1"},
    },
}


def _ws_url(broker: Broker) -> str:
    return f"ws://127.0.0.1:{broker.port}/mcp/ws"


class Peer:
    """A JSON-RPC peer over one socket: answers by id, everything else in `unsolicited`."""

    def __init__(self, socket: WebSocketConnection) -> None:
        self.socket = socket

    async def send(self, message: dict[str, Any] | str) -> None:
        await self.socket.send_message(message if isinstance(message, str) else json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        with trio.fail_after(15):
            frame = await self.socket.get_message()
        assert isinstance(frame, str)  # text frames only
        message: dict[str, Any] = json.loads(frame)
        return message

    async def until(self, wanted: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Read until a message `wanted` accepts; return it and what came before."""
        before = []
        while not wanted(message := await self.receive()):
            before.append(message)
        return message, before

    async def request(self, rid: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            body["params"] = params
        await self.send(body)
        answer, _ = await self.until(lambda m: m.get("id") == rid and "method" not in m)
        return answer


@asynccontextmanager
async def peer(broker: Broker, **kwargs: Any) -> AsyncIterator[Peer]:
    async with open_websocket_url(_ws_url(broker), subprotocols=["mcp"], **kwargs) as socket:
        assert socket.subprotocol == "mcp"
        yield Peer(socket)


@asynccontextmanager
async def broker_with(*servers: dict[str, Any]) -> AsyncIterator[Broker]:
    config = GatewayConfig.model_validate(
        {"servers": list(servers), "gateway": {"broker_listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "page_size": 1000}}
    )
    async with running_broker(config) as broker:
        yield broker


async def test_initialize_list_call_ping_and_list_changed_on_the_socket() -> None:
    async with sample_in_process("echo") as echo, sample_in_process("dynamic") as dynamic, broker_with(
        {"name": "echo", "url": echo, "prefix": "echo_"},
        {"name": "dyn", "url": dynamic, "prefix": "dyn_"},
    ) as broker, peer(broker) as client:
        init = await client.request("init", "initialize", INIT["params"])
        assert init["result"]["protocolVersion"] == "2025-11-25"
        assert init["result"]["capabilities"]["tools"] == {"listChanged": True}
        await client.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert (await client.request(2, "ping"))["result"] == {}
        names = {t["name"] for t in (await client.request(3, "tools/list"))["result"]["tools"]}
        assert {"echo_echo", "dyn_add_tool"} <= names
        echoed = await client.request(4, "tools/call", {"name": "echo_echo", "arguments": {"text": "over ws"}})
        assert echoed["result"]["content"][0]["text"] == "over ws"

        # The upstream changes its tools: list_changed arrives on this socket, the list follows.
        await client.send(
            {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
             "params": {"name": "dyn_add_tool", "arguments": {"name": "fresh"}}}
        )
        seen = set()
        while not {5, "notifications/tools/list_changed"} <= seen:
            message = await client.receive()
            seen.add(message.get("id", message.get("method")))
        names = {t["name"] for t in (await client.request(6, "tools/list"))["result"]["tools"]}
        assert "dyn_fresh" in names


async def test_bad_frames_get_precise_json_rpc_errors() -> None:
    async with sample_in_process("echo") as echo, broker_with(
        {"name": "echo", "url": echo, "prefix": "echo_"}
    ) as broker, peer(broker) as client:
        early = await client.request(1, "tools/list")
        assert early["error"]["code"] == -32600 and "initialize first" in early["error"]["message"]
        await client.request("init", "initialize", INIT["params"])
        again = await client.request("again", "initialize", INIT["params"])
        assert again["error"]["code"] == -32600
        await client.send("{not json")
        assert (await client.receive())["error"]["code"] == -32700
        await client.send(json.dumps([{"jsonrpc": "2.0", "id": 7, "method": "ping"}]))
        assert (await client.receive())["error"]["code"] == -32600
        await client.send({"jsonrpc": "2.0", "id": 8, "method": 5})
        invalid = await client.receive()
        assert invalid["error"]["code"] == -32600 and invalid["id"] == 8
        unknown = await client.request(9, "no/such/method")
        assert unknown["error"]["code"] == -32601
        missing = await client.request(10, "tools/call", {"name": "echo_nope", "arguments": {}})
        assert missing["error"]["code"] == -32602 and missing["id"] == 10
        await client.socket.send_message(b'{"jsonrpc":"2.0","id":11,"method":"ping"}')
        assert (await client.receive())["error"]["code"] == -32600
        assert (await client.request(12, "ping"))["result"] == {}  # the socket lives on


async def test_foreign_origin_missing_subprotocol_and_unknown_session_are_refused() -> None:
    async with sample_in_process("echo") as echo, broker_with(
        {"name": "echo", "url": echo, "prefix": "echo_"}
    ) as broker:
        cases = [
            (["mcp"], [(b"origin", b"https://evil.example")], 403),
            (["chat"], [], 400),
            (["mcp"], [(b"mcp-session-id", b"forged")], 404),
        ]
        for subprotocols, headers, status in cases:
            rejected = await _upgrade_refused(broker, subprotocols, headers)
            assert rejected.status_code == status
            assert json.loads(rejected.body or b"{}")["error"]["code"] == -32600


async def _upgrade_refused(
    broker: Broker, subprotocols: list[str], headers: list[tuple[bytes, bytes]]
) -> ConnectionRejected:
    # Our own TCP stream, closed here: trio-websocket 0.12.2 leaves it open after a rejection.
    stream = await trio.open_tcp_stream("127.0.0.1", broker.port)
    rejection: BaseException | None = None
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await wrap_client_stream(
                    nursery, stream, f"127.0.0.1:{broker.port}", "/mcp/ws",
                    subprotocols=subprotocols, extra_headers=headers,
                )
    except* ConnectionRejected as group:  # raised by trio-websocket's reader task
        rejection = group.exceptions[0]
    finally:
        await stream.aclose()
    assert isinstance(rejection, ConnectionRejected)
    return rejection


async def test_a_socket_attaches_to_an_http_session_and_a_socket_session_ends_with_it() -> None:
    async with sample_in_process("echo") as echo, broker_with(
        {"name": "echo", "url": echo, "prefix": "echo_"}
    ) as broker, httpx.AsyncClient() as http:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        opened = await http.post(broker.url, json=INIT, headers=headers)
        token = opened.headers["mcp-session-id"]
        async with peer(broker, extra_headers=[(b"mcp-session-id", token.encode())]) as client:
            assert (await client.request(1, "ping"))["result"] == {}
        # The HTTP session outlives the socket that attached to it.
        ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
        still = await http.post(broker.url, json=ping, headers={**headers, "mcp-session-id": token})
        assert still.status_code == 200
        # A session opened by a socket's initialize is its own: it ends when the socket closes.
        assert await _sessions_deleted(http, broker) == 0
        async with peer(broker) as client:
            await client.request("init", "initialize", INIT["params"])
            assert await _sessions_deleted(http, broker) == 0
        # Polled: the session ends in the socket's handler after the close, seen only via HTTP.
        for _attempt in range(250):
            if await _sessions_deleted(http, broker) == 1:
                break
            await trio.sleep(0.02)
        assert await _sessions_deleted(http, broker) == 1


async def test_a_socket_closes_when_its_session_is_deleted_over_http() -> None:
    async with broker_with() as broker, httpx.AsyncClient() as http:
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        opened = await http.post(broker.url, json=INIT, headers=headers)
        token = opened.headers["mcp-session-id"]
        # Our own TCP stream: trio-websocket's client, closed by the server, waits for a TCP close
        # it never closes itself (its stream would be left for the garbage collector).
        stream = await trio.open_tcp_stream("127.0.0.1", broker.port)
        try:
            async with trio.open_nursery() as nursery:
                socket = await wrap_client_stream(
                    nursery, stream, f"127.0.0.1:{broker.port}", "/mcp/ws",
                    subprotocols=["mcp"], extra_headers=[(b"mcp-session-id", token.encode())],
                )
                client = Peer(socket)
                assert (await client.request(1, "ping"))["result"] == {}
                deleted = await http.delete(broker.url, headers={**headers, "mcp-session-id": token})
                assert deleted.status_code in (200, 204)
                with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                    await socket.get_message()
                assert closed.value.reason is not None
                assert closed.value.reason.code == 4404
                nursery.cancel_scope.cancel()
        finally:
            await stream.aclose()


async def _sessions_deleted(http: httpx.AsyncClient, broker: Broker) -> float:
    metrics = (await http.get(f"{broker.admin}/metrics")).text
    line = next(x for x in metrics.splitlines() if x.startswith("mcp_gateway_sessions_deleted_total "))
    return float(line.split()[1])


async def test_sampling_from_a_stdio_upstream_is_asked_and_answered_over_the_socket() -> None:
    async with broker_with(
        {"name": "local", "transport": "stdio", "command": FIXTURE_STDIO, "prefix": "io_"}
    ) as broker, peer(broker) as client:
        await client.request("init", "initialize", INIT["params"])
        await client.send(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
             "params": {"name": "io_test_sampling", "arguments": {"prompt": "hello ws"}}}
        )
        asked, _ = await client.until(lambda m: m.get("method") == "sampling/createMessage")
        assert str(asked["id"]).startswith("mcp-gateway-")
        assert asked["params"]["messages"][0]["content"]["text"] == "hello ws"
        await client.send(
            {"jsonrpc": "2.0", "id": asked["id"],
             "result": {"role": "assistant", "content": {"type": "text", "text": "hi back"}, "model": "m"}}
        )
        answer, _ = await client.until(lambda m: m.get("id") == 1)
        assert answer["result"]["content"][0]["text"] == "LLM response: hi back"


async def test_the_upgrades_virtual_server_holds_for_the_socket_and_an_unknown_one_is_refused() -> None:
    async with sample_in_process("echo") as echo:
        config = GatewayConfig.model_validate(
            {
                "servers": [{"name": "echo", "url": echo, "prefix": "echo_"}],
                "virtualServers": [{"name": "ns/only-echo", "tools": ["echo_echo"]}],
                "gateway": {"broker_listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0"},
            }
        )
        async with running_broker(config) as broker:
            refused = await _upgrade_refused(broker, ["mcp"], [(b"x-mcp-virtualserver", b"ns/other")])
            assert refused.status_code == 400
            assert "unknown virtual server" in json.loads(refused.body or b"{}")["error"]["message"]
            async with peer(broker, extra_headers=[(b"X-Mcp-Virtualserver", b"ns/only-echo")]) as client:
                await client.request("init", "initialize", INIT["params"])
                listed = await client.request(1, "tools/list")
                assert [t["name"] for t in listed["result"]["tools"]] == ["echo_echo"]
                hidden = await client.request(2, "tools/call", {"name": "echo_add", "arguments": {"a": 1, "b": 2}})
                assert hidden["error"] == {"code": -32602, "message": "Unknown tool: echo_add"}


@pytest.mark.parametrize("serve_discover", [True, False])
async def test_server_discover_on_the_socket_follows_serve_discover(serve_discover: bool) -> None:
    async with sample_in_process("echo") as echo:
        config = GatewayConfig.model_validate(
            {
                "servers": [{"name": "echo", "url": echo, "prefix": "echo_"}],
                "gateway": {
                    "broker_listen": "127.0.0.1:0",
                    "admin_listen": "127.0.0.1:0",
                    "serve_discover": serve_discover,
                },
            }
        )
        async with running_broker(config) as broker, peer(broker) as client:
            answer = await client.request("d", "server/discover", {})
            if serve_discover:
                # As on POST /mcp, but only the handshake revisions: the socket serves sessions.
                result = answer["result"]
                assert result["supportedVersions"][0] == "2025-11-25"
                assert "2026-07-28" not in result["supportedVersions"]
                assert "tools" in result["capabilities"]
                assert result["serverInfo"]["name"] == "mcp-gateway"
                assert result["resultType"] == "complete"
            else:
                assert answer["error"]["code"] == -32601
                assert "gateway.serve_discover" in answer["error"]["message"]
            # Either way the socket still takes the handshake.
            init = await client.request("init", "initialize", INIT["params"])
            assert init["result"]["protocolVersion"] == "2025-11-25"
