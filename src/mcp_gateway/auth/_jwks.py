"""The issuer's signing keys: fetched over HTTP (httpx on Trio), cached, fetched again when
stale or when a token names a key id we do not hold, never more often than the rate limit."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt
import trio

from mcp_gateway.logs import get_logger

log = get_logger("mcp_gateway.auth")

FETCH_TIMEOUT_SECONDS = 5.0
MAX_JWKS_BYTES = 1_048_576


class JwksCache:
    """One issuer's key set. `key_for(kid)` is synchronous (no I/O: the router calls it from
    asyncio without crossing into Trio); `needs_fetch(kid)` says when `refresh()` is worth it."""

    def __init__(
        self,
        url: str,
        *,
        max_age: float,
        min_interval: float,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.url = url
        self._max_age = max_age
        self._min_interval = min_interval
        self._clock = clock
        self._keys: Mapping[str | None, Any] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._tried_at: float | None = None  # last attempt, successful or not
        self._lock = trio.Lock()

    def key_for(self, kid: str | None) -> Any:
        """The verification key for `kid` (None: a token without `kid`, which only a key set
        of one key can verify), or None."""
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            return None
        return self._keys.get(kid)

    def needs_fetch(self, kid: str | None) -> bool:
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self._max_age:
            return self._may_try(now)
        return self.key_for(kid) is None and self._may_try(now)

    def _may_try(self, now: float) -> bool:
        return self._tried_at is None or now - self._tried_at >= self._min_interval

    async def refresh(self) -> None:
        """Fetch the key set once (concurrent callers share it; rate-limited). A failure keeps
        the keys held, and is logged, not raised: the token in hand is then simply not verified."""
        async with self._lock:
            now = self._clock()
            if not self._may_try(now):
                return  # fetched (or tried) while we waited for the lock
            self._tried_at = now
            try:
                keys = await self._fetch()
            except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as error:
                log.warning("jwks fetch failed", url=self.url, error=type(error).__name__)
                return
            self._keys = keys
            self._fetched_at = self._clock()

    async def _fetch(self) -> dict[str | None, Any]:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT_SECONDS) as client:
            response = await client.get(self.url, headers={"accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > MAX_JWKS_BYTES:
            raise ValueError("key set too large")
        document = response.json()
        if not isinstance(document, dict):
            raise ValueError("key set is not a JSON object")
        keys: dict[str | None, Any] = {}
        for jwk in jwt.PyJWKSet.from_dict(document).keys:
            if jwk.public_key_use not in (None, "sig"):
                continue  # an encryption key signs nothing of ours
            keys[jwk.key_id] = jwk
        return keys
