"""A legacy client (the initialize handshake) reading resources, getting prompts and subscribing
to resources of a modern upstream (the official SDK 2.x server in stateless mode, MCP
2026-07-28: no initialize, no session): through real Envoy with the SDK client, and over
/mcp/ws, where the broker forwards every request itself. Either way the upstream is asked with
no session, the revision's `_meta` envelope and its Mcp-Method/Mcp-Name headers, the prefix
stripped; a subscription becomes a subscriptions/listen of the client's own."""

from __future__ import annotations

import json
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning
from trio_websocket import open_websocket_url

from tests.support.modern import modern_and_legacy, modern_server
from tests.support.routing import SDK_CLIENT_WARNINGS, Stack

pytestmark = [pytest.mark.integration, SDK_CLIENT_WARNINGS]

CAPS = "io.modelcontextprotocol/clientCapabilities"
VERSION = "io.modelcontextprotocol/protocolVersion"


def seen_by(name: str, ctx: Context, meta: dict[str, Any] | None = None) -> str:
    """What reached the upstream, as JSON: the mirrored headers, the session, the envelope."""
    headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
    return json.dumps(
        {
            "server": name,
            "session": headers.get("mcp-session-id"),
            "method": headers.get("mcp-method"),
            "name": headers.get("mcp-name"),
            "version": headers.get("mcp-protocol-version"),
            "meta_version": (meta or {}).get(VERSION),
            "declared": sorted((meta or {}).get(CAPS) or {}),
        }
    )


def reading_server(name: str) -> MCPServer:
    """modern_server plus a resource template and a prompt that report what reached them."""
    server = modern_server(name)

    @server.resource("notes://{topic}", description="A note that says how it was read.")
    def note(topic: str, ctx: Context) -> str:
        return json.dumps({"topic": topic, "seen": json.loads(seen_by(name, ctx, _meta(ctx)))})

    @server.tool(description="Tell listeners that notes://{topic} changed.")
    async def touch(topic: str, ctx: Context) -> str:
        await ctx.notify_resource_updated(f"notes://{topic}")
        return f"touched {topic}"

    @server.tool(description="Log one message at each of debug, info and warning.")
    async def chatty(ctx: Context) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MCPDeprecationWarning)  # logging is, in 2026-07-28
            await ctx.debug(f"{name} debug")
            await ctx.info(f"{name} info")
            await ctx.warning(f"{name} warning")
        return "said"

    @server.prompt(description="Greet someone; says how it was asked.")
    def greet(who: str, ctx: Context) -> str:
        return f"hello {who} " + seen_by(name, ctx, _meta(ctx))

    return server


def _meta(ctx: Context) -> dict[str, Any]:
    meta = ctx.request_context.meta
    dumped = meta.model_dump(by_alias=True) if meta is not None and hasattr(meta, "model_dump") else meta
    return dict(dumped or {})


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with modern_and_legacy(tmp_path, reading_server("modern"), reading_server("legacy")) as running:
        yield running


def check_modern(seen: dict[str, Any], method: str, name: str) -> None:
    assert seen["server"] == "modern"
    assert seen["session"] is None
    assert (seen["method"], seen["name"]) == (method, name)
    assert seen["version"] == seen["meta_version"] == "2026-07-28"


async def test_a_legacy_client_reads_and_gets_prompts_of_a_modern_upstream_through_envoy(stack: Stack) -> None:
    with trio.fail_after(30):
        async with Client(streamable_http_client(stack.url), mode="legacy") as client:
            templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
            prompts = {p.name for p in (await client.list_prompts()).prompts}
            # Each upstream's URIs under its mark (template names are the upstreams' own).
            uri = next((t.replace("{topic}", "today") for t in templates if "new_notes" in t), None)
            read = await client.read_resource(uri) if uri is not None else None
            prompt = await client.get_prompt("new_greet", {"who": "ada"})
            legacy = await client.get_prompt("old_greet", {"who": "bob"})
    assert {"new_greet", "old_greet"} <= prompts
    assert uri is not None and uri.startswith("mcp-gateway:new_"), templates
    assert read is not None
    # The client's URI comes back; the upstream saw its own, without the prefix.
    assert str(read.contents[0].uri) == uri
    note = json.loads(read.contents[0].text)  # type: ignore[union-attr]
    assert note["topic"] == "today"
    check_modern(note["seen"], "resources/read", "notes://today")
    text = prompt.messages[0].content.text  # type: ignore[union-attr]
    assert text.startswith("hello ada ")
    check_modern(json.loads(text.removeprefix("hello ada ")), "prompts/get", "greet")
    # The legacy upstream, for contrast: a backend session, no modern headers.
    old = json.loads(legacy.messages[0].content.text.removeprefix("hello bob "))  # type: ignore[union-attr]
    assert old["server"] == "legacy" and old["session"] and old["method"] is None


