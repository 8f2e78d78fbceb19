"""Capability variants end to end: an upstream that offers a tool only to clients declaring
`roots` is listed with that tool to such clients, and without it to the others, through the
broker and through Envoy + `mcp-gateway serve`, with the official SDK client.

The upstreams are real: a Python SDK `MCPServer` (served by hypercorn in this Trio run) whose
`tools/list` depends on the capabilities of the session asking, as server-everything's does,
and the npm server-everything itself (`get-roots-list` is offered only to roots clients).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio
from mcp import types
from mcp.client.client import Client
from mcp.server.mcpserver import MCPServer
from mcp.shared.exceptions import MCPError

from tests.support.conformance import running_gateway, serve_everything
from tests.support.servers import gateway_config, running_broker

pytestmark = [
    pytest.mark.integration,
    # The SDK client's streams (httpx2 on Trio) are garbage-collected unexhausted when a client
    # closes; that is the SDK's, and it is not what these tests are about.
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx2.:ResourceWarning",
        "ignore:Async generator 'httpcore2.:ResourceWarning",
    ),
]


class ConditionalServer:
    """An official-SDK server with `everyone` for all and (when `conditional`) `roots_only` for
    clients that declared roots; records the capabilities of every session initialized."""

    def __init__(self, *, conditional: bool = True) -> None:
        self.initialized: list[dict[str, Any]] = []
        self.pings = 0  # pings answered: how a test knows that ping intervals went by
        self.roots_only = {"roots_only"}  # tool names offered only to roots clients
        self.sessions: dict[str, Any] = {}  # by Mcp-Session-Id, to announce changes to all
        self.server = MCPServer("conditional")

        @self.server.tool()
        def everyone() -> str:
            """Offered to every client."""
            return "hello, everyone"

        if conditional:

            @self.server.tool()
            def roots_only() -> str:
                """Offered only to clients that declared roots."""
                return "hello, roots client"

        self.server.middleware.append(self._offer_by_capability)

    async def _offer_by_capability(self, ctx: Any, call_next: Any) -> Any:
        if ctx.method == "initialize":
            self.initialized.append(dict((ctx.params or {}).get("capabilities") or {}))
        elif ctx.method == "ping":
            self.pings += 1
        session_id = getattr(ctx.request, "headers", {}).get("mcp-session-id")
        if session_id:
            self.sessions[session_id] = ctx.session
        result = await call_next(ctx)
        if ctx.method == "tools/list" and not _declares_roots(ctx):
            offered = [t for t in result["tools"] if t["name"] not in self.roots_only]
            result = {**result, "tools": offered}
        return result

    async def add_roots_only_tool(self, name: str) -> None:
        """A new roots-only tool, announced to every session (as an upstream does)."""

        def added() -> str:
            return name

        self.roots_only.add(name)
        self.server.add_tool(added, name=name, description="Added for roots clients.")
        for session in list(self.sessions.values()):
            with contextlib.suppress(Exception):  # a session that is gone
                await session.send_tool_list_changed()


def _declares_roots(ctx: Any) -> bool:
    capabilities = ctx.session.client_capabilities
    return capabilities is not None and capabilities.roots is not None


@asynccontextmanager
async def conditional_upstream(
    *, conditional: bool = True
) -> AsyncIterator[tuple[str, ConditionalServer]]:
    upstream = ConditionalServer(conditional=conditional)
    settings = hypercorn.config.Config()
    settings.bind = ["127.0.0.1:0"]
    settings.accesslog = None
    settings.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            hypercorn.trio.serve, upstream.server.streamable_http_app(), settings
        )
        yield f"{urls[0]}/mcp", upstream
        nursery.cancel_scope.cancel()


async def no_roots(context: Any) -> types.ListRootsResult:
    return types.ListRootsResult(roots=[])


async def tool_names(url: str, *, roots: bool) -> set[str]:
    async with Client(url, list_roots_callback=no_roots if roots else None) as client:
        return {tool.name for tool in (await client.list_tools()).tools}


async def test_a_roots_client_lists_and_calls_the_roots_only_tool_through_the_broker() -> None:
    async with (
        conditional_upstream() as (url, _upstream),
        running_broker(gateway_config([("cond", url, "cond_")])) as broker,
    ):
        await wait_for_variants(broker.admin, "cond")
        assert await tool_names(broker.url, roots=True) == {"cond_everyone", "cond_roots_only"}
        assert await tool_names(broker.url, roots=False) == {"cond_everyone"}
        async with Client(broker.url, list_roots_callback=no_roots) as client:
            result = await client.call_tool("cond_roots_only", {})
        assert [block.text for block in result.content if isinstance(block, types.TextContent)] == [
            "hello, roots client"
        ]
        # A client that did not declare roots cannot reach it through the broker either. In a
        # session the tool does not exist for it (the same answer as an unknown tool); a
        # 2026-07-28 client (the default mode) is told which capability it lacks (-32021).
        async with Client(broker.url, mode="legacy") as client:
            with pytest.raises(MCPError, match="Unknown tool: cond_roots_only"):
                await client.call_tool("cond_roots_only", {})
        async with Client(broker.url) as client:
            with pytest.raises(MCPError) as refused:
                await client.call_tool("cond_roots_only", {})
        assert refused.value.error.code == -32021


async def test_a_new_roots_only_tool_is_announced_and_listed_to_roots_clients_only() -> None:
    async with (
        conditional_upstream() as (url, upstream),
        running_broker(gateway_config([("cond", url, "cond_")])) as broker,
    ):
        await wait_for_variants(broker.admin, "cond")
        changed = trio.Event()

        async def on_message(message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                changed.set()

        # A session's GET stream carries the announcement (a 2026-07-28 client would listen).
        async with Client(
            broker.url, mode="legacy", list_roots_callback=no_roots, message_handler=on_message
        ) as client:
            before = {t.name for t in (await client.list_tools()).tools}
            await upstream.add_roots_only_tool("late")
            with trio.fail_after(5):
                await changed.wait()
            after = {t.name for t in (await client.list_tools(cache_mode="bypass")).tools}
        assert before == {"cond_everyone", "cond_roots_only"}
        assert after == {"cond_everyone", "cond_roots_only", "cond_late"}
        assert await tool_names(broker.url, roots=False) == {"cond_everyone"}


async def test_status_shows_the_variant_and_what_it_adds() -> None:
    async with (
        conditional_upstream() as (url, _upstream),
        running_broker(gateway_config([("cond", url, "cond_")])) as broker,
    ):
        variants = await wait_for_variants(broker.admin, "cond")
    assert variants["state"] == "active"
    roots = next(v for v in variants["variants"] if v["requires"] == ["roots"])
    assert (roots["counts"]["tools"], roots["extra"]) == (2, {"tools": 1})
    # Every single feature was listed; only roots brings something.
    assert [v["requires"] for v in variants["variants"]] == [
        ["elicitation.form"],
        ["elicitation.url"],
        ["roots"],
        ["sampling"],
    ]
    assert [v["extra"] for v in variants["variants"] if v["requires"] != ["roots"]] == [{}] * 3


async def test_an_upstream_without_conditional_items_costs_one_short_session() -> None:
    async with (
        conditional_upstream(conditional=False) as (url, upstream),
        running_broker(gateway_config([("plain", url, "p_")])) as broker,
    ):
        variants = await wait_for_variants(broker.admin, "plain")
        assert variants == {"state": "none", "reason": None, "variants": []}
        assert await tool_names(broker.url, roots=True) == {"p_everyone"}
        # Three more pings answered: three of the supervisor's ping intervals went by, in which
        # nothing more was opened.
        pings = upstream.pings
        with trio.fail_after(10):
            while upstream.pings < pings + 3:  # noqa: ASYNC110 - the upstream's count is the signal
                await trio.sleep(0.02)
        discovery = list(upstream.initialized)
    # The base session (no capabilities) and one probe declaring every client feature, which
    # listed the same and was closed; nothing else (listing opens no backend session).
    assert discovery == [
        {},
        {"roots": {"listChanged": True}, "sampling": {}, "elicitation": {"form": {}, "url": {}}},
    ]


async def test_variants_can_be_switched_off() -> None:
    async with (
        conditional_upstream() as (url, upstream),
        running_broker(
            gateway_config([("cond", url, "cond_")], capability_variants=False)
        ) as broker,
    ):
        variants = await wait_for_variants(broker.admin, "cond", until=("off",))
        assert variants["state"] == "off"
        assert await tool_names(broker.url, roots=True) == {"cond_everyone"}
        assert upstream.initialized == [{}]


async def test_through_envoy_a_roots_client_lists_the_roots_only_tool(tmp_path: Path) -> None:
    async with (
        conditional_upstream() as (url, _upstream),
        running_gateway([{"name": "cond", "url": url, "prefix": "cond_"}], tmp_path) as gw,
    ):
        await wait_for_variants(gw.admin_url, "cond")
        assert await tool_names(gw.url, roots=True) == {"cond_everyone", "cond_roots_only"}
        assert await tool_names(gw.url, roots=False) == {"cond_everyone"}
        # The call itself Envoy routes straight to the upstream, on the client's own backend
        # session (opened with its capabilities), so the upstream serves it.
        async with Client(gw.url, list_roots_callback=no_roots) as client:
            result = await client.call_tool("cond_roots_only", {})
        assert not result.is_error


def modern_call(name: str, capabilities: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    body = {
        "jsonrpc": "2.0",
        "id": "call-1",
        "method": "tools/call",
        "params": {
            "name": name,
            "arguments": {},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": capabilities,
                "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
            },
        },
    }
    headers = {
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2026-07-28",
        "mcp-method": "tools/call",
        "mcp-name": name,
    }
    return body, headers


async def test_through_envoy_a_2026_client_missing_the_capability_gets_32021(tmp_path: Path) -> None:
    """The revision's answer to a call that needs a capability the request did not declare:
    400 and -32021 naming it (a ClientCapabilities object), not "unknown tool"; declaring it,
    the same call is served."""
    async with (
        conditional_upstream() as (url, _upstream),
        running_gateway([{"name": "cond", "url": url, "prefix": "cond_"}], tmp_path) as gw,
        httpx.AsyncClient(timeout=10) as http,
    ):
        await wait_for_variants(gw.admin_url, "cond")
        body, headers = modern_call("cond_roots_only", {})
        refused = await http.post(gw.url, json=body, headers=headers)
        assert refused.status_code == 400, refused.text
        error = refused.json()
        assert error["id"] == "call-1"
        assert error["error"]["code"] == -32021
        assert error["error"]["data"] == {"requiredCapabilities": {"roots": {}}}

        async with Client(gw.url, mode="2026-07-28", list_roots_callback=no_roots) as client:
            result = await client.call_tool("cond_roots_only", {})
        assert not result.is_error and result.content[0].text == "hello, roots client"  # type: ignore[union-attr]


async def test_through_envoy_server_everything_offers_get_roots_list_to_roots_clients(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    url = await nursery.start(serve_everything)
    async with running_gateway([{"name": "everything", "url": url, "prefix": ""}], tmp_path) as gw:
        variants = await wait_for_variants(gw.admin_url, "everything")
        with_roots = await tool_names(gw.url, roots=True)
        without = await tool_names(gw.url, roots=False)
    assert "get-roots-list" in with_roots
    assert "get-roots-list" not in without
    assert without < with_roots
    roots_variant = next(v for v in variants["variants"] if v["requires"] == ["roots"])
    assert roots_variant["extra"].get("tools", 0) >= 1


async def wait_for_variants(
    base: str, name: str, *, until: tuple[str, ...] = ("active", "none", "off", "failed")
) -> dict[str, Any]:
    """Poll /status/{name} (an HTTP probe has nothing to wait on but the answer) until its
    capability variants are settled; return that part of the status."""
    async with httpx.AsyncClient() as http:
        with trio.fail_after(15):
            while True:
                status = (await http.get(f"{base}/status/{name}")).json()
                variants: dict[str, Any] = status["capabilityVariants"]
                if variants["state"] in until:
                    return variants
                await trio.sleep(0.05)
