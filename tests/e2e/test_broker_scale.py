"""Scale: many upstreams are discovered side by side, and tools/list does not grow with them.

In-process sample servers (hypercorn on this Trio run) keep 50 upstreams cheap to start.
"""

from __future__ import annotations

import statistics
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
    sample_in_process,
)

pytestmark = pytest.mark.integration

HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
INIT = initialize_body()
DELAY = 0.3  # every request to a slow upstream waits this long


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

    settings = hypercorn.config.Config()
    settings.bind = ["127.0.0.1:0"]
    settings.accesslog = None
    settings.graceful_timeout = 0.5
    urls = await nursery.start(partial(hypercorn.trio.serve, delayed, settings))  # type: ignore[arg-type]
    yield f"{urls[0]}/mcp"


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
                status = (await http.get(f"{broker.base}/status")).json()
                assert [u["state"] for u in status["upstreams"]] == ["ready"] * 20
        nursery.cancel_scope.cancel()
    # Concurrency shown by the upstreams themselves, not by a clock: every upstream's
    # initialize was being served at the same moment (one after another, never more than one).
    print(f"20 upstreams discovered in {discovered:.2f}s; {in_flight.most} requests at once")
    assert in_flight.most >= 20


async def _session(http: httpx.AsyncClient, broker: Broker) -> dict[str, str]:
    response = await http.post(broker.url, json=INIT, headers=HEADERS)
    return {**HEADERS, "mcp-session-id": response.headers["mcp-session-id"]}


async def _list_once(http: httpx.AsyncClient, broker: Broker, session: dict[str, str]) -> float:
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    started = time.perf_counter()
    answer = await http.post(broker.url, json=body, headers=session)
    elapsed = time.perf_counter() - started
    assert answer.status_code == 200
    return elapsed


async def test_tools_list_latency_with_fifty_upstreams_is_close_to_one() -> None:
    async with AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(sample_in_process("echo")) for _ in range(50)]
        one = gateway_config([("s0", urls[0], "s0_")], page_size=100)
        fifty = gateway_config(
            [(f"s{i}", url, f"s{i}_") for i, url in enumerate(urls)], page_size=100
        )
        async with (
            running_broker(one) as broker_one,
            running_broker(fifty) as broker_fifty,
            httpx.AsyncClient() as http,
        ):
            session_one = await _session(http, broker_one)
            session_fifty = await _session(http, broker_fifty)
            one_samples, fifty_samples = [], []
            # Interleaved, so load from the rest of the machine falls on both alike.
            for round_ in range(220):
                a = await _list_once(http, broker_one, session_one)
                b = await _list_once(http, broker_fifty, session_fifty)
                if round_ >= 20:  # warm-up
                    one_samples.append(a)
                    fifty_samples.append(b)
    latency_one = statistics.median(one_samples)
    latency_fifty = statistics.median(fifty_samples)
    print(
        f"tools/list median: 1 upstream {latency_one * 1e3:.2f} ms, "
        f"50 upstreams (100 tools) {latency_fifty * 1e3:.2f} ms, "
        f"ratio {latency_fifty / latency_one:.2f}"
    )
    assert latency_fifty < 1.5 * latency_one
