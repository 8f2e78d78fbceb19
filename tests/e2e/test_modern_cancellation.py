"""A 2026-07-28 client cancels a call by closing its response (the revision has no
`notifications/cancelled` from clients and no session): through a real Envoy, the upstream's
work stops on every path the call can take (docs/router.md, "A client that leaves").

- A legacy upstream (our conformance fixture, a stateful SDK server in its own process): the
  call ran on the gateway's shared backend session under a gateway-made id, so the gateway tells
  it `notifications/cancelled` with that id, on that session. On the router's path Envoy ends
  the ext_proc stream before the answer's end (the router streams a modern answer whole); on
  the Lua fast path the access logger reports the call's mark (flag DC).
- A modern upstream (the SDK 2.x server, stateless): Envoy resets its request, which is the
  revision's cancellation; the SDK server cancels the tool's handler.
- A call the broker forwards (the client declared elicitation): its handler is cancelled, and so
  is the held call it waits on; the upstream is told as for a legacy client's call.

The client is the official SDK client pinned to 2026-07-28, cancelled by leaving a Trio cancel
scope around `call_tool`. Every wait is on what the upstream reports (started, then cancelled),
with a deadline: the legacy fixture is asked directly (not through the gateway, so the asking
does not move the counters that tell which path a call took); the modern server is in-process.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp_types import ElicitRequestParams, ElicitResult

from tests.support.conformance import running_fixture
from tests.support.modern import serve_modern
from tests.support.routing import SDK_CLIENT_WARNINGS, Stack, gateway_stack

pytestmark = [pytest.mark.integration, SDK_CLIENT_WARNINGS]

MODERN = "2026-07-28"
EXT_PROC_STREAMS = "http.mcp.ext_proc.streams_started"
TO_BROKER = "cluster.mcp_broker.upstream_rq_total"
# "Within a few seconds": the cancellation leaves at once; this bounds a loaded machine.
PATIENCE_SECONDS = 10.0
# How often the legacy fixture (another process) is asked what it saw while waiting for it.
POLL_SECONDS = 0.05


@dataclass
class ModernProbe:
    """What the modern upstream's slow tool reports, as events the test waits on."""

    started: dict[str, trio.Event] = field(default_factory=dict)
    cancelled: dict[str, trio.Event] = field(default_factory=dict)

    def event(self, which: dict[str, trio.Event], label: str) -> trio.Event:
        return which.setdefault(label, trio.Event())


def modern_slow_server(probe: ModernProbe) -> MCPServer:
    server = MCPServer("modern-slow", version="2.0.0")

    @server.tool(description="Holds until cancelled (at most `seconds`); reports start and cancel.")
    async def hold(label: str, seconds: float = 60) -> str:
        probe.event(probe.started, label).set()
        try:
            await trio.sleep(seconds)
        except trio.Cancelled:
            probe.event(probe.cancelled, label).set()
            raise
        return f"{label} held to the end"

    return server


@dataclass
class Upstreams:
    stack: Stack
    legacy: Client  # the fixture itself, not through the gateway: what it saw
    modern: ModernProbe

    async def legacy_saw(self, tool: str, label: str) -> bool:
        answer = await self.legacy.call_tool(tool, {})
        return label in json.loads(answer.content[0].text)  # type: ignore[union-attr]

    async def legacy_reports(self, tool: str, label: str) -> None:
        with trio.fail_after(PATIENCE_SECONDS):
            while True:
                if await self.legacy_saw(tool, label):
                    return
                await trio.sleep(POLL_SECONDS)  # another process: asked again until it says so

    async def stat(self, name: str) -> int:
        return await self.stack.envoy.stat(name)


@asynccontextmanager
async def upstreams(tmp_path: Path) -> AsyncIterator[Upstreams]:
    """The gateway (fast path decisions kept 30 s) in front of the legacy fixture (prefix old_)
    and the modern slow server (new_)."""
    probe = ModernProbe()
    async with running_fixture() as fixture_url, trio.open_nursery() as nursery:
        modern_port = await nursery.start(serve_modern, modern_slow_server(probe))
        servers = [("legacy", fixture_url, "old_"), ("modern", f"http://127.0.0.1:{modern_port}/mcp", "new_")]
        async with gateway_stack(servers, tmp_path, envoy={"fast_path": {"ttl_seconds": 30}}) as stack, \
                Client(fixture_url, mode="legacy") as legacy:
            yield Upstreams(stack, legacy, probe)
        nursery.cancel_scope.cancel()


