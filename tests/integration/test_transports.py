"""The stdio and WebSocket upstream clients against real official-SDK servers.

stdio: our conformance fixture (an `MCPServer`) run by the SDK's own stdio transport as a
subprocess. WebSocket: the SDK ships no WebSocket server transport, so the same fixture is
served by trio-websocket with each connection bridged to the SDK server's message loop (the
bridge is the I/O seam; the MCP server behind it is the SDK's).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketRequest,
    serve_websocket,
    wrap_client_stream,
)

from mcp_gateway.config import ServerConfig
from mcp_gateway.protocol import LATEST_STABLE
from mcp_gateway.samples.conformance_fixture import FIXTURE_NAME, serve_fixture_websocket
from mcp_gateway.upstream.client import HttpUpstreamClient
from mcp_gateway.upstream.errors import UpstreamError
from mcp_gateway.upstream.message_stream import MessageStreamClient
from mcp_gateway.upstream.rpc import UpstreamClient
from mcp_gateway.upstream.stdio import StdioUpstreamClient
from mcp_gateway.upstream.websocket import WebSocketUpstreamClient
from tests.support.conformance import EVERYTHING_ENTRY, NODE22, require_suite, running_fixture

pytestmark = pytest.mark.integration

FIXTURE_STDIO_COMMAND = [
    sys.executable,
    "-m",
    "mcp_gateway.samples.conformance_fixture",
    "--transport",
    "stdio",
]
JsonObject = dict[str, Any]


def stdio_config(command: list[str] = FIXTURE_STDIO_COMMAND, **extra: Any) -> ServerConfig:
    return ServerConfig(name="fixture-stdio", transport="stdio", command=command, **extra)


def websocket_config(url: str) -> ServerConfig:
    return ServerConfig(name="fixture-ws", transport="websocket", url=url)


def text_of(result: JsonObject) -> str:
    return "".join(block["text"] for block in result["content"] if block["type"] == "text")


async def check_initialize_list_and_call(client: MessageStreamClient) -> None:
    result = await client.initialize()
    assert result["serverInfo"]["name"] == FIXTURE_NAME
    assert result["protocolVersion"] == LATEST_STABLE
    assert client.protocol_version == LATEST_STABLE

    tools = await client.list_all("tools/list", "tools")
    names = {tool["name"] for tool in tools}
    assert {"test_simple_text", "test_sampling", "test_tool_with_progress"} <= names

    called = await client.request("tools/call", {"name": "test_simple_text", "arguments": {}})
    assert text_of(called) == "This is a simple text response for testing."
    await client.ping()


def test_every_transport_client_offers_the_upstream_client_protocol() -> None:
    """mypy checks the signatures (clients.default_client_factory returns each as an
    UpstreamClient); this checks no member of the protocol is missing at run time."""
    surface = {name for name in vars(UpstreamClient) if not name.startswith("_")}
    surface |= set(UpstreamClient.__annotations__)
    assert {"opened", "initialize", "request", "listen", "aclose", "server", "session_id"} <= surface
    for transport_client in (HttpUpstreamClient, StdioUpstreamClient, WebSocketUpstreamClient):
        members = {name for name in dir(transport_client) if not name.startswith("_")}
        members |= {name for cls in transport_client.__mro__ for name in getattr(cls, "__annotations__", {})}
        instance_attrs = {"server", "session_id", "protocol_version"}  # set in __init__
        assert surface - instance_attrs <= members, (transport_client, surface - members)


# -- stdio -------------------------------------------------------------------------------------


async def test_stdio_upstream_answers_initialize_tools_list_and_a_call() -> None:
    client = StdioUpstreamClient(stdio_config())
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        assert client.process_id is not None
        await check_initialize_list_and_call(client)
        nursery.cancel_scope.cancel()


async def test_stdio_sampling_request_reaches_the_calling_request_and_its_answer_the_server() -> (
    None
):
    client = StdioUpstreamClient(stdio_config(), capabilities={"sampling": {}})
    seen: list[JsonObject] = []

    async def answer_sampling(message: JsonObject) -> None:
        seen.append(message)
        assert message["method"] == "sampling/createMessage"
        await client.respond(
            {
                "jsonrpc": "2.0",
                "id": message["id"],
                "result": {
                    "role": "assistant",
                    "content": {"type": "text", "text": "hello from the client"},
                    "model": "test-model",
                    "stopReason": "endTurn",
                },
            }
        )

    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await client.initialize()
        result = await client.request(
            "tools/call",
            {"name": "test_sampling", "arguments": {"prompt": "say hello"}},
            answer_sampling,
        )
        nursery.cancel_scope.cancel()

    assert [message["params"]["messages"][0]["content"]["text"] for message in seen] == ["say hello"]
    assert text_of(result) == "LLM response: hello from the client"


async def test_stdio_progress_is_routed_to_the_request_that_set_the_token() -> None:
    client = StdioUpstreamClient(stdio_config())
    progress: list[float] = []

    async def collect(message: JsonObject) -> None:
        assert message["method"] == "notifications/progress"
        assert message["params"]["progressToken"] == "token-7"
        progress.append(message["params"]["progress"])

    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await client.initialize()
        result = await client.request(
            "tools/call",
            {"name": "test_tool_with_progress", "arguments": {}, "_meta": {"progressToken": "token-7"}},
            collect,
        )
        nursery.cancel_scope.cancel()

    assert progress == [0, 50, 100]
    assert "progress" in text_of(result)


async def test_stdio_restarts_a_crashed_server_and_handshakes_again() -> None:
    client = StdioUpstreamClient(stdio_config())
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await client.initialize()
        first_pid = client.process_id
        assert first_pid is not None

        os.kill(first_pid, signal.SIGKILL)
        with trio.fail_after(15):
            await client.wait_connected(2)

        # No initialize() by the caller: the client re-ran the handshake on the new process.
        called = await client.request("tools/call", {"name": "test_simple_text", "arguments": {}})
        assert text_of(called) == "This is a simple text response for testing."
        assert client.process_id not in (None, first_pid)
        nursery.cancel_scope.cancel()


async def test_stdio_cancelled_call_is_cancelled_on_the_upstream() -> None:
    client = StdioUpstreamClient(stdio_config())
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await client.initialize()
        with trio.move_on_after(0.5) as scope:
            await client.request(
                "tools/call", {"name": "test_slow_operation", "arguments": {"label": "abandoned"}}
            )
        assert scope.cancelled_caught

        with trio.fail_after(10):
            while True:
                answer = await client.request(
                    "tools/call", {"name": "test_cancelled_operations", "arguments": {}}
                )
                if json.loads(text_of(answer)) == ["abandoned"]:
                    break
                await trio.sleep(0.05)  # the server cancels the handler asynchronously
        nursery.cancel_scope.cancel()


async def test_stdio_command_that_cannot_start_fails_at_start() -> None:
    client = StdioUpstreamClient(stdio_config(["/nonexistent/mcp-server"]))
    async with trio.open_nursery() as nursery:
        with pytest.raises(UpstreamError, match="connect"):
            await nursery.start(client.run)


SCRIPTED_SERVER = r"""
import json, sys
request = json.loads(sys.stdin.readline())
print("this line is not JSON-RPC", flush=True)
print(json.dumps({"jsonrpc": "2.0", "method": 7}), flush=True)
print(json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {
    "protocolVersion": request["params"]["protocolVersion"], "capabilities": {},
    "serverInfo": {"name": "scripted", "version": "0"}}}), flush=True)
