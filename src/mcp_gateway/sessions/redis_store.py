"""Sessions shared by replicas through Redis (sessions/store.py has the protocol).

One Redis hash per gateway session (`mcpgw:session:<sid>`) carrying its logical expiry, plus a
sorted set of expiries (`mcpgw:expiries`) so that an expired session's backend ids survive until
one replica reaps it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from mcp_gateway.sessions.store import LOG_LEVEL, SessionStoreUnavailable

if TYPE_CHECKING:
    import redis

T = TypeVar("T")

# Why the synchronous redis-py client in worker threads rather than `redis.asyncio`: the store is
# shared by the broker (pure Trio) and the router (whose grpclib runs on a trio-asyncio loop).
# `redis.asyncio` would tie every call to that asyncio loop's lifetime and make the broker enter
# asyncio for each lookup; the sync client with its thread-safe connection pool works from any
# Trio task. A thread hop costs tens of microseconds, small next to the ~1 ms an ext_proc stream
# costs, and a `CapacityLimiter` equal to the pool size keeps threads and connections bounded.

_SESSION_FIELD = "__session__"
_CLIENT_FIELD = "__client__"  # JSON of `client_of(initialize params)`
_LOG_LEVEL_FIELD = "__loglevel__"
# The session's logical expiry, in milliseconds of Redis' own clock (`TIME`), so that replicas
# whose clocks disagree still agree on when a session ends.
_EXPIRES_FIELD = "__expires__"
_BACKEND_PREFIX = "backend:"

# How long a session hash outlives its logical expiry: the time a reaper has to claim its backend
# ids (every read already treats it as gone). Only if no broker reaps for this long are the ids
# lost, and the backend sessions left to the upstreams' own timeouts.
REAP_GRACE_SECONDS = 600.0

# Every script below runs after these (prepended at registration). A hash without `__expires__` was written by a version before
# reaping: it lives as long as the hash does (and is never reaped), as it did then.
_LIVE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function live(key)
  local expires = redis.call('HGET', key, '__expires__')
  if not expires then return redis.call('EXISTS', key) == 1 end
  return tonumber(expires) > now_ms()
end
"""

# KEYS = session hash, expiries zset; ARGV = sid, client JSON, ttl ms, grace ms. One script
# rather than a MULTI because the expiry is computed on Redis' clock. The hash's own PEXPIRE is
# the logical expiry plus the grace: a safety net for sessions no reaper ever claims.
_CREATE = """
local expires = now_ms() + tonumber(ARGV[3])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '__session__', '1', '__client__', ARGV[2], '__expires__', expires)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) + tonumber(ARGV[4]))
redis.call('ZADD', KEYS[2], expires, ARGV[1])
return 1
"""

# KEYS[1] = session hash; ARGV = fields. Their values if the session is live, else nil.
_READ_IF_LIVE = """
if not live(KEYS[1]) then return false end
return redis.call('HMGET', KEYS[1], unpack(ARGV))
"""

# KEYS[1] = session hash. Every field of a live session (flat), else an empty list.
_READ_ALL_IF_LIVE = """
if not live(KEYS[1]) then return {} end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS[1] = session hash; ARGV = field, value. Writes only into a live session so a mapping can
# never resurrect a deleted or expired session (as a bare HSET would, without a TTL).
_SET_IF_LIVE = """
if live(KEYS[1]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] = session hash; ARGV = field, expected value ('' = any).
_DELETE_IF = """
if not live(KEYS[1]) then return 0 end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
if ARGV[2] ~= '' and current ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] = expiries zset; ARGV = session key prefix, limit. Claims up to `limit` sessions whose
# expiry has passed: each one's fields are read and its hash and zset member removed in the same
# script, so of several replicas reaping at once exactly one gets a given session. (The hash keys
# are derived here, not passed in KEYS: the store targets a single Redis, not a cluster.)
_REAP = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms(), 'LIMIT', 0, tonumber(ARGV[2]))
local reaped = {}
for _, sid in ipairs(due) do
  local key = ARGV[1] .. sid
  reaped[#reaped + 1] = sid
  reaped[#reaped + 1] = redis.call('HGETALL', key)
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], sid)
end
return reaped
"""


