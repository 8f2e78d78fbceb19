"""One session store of either kind, for tests that run against both (Redis: a real server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

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
