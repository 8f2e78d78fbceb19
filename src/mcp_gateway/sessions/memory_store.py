"""The session store of one process: a dict, expiring on Trio's clock (sessions/store.py has
the protocol and what every store promises)."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from mcp_gateway.sessions.store import LOG_LEVEL


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

    shared = False  # one process: what it holds is all there is

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
        return self.cached_client(sid)

    def cached_client(self, sid: str) -> dict[str, Any] | None:
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
        return self.cached_backend(sid, server)

    def cached_backend(self, sid: str, server: str) -> str | None:
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


__all__ = ["MAX_UNREAPED", "MemorySessionStore"]
