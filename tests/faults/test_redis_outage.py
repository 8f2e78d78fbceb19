"""Redis, the session store, goes away (SIGKILL) under a running gateway and comes back.

While it is away: what needs it gets a clear answer at once, HTTP 503 with JSON-RPC -32603
"Session store unavailable" and the request's id, and a warning in the gateway's log (never a
500, a traceback or a hang); what does not need it goes on: calls Envoy's fast path already
routes for a session reach their upstream. When Redis is back (the same data: an append-only
file), the same session carries on without initializing again, and new sessions open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.faults.harness import fault_stack, figure, routed_call
from tests.support.redis import redis_server
from tests.support.routing import initialize_raw, session_headers, sse_result

pytestmark = pytest.mark.integration

EXT_PROC_STREAMS = "http.mcp.ext_proc.streams_started"
INITIALIZE = {"jsonrpc": "2.0", "id": "init-1", "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}


def refused_for_the_store(response: httpx.Response, request_id: Any) -> bool:
    body = response.json()
    return response.status_code == 503 and body == {"jsonrpc": "2.0", "id": request_id, "error": {
        "code": -32603, "message": "Session store unavailable"}}


async def test_redis_outage_gives_a_clear_error_keeps_the_fast_path_and_recovers(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with redis_server(persistent=True) as redis, fault_stack(
            ["alpha"], tmp_path, redis_url=redis.url,
            # Decisions outlive the outage: the fast path is what keeps serving without Redis.
            envoy={"fast_path": {"ttl_seconds": 30}},
        ) as stack, httpx.AsyncClient(timeout=10) as client:
            session = await initialize_raw(client, stack.url)
            for request_id in (1, 2):  # the router's call, then the fast path's
                status, answer = await routed_call(client, stack.url, session, "a_add", request_id, a=1, b=1)
                assert status == 200 and answer is not None and "result" in answer, answer

            await redis.stop(kill=True)
            down_at = trio.current_time()
            # Needs the store: a new session, a list (session check), a first routed call.
            opened = await client.post(stack.url, json=INITIALIZE, headers={"accept": "application/json, text/event-stream"})
            assert refused_for_the_store(opened, "init-1"), opened.text
            listed = await client.post(stack.url, json={"jsonrpc": "2.0", "id": 3, "method": "tools/list"},
                                       headers=session_headers(session))
            assert refused_for_the_store(listed, 3), listed.text
            first = await client.post(stack.url, json={"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {
                "name": "a_echo", "arguments": {"text": "x"}}}, headers=session_headers(session))
            assert refused_for_the_store(first, 4), first.text
            refusals_ms = (trio.current_time() - down_at) * 1000 / 3
            # Needs no store: the session's fast-path calls, which never leave Envoy for Python.
            streams = await stack.envoy.stat(EXT_PROC_STREAMS)
            fast_ok = 0
            for request_id in range(10, 30):
                status, answer = await routed_call(client, stack.url, session, "a_add", request_id, a=request_id, b=1)
                assert status == 200 and answer is not None, answer
                assert answer["result"]["content"][0]["text"] == str(request_id + 1), answer
                fast_ok += 1
            assert await stack.envoy.stat(EXT_PROC_STREAMS) == streams
            log = stack.gateway.log()
            assert "session store unavailable" in log
            assert "Traceback" not in log and "request failed unexpectedly" not in log, log[-3000:]

            assert await redis.start(), "redis-server did not come back on its port"
            back_at = trio.current_time()
            # The same session, no initialize: its list, and its first call of another tool.
            while True:
                listed = await client.post(stack.url, json={"jsonrpc": "2.0", "id": 40, "method": "tools/list"},
                                           headers=session_headers(session))
                if listed.status_code != 503:
                    break
                await trio.sleep(0.05)  # polling the gateway's answer: redis-py reconnects on use
            recovered_s = trio.current_time() - back_at
            assert listed.status_code == 200 and {t["name"] for t in sse_result(listed)["result"]["tools"]} >= {"a_add", "a_echo"}
            status, answer = await routed_call(client, stack.url, session, "a_echo", 41, text="back")
            assert status == 200 and answer is not None and answer["result"]["content"][0]["text"] == "back", answer
            assert await initialize_raw(client, stack.url)
            assert stack.gateway.process is not None and stack.gateway.process.poll() is None
            figure("redis-outage", (
                f"with Redis killed: initialize, tools/list and a first routed call each answered "
                f"503/-32603 with their id (~{refusals_ms:.0f} ms each) and logged; {fast_ok} of "
                f"{fast_ok} fast-path calls still served; Redis back: the same session listed "
                f"and called again after {recovered_s * 1000:.0f} ms, no initialize"))
