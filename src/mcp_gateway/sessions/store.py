"""The session store: which gateway sessions exist, and the backend session behind each one.

A gateway session id (the `session_id` inside a sealed token) maps to one backend session id per
upstream server, created lazily by the router on the first routed call. The broker creates and
deletes gateway sessions; the router reads and writes their backend mappings.

Two implementations behind one trio-async protocol:

- `MemorySessionStore`: one process, the default.
- `RedisSessionStore`: several replicas share sessions through Redis. One Redis hash per gateway
  session (`mcpgw:session:<sid>`), the hash's own TTL expiring the session and all its backend
  ids at once, so an expired session can never leave a stale mapping behind.

TTLs are absolute from `create`: a session lives `ttl` seconds, whatever happens to its backends.
"""

from __future__ import annotations

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

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Memory


@dataclass(slots=True)
class _Session:
    expires_at: float
    backends: dict[str, str] = field(default_factory=dict)
    client: dict[str, Any] = field(default_factory=dict)


class MemorySessionStore:
    """Sessions in a dict, expiring on Trio's clock (so tests can use `autojump_clock`)."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._next_sweep = -math.inf

    def _live(self, sid: str) -> _Session | None:
        now = trio.current_time()
        self._sweep(now)
        session = self._sessions.get(sid)
        if session is None:
            return None
        if session.expires_at <= now:
            del self._sessions[sid]
            return None
        return session

    def _sweep(self, now: float) -> None:
        # Amortised cleanup of sessions nobody asks about any more; at most once a second.
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        expired = [sid for sid, s in self._sessions.items() if s.expires_at <= now]
        for sid in expired:
            del self._sessions[sid]

    async def create(self, sid: str, ttl: float, client: Mapping[str, Any] | None = None) -> None:
        self._sweep(trio.current_time())
        # A JSON round trip: the same copy (and the same refusal of non-JSON values) as Redis.
        recorded = json.loads(json.dumps(dict(client or {})))
        self._sessions[sid] = _Session(expires_at=trio.current_time() + ttl, client=recorded)

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

    async def aclose(self) -> None:
        self._sessions.clear()


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
_BACKEND_PREFIX = "backend:"

# KEYS[1] = session hash; ARGV = field, value. Writes only into a live session so a mapping can
# never resurrect a deleted or expired session (as a bare HSET would, without a TTL).
_SET_IF_LIVE = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS[1] = session hash; ARGV = field, expected value ('' = any).
_DELETE_IF = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
if ARGV[2] ~= '' and current ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""


class RedisSessionStore:
    def __init__(
        self, url: str, *, key_prefix: str = "mcpgw:session:", max_connections: int = 16
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
        self._set_if_live = self._client.register_script(_SET_IF_LIVE)
        self._delete_if = self._client.register_script(_DELETE_IF)

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

    async def create(self, sid: str, ttl: float, client: Mapping[str, Any] | None = None) -> None:
        key = self._key(sid)
        millis = max(1, int(ttl * 1000))
        recorded = json.dumps(dict(client or {}), separators=(",", ":"))

        def write() -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping={_SESSION_FIELD: "1", _CLIENT_FIELD: recorded})
            pipe.pexpire(key, millis)
            pipe.execute()

        await self._run(write)

    async def client(self, sid: str) -> dict[str, Any] | None:
        key = self._key(sid)
        alive, recorded, level = await self._run(
            lambda: self._client.hmget(key, _SESSION_FIELD, _CLIENT_FIELD, _LOG_LEVEL_FIELD)
        )
        if alive is None:
            return None
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
        key = self._key(sid)
        return bool(await self._run(lambda: self._client.exists(key)))

    async def delete(self, sid: str) -> None:
        key = self._key(sid)
        await self._run(lambda: self._client.delete(key))

    async def get_backend(self, sid: str, server: str) -> str | None:
        key = self._key(sid)
        value = await self._run(lambda: self._client.hget(key, _BACKEND_PREFIX + server))
        return None if value is None else str(value)

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
        raw: dict[str, str] = await self._run(lambda: self._client.hgetall(key))  # type: ignore[arg-type,return-value]
        return {
            name[len(_BACKEND_PREFIX) :]: value
            for name, value in raw.items()
            if name.startswith(_BACKEND_PREFIX)
        }

    async def ping(self) -> bool:
        try:
            return bool(await self._run(self._client.ping))
        except SessionStoreUnavailable:
            return False

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._pool.disconnect)


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
    "MemorySessionStore",
    "RedisSessionStore",
    "SessionStore",
    "SessionStoreUnavailable",
    "client_of",
    "open_store",
    "session_keys",
]
