"""`subscriptions/listen` for 2026-07-28 clients through real Envoy + the gateway: the official SDK
client pinned to 2026-07-28 (its listen API) and raw streams (to see every frame, in order),
over a legacy SDK server (the conformance fixture: resources/subscribe, updates on its sessions'
GET streams) and a stateless SDK 2.x server (updates on its own subscriptions/listen)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated, ToolsListChanged
from mcp.server.mcpserver import Context, MCPServer

from mcp_gateway.samples import serve_sample
from tests.support.modern import modern_server, serve_modern
from tests.support.routing import SDK_CLIENT_WARNINGS, Stack, gateway_stack

pytestmark = [pytest.mark.integration, SDK_CLIENT_WARNINGS]

MODERN = "2026-07-28"
SUBSCRIPTION_ID = "io.modelcontextprotocol/subscriptionId"
LEGACY_URI = "mcp-gateway:fx_test://watched-resource"
MODERN_URI = "mcp-gateway:new_watch://modern"
UNKNOWN_URI = "mcp-gateway:zz_nobody://here"
ENVELOPE = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "raw-listener", "version": "1.0.0"},
}


def watched_modern_server() -> MCPServer:
    """The stateless upstream, with a resource whose updates it tells its listen streams, and
    tools that change its prompt and resource lists."""
    server = modern_server("modern")

    @server.resource("watch://modern", description="A resource that changes.")
    def watched() -> str:
        return "modern resource"

    @server.tool(description="Tell subscribers that watch://modern changed.")
    async def touch(ctx: Context) -> str:
        await ctx.notify_resource_updated("watch://modern")
        return "touched"

    @server.tool(description="Add a prompt and a resource, and tell listeners both lists changed.")
    async def widen(name: str, ctx: Context) -> str:
        @server.prompt(name=name)
        def prompt() -> str:
            return name

        @server.resource(f"watch://{name}")
        def resource() -> str:
            return name

        await ctx.notify_prompts_changed()
        await ctx.notify_resources_changed()
        return f"widened {name}"

    return server


@dataclass
class Fleet:
    stack: Stack
    legacy_url: str
    modern_url: str


@asynccontextmanager
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async with trio.open_nursery() as nursery:
        legacy_port = await nursery.start(serve_sample, "conformance")
        modern_port = await nursery.start(serve_modern, watched_modern_server())
        legacy_url = f"http://127.0.0.1:{legacy_port}/mcp"
        modern_url = f"http://127.0.0.1:{modern_port}/mcp"
        servers = [("fx", legacy_url, "fx_"), ("modern", modern_url, "new_")]
        async with gateway_stack(servers, tmp_path) as stack:
            yield Fleet(stack, legacy_url, modern_url)
        nursery.cancel_scope.cancel()


async def call_upstream(url: str, tool: str, arguments: dict[str, Any]) -> str:
    """Call an upstream's tool directly (what changes it is not the gateway's doing)."""
    async with Client(streamable_http_client(url)) as client:
        result = await client.call_tool(tool, arguments)
    return result.content[0].text  # type: ignore[union-attr]


def listen_body(request_id: str, notifications: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "subscriptions/listen",
        "params": {"notifications": notifications, "_meta": ENVELOPE},
    }


LISTEN_HEADERS = {
    "accept": "application/json, text/event-stream",
    "mcp-protocol-version": MODERN,
    "mcp-method": "subscriptions/listen",
}


@dataclass
class RawStream:
    """A raw listen stream's messages, in the order they came."""

    messages: list[dict[str, Any]]
    arrived: trio.Event

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        with trio.fail_after(10):
            while len(self.messages) < count:
                await self.arrived.wait()
                self.arrived = trio.Event()
        return self.messages


async def raw_listen(
    http: httpx.AsyncClient, url: str, request_id: str, notifications: Any, *, task_status: Any
) -> None:
    stream = RawStream([], trio.Event())
    async with http.stream("POST", url, json=listen_body(request_id, notifications), headers=LISTEN_HEADERS) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        task_status.started(stream)
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                stream.messages.append(json.loads(line[5:]))
                stream.arrived.set()


def acknowledged(request_id: str, honoured: dict[str, Any]) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {"notifications": honoured, "_meta": {SUBSCRIPTION_ID: request_id}},
    }