sys.stdin.readline()
"""


async def test_stdio_skips_invalid_lines_without_dropping_the_session() -> None:
    client = StdioUpstreamClient(stdio_config([sys.executable, "-c", SCRIPTED_SERVER]))
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        result = await client.initialize()
        assert result["serverInfo"]["name"] == "scripted"
        assert client.connects == 1
        nursery.cancel_scope.cancel()


# -- WebSocket ---------------------------------------------------------------------------------


async def test_websocket_upstream_answers_initialize_tools_list_and_a_call() -> None:
    async with running_fixture("websocket") as url:
        client = WebSocketUpstreamClient(websocket_config(url))
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            await check_initialize_list_and_call(client)
            nursery.cancel_scope.cancel()


async def test_websocket_elicitation_round_trip() -> None:
    async with running_fixture("websocket") as url:
        client = WebSocketUpstreamClient(websocket_config(url), capabilities={"elicitation": {}})

        async def accept(message: JsonObject) -> None:
            assert message["method"] == "elicitation/create"
            await client.respond(
                {
                    "jsonrpc": "2.0",
                    "id": message["id"],
                    "result": {"action": "accept", "content": {"username": "ada", "email": "a@b.c"}},
                }
            )

        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            await client.initialize()
            result = await client.request(
                "tools/call",
                {"name": "test_elicitation", "arguments": {"message": "who are you?"}},
                accept,
            )
            nursery.cancel_scope.cancel()
    assert text_of(result).startswith("User response: action=accept")
    assert '"username": "ada"' in text_of(result)


async def serve_scripted_websocket(
    handler: Callable[[WebSocketRequest], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        task_status.started(server.port)


async def test_websocket_server_that_ignores_the_mcp_subprotocol_is_refused() -> None:
    async def accept_without_subprotocol(request: WebSocketRequest) -> None:
        connection = await request.accept()
        with contextlib.suppress(ConnectionClosed):
            await connection.get_message()  # until the client hangs up

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_scripted_websocket, accept_without_subprotocol)
        client = WebSocketUpstreamClient(websocket_config(f"ws://127.0.0.1:{port}/mcp"))
        with pytest.raises(UpstreamError, match="subprotocol"):
            await nursery.start(client.run)
        nursery.cancel_scope.cancel()


async def test_websocket_client_reconnects_and_handshakes_again_after_the_server_restarts() -> None:
    # The fixture's WebSocket service in this Trio run, stopped and restarted on the same port.
    first_server = trio.CancelScope()

    async def serve_in(
        scope: trio.CancelScope, port: int, *, task_status: trio.TaskStatus[int]
    ) -> None:
        with scope:
            await serve_fixture_websocket("127.0.0.1", port, task_status=task_status)

    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_in, first_server, 0)
        client = WebSocketUpstreamClient(websocket_config(f"ws://127.0.0.1:{port}/mcp"))
        await nursery.start(client.run)
        await client.initialize()

        first_server.cancel()
        await nursery.start(serve_in, trio.CancelScope(), port)
        with trio.fail_after(15):
            await client.wait_connected(2)
        # No initialize() by the caller: the client re-ran the handshake on the new connection.
        called = await client.request("tools/call", {"name": "test_simple_text", "arguments": {}})
        assert text_of(called) == "This is a simple text response for testing."
        assert client.connects == 2
        nursery.cancel_scope.cancel()


async def test_stdio_log_notifications_follow_the_level_the_gateway_set() -> None:
    """The fixture filters its log notifications by the connection's logging/setLevel, and the
    client hands them to the call that caused them."""
    client = StdioUpstreamClient(stdio_config())
    logs: dict[str, list[str]] = {"error": [], "info": []}

    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await client.initialize()
        for level, seen in logs.items():

            async def collect(message: JsonObject, seen: list[str] = seen) -> None:
                assert message["method"] == "notifications/message"
                seen.append(message["params"]["data"])

            await client.request("logging/setLevel", {"level": level})
            await client.request(
                "tools/call", {"name": "test_tool_with_logging", "arguments": {}}, collect
            )
        nursery.cancel_scope.cancel()

    assert logs["error"] == []  # info messages are below the level the client asked for
    assert logs["info"] == [
        "Tool execution started",
        "Tool processing data",
        "Tool execution completed",
    ]


async def websocket_handshake(port: int, subprotocol: str, origin: str | None = None) -> int | str:
    """The HTTP status a rejected upgrade got, or the subprotocol an accepted one chose.

    The TCP stream is the test's own: trio-websocket leaves it open on a rejected upgrade.
    """
    headers = [(b"origin", origin.encode())] if origin else []
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    outcome: int | str = ""
    try:
        async with trio.open_nursery() as nursery:
            connection = await wrap_client_stream(
                nursery, stream, f"127.0.0.1:{port}", "/mcp",
                subprotocols=[subprotocol], extra_headers=headers,
            )
            outcome = connection.subprotocol or ""
            await connection.aclose()
            nursery.cancel_scope.cancel()
    except* ConnectionRejected as rejected:
        first = rejected.exceptions[0]
        assert isinstance(first, ConnectionRejected)
        outcome = first.status_code
    finally:
        await stream.aclose()
    return outcome


async def test_fixture_websocket_refuses_foreign_origins_and_other_subprotocols() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_fixture_websocket, "127.0.0.1", 0)
        assert await websocket_handshake(port, "mcp", origin="http://evil.example.com") == 403
        assert await websocket_handshake(port, "chat") == 400
        assert await websocket_handshake(port, "mcp", origin="http://localhost:6274") == "mcp"
        nursery.cancel_scope.cancel()


async def test_stdio_upstream_drives_the_typescript_sdk_server_everything() -> None:
    """A second, non-Python SDK server over stdio: npm server-everything on the local Node 22."""
    require_suite()  # Node 22 and the npm packages come from `make node22`
    client = StdioUpstreamClient(
        stdio_config([str(NODE22), str(EVERYTHING_ENTRY), "stdio"]), capabilities={"roots": {}}
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        result = await client.initialize()
        tools = {tool["name"] for tool in await client.list_all("tools/list", "tools")}
        summed = await client.request("tools/call", {"name": "get-sum", "arguments": {"a": 2, "b": 3}})
        nursery.cancel_scope.cancel()
    assert result["serverInfo"]["name"] == "mcp-servers/everything"
    assert {"echo", "get-sum", "get-roots-list"} <= tools  # roots declared: the roots tool is offered
    assert text_of(summed) == "The sum of 2 and 3 is 5."
