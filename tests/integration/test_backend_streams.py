"""What an upstream sends on a backend session's own GET stream reaches the client that owns the
session, while it listens (broker/backend_streams.py): log messages at the client's level, and
nothing to any other client. The upstream is our Python SDK fixture, whose
`test_log_on_session_stream` logs on the session's stream, outside the call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from tests.support.listening import Listener, open_session
from tests.support.servers import Broker, gateway_config, running_broker, sample_in_process

pytestmark = pytest.mark.integration


async def call(http: httpx.AsyncClient, url: str, session: dict[str, str], name: str, **arguments: Any) -> str:
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
    answer = (await http.post(url, json=body, headers=session)).json()
    return str(answer["result"]["content"][0]["text"])


async def set_level(http: httpx.AsyncClient, url: str, session: dict[str, str], level: str) -> None:
    body = {"jsonrpc": "2.0", "id": 3, "method": "logging/setLevel", "params": {"level": level}}
    assert (await http.post(url, json=body, headers=session)).json()["result"] == {}


@asynccontextmanager
async def fixture_broker() -> AsyncIterator[Broker]:
    async with (
        sample_in_process("conformance") as fixture,
        running_broker(gateway_config([("fx", fixture, "fx_")])) as broker,
    ):
        yield broker


async def test_a_log_on_the_backend_sessions_stream_reaches_only_its_client() -> None:
    async with fixture_broker() as broker, httpx.AsyncClient(timeout=20) as http, trio.open_nursery() as nursery:
        owner, bystander = await open_session(http, broker.url), await open_session(http, broker.url)
        heard, overheard = Listener(), Listener()
        await nursery.start(heard.run, http, broker.url, owner)
        await nursery.start(overheard.run, http, broker.url, bystander)
        # The first call opens the backend session; its stream is held before the call goes out,
        # so even the message the upstream sends at once is not lost.
        assert await call(http, broker.url, owner, "fx_test_log_on_session_stream", message="first") == "sent"
        await heard.wait_for_log("first")
        assert await call(http, broker.url, bystander, "fx_test_simple_text") != ""
        assert heard.logs() == ["first"]
        assert overheard.logs() == []
        nursery.cancel_scope.cancel()


async def test_a_client_that_listens_later_gets_its_existing_backend_streams() -> None:
    async with fixture_broker() as broker, httpx.AsyncClient(timeout=20) as http, trio.open_nursery() as nursery:
        session = await open_session(http, broker.url)
        # Nobody listens yet: the upstream's message has nowhere to go.
        assert await call(http, broker.url, session, "fx_test_log_on_session_stream", message="unheard") == "sent"
        listener = Listener()
        await nursery.start(listener.run, http, broker.url, session)
        with trio.fail_after(5):
            while "later" not in listener.logs():  # attached when the GET stream opened
                await call(http, broker.url, session, "fx_test_log_on_session_stream", message="later")
                with trio.move_on_after(0.2):
                    await listener.wait_for_log("later")
        assert "unheard" not in listener.logs()
        nursery.cancel_scope.cancel()


async def test_a_level_set_before_the_backend_session_exists_applies_to_it() -> None:
    async with fixture_broker() as broker, httpx.AsyncClient(timeout=20) as http, trio.open_nursery() as nursery:
        quiet, chatty = await open_session(http, broker.url), await open_session(http, broker.url)
        listener = Listener()
        await nursery.start(listener.run, http, broker.url, quiet)
        await set_level(http, broker.url, quiet, "error")  # no backend session yet
        await set_level(http, broker.url, chatty, "debug")
        # Each call opens that client's backend session, which starts at the client's level.
        assert await call(http, broker.url, quiet, "fx_test_log_on_session_stream", message="info") == (
            "below the session's log level: not sent"
        )
        assert await call(http, broker.url, chatty, "fx_test_log_on_session_stream", message="info") == "sent"
        assert listener.logs() == []
        nursery.cancel_scope.cancel()


async def test_deleting_the_session_stops_its_backend_streams() -> None:
    async with fixture_broker() as broker, httpx.AsyncClient(timeout=20) as http, trio.open_nursery() as nursery:
        session = await open_session(http, broker.url)
        listener = Listener()
        await nursery.start(listener.run, http, broker.url, session)
        await call(http, broker.url, session, "fx_test_log_on_session_stream", message="hello")
        await listener.wait_for_log("hello")
        assert await held_streams(http, broker) == 1
        shown = (await http.get(broker.admin + "/status")).json()["backendStreams"]
        assert shown == {"listeningSessions": 1, "heldStreams": 1, "openingsBus": "off"}
        assert (await http.delete(broker.url, headers=session)).status_code in (200, 204)
        with trio.fail_after(3):
            while True:  # the gauge is polled: the relays end asynchronously
                if not await held_streams(http, broker):
                    break
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()


async def held_streams(http: httpx.AsyncClient, broker: Broker) -> float:
    """The broker's `mcp_gateway_backend_streams` gauge, from /metrics."""
    metrics = (await http.get(broker.admin + "/metrics")).text
    line = next(line for line in metrics.splitlines() if line.startswith("mcp_gateway_backend_streams "))
    return float(line.split()[1])


async def test_a_hundred_listening_clients_do_not_starve_the_upstreams_connection_pool() -> None:
    """Each held backend stream occupies an HTTP/1.1 connection for as long as its client listens;
    they have a client of their own, so the pooled one (100 connections) the supervisor and the
    broker's forwarded calls use stays free: the 111th client's call is answered, the upstream
    stays ready."""
    clients = 110
    unlimited = httpx.Limits(max_connections=None)
    async with (
        fixture_broker() as broker,
        httpx.AsyncClient(timeout=20, limits=unlimited) as http,
        trio.open_nursery() as nursery,
    ):
        for _ in range(clients):
            session = await open_session(http, broker.url)
            await nursery.start(Listener().run, http, broker.url, session)
            assert await call(http, broker.url, session, "fx_test_simple_text") != ""
        assert await held_streams(http, broker) == clients
        late = await open_session(http, broker.url)
        with trio.fail_after(5):  # the pool's own wait would be 5 s, then an error
            assert await call(http, broker.url, late, "fx_test_simple_text")  # a result, not an error
        status = (await http.get(broker.admin + "/status/fx")).json()
        assert status["state"] == "ready"
        nursery.cancel_scope.cancel()
