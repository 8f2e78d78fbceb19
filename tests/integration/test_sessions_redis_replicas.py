"""Two gateway replicas (each its own Envoy + router, own Redis client) share sessions through a
real redis-server: a session opened on one is routed by the other on the same backend session,
and a session deleted on one is gone for both."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from mcp_gateway.broker.service import BrokerPorts, serve_broker
from mcp_gateway.config import GatewayConfig
from mcp_gateway.router.service import serve_router
from mcp_gateway.sessions import SessionTokens
from mcp_gateway.sessions.openings import BackendOpenings
from mcp_gateway.sessions.openings_redis import RedisOpeningsBus
from mcp_gateway.sessions.redis_store import RedisSessionStore
from tests.support.envoy import RunningEnvoy, running_envoy
from tests.support.redis import running_redis
from tests.support.routing import (
    call_body,
    initialize_raw,
    probes,
    session_headers,
    sse_result,
)
from tests.support.servers import FAST_TIMING, TEST_KEY, gateway_config, sample_in_process

pytestmark = pytest.mark.integration


@asynccontextmanager
async def replica(
    config: GatewayConfig,
    tokens: SessionTokens,
    redis_url: str,
    broker_port: int,
    workdir: Path,
    openings: BackendOpenings | None = None,
) -> AsyncIterator[RunningEnvoy]:
    store = RedisSessionStore(redis_url)
    await trio.Path(workdir).mkdir()
    try:
        async with trio.open_nursery() as nursery:
            _, reloads = trio.open_memory_channel[GatewayConfig](1)
            router_port = await nursery.start(
                partial(serve_router, openings=openings), config, reloads, tokens, store
            )
            async with running_envoy(config, broker_port=broker_port, router_port=router_port, workdir=workdir) as envoy:
                yield envoy
            nursery.cancel_scope.cancel()
    finally:
        await store.aclose()


@asynccontextmanager
async def broker_on_redis(
    config: GatewayConfig, tokens: SessionTokens, redis_url: str, openings: BackendOpenings | None = None
) -> AsyncIterator[BrokerPorts]:
    """One broker with its own Redis client; yields its ports (MCP and admin)."""
    store = RedisSessionStore(redis_url)
    try:
        async with trio.open_nursery() as nursery:
            _, reloads = trio.open_memory_channel[GatewayConfig](1)
            ports = await nursery.start(
                lambda task_status: serve_broker(
                    config, reloads, tokens, store, timing=FAST_TIMING, openings=openings, task_status=task_status
                )
            )
            yield ports
            nursery.cancel_scope.cancel()
    finally:
        await store.aclose()


def observed(response: httpx.Response) -> dict[str, str]:
    return dict(json.loads(sse_result(response)["result"]["content"][0]["text"]))


async def test_two_replicas_share_gateway_and_backend_sessions(tmp_path: Path) -> None:
    tokens = SessionTokens([TEST_KEY])
    async with running_redis() as redis_url, probes("alpha") as urls:
        config = gateway_config([("alpha", urls["alpha"], "a_")], router_listen="127.0.0.1:0")
        async with broker_on_redis(config, tokens, redis_url) as broker, \
                replica(config, tokens, redis_url, broker.mcp, tmp_path / "a") as envoy_a, \
                    replica(config, tokens, redis_url, broker.mcp, tmp_path / "b") as envoy_b, \
                    httpx.AsyncClient(timeout=10) as client:
                session = await initialize_raw(client, envoy_a.url)

                # First call through replica A creates the backend session...
                first = await client.post(envoy_a.url, json=call_body("a_observe"), headers=session_headers(session))
                # ...and replica B, with its own router and Redis client, routes on the same one.
                second = await client.post(
                    envoy_b.url, json=call_body("a_observe", request_id=2), headers=session_headers(session)
                )
                assert first.status_code == second.status_code == 200
                assert observed(first)["session_hash"] == observed(second)["session_hash"]
                assert second.headers["mcp-session-id"] == session
                # B's Envoy now applies B's router's decision itself (the fast path): same session.
                streams = await envoy_b.stat("http.mcp.ext_proc.streams_started")
                third = await client.post(
                    envoy_b.url, json=call_body("a_observe", request_id=4), headers=session_headers(session)
                )
                assert observed(third)["session_hash"] == observed(first)["session_hash"]
                assert await envoy_b.stat("http.mcp.ext_proc.streams_started") == streams

                # Deleting the session on one replica ends it on both.
                deleted = await client.delete(envoy_a.url, headers=session_headers(session))
                assert deleted.status_code in (200, 202, 204)
                gone = await client.post(envoy_b.url, json=call_body("a_observe", request_id=3), headers=session_headers(session))
                assert gone.status_code == 404, gone.text
                assert gone.json()["id"] == 3, gone.text


async def test_a_backend_session_another_replica_opened_is_relayed_to_the_listening_client(tmp_path: Path) -> None:
    """The router of replica A opens the backend session; the broker (its own process state, no
    announcement from A) finds it in Redis on its next re-read and holds its stream, so what the
    upstream logs on that session's own stream reaches the client's GET stream."""
    tokens = SessionTokens([TEST_KEY])
    async with running_redis() as redis_url, sample_in_process("conformance") as fixture:
        config = gateway_config([("fx", fixture, "fx_")], router_listen="127.0.0.1:0")
        async with broker_on_redis(config, tokens, redis_url) as broker, \
                replica(config, tokens, redis_url, broker.mcp, tmp_path / "a") as envoy, \
                    httpx.AsyncClient(timeout=10) as client:
                session = await initialize_raw(client, envoy.url)
                logs = LogListener(client, envoy.url, session)
                async with trio.open_nursery() as listening:
                    await listening.start(logs.run)
                    log_call = call_body("fx_test_log_on_session_stream", {"message": "from A"})
                    with trio.fail_after(10):
                        while not logs.data:  # sent before the broker's re-read, it is lost: retry
                            answer = await client.post(envoy.url, json=log_call, headers=session_headers(session))
                            assert answer.status_code == 200
                            with trio.move_on_after(0.5):
                                await logs.arrived.wait()
                    listening.cancel_scope.cancel()
                assert logs.data[0] == "from A"


class LogListener:
    """A client's GET stream through Envoy, the data of its log messages collected."""

    def __init__(self, client: httpx.AsyncClient, url: str, session: str) -> None:
        self.client, self.url, self.session = client, url, session
        self.data: list[str] = []
        self.arrived = trio.Event()

    async def run(self, *, task_status: Any) -> None:
        headers = session_headers(self.session, accept="text/event-stream")
        async with self.client.stream("GET", self.url, headers=headers, timeout=None) as stream:
            task_status.started()
            async for line in stream.aiter_lines():
                if line.startswith("data:") and '"notifications/message"' in line:
                    self.data.append(json.loads(line[5:])["params"]["data"])
                    self.arrived.set()


