"""An expired gateway session's backend sessions end upstream: the broker's reaper.

Real parts: the `echo` sample (official SDK server, stateful Streamable HTTP) as the upstream,
backend sessions opened with `open_backend_session` as the router opens them, the broker's own
`BrokerCore`, the memory store or a real `redis-server`. Whether a backend session still exists
is asked of the upstream itself: a `ping` on it answers 200 while it lives and 404 once ended.
"""

from __future__ import annotations

import httpx
import pytest
import trio
from structlog.testing import capture_logs

from mcp_gateway.broker.core import BrokerCore
from mcp_gateway.broker.reaper import reap_once, run_reaper
from mcp_gateway.config import GatewayConfig, ServerConfig
from mcp_gateway.sessions import SessionTokens
from mcp_gateway.sessions.memory_store import MemorySessionStore
from mcp_gateway.sessions.redis_store import RedisSessionStore
from mcp_gateway.sessions.store import SessionStore
from mcp_gateway.upstream import Supervisor, open_backend_session
from tests.support.redis import free_port, running_redis
from tests.support.servers import (
    FAST_TIMING,
    TEST_KEY,
    gateway_config,
    open_session,
    running_broker,
    sample_in_process,
)
from tests.support.stores import outlive

pytestmark = pytest.mark.integration

VERSION = "2025-11-25"
CLIENT = {"name": "reaper-test", "version": "1"}
TTL = 1  # gateway.sessions.ttl_seconds is whole seconds


def reaping_config(servers: list[tuple[str, str, str]], interval: float = 0.1) -> GatewayConfig:
    return gateway_config(
        servers, sessions={"ttl_seconds": TTL, "reap_interval_seconds": interval}
    )


def server_of(config: GatewayConfig, name: str) -> ServerConfig:
    server = config.server(name)
    assert server is not None
    return server


async def backend_status(server: ServerConfig, backend_id: str) -> int:
    """The upstream's HTTP status for a ping on `backend_id`: 200 alive, 404 ended."""
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.post(
            server.url,
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
            headers={
                "accept": "application/json, text/event-stream",
                "mcp-session-id": backend_id,
                "mcp-protocol-version": VERSION,
            },
        )
        return response.status_code


async def wait_ended(server: ServerConfig, backend_id: str) -> None:
    # The upstream has nothing to wait on but its answer: ask until it says 404 (for up to 5 s).
    for _attempt in range(250):
        if await backend_status(server, backend_id) == 404:
            return
        await trio.sleep(0.02)
    raise AssertionError("the backend session still lives upstream")


async def session_with_backend(core: BrokerCore, server: ServerConfig) -> tuple[str, str]:
    """A gateway session (the config's TTL) and one backend session on `server`, stored as the
    router stores the ones it opens; returns (sid, backend id)."""
    session = await core.open_session(VERSION)
    backend = await open_backend_session(server, VERSION, CLIENT)
    assert await core.store.set_backend(session.sid, server.name, backend)
    return session.sid, backend


def expired(core: BrokerCore) -> float:
    return core.metrics.registry.get_sample_value("mcp_gateway_sessions_expired_total") or 0.0


def deletes(core: BrokerCore, server: str) -> float:
    name = "mcp_gateway_expired_backend_deletes_total"
    return core.metrics.registry.get_sample_value(name, {"server": server}) or 0.0


def broker_core(config: GatewayConfig, store: SessionStore, nursery: trio.Nursery) -> BrokerCore:
    """The broker's core as `serve_broker` builds it, in `nursery` (its supervisor runs only
    where started)."""
    supervisor = Supervisor(config, timing=FAST_TIMING)
    return BrokerCore(config, supervisor, SessionTokens([TEST_KEY]), store, nursery=nursery)


async def test_the_reaper_ends_an_expired_sessions_backend_session_upstream_and_its_streams() -> None:
    store = MemorySessionStore()
    async with sample_in_process("echo") as url, trio.open_nursery() as nursery:
        config = reaping_config([("echo", url, "echo_")])
        echo = server_of(config, "echo")
        core = broker_core(config, store, nursery)
        await nursery.start(core.supervisor.run)  # the pooled HTTP client the reaper uses
        expiring, expiring_backend = await session_with_backend(core, echo)
        live = "a-session-of-an-hour"
        await store.create(live, ttl=3600)
        live_backend = await open_backend_session(echo, VERSION, CLIENT)
        assert await store.set_backend(live, "echo", live_backend)
        assert await backend_status(echo, expiring_backend) == 200

        with capture_logs() as logs, core.fanout.subscribe(expiring) as client_stream:
            await nursery.start(run_reaper, core)
            # A client listening on GET sees its stream end once the session is reaped.
            with trio.fail_after(TTL + 5):
                async for _message in client_stream:
                    pass
            await wait_ended(echo, expiring_backend)

        assert await backend_status(echo, live_backend) == 200  # a live session keeps its own
        assert await store.backends(live) == {"echo": live_backend}
        assert expired(core) == 1
        assert deletes(core, "echo") == 1
        reaped = [entry for entry in logs if entry["event"] == "expired sessions reaped"]
        assert reaped and reaped[0]["sessions"] == 1 and reaped[0]["backend_sessions"] == 1
        assert expiring_backend not in repr(logs)  # backend ids are credentials
        nursery.cancel_scope.cancel()