def notification(method: str, request_id: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": {**params, "_meta": {SUBSCRIPTION_ID: request_id}}}


async def test_list_changes_come_after_the_acknowledgement_and_only_those_asked_for(tmp_path: Path) -> None:
    async with fleet(tmp_path) as running, httpx.AsyncClient(timeout=20) as http:
        url = running.stack.url
        async with trio.open_nursery() as nursery:
            tools_only = await nursery.start(raw_listen, http, url, "tools-only", {"toolsListChanged": True})
            everything = await nursery.start(
                raw_listen, http, url, "everything",
                {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True},
            )
            # The acknowledgement is each stream's first message, with the honoured filter.
            assert (await tools_only.wait_for(1)) == [acknowledged("tools-only", {"toolsListChanged": True})]
            assert (await everything.wait_for(1))[0] == acknowledged(
                "everything", {"toolsListChanged": True, "promptsListChanged": True, "resourcesListChanged": True}
            )

            async with (
                Client(streamable_http_client(url), mode=MODERN) as client,
                client.listen(tools_list_changed=True) as subscription,
            ):
                assert subscription.honored.tools_list_changed is True
                # Prompts and resources change first; only the stream that asked hears it.
                assert await call_upstream(running.modern_url, "widen", {"name": "wide"}) == "widened wide"
                heard = await everything.wait_for(3)
                assert {m["method"] for m in heard[1:3]} == {
                    "notifications/prompts/list_changed",
                    "notifications/resources/list_changed",
                }
                assert all(m["params"]["_meta"] == {SUBSCRIPTION_ID: "everything"} for m in heard[1:3])

                # Then a tool is added at run time: the SDK client's listen hears it, and a
                # fresh list shows the tool.
                assert await call_upstream(running.modern_url, "grow", {"tool": "fresh"}) == "added fresh"
                with trio.fail_after(10):
                    event = await subscription.__anext__()
                assert event == ToolsListChanged()
                names = {t.name for t in (await client.list_tools(cache_mode="bypass")).tools}
                assert "new_fresh" in names

            # The tools-only stream is ordered: its next message after the acknowledgement is the
            # tools list_changed, so no prompts or resources notification reached it before.
            assert (await tools_only.wait_for(2)) == [
                acknowledged("tools-only", {"toolsListChanged": True}),
                notification("notifications/tools/list_changed", "tools-only"),
            ]
            nursery.cancel_scope.cancel()


async def test_malformed_filters_and_json_only_clients_are_refused_with_the_request_id(tmp_path: Path) -> None:
    async with fleet(tmp_path) as running, httpx.AsyncClient(timeout=20) as http:
        for request_id, notifications in [
            ("no-filter", None),
            ("not-an-object", ["toolsListChanged"]),
            ("not-a-flag", {"toolsListChanged": "yes"}),
            ("not-uris", {"resourceSubscriptions": "file:///a"}),
            ("not-strings", {"resourceSubscriptions": [1, 2]}),
        ]:
            body = listen_body(request_id, notifications)
            if notifications is None:
                del body["params"]["notifications"]
            answer = await http.post(running.stack.url, json=body, headers=LISTEN_HEADERS)
            assert answer.status_code == 400, (request_id, answer.text)
            error = answer.json()
            assert error["id"] == request_id
            assert error["error"]["code"] == -32602
        # The answer is a stream: a client that takes only JSON is told so.
        json_only = {**LISTEN_HEADERS, "accept": "application/json"}
        body = listen_body("json-only", {"toolsListChanged": True})
        answer = await http.post(running.stack.url, json=body, headers=json_only)
        assert answer.status_code == 400
        assert answer.json()["id"] == "json-only"
        assert answer.json()["error"]["code"] == -32600


async def test_resource_updates_from_each_kind_of_upstream_reach_only_their_subscriber(
    tmp_path: Path,
) -> None:
    async with fleet(tmp_path) as running, httpx.AsyncClient(timeout=20) as http:
        url = running.stack.url
        async with trio.open_nursery() as nursery:
            # A bystander watching a URI nobody owns: left out of what is honoured.
            bystander = await nursery.start(
                raw_listen, http, url, "bystander", {"toolsListChanged": True, "resourceSubscriptions": [UNKNOWN_URI]}
            )
            assert (await bystander.wait_for(1)) == [acknowledged("bystander", {"toolsListChanged": True})]

            async with Client(streamable_http_client(url), mode=MODERN) as client:
                async with client.listen(resource_subscriptions=[LEGACY_URI, MODERN_URI]) as subscription:
                    # Acknowledged once both owners accepted: updates sent now are delivered.
                    assert subscription.honored.resource_subscriptions == [LEGACY_URI, MODERN_URI]
                    notified = await call_upstream(running.legacy_url, "test_update_watched_resource", {})
                    assert notified == "notified 1 subscriber(s)"  # the stream's own backend session
                    with trio.fail_after(10):
                        assert await subscription.__anext__() == ResourceUpdated(LEGACY_URI)
                    assert await call_upstream(running.modern_url, "touch", {}) == "touched"
                    with trio.fail_after(10):
                        assert await subscription.__anext__() == ResourceUpdated(MODERN_URI)

                # The stream ended: its backend session at the legacy upstream went with it.
                with trio.fail_after(10):
                    while True:
                        notified = await call_upstream(running.legacy_url, "test_update_watched_resource", {})
                        if notified == "notified 0 subscriber(s)":
                            break
                        await trio.sleep(0.05)

            # The bystander's stream is ordered: a tools change is the next thing it carries, so
            # neither update reached it.
            assert await call_upstream(running.modern_url, "grow", {"tool": "later"}) == "added later"
            assert (await bystander.wait_for(2)) == [
                acknowledged("bystander", {"toolsListChanged": True}),
                notification("notifications/tools/list_changed", "bystander"),
            ]
            nursery.cancel_scope.cancel()
