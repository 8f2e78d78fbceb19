"""An upstream whose tool set changes at runtime tells only the session that changed it (an
official-SDK server, tests/support/changing.py): on that session's GET stream, or inside the
call's answer. The broker re-lists that upstream whenever any backend session it handles hears
a list_changed, the federation is current before any client hears of the change, bursts share
listings, a periodic re-list catches servers that never tell, and the router side can ask for a
re-list itself (`POST /internal/relist`, `Relists`). docs/broker.md, "Re-listing on request".
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from mcp_gateway.upstream.relist import (
    INTERNAL_HEADER,
    INTERNAL_HEADER_VALUE,
    RELIST_PATH,
    RelistOutcome,
    Relists,
)
from tests.support.changing import BURST_DONE, ChangingServer, changing_upstream
from tests.support.listening import Listener, open_session
from tests.support.routing import (
    call_body,
    gateway_stack,
    initialize_raw,
    session_headers,
    sse_result,
)
from tests.support.servers import Broker, gateway_config, running_broker

pytestmark = pytest.mark.integration

TOOLS_CHANGED = "notifications/tools/list_changed"
INTERNAL = {INTERNAL_HEADER: INTERNAL_HEADER_VALUE}


def is_method(method: str) -> Callable[[dict[str, Any]], bool]:
    return lambda message: message.get("method") == method


async def list_tools(http: httpx.AsyncClient, url: str, session: dict[str, str]) -> list[str]:
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    answer = sse_result(await http.post(url, json=body, headers=session))
    return [tool["name"] for tool in answer["result"]["tools"]]


async def call(http: httpx.AsyncClient, url: str, session: dict[str, str], tool: str, /, **arguments: Any) -> str:
    answer = sse_result(await http.post(url, json=call_body(tool, arguments, 7), headers=session))
    return str(answer["result"]["content"][0]["text"])


async def relist(http: httpx.AsyncClient, broker: Broker, server: str, **headers: str) -> httpx.Response:
    return await http.post(broker.base + RELIST_PATH, params={"server": server}, headers={**INTERNAL, **headers})


async def upstream_status(http: httpx.AsyncClient, broker: Broker) -> dict[str, Any]:
    return dict((await http.get(broker.admin + "/status/ch")).json())


@asynccontextmanager
async def changing_broker(**gateway: Any) -> AsyncIterator[tuple[ChangingServer, Broker, httpx.AsyncClient]]:
    async with (
        changing_upstream() as upstream,
        running_broker(gateway_config([("ch", upstream.url, "ch_")], **gateway)) as broker,
        httpx.AsyncClient(timeout=20) as http,
    ):
        yield upstream, broker, http


# ---------------------------------------------------------------------------------------------
# list_changed heard on a backend session


async def test_a_change_told_only_to_the_callers_session_reaches_every_listening_client() -> None:
    """The bug report: the upstream tells the caller's backend session (its GET stream, held by
    the broker while the caller listens), not the discovery session; the gateway's tools/list
    used to stay stale. Now every listening client hears list_changed, and lists the tool."""
    async with changing_broker() as (_upstream, broker, http), trio.open_nursery() as nursery:
        caller, bystander = await open_session(http, broker.url), await open_session(http, broker.url)
        heard, overheard = Listener(), Listener()
        await nursery.start(heard.run, http, broker.url, caller)
        await nursery.start(overheard.run, http, broker.url, bystander)
        assert "ch_fresh" not in await list_tools(http, broker.url, bystander)

        assert await call(http, broker.url, caller, "ch_add_tool", name="fresh") == "added fresh"
        await heard.wait_for(is_method(TOOLS_CHANGED))
        await overheard.wait_for(is_method(TOOLS_CHANGED))
        # Announced only once the federation shows it: the next list has the tool.
        assert "ch_fresh" in await list_tools(http, broker.url, bystander)
        assert "ch_fresh" in await list_tools(http, broker.url, caller)
        assert await call(http, broker.url, bystander, "ch_fresh") == "fresh"
        nursery.cancel_scope.cancel()


async def test_a_change_told_in_the_calls_answer_is_listed_before_the_client_hears_of_it() -> None:
    """The list_changed inside a forwarded call's SSE answer is relayed only after the re-list:
    a client listing the moment it reads it, while the answer is still open, sees the tool."""
    async with changing_broker() as (_upstream, broker, http):
        session = await open_session(http, broker.url)
        body = call_body("ch_add_tool_in_answer", {"name": "fresh"}, 7)
        listed_on_notice: list[str] | None = None
        answer: dict[str, Any] = {}
        sse_only = {**session, "accept": "text/event-stream"}
        async with http.stream("POST", broker.url, json=body, headers=sse_only) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("method") == TOOLS_CHANGED:
                    listed_on_notice = await list_tools(http, broker.url, session)
                elif message.get("id") == 7:
                    answer = message
        assert answer["result"]["content"][0]["text"] == "added fresh"
        assert listed_on_notice is not None, "the list_changed in the call's answer was not relayed"
        assert "ch_fresh" in listed_on_notice


async def test_a_call_whose_answer_told_a_change_returns_after_the_list_shows_it() -> None:
    """A JSON answer cannot carry the notification; the re-list still finishes before the answer,
    so a client that lists right after the call (and never listens) sees the tool."""
    async with changing_broker() as (_upstream, broker, http):
        session = await open_session(http, broker.url)
        json_only = {**session, "accept": "application/json"}
        assert await call(http, broker.url, json_only, "ch_add_tool_in_answer", name="fresh") == "added fresh"
        assert "ch_fresh" in await list_tools(http, broker.url, json_only)


async def test_through_envoy_a_change_told_to_the_routed_calls_session_reaches_the_listening_client(
    tmp_path: Path,
) -> None:
    """Envoy routes the call straight to the upstream on the backend session the router opened;
    the broker holds that session's GET stream for the listening client (announced by the
    router), hears list_changed there, re-lists, and tells the client."""
    async with (
        changing_upstream() as upstream,
        gateway_stack([("ch", upstream.url, "ch_")], tmp_path) as stack,
        httpx.AsyncClient(timeout=20) as http,
        trio.open_nursery() as nursery,
    ):
        session = session_headers(await initialize_raw(http, stack.url))
        listener = Listener()
        await nursery.start(listener.run, http, stack.url, session)
        assert "ch_fresh" not in await list_tools(http, stack.url, session)
        assert await call(http, stack.url, session, "ch_add_tool", name="fresh") == "added fresh"
        await listener.wait_for(is_method(TOOLS_CHANGED))
        assert "ch_fresh" in await list_tools(http, stack.url, session)
        assert await call(http, stack.url, session, "ch_fresh") == "fresh"
        nursery.cancel_scope.cancel()


async def test_a_burst_of_notifications_costs_one_or_two_listings() -> None:
    """Twenty list_changed in a row on one backend stream: one listing in flight, the rest share
    the one queued after it."""
    async with changing_broker() as (upstream, broker, http), trio.open_nursery() as nursery:
        session = await open_session(http, broker.url)
        listener = Listener()
        await nursery.start(listener.run, http, broker.url, session)
        before = upstream.lists
        assert (await upstream_status(http, broker))["relists"] == {"done": 0, "pending": False}

        assert await call(http, broker.url, session, "ch_burst", name="fresh", count=20) == "added fresh"
        # The marker follows the burst on the same stream: once it is relayed, the broker has
        # read all twenty, so every re-list they cause is requested by now.
        await listener.wait_for(
            lambda m: str((m.get("params") or {}).get("uri", "")).endswith(f"{BURST_DONE}/fresh")
        )
        with trio.fail_after(5):
            # /status is read over HTTP: polling is the only way to see it settle.
            while (status := await upstream_status(http, broker))["relists"]["pending"]:  # noqa: ASYNC110
                await trio.sleep(0.02)
        assert 1 <= upstream.lists - before <= 2, upstream.lists - before
        assert status["relists"]["done"] == upstream.lists - before
        assert "ch_fresh" in await list_tools(http, broker.url, session)
        assert listener.count(TOOLS_CHANGED) == 1  # the broker's own, once: the list changed once
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------
# the periodic backstop


async def test_a_server_that_never_tells_is_re_listed_periodically() -> None:
    async with changing_broker(relist_interval_seconds=0.3) as (upstream, broker, http):
        session = await open_session(http, broker.url)
        assert await call(http, broker.url, session, "ch_add_tool_quietly", name="fresh") == "added fresh"
        with trio.fail_after(5):
            while "ch_fresh" not in await list_tools(http, broker.url, session):
                await upstream.listed.wait()  # the next periodic listing, then look again
        # Never overlapping: each waits for the last listing, so they are spaced, not stacked.
        assert (await upstream_status(http, broker))["relists"]["done"] >= 1


async def test_the_periodic_re_list_can_be_turned_on_by_a_reload() -> None:
    async with changing_upstream() as upstream:
        config = gateway_config([("ch", upstream.url, "ch_")], relist_interval_seconds=0)
        async with running_broker(config) as broker, httpx.AsyncClient(timeout=20) as http:
            session = await open_session(http, broker.url)
            assert await call(http, broker.url, session, "ch_add_tool_quietly", name="fresh") == "added fresh"
            assert "ch_fresh" not in await list_tools(http, broker.url, session)
            gateway = config.gateway.model_copy(update={"relist_interval_seconds": 0.2})
            await broker.reload(config.model_copy(update={"gateway": gateway}))
            with trio.fail_after(5):
                while "ch_fresh" not in await list_tools(http, broker.url, session):
                    await upstream.listed.wait()
            # The upstream kept its session: a reload of this setting restarts nothing.
            assert (await upstream_status(http, broker))["consecutiveFailures"] == 0


# ---------------------------------------------------------------------------------------------
# the internal entry point (for the router and Envoy's Lua filter)


async def test_internal_relist_returns_once_the_list_shows_the_change() -> None:
    async with changing_broker() as (_upstream, broker, http):
        session = await open_session(http, broker.url)
        assert await call(http, broker.url, session, "ch_add_tool_quietly", name="fresh") == "added fresh"
        answer = await relist(http, broker, "ch")
        assert (answer.status_code, answer.json()) == (200, {"server": "ch", "outcome": "relisted"})
        assert "ch_fresh" in await list_tools(http, broker.url, session)


async def test_concurrent_internal_relists_share_listings() -> None:
    async with changing_broker() as (upstream, broker, http):
        before = upstream.lists
        answers: list[httpx.Response] = []

        async def ask() -> None:
            answers.append(await relist(http, broker, "ch"))

        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(ask)
        assert [a.json()["outcome"] for a in answers] == ["relisted"] * 10
        assert 1 <= upstream.lists - before <= 2, upstream.lists - before


async def test_internal_relist_refuses_what_is_not_the_gateway_asking() -> None:
    async with changing_broker() as (upstream, broker, http):
        before = upstream.lists
        url = broker.base + RELIST_PATH
        assert (await http.post(url, params={"server": "ch"})).status_code == 403  # no header
        assert (await http.post(url, params={"server": "ch"}, headers={INTERNAL_HEADER: "yes"})).status_code == 403
        assert (await relist(http, broker, "ch", origin="http://127.0.0.1:1")).status_code == 403
        assert (await http.get(url, params={"server": "ch"}, headers=INTERNAL)).status_code == 405
        assert (await http.post(url, headers=INTERNAL)).status_code == 400
        unknown = await relist(http, broker, "nope")
        assert (unknown.status_code, unknown.json()["outcome"]) == (404, "unknown")
        assert upstream.lists == before


def _outbound_address() -> str | None:
    """This machine's address on its default route, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