class RedisSessionStore:
    shared = True  # other replicas write the same sessions

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "mcpgw:session:",
        expiries_key: str = "mcpgw:expiries",
        reap_grace: float = REAP_GRACE_SECONDS,
        max_connections: int = 16,
    ) -> None:
        import redis

        # Bounded socket waits: a hung Redis must become an error, never a hung request.
        self._pool = redis.ConnectionPool.from_url(
            url,
            max_connections=max_connections,
            decode_responses=True,
            socket_timeout=2.0,
            socket_connect_timeout=2.0,
        )
        self._client: redis.Redis = redis.Redis(connection_pool=self._pool)
        self._limiter = trio.CapacityLimiter(max_connections)
        self._prefix = key_prefix
        self._expiries = expiries_key
        self._grace_ms = max(0, int(reap_grace * 1000))
        self._create = self._client.register_script(_LIVE + _CREATE)
        self._read_if_live = self._client.register_script(_LIVE + _READ_IF_LIVE)
        self._read_all_if_live = self._client.register_script(_LIVE + _READ_ALL_IF_LIVE)
        self._set_if_live = self._client.register_script(_LIVE + _SET_IF_LIVE)
        self._delete_if = self._client.register_script(_LIVE + _DELETE_IF)
        self._reap = self._client.register_script(_LIVE + _REAP)
        # Worker threads still running (a cancelled caller abandons its thread, which finishes
        # its command within the socket timeout): `aclose` waits for them before it closes the
        # pool they use. `_idle` is set whenever none runs.
        self._threads = 0
        self._threads_lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._closing = False

    def cached_client(self, sid: str) -> dict[str, Any] | None:
        return None  # other replicas write it: only Redis knows

    def cached_backend(self, sid: str, server: str) -> str | None:
        return None

    def _key(self, sid: str) -> str:
        return self._prefix + sid

    async def _run(self, fn: Callable[[], T]) -> T:
        import redis

        if self._closing:
            raise SessionStoreUnavailable("session store: closed")

        def counted() -> T:
            try:
                return fn()
            finally:
                with self._threads_lock:
                    self._threads -= 1
                    if self._threads == 0:
                        self._idle.set()

        with self._threads_lock:
            self._threads += 1
            self._idle.clear()
        # abandon_on_cancel: a cancelled caller does not wait for the socket; redis-py's pool
        # gets the connection back when the thread finishes, and `aclose` waits for that.
        try:
            return await trio.to_thread.run_sync(counted, limiter=self._limiter, abandon_on_cancel=True)
        except redis.RedisError as error:
            raise SessionStoreUnavailable(f"session store: {type(error).__name__}") from error

    async def _read(self, sid: str, *fields: str) -> list[str | None] | None:
        """The fields of a live session (None for a missing field); None if the session is gone."""
        key = self._key(sid)
        values = await self._run(lambda: self._read_if_live(keys=[key], args=list(fields)))
        return None if values is None else list(values)

    async def create(self, sid: str, ttl: float, client: Mapping[str, Any] | None = None) -> None:
        key = self._key(sid)
        millis = max(1, int(ttl * 1000))
        recorded = json.dumps(dict(client or {}), separators=(",", ":"))
        args: list[str | int] = [sid, recorded, millis, self._grace_ms]
        await self._run(lambda: self._create(keys=[key, self._expiries], args=args))

    async def client(self, sid: str) -> dict[str, Any] | None:
        values = await self._read(sid, _CLIENT_FIELD, _LOG_LEVEL_FIELD)
        if values is None:
            return None
        recorded, level = values
        try:
            value = json.loads(recorded) if recorded else {}
        except ValueError:
            value = {}  # written by no version of ours: treat as a client that said nothing
        client = value if isinstance(value, dict) else {}
        if level:
            client[LOG_LEVEL] = level
        return client

    async def set_log_level(self, sid: str, level: str) -> bool:
        key = self._key(sid)
        result = await self._run(
            lambda: self._set_if_live(keys=[key], args=[_LOG_LEVEL_FIELD, level])
        )
        return bool(result)

    async def exists(self, sid: str) -> bool:
        return await self._read(sid, _SESSION_FIELD) is not None

    async def delete(self, sid: str) -> None:
        key = self._key(sid)

        def forget() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.zrem(self._expiries, sid)
            pipe.execute()

        await self._run(forget)

    async def get_backend(self, sid: str, server: str) -> str | None:
        values = await self._read(sid, _BACKEND_PREFIX + server)
        return None if values is None or values[0] is None else str(values[0])

    async def set_backend(self, sid: str, server: str, backend_id: str) -> bool:
        key = self._key(sid)
        result = await self._run(
            lambda: self._set_if_live(keys=[key], args=[_BACKEND_PREFIX + server, backend_id])
        )
        return bool(result)

    async def delete_backend(self, sid: str, server: str, expected: str | None = None) -> bool:
        key = self._key(sid)
        result = await self._run(
            lambda: self._delete_if(keys=[key], args=[_BACKEND_PREFIX + server, expected or ""])
        )
        return bool(result)

    async def backends(self, sid: str) -> dict[str, str]:
        key = self._key(sid)
        flat: list[str] = await self._run(lambda: self._read_all_if_live(keys=[key]))
        return _backends_of(flat)

    async def reap_expired(self, limit: int = 100) -> list[tuple[str, dict[str, str]]]:
        if limit <= 0:
            return []
        args: list[str | int] = [self._prefix, limit]
        flat: list[Any] = await self._run(lambda: self._reap(keys=[self._expiries], args=args))
        return [(str(flat[i]), _backends_of(flat[i + 1])) for i in range(0, len(flat), 2)]

    async def ping(self) -> bool:
        try:
            return bool(await self._run(self._client.ping))
        except SessionStoreUnavailable:
            return False

    async def aclose(self) -> None:
        """Refuse new commands, wait for the threads still running one (each ends within the
        socket timeouts), then close the pool's connections. Cancelled while it waits, it
        leaves the pool open rather than close it under a running thread."""
        self._closing = True
        await trio.to_thread.run_sync(self._idle.wait, abandon_on_cancel=True)
        await trio.to_thread.run_sync(self._pool.disconnect)


def _backends_of(flat: Sequence[str]) -> dict[str, str]:
    """The backend mappings in a flat HGETALL reply (field, value, field, value...)."""
    return {
        str(name)[len(_BACKEND_PREFIX) :]: str(value)
        for name, value in zip(flat[::2], flat[1::2], strict=True)
        if str(name).startswith(_BACKEND_PREFIX)
    }


__all__ = ["REAP_GRACE_SECONDS", "RedisSessionStore"]
