"""The fast path for 2026-07-28 ("modern") clients (envoy/fast_path.lua, docs/router.md "Modern
clients on the fast path"): after the router has routed a modern call once, Envoy applies that
decision to the next calls with the same inputs itself, without the ext_proc, to a modern
upstream (the official SDK 2.x server, stateless) and to a legacy one (the same SDK, stateful,
on the gateway's shared backend session). Each invariant of the router's own modern path and of
the legacy fast path is checked here on calls that took the fast path, through a real Envoy.

How a test knows a call took the fast path: Envoy's ext_proc counts the streams it opens
(`http.mcp.ext_proc.streams_started`); a fast call opens none. How it knows the broker was not
involved: Envoy's request count on the broker's cluster."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from mcp_gateway.sessions.request_state import TOKEN_PREFIX
from tests.integration.test_modern_routing import (
    CAPS,
    INFO,
    MODERN,
    TO_BROKER,
    UPSTREAM_STATE,
    VERSION,
    asking_server,
    modern_call,
    modern_headers,
)
from tests.support.envoy import RunningEnvoy
from tests.support.modern import modern_server, serve_modern
from tests.support.routing import (
    SDK_CLIENT_WARNINGS,
    Stack,
    gateway_stack,
    serve_sdk_server,
    sse_result,
)

pytestmark = [pytest.mark.integration, SDK_CLIENT_WARNINGS]

EXT_PROC_STREAMS = "http.mcp.ext_proc.streams_started"
LUA_ERRORS = "http.mcp.lua.errors"
# Decisions that outlive a test on a loaded machine: in a decision's last fifth one call goes
# through the router again (the renewal) by design, which would count as an ext_proc stream.
LONG_LIVED: dict[str, Any] = {"envoy": {"fast_path": {"ttl_seconds": 30}}}


async def streams(envoy: RunningEnvoy) -> int:
    return await envoy.stat(EXT_PROC_STREAMS)


@asynccontextmanager
async def both_upstreams(tmp_path: Path, **gateway: Any) -> AsyncIterator[tuple[Stack, Callable[[], None]]]:
    """The gateway in front of a legacy upstream (prefix old_) and a modern one (new_)."""
    async with trio.open_nursery() as nursery:
        legacy_port = await nursery.start(serve_sdk_server, modern_server("legacy"))
        modern_port = await nursery.start(serve_modern, asking_server("modern"))
        servers = [
            ("legacy", f"http://127.0.0.1:{legacy_port}/mcp", "old_"),
            ("modern", f"http://127.0.0.1:{modern_port}/mcp", "new_"),
        ]
        async with gateway_stack(servers, tmp_path, **gateway) as stack:
            yield stack, nursery.cancel_scope.cancel
        nursery.cancel_scope.cancel()


async def post(http: httpx.AsyncClient, stack: Stack, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return await http.post(stack.url, json=body, headers=headers)


async def warm(http: httpx.AsyncClient, stack: Stack, name: str, **headers: str) -> None:
    """The router's call of `name`: Envoy learns its decision from it."""
    first = await post(http, stack, modern_call(name, {"a": 1, "b": 1} if name.endswith("add") else None), modern_headers(name, **headers))
    assert first.status_code == 200, first.text


def observed(response: httpx.Response) -> dict[str, Any]:
    message = sse_result(response)
    assert message["result"]["resultType"] == "complete", message
    return dict(json.loads(message["result"]["content"][0]["text"]))


async def test_repeated_modern_calls_skip_the_ext_proc_and_reach_both_kinds_of_upstream_as_the_router_sends_them(
    tmp_path: Path,
) -> None:
    async with both_upstreams(tmp_path, **LONG_LIVED) as (stack, _), httpx.AsyncClient(timeout=15) as http:
        slow = {}
        for name in ("old_observe", "new_observe"):
            first = await post(http, stack, modern_call(name, request_id=1), modern_headers(name))
            slow[name] = observed(first)
        before, to_broker = await streams(stack.envoy), await stack.envoy.stat(TO_BROKER)
        answers = {
            (name, request_id): await post(http, stack, modern_call(name, request_id=request_id), modern_headers(name))
            for name in ("old_observe", "new_observe")
            for request_id in (2, "two", 3)
        }
        assert await streams(stack.envoy) == before, "a call went through the ext_proc"
        assert await stack.envoy.stat(TO_BROKER) == to_broker
        for (name, request_id), answer in answers.items():
            assert answer.status_code == 200, answer.text
            assert sse_result(answer)["id"] == request_id  # the client's own id, of either type
            assert "mcp-session-id" not in answer.headers  # the shared backend session never shows
            assert not [h for h in answer.headers if h.lower().startswith("x-mcp-")]
            # The upstream saw what the router's call showed it: the prefix stripped in the body
            # (the tool ran) and in Mcp-Name, the revision and the session of its kind.
            assert observed(answer) == slow[name]
        assert slow["old_observe"]["session"] and slow["old_observe"]["version"] == "2025-11-25"
        assert slow["new_observe"]["session"] is None and slow["new_observe"]["version"] == MODERN
        assert slow["new_observe"]["name"] == "observe" == slow["old_observe"]["name"]
        assert await stack.envoy.stat(LUA_ERRORS) == 0
