"""The official MCP SDK client against the broker, federating two real sample servers.

Every scenario runs on both of the SDK's anyio backends (trio in this test's own run, asyncio in
a worker thread) and in both connect modes: the default (`server/discover`, answered: the client
stays on 2026-07-28 and hears changes on subscriptions/listen) and the legacy initialize
handshake (changes on the session's GET stream).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ToolsListChanged

from tests.support.servers import Broker, gateway_config, running_broker, sample_in_process

# The official SDK client (mcp 2.3.0) drops its httpx2 SSE iterators unfinished when a stream
# ends; Trio warns about each. Only those generators are ignored, and only in these tests (each
# test collects garbage before it ends, so the warnings cannot land on another test).
pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:Async generator 'httpx2.:ResourceWarning",
        "ignore:Async generator 'httpcore2.:ResourceWarning",
    ),
]

BACKENDS = ("trio", "asyncio")
MODES = ("auto", "legacy")
MODERN = "2026-07-28"


@dataclass
class Observed:
    tool_names: list[str] = field(default_factory=list)
    hello: str = ""
    progress: list[tuple[float, float | None, float]] = field(default_factory=list)
    counted: str = ""
    counted_at: float = 0.0
    list_changed_after: float | None = None
    tool_names_after_change: list[str] = field(default_factory=list)
    added_tool_answer: str = ""
    protocol_version: str = ""


async def _scenario(url: str, mode: str, new_tool: str) -> Observed:
    """Runs under any anyio backend: only anyio and the SDK inside."""
    seen = Observed()
    list_changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", None) == "notifications/tools/list_changed":
            list_changed.set()

    async with Client(streamable_http_client(url), mode=mode, message_handler=on_message) as client:
        seen.tool_names = [t.name for t in (await client.list_tools()).tools]
        seen.hello = (await client.call_tool("dyn_hello", {})).content[0].text  # type: ignore[union-attr]

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.progress.append((progress, total, time.monotonic()))

        counted = await client.call_tool(
            "slow_count", {"steps": 3, "delay_seconds": 0.05}, progress_callback=on_progress
        )
        seen.counted_at = time.monotonic()
        seen.counted = counted.content[0].text  # type: ignore[union-attr]

        seen.protocol_version = client.protocol_version
        if client.protocol_version == MODERN:
            # 2026-07-28 has no GET stream: a client hears changes on a listen stream it opens.
            async with client.listen(tools_list_changed=True) as subscription:
                started = time.monotonic()
                await client.call_tool("dyn_add_tool", {"name": new_tool})
                with anyio.fail_after(5):
                    assert await subscription.__anext__() == ToolsListChanged()
        else:
            started = time.monotonic()
            await client.call_tool("dyn_add_tool", {"name": new_tool})
            with anyio.fail_after(5):
                await list_changed.wait()
        seen.list_changed_after = time.monotonic() - started
        seen.tool_names_after_change = [
            t.name for t in (await client.list_tools(cache_mode="bypass")).tools
        ]
        answer = await client.call_tool(f"dyn_{new_tool}", {})
        seen.added_tool_answer = answer.content[0].text  # type: ignore[union-attr]
    return seen


async def _run_on(backend: str, scenario: Callable[[], Awaitable[Observed]]) -> Observed:
    if backend == "trio":
        return await scenario()
    return await trio.to_thread.run_sync(lambda: asyncio.run(scenario()))  # type: ignore[arg-type]


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with sample_in_process("dynamic") as dynamic, sample_in_process("slow") as slow:
        config = gateway_config([("dynamic", dynamic, "dyn_"), ("slow", slow, "slow_")])
        async with running_broker(config) as running:
            yield running


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("backend", BACKENDS)
async def test_sdk_client_sees_the_prefixed_union_calls_tools_and_hears_list_changed(
    broker: Broker, backend: str, mode: str
) -> None:
    new_tool = f"added_{backend}_{mode}"
    seen = await _run_on(backend, lambda: _scenario(broker.url, mode, new_tool))
    gc.collect()

    assert seen.tool_names == [
        "dyn_add_tool",
        "dyn_remove_tool",
        "dyn_hello",
        "slow_count",
        "slow_sleep",
    ]
    assert seen.hello == "hello"
    # Progress of the slow tool arrives, in order, before its result.
    assert [p[0] for p in seen.progress] == [1.0, 2.0, 3.0]
    assert all(p[2] <= seen.counted_at for p in seen.progress)
    assert seen.counted == "counted to 3"
    # The default mode discovers the gateway and stays on 2026-07-28; legacy takes the handshake.
    assert seen.protocol_version == (MODERN if mode == "auto" else "2025-11-25")
    # The upstream changed its tools: the client's listen or GET stream hears it within 1 s ...
    assert seen.list_changed_after is not None and seen.list_changed_after < 1.0
    # ... and the next tools/list shows the change, callable at once.
    assert f"dyn_{new_tool}" in seen.tool_names_after_change
    assert seen.added_tool_answer == new_tool
