"""The session store: which gateway sessions exist, and the backend session behind each one.

A gateway session id (the `session_id` inside a sealed token) maps to one backend session id per
upstream server, created lazily by the router on the first routed call. The broker creates and
deletes gateway sessions; the router reads and writes their backend mappings.

Two implementations behind one trio-async protocol, each in its own module:

- `MemorySessionStore` (sessions/memory_store.py): one process, the default.
- `RedisSessionStore` (sessions/redis_store.py): several replicas share sessions through Redis.

TTLs are absolute from `create`: a session lives `ttl` seconds, whatever happens to its backends.
An expired session is gone for every read at once; its backend mappings are handed out exactly
once by `reap_expired`, so the broker can end those backend sessions upstream.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from mcp_gateway.sessions.tokens import derive_key

if TYPE_CHECKING:
    from mcp_gateway.config import SessionSettings

_log = structlog.get_logger(__name__)

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
    # Whether other processes write to the same sessions (replicas sharing Redis): then a
    # process learns of their changes only by reading again (or by announcements).
    shared: bool

    def cached_client(self, sid: str) -> dict[str, Any] | None:
        """What `client` would answer, if the store knows it without I/O; None: not known here
        (ask `client`). The router's asyncio side calls it to skip a crossing into Trio (~90 µs)
        on its per-call path. Call it only inside the Trio run (trio-asyncio callbacks are)."""

    def cached_backend(self, sid: str, server: str) -> str | None:
        """The mapping, if the store knows it without I/O; None: not known here (ask
        `get_backend`). Same rules as `cached_client`."""

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
# Construction from config


def open_store(settings: SessionSettings) -> SessionStore:
    if settings.store == "redis":
        if not settings.redis_url:
            raise ValueError("sessions.store is 'redis' but sessions.redis_url is not set")
        from mcp_gateway.sessions.redis_store import RedisSessionStore

        return RedisSessionStore(settings.redis_url)
    from mcp_gateway.sessions.memory_store import MemorySessionStore

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
    "SessionStore",
    "SessionStoreUnavailable",
    "client_of",
    "open_store",
    "session_keys",
]
