"""Our conformance fixture: an MCP server that answers every server scenario of the pinned
`@modelcontextprotocol/conformance` suite (0.1.16) by the names those scenarios call.

The suite's own reference server is not published; the expectations were read from the
scenario descriptions and checks shipped in the suite's `dist/`, and everything here is ours.
The same server is the upstream of `make conformance` (federated under an empty prefix), so a
scenario that passes directly but fails through the gateway is a gateway bug.

Beyond the suite it also offers what the gateway's e2e tests need to observe from the upstream
side: a resource whose update notifies its subscribers, a `roots/list` round trip, and a slow
operation that records whether it was cancelled.

Run it: `python -m mcp_gateway.samples.conformance_fixture --port P` (binds 127.0.0.1; Host and
Origin are checked, as the `dns-rebinding-protection` scenario requires).
"""

from __future__ import annotations

import argparse
import base64
import functools
import io
import itertools
import json
import os
import signal
import struct
import sys
import threading
import wave
import weakref
import zlib
from collections import deque
from collections.abc import Sequence
from typing import Any

import anyio
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from mcp import types
from mcp.server.connection import Connection
from mcp.server.mcpserver import Context, MCPServer, UserMessage
from mcp.server.session import ServerSession
from mcp.server.streamable_http import EventCallback, EventMessage, EventStore
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from mcp.types import JSONRPCMessage
from pydantic import ValidationError
from starlette.types import ASGIApp
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from mcp_gateway.samples.conformance_2026 import add_to_fixture, build_modern_fixture

FIXTURE_NAME = "mcp-gateway-conformance-fixture"
WATCHED_RESOURCE = "test://watched-resource"
ALLOWED_HOSTS_ENV = "MCP_SAMPLE_ALLOWED_HOSTS"
# SSE `retry:` the fixture advertises (ms): short, so resumption tests stay fast.
SSE_RETRY_MS = 100

# Severity order of MCP log levels (RFC 5424 names), lowest first.
_LOG_LEVELS: tuple[types.LoggingLevel, ...] = (
    "debug",
    "info",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
)


def _png_1x1_red() -> bytes:
    """A valid one-pixel red PNG, built from the PNG spec rather than shipped as a blob."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte 0, then R G B
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _wav_silence() -> bytes:
    """A short valid WAV file (10 ms of 8 kHz mono silence)."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(b"\x80" * 80)
    return buffer.getvalue()


PNG_BYTES = _png_1x1_red()
PNG_BASE64 = base64.b64encode(PNG_BYTES).decode()
WAV_BASE64 = base64.b64encode(_wav_silence()).decode()


class _FixtureState:
    """What the fixture remembers per client connection: log level and resource subscriptions.

    The SDK hands handlers a per-request `ServerSession`; the per-client object behind it is its
    `Connection`, so that is the key, held weakly so a closed connection leaves nothing behind.
    """

    def __init__(self) -> None:
        self.log_levels: weakref.WeakKeyDictionary[Connection, types.LoggingLevel] = (
            weakref.WeakKeyDictionary()
        )
        self.subscribers: dict[str, weakref.WeakSet[Connection]] = {}
        self.watched_version = 0
        self.started_operations: list[str] = []
        self.cancelled_operations: list[str] = []
        self.completed_operations: list[str] = []

    def wants_log(self, session: ServerSession, level: types.LoggingLevel) -> bool:
        # Before any logging/setLevel the client gets everything, as the spec allows.
        threshold = self.log_levels.get(_connection_of(session), "debug")
        return _LOG_LEVELS.index(level) >= _LOG_LEVELS.index(threshold)


def _connection_of(session: ServerSession) -> Connection:
    # The SDK keeps the connection private on the per-request session; it is the only handle that
    # lives as long as the client's session does.
    return session._connection