async def test_two_brokers_sharing_redis_end_each_expired_backend_session_exactly_once() -> None:
    sessions = 6
    async with (
        running_redis() as redis_url,
        sample_in_process("echo") as url,
    ):
        config = reaping_config([("echo", url, "echo_")])
        echo = server_of(config, "echo")
        stores = [RedisSessionStore(redis_url), RedisSessionStore(redis_url)]
        try:
            async with trio.open_nursery() as background:
                first, second = (broker_core(config, store, background) for store in stores)
                backends = [(await session_with_backend(first, echo))[1] for _ in range(sessions)]
                await outlive(stores[0], TTL)  # Redis expires on its own clock: a witness is polled

                async with trio.open_nursery() as nursery:
                    for core in (first, second):
                        nursery.start_soon(reap_once, core)

            for backend in backends:
                assert await backend_status(echo, backend) == 404
            cores = (first, second)
            assert sum(expired(core) for core in cores) == sessions
            # One DELETE per backend session, not one per broker.
            assert sum(deletes(core, "echo") for core in cores) == sessions
            assert await reap_once(first) == 0 and await reap_once(second) == 0
        finally:
            for store in stores:
                await store.aclose()


async def test_an_upstream_that_never_answers_delays_only_its_own_deletes() -> None:
    async def never_answers(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    store = MemorySessionStore()
    async with sample_in_process("echo") as url, trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, never_answers, 0)
        hung_port = listeners[0].socket.getsockname()[1]
        config = reaping_config(
            [
                ("echo", url, "echo_"),
                ("hung", f"http://127.0.0.1:{hung_port}/mcp", "hung_"),
                ("down", f"http://127.0.0.1:{free_port()}/mcp", "down_"),  # nothing listens
            ]
        )
        echo = server_of(config, "echo")
        core = broker_core(config, store, nursery)
        sid, echo_backend = await session_with_backend(core, echo)
        assert await store.set_backend(sid, "hung", "hung-backend")
        assert await store.set_backend(sid, "down", "down-backend")
        # The memory store expires on Trio's clock, the real one here (real sockets): ask it.
        with trio.fail_after(TTL + 5):
            while await store.exists(sid):  # noqa: ASYNC110 - a deadline, not an event
                await trio.sleep(0.01)

        round_done = trio.Event()

        async def one_round() -> None:
            assert await reap_once(core) == 1
            round_done.set()

        started = trio.current_time()
        nursery.start_soon(one_round)
        await wait_ended(echo, echo_backend)
        assert not round_done.is_set()  # the hung upstream's DELETE is still pending...
        with trio.fail_after(5):
            await round_done.wait()
        assert trio.current_time() - started < 4  # ...and bounded (2 s per DELETE)
        for name in ("echo", "hung", "down"):
            assert deletes(core, name) == 1
        nursery.cancel_scope.cancel()


async def test_a_store_that_cannot_be_reached_skips_a_round_and_the_reaper_goes_on() -> None:
    unreachable = RedisSessionStore(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    config = reaping_config([("echo", "http://127.0.0.1:9/mcp", "echo_")], interval=0.05)
    try:
        async with trio.open_nursery() as nursery:
            core = broker_core(config, unreachable, nursery)
            with capture_logs() as logs:
                await nursery.start(run_reaper, core)
                skipped = 0
                for _attempt in range(200):  # a log line is all a skipped round leaves: look
                    skipped = sum(e["event"] == "expired sessions not reaped this round" for e in logs)
                    if skipped >= 2:
                        break
                    await trio.sleep(0.05)
                assert skipped >= 2  # the task survived its first failed round
            nursery.cancel_scope.cancel()
    finally:
        await unreachable.aclose()


async def test_through_the_broker_an_expired_sessions_listener_is_told_and_its_backend_ends() -> None:
    async with sample_in_process("echo") as url:
        config = reaping_config([("echo", url, "echo_")])
        echo = server_of(config, "echo")
        async with running_broker(config) as broker, httpx.AsyncClient(timeout=10) as http:
            headers = await open_session(http, broker.url)
            call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                    "params": {"name": "echo_echo", "arguments": {"text": "hi"}}}
            assert (await http.post(broker.url, json=call, headers=headers)).status_code == 200
            claims = broker.tokens.verify(headers["mcp-session-id"])
            assert claims is not None
            backend = (await broker.store.backends(claims.session_id))["echo"]  # the broker opened it

            listen = {"accept": "text/event-stream", "mcp-session-id": headers["mcp-session-id"]}
            with trio.fail_after(TTL + 5):
                async with http.stream("GET", broker.url, headers=listen) as stream:
                    assert stream.status_code == 200
                    async for _chunk in stream.aiter_bytes():
                        pass  # until the reaper ends the session's stream
            await wait_ended(echo, backend)
            assert (await http.post(broker.url, json=call, headers=headers)).status_code == 404
            metrics = (await http.get(f"{broker.admin}/metrics")).text
            assert "mcp_gateway_sessions_expired_total 1.0" in metrics
            assert 'mcp_gateway_expired_backend_deletes_total{server="echo"} 1.0' in metrics
