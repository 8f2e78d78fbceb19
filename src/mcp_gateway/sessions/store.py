"""The session store: which gateway sessions exist, and the backend session behind each one.

A gateway session id (the `session_id` inside a sealed token) maps to one backend session id per
upstream server, created lazily by the router on the first routed call. The broker creates and
deletes gateway sessions; the router reads and writes their backend mappings.

Two implementations behind one trio-async protocol:

- `MemorySessionStore`: one process, the default.
- `RedisSessionStore`: several replicas share sessions through Redis. One Redis hash per gateway
  session (`mcpgw:session:<sid>`) carrying its logical expiry, plus a sorted set of expiries
  (`mcpgw:expiries`) so that an expired session's backend ids survive until one replica reaps it.

TTLs are absolute from `create`: a session lives `ttl` seconds, whatever happens to its backends.
An expired session is gone for every read at once; its backend mappings are handed out exactly
once by `reap_expired`, so the broker can end those backend sessions upstream.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog
import trio

from mcp_gateway.sessions.tokens import derive_key

if TYPE_CHECKING:
    import redis

    from mcp_gateway.config import SessionSettings

_log = structlog.get_logger(__name__)

T = TypeVar("T")

# What a client said about itself in `initialize` and what its backend sessions must repeat, so
# an upstream sends sampling, elicitation or roots requests only to clients that can answer them.
CLIENT_FIELDS = ("capabilities", "clientInfo")
# The client's `logging/setLevel`, kept with the session (under this key of `client(sid)`) so
# every backend session opened later, by the router or the broker, starts at that level.
LOG_LEVEL = "logLevel"


def client_of(initialize_params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The part of a client's `initialize` params the session keeps (`CLIENT_FIELDS`)."""
    params = initialize_params or {}
    return {key: params[key] for key in CLIENT_FIELDS if isinstance(params.get(key), dict)}


class SessionStoreUnavailable(Exception):
    """The store could not be reached or answered (Redis down, timed out). Every backend error
    leaves the store as this, never as a redis-py exception."""


class SessionStore(Protocol):
    async def create(self, sid: str, ttl: float, client: Mapping[str, Any] | None = None) -> None:
        """Record a new gateway session that lives `ttl` seconds (re-creating resets it).

        `client`: the client's `capabilities` and `clientInfo` from its `initialize`
        (`client_of(params)`), repeated in the initialize of every backend session.
        """

    async def exists(self, sid: str) -> bool: ...

    async def client(self, sid: str) -> dict[str, Any] | None:
        """What `create` recorded about the client ({} if nothing) and its `LOG_LEVEL` if it
        set one; None if the session is gone."""

    async def set_log_level(self, sid: str, level: str) -> bool:
        """Record the client's log level in a live session; False if the session is gone."""

    async def delete(self, sid: str) -> None:
        """Forget the session and every backend mapping under it."""

    async def get_backend(self, sid: str, server: str) -> str | None: ...

    async def set_backend(self, sid: str, server: str, backend_id: str) -> bool:
        """Map `server` to `backend_id` in a live session; False if the session is gone."""

    async def delete_backend(self, sid: str, server: str, expected: str | None = None) -> bool:
        """Drop the mapping; with `expected`, only if it still is that id (compare-and-delete).

        The compare matters when two requests see the same backend 404: the second must not
        delete the fresh mapping the first one has just created.
        """

    async def backends(self, sid: str) -> dict[str, str]: ...

    async def reap_expired(self, limit: int = 100) -> list[tuple[str, dict[str, str]]]:
        """Claim up to `limit` expired sessions with their backend mappings (server → backend
        id), each exactly once across every store object and replica sharing the data. A
        session deleted, or re-created, before it expired is never returned."""
        ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Memory


@dataclass(slots=True)
class _Session:
    expires_at: float
    backends: dict[str, str] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=dict)


# Expired sessions the memory store keeps for `reap_expired`, oldest dropped first: a process
# whose broker never reaps (nobody to end backend sessions) must not grow without bound.
MAX_UNREAPED = 100_000