async def test_a_legacy_client_reads_and_gets_prompts_of_a_modern_upstream_over_the_socket(stack: Stack) -> None:
    url = stack.url.replace("http://", "ws://") + "/ws"
    async with open_websocket_url(url, subprotocols=["mcp"]) as socket:

        async def request(rid: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
            body: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
            if params is not None:
                body["params"] = params
            await socket.send_message(json.dumps(body))
            with trio.fail_after(15):
                while True:
                    message: dict[str, Any] = json.loads(await socket.get_message())
                    if message.get("id") == rid and "method" not in message:
                        return message

        init = await request(
            "init",
            "initialize",
            {"protocolVersion": "2025-11-25", "capabilities": {"roots": {}}, "clientInfo": {"name": "ws", "version": "1"}},
        )
        assert init["result"]["protocolVersion"] == "2025-11-25"
        await socket.send_message(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        templates = (await request(1, "resources/templates/list"))["result"]["resourceTemplates"]
        uri = next(t["uriTemplate"] for t in templates if "new_notes" in t["uriTemplate"]).replace("{topic}", "ws")
        read = await request(2, "resources/read", {"uri": uri})
        content = read["result"]["contents"][0]
        assert content["uri"] == uri
        note = json.loads(content["text"])
        assert note["topic"] == "ws"
        check_modern(note["seen"], "resources/read", "notes://ws")
        # The client's capabilities as it declared them at initialize.
        assert note["seen"]["declared"] == ["roots"]
        prompt = await request(3, "prompts/get", {"name": "new_greet", "arguments": {"who": "ws"}})
        text = prompt["result"]["messages"][0]["content"]["text"]
        check_modern(json.loads(text.removeprefix("hello ws ")), "prompts/get", "greet")
        unknown = await request(4, "resources/read", {"uri": uri.replace("notes://", "nothing://")})
        assert "error" in unknown and unknown["id"] == 4


async def test_a_legacy_clients_subscription_to_a_modern_upstreams_resource_hears_its_updates(stack: Stack) -> None:
    updated: list[str] = []
    heard = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/resources/updated":
            updated.append(str(message.params.uri))
            heard.set()

    with trio.fail_after(30):
        async with Client(streamable_http_client(stack.url), mode="legacy", message_handler=on_message) as client:
            templates = [t.uri_template for t in (await client.list_resource_templates()).resource_templates]
            uri = next(t for t in templates if "new_notes" in t).replace("{topic}", "news")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                # The upstream has no resources/subscribe: a listen of this session's own.
                await client.subscribe_resource(uri)
                touched = await client.call_tool("new_touch", {"topic": "news"})
                assert touched.content[0].text == "touched news"  # type: ignore[union-attr]
                await heard.wait()
                await client.unsubscribe_resource(uri)
    # Under the URI the client subscribed to, not the upstream's.
    assert updated == [uri]


async def test_a_legacy_clients_log_level_reaches_a_modern_upstream_on_each_request(stack: Stack) -> None:
    """The revision has no logging/setLevel and a modern upstream logs nothing to a request
    without `io.modelcontextprotocol/logLevel`: a legacy client's level rides on each request,
    on the router's path (through Envoy) and on the broker's (over the socket)."""
    heard: list[tuple[str, Any]] = []

    async def on_log(params: Any) -> None:
        heard.append((params.level, params.data))

    with trio.fail_after(30):
        async with Client(streamable_http_client(stack.url), mode="legacy", logging_callback=on_log) as client:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.set_logging_level("info")
            said = await client.call_tool("new_chatty", {})
    assert said.content[0].text == "said"  # type: ignore[union-attr]
    # Logs of a call come on its own stream, before its result.
    assert heard == [("info", "modern info"), ("warning", "modern warning")]

    url = stack.url.replace("http://", "ws://") + "/ws"
    async with open_websocket_url(url, subprotocols=["mcp"]) as socket:
        frames: list[dict[str, Any]] = []

        async def request(rid: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
            await socket.send_message(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
            with trio.fail_after(15):
                while True:
                    message: dict[str, Any] = json.loads(await socket.get_message())
                    if message.get("id") == rid and "method" not in message:
                        return message
                    frames.append(message)

        info = {"name": "ws", "version": "1"}
        await request("init", "initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": info})
        await socket.send_message(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        await request(1, "logging/setLevel", {"level": "warning"})
        called = await request(2, "tools/call", {"name": "new_chatty", "arguments": {}})
    assert called["result"]["content"][0]["text"] == "said"
    logged = [(f["params"]["level"], f["params"]["data"]) for f in frames if f.get("method") == "notifications/message"]
    assert logged == [("warning", "modern warning")]