class MemoryEventStore(EventStore):
    """A bounded in-memory SSE event log so clients can resume with Last-Event-ID (SEP-1699).

    The SDK ships only the interface; this is enough for one test process.
    """

    def __init__(self, max_events: int = 10_000) -> None:
        self._events: deque[tuple[str, str, JSONRPCMessage | None]] = deque(maxlen=max_events)
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: str, message: JSONRPCMessage | None) -> str:
        event_id = str(next(self._ids))
        self._events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(
        self, last_event_id: str, send_callback: EventCallback
    ) -> str | None:
        position = next(
            (index for index, event in enumerate(self._events) if event[0] == last_event_id), None
        )
        if position is None:
            return None
        stream_id = self._events[position][1]
        for event_id, event_stream, message in list(self._events)[position + 1 :]:
            if event_stream == stream_id and message is not None:
                await send_callback(EventMessage(message, event_id))
        return stream_id


def _related(ctx: Context) -> ServerMessageMetadata:
    """Server-to-client requests ride the SSE stream of the tool call that caused them."""
    return ServerMessageMetadata(related_request_id=ctx.request_context.request_id)


def _text(text: str, *, is_error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)], is_error=is_error
    )


def build_fixture() -> MCPServer:
    """The fixture server with every tool, prompt and resource the suite names."""
    server = MCPServer(FIXTURE_NAME, version="1.0.0", log_level="WARNING")
    state = _FixtureState()
    _add_content_tools(server)
    _add_interactive_tools(server, state)
    _add_observation_tools(server, state)
    _add_prompts(server)
    _add_resources(server, state)
    _add_handshake_era_handlers(server, state)
    add_to_fixture(server)  # what the 2026-07-28 scenarios add (conformance_2026.py)
    return server


def _add_content_tools(server: MCPServer) -> None:
    @server.tool(description="Returns one text block")
    def test_simple_text() -> types.CallToolResult:
        return _text("This is a simple text response for testing.")

    @server.tool(description="Returns a 1x1 red PNG image")
    def test_image_content() -> types.CallToolResult:
        image = types.ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")
        return types.CallToolResult(content=[image])

    @server.tool(description="Returns a short WAV clip")
    def test_audio_content() -> types.CallToolResult:
        audio = types.AudioContent(type="audio", data=WAV_BASE64, mime_type="audio/wav")
        return types.CallToolResult(content=[audio])

    @server.tool(description="Returns an embedded text resource")
    def test_embedded_resource() -> types.CallToolResult:
        resource = types.TextResourceContents(
            uri="test://embedded-resource",
            mime_type="text/plain",
            text="This is an embedded resource content.",
        )
        return types.CallToolResult(
            content=[types.EmbeddedResource(type="resource", resource=resource)]
        )

    @server.tool(description="Returns text, image and embedded resource blocks")
    def test_multiple_content_types() -> types.CallToolResult:
        resource = types.TextResourceContents(
            uri="test://mixed-content-resource",
            mime_type="application/json",
            text=json.dumps({"test": "data", "value": 123}),
        )
        return types.CallToolResult(
            content=[
                types.TextContent(type="text", text="Multiple content types test:"),
                types.ImageContent(type="image", data=PNG_BASE64, mime_type="image/png"),
                types.EmbeddedResource(type="resource", resource=resource),
            ]
        )

    @server.tool(description="Closes its SSE stream mid-call, then answers on the resumed stream")
    async def test_reconnection(ctx: Context) -> types.CallToolResult:
        await ctx.close_sse_stream()
        # Answer after the client has seen the stream close; it resumes with Last-Event-ID.
        await anyio.sleep(SSE_RETRY_MS / 1000)
        return _text("Reconnection test completed successfully")

    @server.tool(description="Always fails with a tool error result")
    def test_error_handling() -> types.CallToolResult:
        return _text("This tool intentionally returns an error for testing", is_error=True)

    def json_schema_2020_12_tool(
        name: str | None = None, address: dict[str, Any] | None = None
    ) -> types.CallToolResult:
        return _text(json.dumps({"name": name, "address": address}))

    server.add_tool(json_schema_2020_12_tool, description="Tool with JSON Schema 2020-12 features")
    # The listed schema must keep 2020-12 keywords verbatim (SEP-1613); the function signature
    # above still validates the arguments.
    tool = server._tool_manager.get_tool("json_schema_2020_12_tool")
    assert tool is not None
    tool.parameters = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {
            "address": {
                "type": "object",
                "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
            }
        },
        "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
        "additionalProperties": False,
    }