class MemorySessionStore:
    """Sessions in a dict, expiring on Trio's clock (so tests can use `autojump_clock`)."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        # Expired, not yet reaped: sid → its backends, in order of discovery.
        self._unreaped: dict[str, dict[str, str]] = {}
        self._next_sweep = -math.inf

    def _live(self, sid: str) -> _Session | None:
        now = trio.current_time()
        self._sweep(now)
        session = self._sessions.get(sid)
        if session is None:
            return None
        if session.expires_at <= now:
            self._expire(sid)
            return None
        return session

    def _sweep(self, now: float, *, force: bool = False) -> None:
        # Amortised cleanup of sessions nobody asks about any more; at most once a second.
        if now < self._next_sweep and not force:
            return
        self._next_sweep = now + 1.0
        expired = [sid for sid, s in self._sessions.items() if s.expires_at <= now]
        for sid in expired:
            self._expire(sid)

    def _expire(self, sid: str) -> None:
        self._unreaped[sid] = self._sessions.pop(sid).backends
        if len(self._unreaped) > MAX_UNREAPED:
            del self._unreaped[next(iter(self._unreaped))]

    async def create(self, sid: str, ttl: float, client: Mapping[str, Any] | None = None) -> None:
        self._sweep(trio.current_time())
        # A JSON round trip: the same copy (and the same refusal of non-JSON values) as Redis.
        recorded = json.loads(json.dumps(dict(client or {})))
        self._sessions[sid] = _Session(expires_at=trio.current_time() + ttl, client=recorded)
        self._unreaped.pop(sid, None)  # as Redis: the new session replaces the old one's record

    async def exists(self, sid: str) -> bool:
        return self._live(sid) is not None

    async def client(self, sid: str) -> dict[str, Any] | None:
        return self.client_nowait(sid)

    def client_nowait(self, sid: str) -> dict[str, Any] | None:
        """`client` without an await (see `get_backend_nowait`)."""
        session = self._live(sid)
        return None if session is None else session.client

    async def set_log_level(self, sid: str, level: str) -> bool:
        session = self._live(sid)
        if session is None:
            return False
        session.client = {**session.client, LOG_LEVEL: level}  # a new dict: readers keep theirs
        return True

    async def delete(self, sid: str) -> None:
        self._sessions.pop(sid, None)
        self._unreaped.pop(sid, None)

    async def get_backend(self, sid: str, server: str) -> str | None:
        return self.get_backend_nowait(sid, server)

    def get_backend_nowait(self, sid: str, server: str) -> str | None:
        """`get_backend` without an await: the router's asyncio side reads it without crossing
        into Trio (~90 µs a crossing). Must run inside the Trio run (trio-asyncio callbacks do)."""
        session = self._live(sid)
        return None if session is None else session.backends.get(server)

    async def set_backend(self, sid: str, server: str, backend_id: str) -> bool:
        session = self._live(sid)
        if session is None:
            return False
        session.backends[server] = backend_id
        return True

    async def delete_backend(self, sid: str, server: str, expected: str | None = None) -> bool:
        session = self._live(sid)
        if session is None or server not in session.backends:
            return False
        if expected is not None and session.backends[server] != expected:
            return False
        del session.backends[server]
        return True

    async def backends(self, sid: str) -> dict[str, str]:
        session = self._live(sid)
        return {} if session is None else dict(session.backends)

    async def reap_expired(self, limit: int = 100) -> list[tuple[str, dict[str, str]]]:
        self._sweep(trio.current_time(), force=True)
        claimed = list(itertools.islice(self._unreaped.items(), max(0, limit)))
        for sid, _backends in claimed:
            del self._unreaped[sid]
        return claimed

    async def aclose(self) -> None:
        self._sessions.clear()
        self._unreaped.clear()


# ---------------------------------------------------------------------------------------------
# Redis
#
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

    def _key(self, sid: str) -> str:
        return self._prefix + sid

    async def _run(self, fn: Callable[[], T]) -> T:
        import redis

        # abandon_on_cancel: a cancelled caller does not wait for the socket; redis-py's pool
        # gets the connection back when the thread finishes.
        try:
            return await trio.to_thread.run_sync(fn, limiter=self._limiter, abandon_on_cancel=True)
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
        await trio.to_thread.run_sync(self._pool.disconnect)


def _backends_of(flat: Sequence[str]) -> dict[str, str]:
    """The backend mappings in a flat HGETALL reply (field, value, field, value...)."""
    return {
        str(name)[len(_BACKEND_PREFIX) :]: str(value)
        for name, value in zip(flat[::2], flat[1::2], strict=True)
        if str(name).startswith(_BACKEND_PREFIX)
    }


# ---------------------------------------------------------------------------------------------
# Construction from config


def open_store(settings: SessionSettings) -> SessionStore:
    if settings.store == "redis":
        if not settings.redis_url:
            raise ValueError("sessions.store is 'redis' but sessions.redis_url is not set")
        return RedisSessionStore(settings.redis_url)
    return MemorySessionStore()


def session_keys(settings: SessionSettings) -> list[bytes]:
    """The AES keys for session tokens: configured keys first, else `keys_env`, else a random one.

    `keys_env` names an environment variable holding comma-separated secrets (first one seals).
    A random per-process key works for one process only: tokens do not survive a restart and
    replicas cannot verify each other's tokens, hence the warning.
    """
    secrets: Sequence[str] = list(getattr(settings, "keys", None) or [])
    env_name = getattr(settings, "keys_env", None)
    if not secrets and env_name:
        secrets = [s.strip() for s in os.environ.get(env_name, "").split(",") if s.strip()]
    if secrets:
        return [derive_key(secret) for secret in secrets]
    _log.warning(
        "no session keys configured; using a random per-process key",
        hint="set gateway.sessions.keys or keys_env so tokens survive restarts and replicas agree",
    )
    return [os.urandom(32)]


__all__ = [
    "CLIENT_FIELDS",
    "LOG_LEVEL",
    "MAX_UNREAPED",
    "REAP_GRACE_SECONDS",
    "MemorySessionStore",
    "RedisSessionStore",
    "SessionStore",
    "SessionStoreUnavailable",
    "client_of",
    "open_store",
    "session_keys",
]
