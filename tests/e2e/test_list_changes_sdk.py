"""The user's report, end to end: the official SDK client through Envoy and the gateway, an official
SDK server whose tools change during a routed call. Whether the server tells the change on the
calling session's GET stream or inside the call's own answer, the client gets `list_changed`
and its next `tools/list` shows the new tool; the first call of a tool is the router's, the
second round repeats them within the fast path's lifetime, so Envoy applies its decisions.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
from mcp.client.client import Client

from tests.support.changing import changing_upstream
from tests.support.routing import SDK_CLIENT_WARNINGS, gateway_stack

pytestmark = pytest.mark.integration

TOOLS_CHANGED = "notifications/tools/list_changed"


async def _told_and_listed(url: str) -> list[tuple[str, bool]]:
    """(tool added, listed after list_changed) for each way of telling, twice each. Runs under
    any anyio backend: only anyio and the SDK inside."""
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        nonlocal changed
        if getattr(message, "method", None) == TOOLS_CHANGED:
            changed.set()

    seen: list[tuple[str, bool]] = []
    # A session's GET stream and routed answers carry the change (a 2026-07-28 client listens).
    async with Client(url, mode="legacy", message_handler=on_message) as client:
        for round_ in (1, 2):  # round 2: the same tools again, now on Envoy's fast path
            for tool in ("ch_add_tool", "ch_add_tool_in_answer"):
                name = f"{tool.removeprefix('ch_')}_{round_}"
                changed = anyio.Event()
                answer = await client.call_tool(tool, {"name": name})
                assert not answer.is_error, answer
                with anyio.fail_after(10):
                    await changed.wait()
                listed = [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]
                seen.append((name, f"ch_{name}" in listed))
    return seen


@SDK_CLIENT_WARNINGS
@pytest.mark.parametrize("backend", ["trio", "asyncio"])
async def test_the_sdk_client_hears_a_change_an_sdk_server_told_its_session_and_lists_it(
    tmp_path: Path, backend: str
) -> None:
    async with changing_upstream() as upstream, gateway_stack([("ch", upstream.url, "ch_")], tmp_path) as stack:
        if backend == "trio":
            seen = await _told_and_listed(stack.url)
        else:
            seen = await trio.to_thread.run_sync(lambda: asyncio.run(_told_and_listed(stack.url)))
        assert seen == [
            ("add_tool_1", True), ("add_tool_in_answer_1", True), ("add_tool_2", True), ("add_tool_in_answer_2", True)
        ]
        # Every call went from Envoy straight to the upstream's cluster, never through the broker.
        calls = await stack.envoy.wait_for_access(lambda e: e["mcp_method"] == "tools/call")
        assert calls and all(e["upstream_cluster"] == "mcp_upstream_ch" for e in calls)
