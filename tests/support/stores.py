"""One session store of either kind, for tests that run against both (Redis: a real server)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from mcp_gateway.sessions.memory_store import MemorySessionStore
from mcp_gateway.sessions.redis_store import RedisSessionStore
from mcp_gateway.sessions.store import SessionStore
from tests.support.redis import running_redis

# `@pytest.fixture(params=STORE_KINDS)`: the Redis case is an integration test.
STORE_KINDS = ["memory", pytest.param("redis", marks=pytest.mark.integration)]


@asynccontextmanager
async def session_store(kind: str) -> AsyncIterator[SessionStore]:
    if kind == "memory":
        memory = MemorySessionStore()
        yield memory
        await memory.aclose()
        return
    async with running_redis() as url:
        redis_store = RedisSessionStore(url)
        try:
            yield redis_store
        finally:
            await redis_store.aclose()


def store_clock(kind: str) -> trio.testing.MockClock | None:
    """The clock a test of the `kind` store runs on, as a fixture's value (pytest-trio runs the
    test on a Clock it is given). The memory store keeps its TTLs on Trio's clock: autojump,
    virtual and instant. Redis keeps them on its own clock: the real one (None)."""
    return trio.testing.MockClock(autojump_threshold=0) if kind == "memory" else None


async def outlive(store: SessionStore, ttl: float) -> None:
    """Return once every session created before this call with `ttl` (or less) has expired.

    The memory store on the autojump clock: Trio's clock jumps past the TTL at once. Redis
    expires on its own clock, which no test can move: a witness session created now with the
    same TTL is polled until Redis says it is gone (then deleted, so nothing reaps it)."""
    if isinstance(store, MemorySessionStore):
        assert isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock), "use store_clock"
        await trio.sleep(ttl * 1.01)  # virtual time
        return
    witness = f"witness-{uuid.uuid4().hex}"
    await store.create(witness, ttl=ttl)
    with trio.fail_after(ttl + 5):
        while await store.exists(witness):  # noqa: ASYNC110 - Redis' clock: nothing to wait on
            await trio.sleep(0.01)
    await store.delete(witness)
