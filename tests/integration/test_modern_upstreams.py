"""A mixed fleet through real Envoy: a modern upstream (the official SDK 2.x server in stateless
mode, MCP 2026-07-28) and a legacy one (the same SDK, stateful) behind one gateway, used by a
legacy SDK client (the initialize handshake, 2025-11-25)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.modern import modern_server, serve_modern
from tests.support.routing import SDK_CLIENT_WARNINGS, gateway_stack, serve_sdk_server

pytestmark = SDK_CLIENT_WARNINGS


async def test_a_legacy_client_lists_calls_and_hears_list_changed_of_a_modern_upstream(
    tmp_path: Path,
) -> None:
    async with trio.open_nursery() as nursery:
        legacy_port = await nursery.start(serve_sdk_server, modern_server("legacy"))
        modern_port = await nursery.start(serve_modern, modern_server("modern"))
        servers = [
            ("legacy", f"http://127.0.0.1:{legacy_port}/mcp", "old_"),
            ("modern", f"http://127.0.0.1:{modern_port}/mcp", "new_"),
        ]
        async with gateway_stack(servers, tmp_path) as stack:
            async with httpx.AsyncClient(timeout=10) as http:
                status = (await http.get(f"{stack.broker.admin}/status")).json()
            upstreams = {u["name"]: u for u in status["upstreams"]}
            assert upstreams["modern"]["state"] == "ready", upstreams["modern"]
            assert upstreams["modern"]["protocolVersion"] == "2026-07-28"
            assert upstreams["modern"]["stateless"] is True
            assert upstreams["legacy"]["protocolVersion"] == "2025-11-25"
            assert upstreams["legacy"]["stateless"] is False

            list_changed = anyio.Event()

            async def on_message(message: Any) -> None:
                if getattr(message, "method", None) == "notifications/tools/list_changed":
                    list_changed.set()

            async with Client(
                streamable_http_client(stack.url), mode="legacy", message_handler=on_message
            ) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert {"old_add", "old_count", "new_add", "new_count", "new_grow"} <= names

                progress: dict[str, list[float]] = {"old_": [], "new_": []}
                for prefix, seen_progress in progress.items():

                    async def on_progress(
                        value: float, total: float | None, note: str | None, into: list[float] = seen_progress
                    ) -> None:
                        into.append(value)

                    counted = await client.call_tool(
                        f"{prefix}count", {"steps": 3}, progress_callback=on_progress
                    )
                    assert counted.content[0].text.endswith("counted to 3")  # type: ignore[union-attr]
                    assert seen_progress == [1, 2, 3]
                    added = await client.call_tool(f"{prefix}add", {"a": 2, "b": 3})
                    assert added.content[0].text == "5"  # type: ignore[union-attr]

                # The modern upstream got no session, the revision's headers, prefix stripped.
                seen = json.loads((await client.call_tool("new_observe", {})).content[0].text)  # type: ignore[union-attr]
                assert seen["server"] == "modern" and seen["session"] is None
                assert seen["method"] == "tools/call" and seen["name"] == "observe"
                assert seen["version"] == "2026-07-28"
                # The legacy one a backend session of this client's own.
                seen = json.loads((await client.call_tool("old_observe", {})).content[0].text)  # type: ignore[union-attr]
                assert seen["server"] == "legacy" and seen["session"]
                assert seen["version"] == "2025-11-25" and seen["method"] is None

                # The modern upstream tells its change on subscriptions/listen only.
                await client.call_tool("new_grow", {"tool": "fresh"})
                with anyio.fail_after(10):
                    await list_changed.wait()
                names = {t.name for t in (await client.list_tools(cache_mode="bypass")).tools}
                assert "new_fresh" in names
                fresh = await client.call_tool("new_fresh", {})
                assert fresh.content[0].text == "fresh was added"  # type: ignore[union-attr]
        nursery.cancel_scope.cancel()