def _add_interactive_tools(server: MCPServer, state: _FixtureState) -> None:
    @server.tool(description="Sends three info log notifications while it runs")
    async def test_tool_with_logging(ctx: Context) -> types.CallToolResult:
        session = ctx.request_context.session
        for step, message in enumerate(
            ("Tool execution started", "Tool processing data", "Tool execution completed")
        ):
            if step:
                await anyio.sleep(0.05)
            if state.wants_log(session, "info"):
                notification = types.LoggingMessageNotification(
                    params=types.LoggingMessageNotificationParams(
                        level="info", logger=FIXTURE_NAME, data=message
                    )
                )
                await session.send_notification(
                    notification, related_request_id=ctx.request_context.request_id
                )
        return _text("Tool with logging executed successfully")

    @server.tool(description="Reports progress 0, 50 and 100 of 100")
    async def test_tool_with_progress(ctx: Context) -> types.CallToolResult:
        for step, progress in enumerate((0.0, 50.0, 100.0)):
            if step:
                await anyio.sleep(0.05)
            await ctx.report_progress(progress, 100.0)
        return _text("Tool with progress executed successfully")

    @server.tool(
        description="Asks the client's LLM (sampling/createMessage) and returns its answer"
    )
    async def test_sampling(prompt: str, ctx: Context) -> types.CallToolResult:
        session = ctx.request_context.session
        if not session.check_client_capability(
            types.ClientCapabilities(sampling=types.SamplingCapability())
        ):
            return _text("Client does not support sampling", is_error=True)
        request = types.CreateMessageRequest(
            params=types.CreateMessageRequestParams(
                messages=[
                    types.SamplingMessage(
                        role="user", content=types.TextContent(type="text", text=prompt)
                    )
                ],
                max_tokens=100,
            )
        )
        result = await session.send_request(
            request, types.CreateMessageResult, metadata=_related(ctx)
        )
        answer = (
            result.content.text if isinstance(result.content, types.TextContent) else "<non-text>"
        )
        return _text(f"LLM response: {answer}")

    @server.tool(description="Asks the user (elicitation/create) for a username and an email")
    async def test_elicitation(message: str, ctx: Context) -> types.CallToolResult:
        schema = {
            "type": "object",
            "properties": {
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"},
            },
            "required": ["username", "email"],
        }
        return await _elicit(ctx, message, schema, prefix="User response")

    @server.tool(description="Elicitation with a default for every primitive type (SEP-1034)")
    async def test_elicitation_sep1034_defaults(ctx: Context) -> types.CallToolResult:
        schema = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {
                    "type": "string",
                    "description": "User status",
                    "enum": ["active", "inactive", "pending"],
                    "default": "active",
                },
                "verified": {"type": "boolean", "description": "Verified", "default": True},
            },
            "required": [],
        }
        return await _elicit(
            ctx, "Please confirm your details", schema, prefix="Elicitation completed"
        )

    @server.tool(description="Elicitation with all five enum schema shapes (SEP-1330)")
    async def test_elicitation_sep1330_enums(ctx: Context) -> types.CallToolResult:
        def titled(values: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
            return [{"const": value, "title": title} for value, title in values]

        schema = {
            "type": "object",
            "properties": {
                "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
                "titledSingle": {
                    "type": "string",
                    "oneOf": titled(
                        [
                            ("value1", "First Option"),
                            ("value2", "Second Option"),
                            ("value3", "Third Option"),
                        ]
                    ),
                },
                "legacyEnum": {
                    "type": "string",
                    "enum": ["opt1", "opt2", "opt3"],
                    "enumNames": ["Option One", "Option Two", "Option Three"],
                },
                "untitledMulti": {
                    "type": "array",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
                },
                "titledMulti": {
                    "type": "array",
                    "items": {
                        "anyOf": titled(
                            [
                                ("value1", "First Choice"),
                                ("value2", "Second Choice"),
                                ("value3", "Third Choice"),
                            ]
                        )
                    },
                },
            },
            "required": [],
        }
        return await _elicit(ctx, "Pick some options", schema, prefix="Elicitation completed")


async def _elicit(
    ctx: Context, message: str, schema: dict[str, Any], *, prefix: str
) -> types.CallToolResult:
    session = ctx.request_context.session
    if not session.check_client_capability(
        types.ClientCapabilities(elicitation=types.ElicitationCapability())
    ):
        return _text("Client does not support elicitation", is_error=True)
    result = await session.elicit_form(
        message, schema, related_request_id=ctx.request_context.request_id
    )
    return _text(f"{prefix}: action={result.action}, content={json.dumps(result.content)}")


def _add_observation_tools(server: MCPServer, state: _FixtureState) -> None:
    """Tools that let a test see, from the upstream side, what reached the upstream."""

    @server.tool(description="Exits the fixture process right after answering (a crash, for tests)")
    async def test_exit_process() -> types.CallToolResult:
        # A thread, not a task: the answer must leave first, and no task of ours may delay it.
        timer = threading.Timer(0.2, os._exit, args=(3,))
        timer.daemon = True
        timer.start()
        return _text(f"exiting: pid {os.getpid()}")

    @server.tool(description="Changes test://watched-resource and notifies its subscribers")
    async def test_update_watched_resource() -> types.CallToolResult:
        state.watched_version += 1
        connections = list(state.subscribers.get(WATCHED_RESOURCE, ()))
        for connection in connections:
            # The connection's own channel: the GET stream on HTTP, the link on stdio/WebSocket.
            await connection.outbound.notify(
                "notifications/resources/updated", {"uri": WATCHED_RESOURCE}
            )
        return _text(f"notified {len(connections)} subscriber(s)")

    @server.tool(
        description="Logs `message` at info on the session's own stream (GET), not this call's"
    )
    async def test_log_on_session_stream(ctx: Context, message: str) -> types.CallToolResult:
        session = ctx.request_context.session
        if not state.wants_log(session, "info"):
            return _text("below the session's log level: not sent")
        params = {"level": "info", "logger": FIXTURE_NAME, "data": message}
        await _connection_of(session).outbound.notify("notifications/message", params)
        return _text("sent")

    @server.tool(description="Asks the client for its roots (roots/list) and returns them")
    async def test_list_roots(ctx: Context) -> types.CallToolResult:
        result = await ctx.request_context.session.send_request(
            types.ListRootsRequest(), types.ListRootsResult, metadata=_related(ctx)
        )
        return _text(json.dumps([str(root.uri) for root in result.roots]))

    @server.tool(description="Runs until cancelled (at most `seconds`); records the outcome")
    async def test_slow_operation(label: str, seconds: float = 30.0) -> types.CallToolResult:
        state.started_operations.append(label)
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            state.cancelled_operations.append(label)
            raise
        state.completed_operations.append(label)
        return _text(f"{label} completed")

    @server.tool(description="Lists the labels of slow operations that have started")
    def test_started_operations() -> types.CallToolResult:
        return _text(json.dumps(state.started_operations))

    @server.tool(description="Lists the labels of slow operations that were cancelled")
    def test_cancelled_operations() -> types.CallToolResult:
        return _text(json.dumps(state.cancelled_operations))


def _add_prompts(server: MCPServer) -> None:
    @server.prompt(description="A prompt without arguments")
    def test_simple_prompt() -> list[UserMessage]:
        return [UserMessage("This is a simple prompt for testing.")]

    @server.prompt(description="A prompt with two required arguments")
    def test_prompt_with_arguments(arg1: str, arg2: str) -> list[UserMessage]:
        return [UserMessage(f"Prompt with arguments: arg1='{arg1}', arg2='{arg2}'")]

    @server.prompt(description="A prompt that embeds the resource it is given")
    def test_prompt_with_embedded_resource(resourceUri: str) -> list[UserMessage]:
        resource = types.TextResourceContents(
            uri=resourceUri, mime_type="text/plain", text="Embedded resource content for testing."
        )
        return [
            UserMessage(types.EmbeddedResource(type="resource", resource=resource)),
            UserMessage("Please process the embedded resource above."),
        ]

    @server.prompt(description="A prompt with an image")
    def test_prompt_with_image() -> list[UserMessage]:
        image = types.ImageContent(type="image", data=PNG_BASE64, mime_type="image/png")
        return [UserMessage(image), UserMessage("Please analyze the image above.")]

    @server.completion()  # type: ignore[no-untyped-call, untyped-decorator]  # SDK leaves it unannotated
    async def complete(
        ref: types.PromptReference | types.ResourceTemplateReference,
        argument: types.CompletionArgument,
        context: types.CompletionContext | None,
    ) -> types.Completion:
        candidates: tuple[str, ...] = ()
        if isinstance(ref, types.PromptReference) and ref.name == "test_prompt_with_arguments":
            candidates = ("paris", "park", "party", "test-value", "testing")
        elif isinstance(ref, types.ResourceTemplateReference) and argument.name == "id":
            candidates = ("123", "124", "456")
        values = [value for value in candidates if value.startswith(argument.value)]
        return types.Completion(values=values, total=len(values), has_more=False)


def _add_resources(server: MCPServer, state: _FixtureState) -> None:
    @server.resource(
        "test://static-text",
        name="static-text",
        description="A static text resource",
        mime_type="text/plain",
    )
    def static_text() -> str:
        return "This is the content of the static text resource."

    @server.resource(
        "test://static-binary",
        name="static-binary",
        description="A static binary resource (a PNG image)",
        mime_type="image/png",
    )
    def static_binary() -> bytes:
        return PNG_BYTES

    @server.resource(
        "test://template/{id}/data",
        name="template-data",
        description="Data for one id (a resource template)",
        mime_type="application/json",
    )
    def template_data(id: str) -> str:
        return json.dumps({"id": id, "templateTest": True, "data": f"Data for ID: {id}"})

    @server.resource(
        WATCHED_RESOURCE,
        name="watched-resource",
        description="A resource that test_update_watched_resource changes",
        mime_type="text/plain",
    )
    def watched_resource() -> str:
        return f"watched resource, version {state.watched_version}"


def _add_handshake_era_handlers(server: MCPServer, state: _FixtureState) -> None:
    """`logging/setLevel` and `resources/subscribe` belong to the handshake-era revisions that
    the suite (2025-06-18, 2025-11-25) exercises; MCPServer does not wire them, so they go on its
    low-level server as the SDK's Extension docs direct."""
    lowlevel = server._lowlevel_server

    async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        state.log_levels[_connection_of(ctx.session)] = params.level
        return types.EmptyResult()

    async def subscribe(ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        subscribers = state.subscribers.setdefault(str(params.uri), weakref.WeakSet())
        connection = _connection_of(ctx.session)
        if connection not in subscribers:
            # Gone when the session ends (DELETE, or the link closing), not whenever the garbage
            # collector gets to the connection: a test counting subscribers sees the end at once.
            connection.exit_stack.callback(subscribers.discard, connection)
        subscribers.add(connection)
        return types.EmptyResult()

    async def unsubscribe(ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        subscribers = state.subscribers.get(str(params.uri), weakref.WeakSet())
        subscribers.discard(_connection_of(ctx.session))
        return types.EmptyResult()

    lowlevel.add_request_handler("logging/setLevel", types.SetLevelRequestParams, set_level)
    lowlevel.add_request_handler("resources/subscribe", types.SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler(
        "resources/unsubscribe", types.UnsubscribeRequestParams, unsubscribe
    )


def fixture_app(
    server: MCPServer | None = None, *, host: str = "127.0.0.1", stateless: bool = False
) -> ASGIApp:
    """The fixture's Streamable HTTP ASGI app at `/mcp`, with Host/Origin checks for loopback
    (`stateless`: the SDK's stateless mode, no sessions, as the modern fixture is served).

    When Envoy routes a call here under a configured `hostname`, it writes that name into
    :authority; list such names (comma separated, `name:*` for any port) in the same environment
    variable the other samples read, MCP_SAMPLE_ALLOWED_HOSTS.
    """
    server = server or build_fixture()
    extra_hosts = [h.strip() for h in os.environ.get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip()]
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[
            "127.0.0.1:*",
            "localhost:*",
            "[::1]:*",
            "127.0.0.1",
            "localhost",
            *extra_hosts,
        ],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"],
    )
    return server.streamable_http_app(
        host=host,
        stateless_http=stateless,
        transport_security=security,
        event_store=MemoryEventStore(),
        retry_interval=SSE_RETRY_MS,
    )


async def serve_fixture(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    modern: bool = False,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the fixture (`modern`: the modern one, stateless) on Trio until cancelled;
    `task_status.started(bound_port)`."""
    config = HypercornConfig()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    app = (
        fixture_app(build_modern_fixture(), host=host, stateless=True)
        if modern
        else fixture_app(host=host)
    )
    async with trio.open_nursery() as nursery:
        # hypercorn reports the URLs it bound once it is listening.
        bound: list[str] = await nursery.start(hypercorn_serve, app, config)
        task_status.started(int(bound[0].rsplit(":", 1)[1]))


# Browsers send Origin on WebSocket upgrades too; a page on another site must not reach us.
_LOOPBACK_ORIGINS = ("http://127.0.0.1", "http://localhost", "http://[::1]")


async def serve_fixture_websocket(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the fixture over WebSocket (subprotocol `mcp`, one MCP session per connection).

    The SDK has no WebSocket server transport, so each connection is bridged to the SDK
    server's own message loop through in-memory streams: text frames in, text frames out.
    """
    lowlevel = build_fixture()._lowlevel_server

    async def handle(request: WebSocketRequest) -> None:
        origin = dict(request.headers).get(b"origin", b"").decode(errors="replace")
        if origin and not origin.startswith(_LOOPBACK_ORIGINS):
            await request.reject(403, body=b"origin not allowed")
            return
        if "mcp" not in request.proposed_subprotocols:
            await request.reject(400, body=b"the WebSocket subprotocol must be mcp")
            return
        connection = await request.accept(subprotocol="mcp")
        await _bridge(lowlevel, connection)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handle, host, port, None)
        task_status.started(server.port)


async def _bridge(lowlevel: Any, connection: WebSocketConnection) -> None:
    to_server, server_reads = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    server_writes, from_server = anyio.create_memory_object_stream[SessionMessage](0)

    async def frames_in() -> None:
        async with to_server:
            while True:
                try:
                    text = await connection.get_message()
                except ConnectionClosed:
                    return
                try:
                    message = types.jsonrpc_message_adapter.validate_json(text, by_name=False)
                except ValidationError as exc:
                    await to_server.send(exc)  # the SDK answers it as a parse error
                    continue
                await to_server.send(SessionMessage(message))

    async def frames_out() -> None:
        async with from_server:
            async for outgoing in from_server:
                data = outgoing.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    await connection.send_message(data)
                except ConnectionClosed:
                    return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(frames_in)
        nursery.start_soon(frames_out)
        await lowlevel.run(server_reads, server_writes, lowlevel.create_initialization_options())
        nursery.cancel_scope.cancel()


def run_fixture(
    host: str = "127.0.0.1", port: int = 0, transport: str = "http", *, modern: bool = False
) -> int:
    """Blocking entry point (the `python -m` form and `sample-server conformance`); `modern`
    serves the modern fixture of conformance_2026.py (stateless, http only) instead.

    `http` (Streamable HTTP at /mcp) and `websocket` print `... listening on URL` as their only
    stdout line once bound, and stop on SIGINT or SIGTERM. `stdio` speaks MCP on stdin/stdout
    until stdin closes.
    """
    if transport == "stdio":
        build_fixture().run("stdio")
        return 0
    service, url = (
        (functools.partial(serve_fixture, modern=modern), "http://{host}:{port}/mcp")
        if transport == "http"
        else (serve_fixture_websocket, "ws://{host}:{port}/mcp")
    )

    async def serve_until_signalled() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                bound_port = await nursery.start(service, host, port)
                where = url.format(host=host, port=bound_port)
                print(f"{FIXTURE_NAME} listening on {where}", flush=True)
                async for _signal in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(serve_until_signalled)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--transport", choices=("http", "stdio", "websocket"), default="http")
    parser.add_argument("--modern", action="store_true", help="the stateless 2026-07-28 fixture")
    args = parser.parse_args(argv)
    return run_fixture(args.host, args.port, args.transport, modern=args.modern)


if __name__ == "__main__":
    sys.exit(main())