async def leave_midway(call: Callable[[], Awaitable[Any]], started: Callable[[], Awaitable[None]]) -> None:
    """Run `call`; once the upstream reports it started, leave it (its cancel scope)."""
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                await call()
            assert scope.cancelled_caught, "the call ended before its client left"

        nursery.start_soon(run)
        with trio.fail_after(PATIENCE_SECONDS):
            await started()
        scope.cancel()


def modern_client(stack: Stack, **kwargs: Any) -> Client:
    return Client(streamable_http_client(stack.url), mode=MODERN, **kwargs)


async def test_a_modern_clients_call_to_a_legacy_upstream_is_cancelled_there_on_the_router_and_the_fast_path(
    tmp_path: Path,
) -> None:
    async with upstreams(tmp_path) as up, modern_client(up.stack) as client:
        await client.list_tools()  # what the client reads once, before its first call
        to_broker = await up.stat(TO_BROKER)

        async def slow(label: str, seconds: float = 60) -> Any:
            return await client.call_tool("old_test_slow_operation", {"label": label, "seconds": seconds})

        # The first call: the router's (it streams the answer whole; Envoy ends its stream early).
        await leave_midway(lambda: slow("router"), lambda: up.legacy_reports("test_started_operations", "router"))
        await up.legacy_reports("test_cancelled_operations", "router")
        # A call that ends: Envoy learns the decision from it.
        await slow("warm", 0)
        before = await up.stat(EXT_PROC_STREAMS)
        # A later call: Envoy's (the access log reports its mark, the router cancels it).
        await leave_midway(lambda: slow("fast"), lambda: up.legacy_reports("test_started_operations", "fast"))
        await up.legacy_reports("test_cancelled_operations", "fast")
        assert await up.stat(EXT_PROC_STREAMS) == before, "the later call did not take the fast path"
        assert await up.stat(TO_BROKER) == to_broker, "a call went to the broker"
        assert not await up.legacy_saw("test_cancelled_operations", "warm")


async def test_a_modern_upstream_has_its_handler_cancelled_when_the_modern_client_leaves_on_the_router_and_the_fast_path(
    tmp_path: Path,
) -> None:
    async with upstreams(tmp_path) as up, modern_client(up.stack) as client:
        await client.list_tools()
        to_broker = await up.stat(TO_BROKER)
        probe = up.modern

        async def hold(label: str, seconds: float = 60) -> Any:
            return await client.call_tool("new_hold", {"label": label, "seconds": seconds})

        await leave_midway(lambda: hold("router"), probe.event(probe.started, "router").wait)
        with trio.fail_after(PATIENCE_SECONDS):
            await probe.event(probe.cancelled, "router").wait()
        await hold("warm", 0)
        before = await up.stat(EXT_PROC_STREAMS)
        # Envoy's Lua filter holds a modern upstream's answer whole: the client leaving still
        # resets the upstream request.
        await leave_midway(lambda: hold("fast"), probe.event(probe.started, "fast").wait)
        with trio.fail_after(PATIENCE_SECONDS):
            await probe.event(probe.cancelled, "fast").wait()
        assert await up.stat(EXT_PROC_STREAMS) == before, "the later call did not take the fast path"
        assert await up.stat(TO_BROKER) == to_broker, "a call went to the broker"
        assert "warm" not in probe.cancelled


async def test_a_call_the_broker_forwards_is_cancelled_upstream_when_its_modern_client_leaves(tmp_path: Path) -> None:
    async def never_asked(context: Any, params: ElicitRequestParams) -> ElicitResult:
        raise AssertionError("the slow tools ask nothing")

    # Declaring elicitation sends the client's calls to the broker (a legacy upstream's call is
    # held there for its rounds); the client leaves before any outcome.
    async with upstreams(tmp_path) as up, modern_client(up.stack, elicitation_callback=never_asked) as client:
        await client.list_tools()
        to_broker = await up.stat(TO_BROKER)
        call = client.call_tool
        await leave_midway(
            lambda: call("old_test_slow_operation", {"label": "broker", "seconds": 60}),
            lambda: up.legacy_reports("test_started_operations", "broker"),
        )
        await up.legacy_reports("test_cancelled_operations", "broker")
        probe = up.modern
        await leave_midway(
            lambda: call("new_hold", {"label": "broker", "seconds": 60}), probe.event(probe.started, "broker").wait
        )
        with trio.fail_after(PATIENCE_SECONDS):
            await probe.event(probe.cancelled, "broker").wait()
        assert await up.stat(TO_BROKER) >= to_broker + 2, "the calls did not reach the broker"
