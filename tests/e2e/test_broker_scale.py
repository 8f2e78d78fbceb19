"""Scale: many upstreams are discovered side by side, and tools/list asks none of them.

In-process sample servers (hypercorn on this Trio run) keep 50 upstreams cheap to start.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from typing import Any

import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio

from mcp_gateway.samples import build_app
from tests.support.servers import (
    Broker,
    gateway_config,
    initialize_body,
    running_broker,
)

pytestmark = pytest.mark.integration

HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = initialize_body()
DELAY = 0.3  # every request to a slow upstream waits this long


async def serve_asgi(nursery: trio.Nursery, app: Any) -> str:
    """Serve an ASGI app (a wrapped sample) on a free loopback port in `nursery`; its MCP URL."""
    settings = hypercorn.config.Config()
    settings.bind = ["127.0.0.1:0"]
    settings.accesslog = None
    settings.graceful_timeout = 0.5
    urls = await nursery.start(partial(hypercorn.trio.serve, app, settings))
    return f"{urls[0]}/mcp"


class InFlight:
    """Requests being served across all slow samples, and the most at any one time."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0


@asynccontextmanager
async def slow_sample(nursery: trio.Nursery, in_flight: InFlight) -> AsyncIterator[str]:
    """The echo sample behind an ASGI wrapper that delays each HTTP request."""
    app = build_app("echo")

    async def delayed(
        scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any
    ) -> None:
        if scope["type"] == "http":
            in_flight.now += 1
            in_flight.most = max(in_flight.most, in_flight.now)
            try:
                await trio.sleep(DELAY)
            finally:
                in_flight.now -= 1
        await app(scope, receive, send)

    yield await serve_asgi(nursery, delayed)


async def test_twenty_upstreams_are_discovered_concurrently() -> None:
    async with trio.open_nursery() as nursery:
        async with AsyncExitStack() as stack:
            in_flight = InFlight()
            urls = [
                await stack.enter_async_context(slow_sample(nursery, in_flight)) for _ in range(20)
            ]
            config = gateway_config([(f"s{i}", url, f"s{i}_") for i, url in enumerate(urls)])
            started = time.perf_counter()
            async with running_broker(config) as broker, httpx.AsyncClient() as http:
                discovered = time.perf_counter() - started
                status = (await http.get(f"{broker.admin}/status")).json()
                assert [u["state"] for u in status["upstreams"]] == ["ready"] * 20
        nursery.cancel_scope.cancel()
    # Concurrency shown by the upstreams themselves, not by a clock: every upstream's
    # initialize was being served at the same moment (one after another, never more than one).
    print(f"20 upstreams discovered in {discovered:.2f}s; {in_flight.most} requests at once")
    assert in_flight.most >= 20


async def _session(http: httpx.AsyncClient, broker: Broker) -> dict[str, str]:
    response = await http.post(broker.url, json=INIT, headers=HEADERS)
    return {**HEADERS, "mcp-session-id": response.headers["mcp-session-id"]}


async def test_tools_list_with_fifty_upstreams_asks_none_of_them() -> None:
    """tools/list is answered from the catalog the supervisor keeps: 50 upstreams cost the
    client no upstream round trip (what that means in latency: bench/bench_broker.py)."""
    listed = Counted()
    async with trio.open_nursery() as nursery:
        async with AsyncExitStack() as stack:
            urls = [
                await stack.enter_async_context(counting_sample(nursery, listed)) for _ in range(50)
            ]
            config = gateway_config(
                [(f"s{i}", url, f"s{i}_") for i, url in enumerate(urls)], page_size=100
            )
            async with running_broker(config) as broker, httpx.AsyncClient() as http:
                session = await _session(http, broker)
                before = listed.tools_lists
                for request_id in range(50):
                    body = {"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}
                    answer = (await http.post(broker.url, json=body, headers=session)).json()
                    assert len(answer["result"]["tools"]) == 100  # 2 echo tools from each of 50
                assert listed.tools_lists == before
                assert before >= 50  # each upstream was listed at discovery
        nursery.cancel_scope.cancel()


class Counted:
    """tools/list requests the counting samples received."""

    def __init__(self) -> None:
        self.tools_lists = 0


@asynccontextmanager
async def counting_sample(nursery: trio.Nursery, counted: Counted) -> AsyncIterator[str]:
    """The echo sample behind an ASGI wrapper that counts the tools/list requests it gets."""
    app = build_app("echo")

    async def counting(
        scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Any
    ) -> None:
        async def read() -> Any:
            event = await receive()
            if event.get("type") == "http.request" and b'"tools/list"' in event.get("body", b""):
                counted.tools_lists += 1
            return event

        await app(scope, read, send)

    yield await serve_asgi(nursery, counting)
