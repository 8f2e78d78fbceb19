"""Backend-session announcements across replicas over a real redis-server
(sessions/openings_redis.py): the replica holding a session's stream hears of a backend session
another replica opened and the opener waits for it to attach; replicas with nothing to do answer
at once; a bus whose Redis is gone costs the opener nothing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from mcp_gateway.sessions.openings import BackendOpenings
from mcp_gateway.sessions.openings_redis import RedisOpeningsBus
from tests.support.redis import free_port, running_redis

pytestmark = pytest.mark.integration


@asynccontextmanager
async def replicas(url: str, count: int) -> AsyncIterator[list[BackendOpenings]]:
    """`count` processes' worth of openings, each with its own bus on one Redis."""
    async with AsyncExitStack() as stack, trio.open_nursery() as nursery:
        replicas = []
        for _ in range(count):
            bus = RedisOpeningsBus(url)
            stack.push_async_callback(bus.aclose)
            openings = BackendOpenings(bus)
            await nursery.start(bus.run, openings)
            with trio.fail_after(5):
                await bus.subscribed.wait()
            replicas.append(openings)
        yield replicas
        nursery.cancel_scope.cancel()


def first_message(pubsub: Any, within: float = 5.0) -> None:
    """Block (in a thread) until `pubsub` receives a message."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None and message["type"] == "message":
            return
    raise AssertionError(f"no message within {within} s")


async def test_the_replica_holding_the_stream_attaches_before_the_opener_goes_on() -> None:
    import redis as redis_py

    async with running_redis() as url, replicas(url, 3) as (opener, holder, bystander):
        returned = trio.Event()
        # Hears every answer on the bus, as the opener does.
        answers = redis_py.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
        answers.subscribe("mcpgw:openings:ack")
        with holder.watch("sid-1") as announced:
            async with trio.open_nursery() as nursery:

                async def announce() -> None:
                    await opener.announce("sid-1", "weather", "backend-7", wait=30)
                    returned.set()

                nursery.start_soon(announce)
                with trio.fail_after(5):
                    opening = await announced.receive()
                assert (opening.server, opening.backend_id) == ("weather", "backend-7")
                # The bystander answers at once: once its answer is out, the opener has every
                # answer but the holder's.
                await trio.to_thread.run_sync(first_message, answers)
                assert not returned.is_set()  # still waiting for the holder to attach
                opening.attached.set()
                with trio.fail_after(5):
                    await returned.wait()
        assert not bystander.watched("sid-1")
        answers.close()


async def test_replicas_without_a_stream_of_the_session_answer_at_once() -> None:
    async with running_redis() as url, replicas(url, 3) as (opener, _, _):
        with trio.fail_after(5):  # far below the 30 s bound: everybody answered
            await opener.announce("sid-2", "weather", "backend-8", wait=30)


async def test_an_unreachable_redis_costs_the_opener_nothing_and_the_bus_keeps_trying() -> None:
    bus = RedisOpeningsBus(f"redis://127.0.0.1:{free_port()}/0")
    openings = BackendOpenings(bus)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.run, openings)  # starts although Redis is not there
            with trio.fail_after(5):  # the reader thread tried to subscribe and failed
                while not any(e["event"] == "openings bus: Redis unavailable" for e in logs):  # noqa: ASYNC110
                    await trio.sleep(0.02)
            assert not bus.subscribed.is_set()
            with trio.fail_after(5):  # not subscribed: nothing is published, nothing awaited
                await openings.announce("sid-3", "weather", "backend-9", wait=30)
            nursery.cancel_scope.cancel()
    await bus.aclose()
