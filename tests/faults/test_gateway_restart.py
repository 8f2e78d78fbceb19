"""Restart the gateway process (SIGTERM, start again on the same ports) with the Redis session
store: clients carry on with the session id they hold, without initializing again, and nothing
the session held is lost (its client capabilities, its log level, its backend sessions, which the
upstreams still know: no new backend initialize after the restart)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis
import trio

from tests.faults.harness import claims_of, fault_stack, figure, routed_call
from tests.support.redis import redis_server
from tests.support.routing import initialize_raw, session_headers, sse_result

pytestmark = pytest.mark.integration


def session_hash(redis_url: str, sid: str) -> dict[str, str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        fields: dict[str, str] = client.hgetall(f"mcpgw:session:{sid}")  # type: ignore[assignment]
        return fields
    finally:
        client.close()


async def test_a_gateway_restart_with_redis_sessions_loses_nothing(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with redis_server() as store, fault_stack(
            ["alpha", "beta"], tmp_path, redis_url=store.url
        ) as stack, httpx.AsyncClient(timeout=10) as client:
            session = await initialize_raw(client, stack.url, capabilities={"roots": {"listChanged": True}})
            level = await client.post(stack.url, headers=session_headers(session), json={
                "jsonrpc": "2.0", "id": 1, "method": "logging/setLevel", "params": {"level": "debug"}})
            assert level.status_code == 200, level.text
            for request_id, tool in ((2, "a_add"), (3, "b_add")):
                status, answer = await routed_call(client, stack.url, session, tool, request_id, a=1, b=2)
                assert status == 200 and answer is not None and "result" in answer, answer
            sid = claims_of(session).session_id
            before = await trio.to_thread.run_sync(session_hash, store.url, sid)
            assert {"backend:alpha", "backend:beta", "__client__", "__loglevel__"} <= set(before), before

            downtime = await stack.restart_gateway()

            # The same session id, no initialize: lists, ping, routed calls on both upstreams.
            listed = await client.post(stack.url, json={"jsonrpc": "2.0", "id": 10, "method": "tools/list"},
                                       headers=session_headers(session))
            assert listed.status_code == 200, listed.text
            assert {"a_add", "b_add"} <= {t["name"] for t in sse_result(listed)["result"]["tools"]}
            ping = await client.post(stack.url, json={"jsonrpc": "2.0", "id": 11, "method": "ping"},
                                     headers=session_headers(session))
            assert ping.json() == {"jsonrpc": "2.0", "id": 11, "result": {}}
            calls = 0
            for request_id, tool in enumerate(["a_add", "b_add"] * 5, start=12):
                status, answer = await routed_call(client, stack.url, session, tool, request_id, a=request_id, b=1)
                assert status == 200 and answer is not None, answer
                assert answer["result"]["content"][0]["text"] == str(request_id + 1), answer
                assert answer["id"] == request_id
                calls += 1
            after = await trio.to_thread.run_sync(session_hash, store.url, sid)
            # Nothing lost or redone: the same fields, the same backend sessions (a backend the
            # upstream no longer knew would have been replaced by the 404 replay).
            assert after == before
            replays = [r for r in stack.gateway.log_records() if r.get("event") == "call replayed on a new backend session"]
            assert not replays, replays
            assert stack.gateway.starts == 2
            figure("gateway-restart", (
                f"gateway process stopped (SIGTERM) and serving again in {downtime:.2f} s; the "
                f"session went on without initialize: tools/list, ping and {calls} routed calls "
                f"answered; its {len(before)} Redis fields (client, log level, 2 backend sessions, "
                f"expiry) identical before and after; 0 backend sessions re-opened"))
