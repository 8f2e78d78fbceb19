"""One contract, two stores: every test runs against the memory store and a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from mcp_gateway.sessions.store import (
    LOG_LEVEL,
    MemorySessionStore,
    RedisSessionStore,
    SessionStore,
    client_of,
)
from tests.support.redis import running_redis


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
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


async def test_created_session_exists_until_deleted(store: SessionStore) -> None:
    assert not await store.exists("s1")
    await store.create("s1", ttl=60)
    assert await store.exists("s1")
    await store.delete("s1")
    assert not await store.exists("s1")


async def test_backend_mapping_round_trip_per_server(store: SessionStore) -> None:
    await store.create("s1", ttl=60)
    assert await store.get_backend("s1", "weather") is None
    assert await store.set_backend("s1", "weather", "backend-w")
    assert await store.set_backend("s1", "files", "backend-f")
    assert await store.get_backend("s1", "weather") == "backend-w"
    assert await store.backends("s1") == {"weather": "backend-w", "files": "backend-f"}


async def test_sessions_do_not_share_mappings(store: SessionStore) -> None:
    await store.create("s1", ttl=60)
    await store.create("s2", ttl=60)
    await store.set_backend("s1", "weather", "one")
    assert await store.get_backend("s2", "weather") is None


async def test_set_backend_on_missing_session_is_refused_and_does_not_create_it(
    store: SessionStore,
) -> None:
    assert not await store.set_backend("ghost", "weather", "b")
    assert not await store.exists("ghost")
    assert await store.get_backend("ghost", "weather") is None


async def test_delete_session_drops_its_backends(store: SessionStore) -> None:
    await store.create("s1", ttl=60)
    await store.set_backend("s1", "weather", "b")
    await store.delete("s1")
    assert await store.backends("s1") == {}
    await store.create("s1", ttl=60)
    assert await store.get_backend("s1", "weather") is None


async def test_delete_backend_compare_and_delete(store: SessionStore) -> None:
    await store.create("s1", ttl=60)
    await store.set_backend("s1", "weather", "fresh")
    # A request that saw the old id's 404 must not delete the fresh mapping.
    assert not await store.delete_backend("s1", "weather", expected="stale")
    assert await store.get_backend("s1", "weather") == "fresh"
    assert await store.delete_backend("s1", "weather", expected="fresh")
    assert await store.get_backend("s1", "weather") is None
    assert not await store.delete_backend("s1", "weather")


async def test_delete_backend_without_expected_deletes_any(store: SessionStore) -> None:
    await store.create("s1", ttl=60)
    await store.set_backend("s1", "weather", "x")
    assert await store.delete_backend("s1", "weather")
    assert await store.backends("s1") == {}


async def test_session_expires_after_ttl_with_its_backends(store: SessionStore) -> None:
    # Real time for both stores (Redis expires on its own clock), kept short.
    await store.create("s1", ttl=0.3)
    await store.set_backend("s1", "weather", "b")
    assert await store.exists("s1")
    await trio.sleep(0.45)
    assert not await store.exists("s1")
    assert await store.get_backend("s1", "weather") is None
    assert not await store.set_backend("s1", "weather", "b2")


async def test_recreate_resets_the_session(store: SessionStore) -> None:
    await store.create("s1", ttl=60)
    await store.set_backend("s1", "weather", "b")
    await store.create("s1", ttl=60)
    assert await store.backends("s1") == {}


async def test_concurrent_writers_on_distinct_servers_all_land(store: SessionStore) -> None:
    await store.create("s1", ttl=60)
    async with trio.open_nursery() as nursery:
        for i in range(20):
            nursery.start_soon(store.set_backend, "s1", f"server{i}", f"b{i}")
    assert await store.backends("s1") == {f"server{i}": f"b{i}" for i in range(20)}


async def test_memory_store_expiry_follows_trios_clock(autojump_clock: trio.abc.Clock) -> None:
    store = MemorySessionStore()
    await store.create("s1", ttl=3600)
    await trio.sleep(3599)
    assert await store.exists("s1")
    await trio.sleep(2)
    assert not await store.exists("s1")


def test_open_store_follows_the_settings() -> None:
    from mcp_gateway.config import SessionSettings
    from mcp_gateway.sessions.store import open_store

    assert isinstance(open_store(SessionSettings()), MemorySessionStore)
    assert isinstance(open_store(SessionSettings(store="redis", redis_url="redis://127.0.0.1:1/0")), RedisSessionStore)


def test_session_keys_from_config_env_or_random(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp_gateway.config import SessionSettings
    from mcp_gateway.sessions import SessionTokens, derive_key
    from mcp_gateway.sessions.store import session_keys

    configured = session_keys(SessionSettings(keys=["n" * 20, "o" * 20]))
    assert configured == [derive_key("n" * 20), derive_key("o" * 20)]
    monkeypatch.setenv("MCPGW_TEST_KEYS", "e" * 20 + ", " + "f" * 20)
    from_env = session_keys(SessionSettings(keys_env="MCPGW_TEST_KEYS"))
    assert from_env == [derive_key("e" * 20), derive_key("f" * 20)]
    # Rotation: a token sealed with the old (second) key still verifies.
    old = SessionTokens([derive_key("f" * 20)]).issue("2025-11-25")
    assert SessionTokens(from_env).verify(old) is not None
    random_a = session_keys(SessionSettings())
    random_b = session_keys(SessionSettings())
    assert len(random_a[0]) == 32 and random_a != random_b


async def test_an_unreachable_redis_is_a_session_store_error_not_a_redis_one() -> None:
    from mcp_gateway.sessions.store import SessionStoreUnavailable
    from tests.support.redis import free_port

    store = RedisSessionStore(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        with trio.fail_after(5):
            for operation in (store.exists("s"), store.get_backend("s", "x"), store.set_backend("s", "x", "b")):
                with pytest.raises(SessionStoreUnavailable):
                    await operation
        assert not await store.ping()
    finally:
        await store.aclose()


async def test_client_capabilities_and_info_are_kept_with_the_session(store: SessionStore) -> None:
    params = {
        "protocolVersion": "2025-11-25",
        "capabilities": {"sampling": {}, "elicitation": {"form": {}}, "roots": {"listChanged": True}},
        "clientInfo": {"name": "inspector", "version": "1.2"},
    }
    await store.create("s1", ttl=60, client=client_of(params))
    await store.create("s2", ttl=60)

    assert await store.client("s1") == {
        "capabilities": params["capabilities"],
        "clientInfo": params["clientInfo"],
    }
    assert await store.client("s2") == {}
    assert await store.client("ghost") is None
    await store.delete("s1")
    assert await store.client("s1") is None


async def test_log_level_is_kept_with_the_client_and_only_in_a_live_session(store: SessionStore) -> None:
    await store.create("s1", ttl=60, client={"capabilities": {"roots": {}}})
    assert await store.set_log_level("s1", "warning")
    assert await store.client("s1") == {"capabilities": {"roots": {}}, LOG_LEVEL: "warning"}
    assert await store.set_log_level("s1", "debug")  # the last level set wins
    assert (await store.client("s1") or {})[LOG_LEVEL] == "debug"
    assert not await store.set_log_level("ghost", "debug")  # never resurrects a session
    assert not await store.exists("ghost")
    await store.create("s1", ttl=60)  # a re-created session starts without one
    assert await store.client("s1") == {}


def test_client_of_keeps_only_capabilities_and_client_info_objects() -> None:
    assert client_of(None) == {}
    assert client_of({"capabilities": "nope", "clientInfo": {"name": "c"}, "x": 1}) == {
        "clientInfo": {"name": "c"}
    }
