"""Edit the config file the gateway watches while clients call two upstreams: remove a third
upstream, add it back, and write a broken file. The unchanged upstreams' calls never fail; the
removed one's tools become unknown (-32602 with the id), the added one's callable, each measured
from the write; the broken file is refused and the running config kept."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from tests.faults.harness import (
    FaultStack,
    fault_stack,
    figure,
    load_on,
    prefix_of,
    routed_call,
    wait_for_calls,
)
from tests.support.routing import initialize_raw

pytestmark = pytest.mark.integration


async def until_answered(client: httpx.AsyncClient, stack: FaultStack, session: str, *, known: bool) -> float:
    """Seconds until a call to g_add is served (known) or refused as an unknown tool."""
    started = trio.current_time()
    request_id = 100
    while True:  # polling the gateway's answer: the change lands when its watcher reads the file
        request_id += 1
        status, answer = await routed_call(client, stack.url, session, "g_add", request_id, a=1, b=1)
        assert status == 200 and answer is not None and answer["id"] == request_id, answer
        if known and "result" in answer and answer["result"]["content"][0]["text"] == "2":
            return trio.current_time() - started
        if not known and answer.get("error", {}).get("code") == -32602:
            return trio.current_time() - started
        await trio.sleep(0.05)


async def test_config_reload_under_load_fails_no_call_to_unchanged_upstreams(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with fault_stack(["alpha", "beta", "gamma"], tmp_path) as stack, \
                httpx.AsyncClient(timeout=10) as client:
            everything = list(stack.servers)
            session = await initialize_raw(client, stack.url)
            async with load_on(stack.url, {name: prefix_of(name) for name in ("alpha", "beta")}) as load:
                for server in ("alpha", "beta"):
                    await wait_for_calls(load, server, 10)
                await stack.write_config([s for s in everything if s["name"] != "gamma"])
                removed_s = await until_answered(client, stack, session, known=False)
                await stack.write_config(everything)
                added_s = await until_answered(client, stack, session, known=True)
                stack.gateway.config_path.write_text("servers: [this is not: a valid config\n")
                with trio.fail_after(10):
                    while "config refused" not in stack.gateway.log():  # noqa: ASYNC110
                        await trio.sleep(0.05)
                since = trio.current_time()
                for server in ("alpha", "beta"):
                    await wait_for_calls(load, server, 10, since=since)
                _, answer = await routed_call(client, stack.url, session, "g_add", 999, a=1, b=1)
                assert answer is not None and answer["result"]["content"][0]["text"] == "2", answer
                load.stop.set()
            unchanged = load.of("alpha") + load.of("beta")
            assert unchanged and not load.failures("alpha", "beta"), load.failures("alpha", "beta")[:5]
            figure("config-reload", (
                f"{len(unchanged)} calls to the two unchanged upstreams across three edits of the "
                f"watched file, 0 failed; removed upstream's tools unknown {removed_s:.2f} s after "
                f"the write, added back and callable after {added_s:.2f} s (the watcher polls every "
                f"1 s); a broken file refused, the running config kept"))