async def test_internal_relist_refuses_a_peer_that_is_not_loopback() -> None:
    address = _outbound_address()
    if address is None:
        pytest.skip("no non-loopback address on this machine")
    async with changing_upstream() as upstream:
        config = gateway_config([("ch", upstream.url, "ch_")], broker_listen="0.0.0.0:0")
        async with running_broker(config) as broker, httpx.AsyncClient(timeout=20) as http:
            from_outside = f"http://{address}:{broker.port}{RELIST_PATH}"
            answer = await http.post(from_outside, params={"server": "ch"}, headers=INTERNAL)
            assert answer.status_code == 403
            assert (await relist(http, broker, "ch")).status_code == 200  # loopback still may


async def test_a_client_cannot_reach_internal_relist_through_envoy(tmp_path: Path) -> None:
    """Envoy routes only the MCP paths (anything else is its own 404), and removes every client
    x-mcp-* header first: the broker's internal endpoint is out of a client's reach twice over."""
    async with (
        changing_upstream() as upstream,
        gateway_stack([("ch", upstream.url, "ch_")], tmp_path) as stack,
        httpx.AsyncClient(timeout=20) as http,
    ):
        before = upstream.lists
        through_envoy = stack.url.removesuffix("/mcp") + RELIST_PATH
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        answer = await http.post(through_envoy, params={"server": "ch"}, json=ping, headers=INTERNAL)
        assert (answer.status_code, answer.json()) == (404, {"error": "not found: MCP is served at /mcp"})
        assert upstream.lists == before
        # The same request straight to the broker, as Envoy's Lua httpCall sends it, is served.
        assert (await relist(http, stack.broker, "ch")).status_code == 200


async def test_relists_asks_in_process_while_a_broker_serves_it_and_over_http_otherwise() -> None:
    async with changing_upstream() as upstream:
        config = gateway_config([("ch", upstream.url, "ch_")])
        in_process = Relists("127.0.0.1:1")  # nothing listens there: only the broker in process can answer
        async with (
            running_broker(config, relists=in_process) as broker,
            httpx.AsyncClient(timeout=20) as http,
        ):
            session = await open_session(http, broker.url)
            await call(http, broker.url, session, "ch_add_tool_quietly", name="one")
            assert await in_process.relist("ch") is RelistOutcome.RELISTED
            assert "ch_one" in await list_tools(http, broker.url, session)

            over_http = Relists(f"0.0.0.0:{broker.port}")  # a wildcard listener, reached on loopback
            await call(http, broker.url, session, "ch_add_tool_quietly", name="two")
            assert await over_http.relist("ch") is RelistOutcome.RELISTED
            assert "ch_two" in await list_tools(http, broker.url, session)
            assert await over_http.relist("nope") is RelistOutcome.UNKNOWN
        # The broker stopped: it no longer serves the handle, which finds nobody over HTTP.
        assert await in_process.relist("ch") is RelistOutcome.UNAVAILABLE
