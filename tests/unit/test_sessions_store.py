"""One contract, two stores: every test runs against the memory store and a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from mcp_gateway.sessions.memory_store import MemorySessionStore
from mcp_gateway.sessions.redis_store import RedisSessionStore
from mcp_gateway.sessions.store import LOG_LEVEL, SessionStore, client_of
from tests.support.redis import running_redis
from tests.support.stores import STORE_KINDS, outlive, session_store, store_clock


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(store_kind: str) -> AsyncIterator[SessionStore]:
    async with session_store(store_kind) as one:
        yield one


@pytest.fixture
def clock(store_kind: str) -> trio.testing.MockClock | None:
    """Requested by the tests that let TTLs run out: see `outlive`."""
    return store_clock(store_kind)


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


async def test_session_expires_after_ttl_with_its_backends(store: SessionStore, clock: object) -> None:
    await store.create("s1", ttl=0.3)
    await store.set_backend("s1", "weather", "b")
    assert await store.exists("s1")
    await outlive(store, 0.3)
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


async def test_redis_close_waits_for_an_abandoned_command_and_then_refuses_new_ones() -> None:
    """A caller cancelled mid-command leaves its worker thread running (abandon_on_cancel);
    `aclose` closes the pool only after that thread is done, and the store refuses new work."""
    import redis

    from mcp_gateway.sessions.store import SessionStoreUnavailable

    pause_ms = 600
    async with running_redis() as url:
        store = RedisSessionStore(url)
        admin = redis.Redis.from_url(url)
        try:
            await store.create("s", 60)
            # Redis holds every client's commands for pause_ms: the store's next one blocks.
            await trio.to_thread.run_sync(lambda: admin.execute_command("CLIENT", "PAUSE", pause_ms, "ALL"))
            paused_at = trio.current_time()
            with trio.move_on_after(0.1) as waited:
                await store.exists("s")
            assert waited.cancelled_caught  # the caller left; its thread is still in Redis
            await store.aclose()
            # Closed no earlier than the blocked command could finish (the pause's end).
            assert trio.current_time() - paused_at >= pause_ms / 1000 - 0.05
            with pytest.raises(SessionStoreUnavailable, match="closed"):
                await store.exists("s")
        finally:
            await trio.to_thread.run_sync(admin.close)


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


# -- reaping expired sessions: their backend ids handed out exactly once ---------------------


async def test_an_expired_session_is_reaped_once_with_its_backends(store: SessionStore, clock: object) -> None:
    await store.create("s1", ttl=0.3)
    assert await store.set_backend("s1", "weather", "backend-w")
    assert await store.set_backend("s1", "files", "backend-f")
    assert await store.reap_expired() == []  # still alive
    await outlive(store, 0.3)
    assert await store.reap_expired() == [("s1", {"weather": "backend-w", "files": "backend-f"})]
    assert await store.reap_expired() == []
    assert not await store.exists("s1")


async def test_live_and_deleted_sessions_are_never_reaped(store: SessionStore, clock: object) -> None:
    await store.create("live", ttl=60)
    await store.set_backend("live", "weather", "b-live")
    await store.create("deleted", ttl=0.2)
    await store.set_backend("deleted", "weather", "b-deleted")
    await store.delete("deleted")  # the broker's DELETE ended its backends itself
    await store.create("expired", ttl=0.2)
    await outlive(store, 0.2)
    assert await store.reap_expired() == [("expired", {})]
    assert await store.backends("live") == {"weather": "b-live"}


async def test_a_session_re_created_before_it_expired_is_not_reaped_early(
    store: SessionStore, clock: object
) -> None:
    await store.create("s1", ttl=0.2)
    await store.create("s1", ttl=60)
    await outlive(store, 0.2)
    assert await store.reap_expired() == []
    assert await store.exists("s1")


async def test_reaping_takes_at_most_limit_sessions_a_call(store: SessionStore, clock: object) -> None:
    for i in range(5):
        await store.create(f"s{i}", ttl=0.3)
        assert await store.set_backend(f"s{i}", "weather", f"b{i}")
    await outlive(store, 0.3)
    first = await store.reap_expired(limit=3)
    rest = await store.reap_expired(limit=3)
    assert len(first) == 3 and len(rest) == 2
    assert dict(first + rest) == {f"s{i}": {"weather": f"b{i}"} for i in range(5)}
    assert await store.reap_expired(limit=0) == []


async def test_memory_store_reaps_on_trios_clock(autojump_clock: trio.abc.Clock) -> None:
    store = MemorySessionStore()
    await store.create("s1", ttl=3600)
    await store.set_backend("s1", "weather", "b")
    await trio.sleep(3599)
    assert await store.reap_expired() == []
    await trio.sleep(2)
    # Whether a read noticed the expiry first or the reaper's sweep does, it is reaped once.
    assert await store.get_backend("s1", "weather") is None
    assert await store.reap_expired() == [("s1", {"weather": "b"})]
    assert await store.reap_expired() == []


@pytest.mark.integration
async def test_redis_past_its_ttl_a_session_is_gone_for_every_read_though_kept_for_the_reaper() -> None:
    import redis as redis_py

    async with running_redis() as url:
        store = RedisSessionStore(url)
        raw = redis_py.Redis.from_url(url, decode_responses=True)
        try:
            await store.create("s1", ttl=0.3, client={"clientInfo": {"name": "c"}})
            assert await store.set_backend("s1", "weather", "b")
            await outlive(store, 0.3)
            # The hash outlives the logical TTL (the reaper's grace), but nobody sees it.
            assert raw.hget("mcpgw:session:s1", "backend:weather") == "b"
            assert raw.pttl("mcpgw:session:s1") > 0
            assert not await store.exists("s1")
            assert await store.client("s1") is None
            assert await store.get_backend("s1", "weather") is None
            assert await store.backends("s1") == {}
            assert not await store.set_backend("s1", "files", "b2")
            assert not await store.set_log_level("s1", "debug")
            assert not await store.delete_backend("s1", "weather")
            assert raw.hget("mcpgw:session:s1", "backend:weather") == "b"  # untouched
            assert await store.reap_expired() == [("s1", {"weather": "b"})]
            assert not raw.exists("mcpgw:session:s1")
            assert raw.zcard("mcpgw:expiries") == 0
        finally:
            raw.close()
            await store.aclose()


@pytest.mark.integration
async def test_redis_delete_removes_the_expiry_entry_too() -> None:
    import redis as redis_py

    async with running_redis() as url:
        store = RedisSessionStore(url)
        raw = redis_py.Redis.from_url(url, decode_responses=True)
        try:
            await store.create("s1", ttl=60)
            assert raw.zscore("mcpgw:expiries", "s1") is not None
            await store.delete("s1")
            assert raw.zscore("mcpgw:expiries", "s1") is None
        finally:
            raw.close()
            await store.aclose()


@pytest.mark.integration
async def test_redis_a_session_whose_hash_outlived_the_grace_is_still_reaped_once() -> None:
    # No reaper ran for longer than the grace: the backend ids are gone with the hash, but the
    # session's streams still get closed, so it is reported once without backends.
    import redis as redis_py

    async with running_redis() as url:
        store = RedisSessionStore(url, reap_grace=0.05)
        raw = redis_py.Redis.from_url(url, decode_responses=True)
        try:
            await store.create("s1", ttl=0.1)
            await store.set_backend("s1", "weather", "b")
            with trio.fail_after(5):  # Redis drops the hash itself, at TTL + grace, on its clock
                while raw.exists("mcpgw:session:s1"):  # noqa: ASYNC110
                    await trio.sleep(0.01)
            assert await store.reap_expired() == [("s1", {})]
            assert await store.reap_expired() == []
        finally:
            raw.close()
            await store.aclose()


@pytest.mark.integration
async def test_redis_session_written_before_reaping_existed_still_lives_as_its_hash() -> None:
    # A replica of the previous version (rolling upgrade) writes hashes without `__expires__`.
    import redis as redis_py

    async with running_redis() as url:
        store = RedisSessionStore(url)
        raw = redis_py.Redis.from_url(url, decode_responses=True)
        try:
            raw.hset("mcpgw:session:old", mapping={"__session__": "1", "__client__": "{}"})
            raw.pexpire("mcpgw:session:old", 60_000)
            assert await store.exists("old")
            assert await store.set_backend("old", "weather", "b")
            assert await store.backends("old") == {"weather": "b"}
            assert await store.reap_expired() == []
        finally:
            raw.close()
            await store.aclose()


@pytest.mark.integration
async def test_two_redis_reapers_never_both_claim_a_session() -> None:
    sessions = 300
    async with running_redis() as url:
        writer, first, second = (RedisSessionStore(url) for _ in range(3))
        try:
            for i in range(sessions):
                await writer.create(f"s{i}", ttl=0.5)
                assert await writer.set_backend(f"s{i}", "weather", f"b{i}")
            await outlive(writer, 0.5)  # past the last one's TTL
            claims: dict[str, list[tuple[str, dict[str, str]]]] = {"first": [], "second": []}

            async def reap_all(name: str, store: RedisSessionStore) -> None:
                while batch := await store.reap_expired(limit=7):
                    claims[name].extend(batch)
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(reap_all, "first", first)
                nursery.start_soon(reap_all, "second", second)
            first_sids = {sid for sid, _ in claims["first"]}
            second_sids = {sid for sid, _ in claims["second"]}
            assert first_sids.isdisjoint(second_sids)
            assert first_sids and second_sids  # both really competed
            reaped = dict(claims["first"] + claims["second"])
            assert reaped == {f"s{i}": {"weather": f"b{i}"} for i in range(sessions)}
        finally:
            for store in (writer, first, second):
                await store.aclose()


async def test_memory_store_keeps_a_bounded_number_of_unreaped_sessions(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process whose broker never reaps must not grow: the oldest expired sessions go first.
    from mcp_gateway.sessions import memory_store

    monkeypatch.setattr(memory_store, "MAX_UNREAPED", 3)
    store = MemorySessionStore()
    for i in range(5):
        await store.create(f"s{i}", ttl=10 + i)
    await trio.sleep(60)
    assert [sid for sid, _ in await store.reap_expired()] == ["s2", "s3", "s4"]
