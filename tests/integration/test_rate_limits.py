"""Rate limits (gateway.rate_limits; router/rate_limits.py, docs/router.md "Rate limits"),
enforced by Envoy's local_ratelimit filter through a real Envoy, on both paths: calls the router
routes (the ext_proc) and calls the Lua fast path routes itself. A refused request gets HTTP 429,
`Retry-After` and a JSON-RPC error with its own id; its session id is the gateway's.

Limits refill evenly, `requests / per_seconds` tokens a second, and `Retry-After` is the wait for
one token; the tests that count use a long window (a token back every 12 s or more), so no
refill falls inside a test's few calls.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from mcp_gateway.config import GatewayConfig, RateLimitSettings
from mcp_gateway.protocol import ErrorCode
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
# Decisions kept longer than a test runs: every call after a name's first is the fast path's.
LONG_LIVED = {"fast_path": {"ttl_seconds": 30}}


async def ext_proc_streams(envoy: RunningEnvoy) -> int:
    return await envoy.stat(EXT_PROC_STREAMS)


async def call(client: httpx.AsyncClient, stack: Stack, session: str, name: str, request_id: Any) -> httpx.Response:
    body = call_body(name, {"a": 1, "b": 2} if name.endswith("add") else {}, request_id)
    return await client.post(stack.url, json=body, headers=session_headers(session))


def observed(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    message = sse_result(answer)
    return dict(json.loads(message["result"]["content"][0]["text"]))


def reloaded(stack: Stack, rate_limits: dict[str, Any]) -> GatewayConfig:
    """The stack's config with other limits, and Envoy's xDS directory and admin port, so the
    router writes the routes on reload."""
    admin_port = int(stack.envoy.admin_url.rsplit(":", 1)[1])
    gateway = stack.config.gateway
    envoy = gateway.envoy.model_copy(update={"xds_dir": str(stack.envoy.xds.xds_dir), "admin_port": admin_port})
    limits = RateLimitSettings.model_validate(rate_limits)
    return stack.config.model_copy(update={"gateway": gateway.model_copy(update={"envoy": envoy, "rate_limits": limits})})


def assert_refused(answer: httpx.Response, request_id: Any, session: str, retry_after: int) -> None:
    assert answer.status_code == 429, answer.text
    assert answer.headers["retry-after"] == str(retry_after)
    assert answer.headers["x-ratelimit-remaining"] == "0"
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {"code": ErrorCode.RATE_LIMITED, "message": "Rate limit exceeded"},
    }
    assert answer.headers["mcp-session-id"] == session
    assert not [h for h in answer.headers if h.lower().startswith("x-mcp-")]


async def test_a_session_past_its_limit_is_refused_on_the_fast_path_and_the_slow_one_and_others_are_not(
    tmp_path: Path,
) -> None:
    limits = {"per_session": {"requests": 5, "per_seconds": 60}}
    async with probes("alpha") as urls, gateway_stack(
        [("alpha", urls["alpha"], "a_")], tmp_path, envoy=LONG_LIVED, rate_limits=limits
    ) as stack, httpx.AsyncClient(timeout=15) as client:
        session = await initialize_raw(client, stack.url)  # notifications/initialized: 1
        answers = [await call(client, stack, session, "a_observe", 1)]  # the router's: 2
        before = await ext_proc_streams(stack.envoy)
        answers += [await call(client, stack, session, "a_observe", i) for i in (2, 3, 4)]  # the fast path's: 3-5
        for answer in answers:
            # What the paths tell Envoy's limiter never reaches the upstream (the probe lists any
            # x-mcp-* header but its three routing ones).
            assert observed(answer)["forged"] == [], answer.text
        refused = await call(client, stack, session, "a_observe", "sixth")
        assert await ext_proc_streams(stack.envoy) == before, "these calls did not all take the fast path"
        assert_refused(refused, "sixth", session, retry_after=12)

        # The slow path refuses it too: a name the router decides, and a request for the broker.
        first_add = await call(client, stack, session, "a_add", 7)
        assert await ext_proc_streams(stack.envoy) > before
        assert_refused(first_add, 7, session, retry_after=12)
        listing = await client.post(
            stack.url, json={"jsonrpc": "2.0", "id": 8, "method": "tools/list"}, headers=session_headers(session)
        )
        assert_refused(listing, 8, session, retry_after=12)

        # Another session has a bucket of its own.
        other = await initialize_raw(client, stack.url)
        for request_id in (1, 2, 3):
            answer = await call(client, stack, other, "a_observe", request_id)
            assert answer.status_code == 200, answer.text
        assert await stack.envoy.stat("mcp_rate_limits.http_local_rate_limit.rate_limited") == 3


async def test_a_tool_past_its_limit_is_refused_to_every_session_and_other_tools_are_not(tmp_path: Path) -> None:
    limits = {"per_tool": [{"tool": "a_ad?", "requests": 2, "per_seconds": 60}]}
    async with probes("alpha", "beta") as urls, gateway_stack(
        [("alpha", urls["alpha"], "a_"), ("beta", urls["beta"], "b_")], tmp_path, envoy=LONG_LIVED, rate_limits=limits
    ) as stack, httpx.AsyncClient(timeout=15) as client:
        session = await initialize_raw(client, stack.url)
        assert (await call(client, stack, session, "a_add", 1)).status_code == 200  # the router's
        before = await ext_proc_streams(stack.envoy)
        assert (await call(client, stack, session, "a_add", 2)).status_code == 200  # the fast path's
        refused = await call(client, stack, session, "a_add", 3)
        assert await ext_proc_streams(stack.envoy) == before, "these calls did not take the fast path"
        assert_refused(refused, 3, session, retry_after=30)

        # Only that tool: its neighbours on the same upstream and elsewhere still answer.
        for name in ("a_observe", "b_add", "a_observe", "b_add"):
            answer = await call(client, stack, session, name, 4)
            assert answer.status_code == 200, (name, answer.text)

        # Counted over every session: another one's first call (the router's) is refused too.
        other = await initialize_raw(client, stack.url)
        assert_refused(await call(client, stack, other, "a_add", 1), 1, other, retry_after=30)


async def test_calls_succeed_again_once_the_bucket_refills_and_a_reload_changes_the_limits(tmp_path: Path) -> None:
    limits = {"per_session": {"requests": 2, "per_seconds": 1}}
    async with probes("alpha") as urls, gateway_stack(
        [("alpha", urls["alpha"], "a_")], tmp_path, envoy=LONG_LIVED, rate_limits=limits
    ) as stack, httpx.AsyncClient(timeout=15) as client:
        session = await initialize_raw(client, stack.url)
        answers = [await call(client, stack, session, "a_observe", i) for i in range(1, 5)]
        refused_at = trio.current_time()
        assert 429 in [a.status_code for a in answers], [a.status_code for a in answers]
        # One token a half second: a call within a second of the refusal succeeds again.
        with trio.fail_after(3):
            request_id = 10
            while (await call(client, stack, session, "a_observe", request_id)).status_code != 200:
                request_id += 1
                await trio.sleep(0.05)
        assert trio.current_time() - refused_at < 1.5

        # A reload applies new limits without restarting Envoy (RDS; its buckets start full).
        await stack.router_reloads.send(reloaded(stack, {"per_session": {"requests": 1, "per_seconds": 120}}))
        with trio.fail_after(5):
            while True:
                request_id += 1
                answer = await call(client, stack, session, "a_observe", request_id)
                if answer.status_code == 429 and answer.headers["retry-after"] == "120":
                    break
                await trio.sleep(0.05)
        assert_refused(answer, request_id, session, retry_after=120)