@asynccontextmanager
async def bus_openings(nursery: trio.Nursery, redis_url: str) -> AsyncIterator[BackendOpenings]:
    """A replica's openings with its Redis bus running (as `mcp-gateway serve` sets them up)."""
    bus = RedisOpeningsBus(redis_url)
    openings = BackendOpenings(bus)
    await nursery.start(bus.run, openings)
    with trio.fail_after(5):
        await bus.subscribed.wait()
    try:
        yield openings
    finally:
        await bus.aclose()


async def test_with_the_openings_bus_even_the_first_message_outside_a_call_reaches_the_client(tmp_path: Path) -> None:
    """Replica A's router opens the backend session and announces it over Redis; the broker
    holding the client's stream (another process's state) attaches before A lets the call go
    out, so the log the upstream sends on its session stream during that very first call is
    relayed: no retry, no re-read of the store."""
    tokens = SessionTokens([TEST_KEY])
    async with running_redis() as redis_url, sample_in_process("conformance") as fixture, \
            trio.open_nursery() as buses:
        config = gateway_config([("fx", fixture, "fx_")], router_listen="127.0.0.1:0")
        async with bus_openings(buses, redis_url) as broker_openings, \
                bus_openings(buses, redis_url) as router_openings, \
                broker_on_redis(config, tokens, redis_url, broker_openings) as broker, \
                replica(config, tokens, redis_url, broker.mcp, tmp_path / "a", router_openings) as envoy, \
                httpx.AsyncClient(timeout=10) as client:
            session = await initialize_raw(client, envoy.url)
            logs = LogListener(client, envoy.url, session)
            async with trio.open_nursery() as listening:
                await listening.start(logs.run)
                log_call = call_body("fx_test_log_on_session_stream", {"message": "first"})
                answer = await client.post(envoy.url, json=log_call, headers=session_headers(session))
                assert answer.status_code == 200
                with trio.fail_after(1.5):  # well inside the 2 s re-read: the bus did it
                    await logs.arrived.wait()
                listening.cancel_scope.cancel()
            assert logs.data == ["first"]
            status = (await client.get(f"http://127.0.0.1:{broker.admin}/status")).json()
            assert status["backendStreams"]["openingsBus"] == "subscribed"
        buses.cancel_scope.cancel()
