"""The fast path (envoy/fast_path.lua, docs/router.md): after the router's first decision for a
(session, name), Envoy routes the session's next calls itself, without the ext_proc. Each
invariant of the slow path is checked here on calls that took the fast path, through a real
Envoy, with real MCP servers (official SDK) and raw HTTP clients.

How a test knows a call took the fast path: Envoy's ext_proc counts the streams it opens
(`http.mcp.ext_proc.streams_started`); a fast call opens none, and its access-log line shows
the upstream's cluster.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support.envoy import RunningEnvoy
from tests.support.routing import (
    Stack,
    call_body,
    gateway_stack,
    initialize_raw,
    probes,
    session_headers,
    sse_result,
)

pytestmark = pytest.mark.integration

EXT_PROC_STREAMS = "http.mcp.ext_proc.streams_started"
LUA_ERRORS = "http.mcp.lua.errors"


async def ext_proc_streams(envoy: RunningEnvoy) -> int:
    return await envoy.stat(EXT_PROC_STREAMS)


async def call(client: httpx.AsyncClient, stack: Stack, session: str, name: str, request_id: int = 1,
               arguments: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    return await client.post(
        stack.url, json=call_body(name, arguments, request_id), headers=session_headers(session, **headers)
    )


def observed(response: httpx.Response) -> dict[str, Any]:
    message = sse_result(response)
    assert "result" in message, message
    return dict(json.loads(message["result"]["content"][0]["text"]))


async def test_repeated_calls_skip_the_ext_proc_and_reach_the_upstream_as_the_slow_path_does(
    tmp_path: Path,
) -> None:
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path) as stack, \
            httpx.AsyncClient(timeout=15) as client:
        session = await initialize_raw(client, stack.url)
        first = await call(client, stack, session, "a_observe", 1)
        assert first.status_code == 200
        slow = observed(first)
        before = await ext_proc_streams(stack.envoy)
        answers = [await call(client, stack, session, "a_observe", 2 + i) for i in range(5)]
        assert await ext_proc_streams(stack.envoy) == before  # not one ext_proc stream
        for answer in answers:
            assert answer.status_code == 200
            # The gateway's session id, never the backend's, and no internal header.
            assert answer.headers["mcp-session-id"] == session
            assert not [h for h in answer.headers if h.lower().startswith("x-mcp-")]
            fast = observed(answer)
            # The upstream saw what the slow path sent: prefix stripped, the routing headers,
            # the same backend session, no client x-mcp-* header.
            assert fast == slow
            assert fast["toolname"] == "observe" and fast["servername"] == "alpha"
        assert sse_result(answers[2])["id"] == 4
        assert await stack.envoy.stat(LUA_ERRORS) == 0
