"""Routed-call metrics through a real Envoy (docs/broker.md, "Routed calls"): a call the router
routes, calls Envoy's Lua fast path routes without any Python, and a failing call all appear on
the broker's admin `/metrics`, counted once each, with their server, method, name and status.
Envoy reports them in batches (at most a second apart): the test polls under a deadline."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.routing import (
    Stack,
    call_body,
    gateway_stack,
    initialize_raw,
    probes,
    session_headers,
)
from tests.support.servers import sample_process

pytestmark = pytest.mark.integration

# Decisions outlive the test (the renewal in a decision's last fifth would go to the router).
LONG_LIVED = {"envoy": {"fast_path": {"ttl_seconds": 30}}}
EXT_PROC_STREAMS = "http.mcp.ext_proc.streams_started"


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples named `name` in a Prometheus text page, by their sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(**values: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(values.items()))


async def metrics_until(client: httpx.AsyncClient, stack: Stack, name: str, key: tuple[tuple[str, str], ...],
                        value: float) -> dict[tuple[tuple[str, str], ...], float]:
    """Poll the admin /metrics (Envoy flushes its batch within a second) until `name{key}` is
    `value`; the samples of `name` then."""
    found: dict[tuple[tuple[str, str], ...], float] = {}
    with trio.move_on_after(5):
        while True:
            page = (await client.get(f"{stack.broker.admin}/metrics")).text
            found = samples(page, name)
            if found.get(key) == value:
                return found
            await trio.sleep(0.05)
    raise AssertionError(f"{name}{dict(key)} never reached {value}: {found}")


async def post(client: httpx.AsyncClient, stack: Stack, session: str, name: str, request_id: int) -> httpx.Response:
    return await client.post(stack.url, json=call_body(name, {}, request_id), headers=session_headers(session))


async def test_slow_and_fast_calls_are_each_counted_once_with_their_labels(tmp_path: Path) -> None:
    async with probes("alpha") as urls, gateway_stack([("alpha", urls["alpha"], "a_")], tmp_path, **LONG_LIVED) as stack, \
            httpx.AsyncClient(timeout=15) as client:
        session = await initialize_raw(client, stack.url)
        first = await post(client, stack, session, "a_observe", 1)  # the router's: the slow path
        assert first.status_code == 200
        before = await stack.envoy.stat(EXT_PROC_STREAMS)
        for request_id in range(2, 6):  # Envoy's: no ext_proc stream, no Python
            assert (await post(client, stack, session, "a_observe", request_id)).status_code == 200
        assert await stack.envoy.stat(EXT_PROC_STREAMS) == before
        # A name the upstream never listed: routed (the prefix matches), counted as "other".
        assert (await post(client, stack, session, "a_made_up_name", 6)).status_code == 200

        observe = labels(server="alpha", method="tools/call", name="observe", status="200")
        counts = await metrics_until(client, stack, "mcp_gateway_routed_calls_total", observe, 5)
        assert counts == {
            observe: 5,
            labels(server="alpha", method="tools/call", name="other", status="200"): 1,
        }
        page = (await client.get(f"{stack.broker.admin}/metrics")).text
        series = labels(server="alpha", method="tools/call", name="observe")
        assert samples(page, "mcp_gateway_routed_call_seconds_count") [series] == 5
        buckets = samples(page, "mcp_gateway_routed_call_seconds_bucket")
        assert buckets[tuple(sorted((*series, ("le", "+Inf"))))] == 5
        assert 0 < samples(page, "mcp_gateway_routed_call_seconds_sum")[series] < 5
        (build,) = samples(page, "mcp_gateway_build_info").items()
        assert build[1] == 1 and {k for k, _ in build[0]} == {"version", "python"}


async def test_a_failing_fast_call_is_counted_by_what_failed(tmp_path: Path) -> None:
    async with sample_process("echo") as echo, gateway_stack([("echo", echo.url, "e_")], tmp_path, **LONG_LIVED) as stack, \
            httpx.AsyncClient(timeout=20) as client:
        session = await initialize_raw(client, stack.url)
        for request_id in (1, 2):
            assert (await post(client, stack, session, "e_add", request_id)).status_code == 200
        await echo.kill()
        down = await post(client, stack, session, "e_add", 3)
        # The client gets the JSON-RPC error in a 200; the metric says what happened: Envoy
        # could not connect to the upstream (its response flag UF), not a success.
        assert down.status_code == 200 and down.json()["error"]["code"] == -32603
        failed = labels(server="echo", method="tools/call", name="add", status="UF")
        counts = await metrics_until(client, stack, "mcp_gateway_routed_calls_total", failed, 1)
        assert counts == {failed: 1, labels(server="echo", method="tools/call", name="add", status="200"): 2}


async def test_a_fast_call_replayed_after_an_upstream_restart_is_counted_once(tmp_path: Path) -> None:
    async with sample_process("echo") as echo:
        port = echo.port
        async with gateway_stack([("echo", echo.url, "e_")], tmp_path, **LONG_LIVED) as stack, \
                httpx.AsyncClient(timeout=20) as client:
            session = await initialize_raw(client, stack.url)
            for request_id in (1, 2):
                assert (await post(client, stack, session, "e_add", request_id)).status_code == 200
            await echo.kill()
            async with sample_process("echo", port=port):
                # The upstream answers 404 (it forgot the backend session); the Lua filter
                # replays the call through this Envoy's own chain and the router: two requests
                # in Envoy, one call for the client.
                replayed = await post(client, stack, session, "e_add", 3)
                assert replayed.status_code == 200 and "result" in replayed.text
                with trio.fail_after(5):
                    while len([e for e in stack.envoy.access_entries() if e["mcp_tool"] == "add"]) < 4:  # noqa: ASYNC110
                        await trio.sleep(0.02)
                ok = labels(server="echo", method="tools/call", name="add", status="200")
                counts = await metrics_until(client, stack, "mcp_gateway_routed_calls_total", ok, 3)
                assert counts == {ok: 3}
