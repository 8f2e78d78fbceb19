"""Bounded fire-and-forget work in a long-lived nursery.

Some work arrives one item at a time from outside the owner's control (an abandoned call to
cancel upstream, an announcement from another replica to acknowledge) and must not hold up the
code that noticed it. One task each is the natural shape, but a burst must not grow the owner's
nursery without bound: `BoundedTasks` runs at most `limit` at once and turns the rest away, so
the caller can count and log what was dropped rather than queue it forever.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio


class BoundedTasks:
    def __init__(self, nursery: trio.Nursery, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self._nursery = nursery
        self._limit = limit
        self.running = 0
        self.refused = 0  # turned away because `limit` were running (for logs and metrics)

    def start_soon(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Start `fn(*args)` in the nursery unless `limit` tasks run already; False if refused."""
        if self.running >= self._limit:
            self.refused += 1
            return False
        self.running += 1
        self._nursery.start_soon(self._run, fn, args)
        return True

    async def _run(self, fn: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            await fn(*args)
        finally:
            self.running -= 1
