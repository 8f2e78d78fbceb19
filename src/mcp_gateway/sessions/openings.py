"""Announcements of new backend sessions, inside one gateway process.

An upstream may send a client things outside any call: log messages, resource updates, and
requests such as `roots/list`. It sends them on the backend session's own GET stream, which the
broker holds for a client that listens (`broker/backend_streams.py`). But backend sessions are
opened lazily by whoever routes the first call (the router, or the broker's forwarding path),
and an upstream may ask the client something the moment that call arrives (server-everything's
`get-roots-list` does). A TypeScript SDK server drops such a message when no GET stream is open.

So the opener announces each new backend session here and waits, bounded, until every listener
of that gateway session has its GET stream on it; only then does the call go out. Nobody
listening (no open client stream in this process) costs nothing: the announcement returns at once.

Across replicas (Redis store) the same announcement goes over Redis pub/sub
(`sessions/openings_redis.py`): every other replica answers at once, after attaching if it holds
a stream of that session, so a call never waits on replicas that have nothing to do with it.
Without the bus (or when Redis does not answer) the broker holding the client's stream finds the
mapping by re-reading the store on a timer (`BackendStreams`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Protocol

import trio

# How long a first call waits for the broker to attach to its new backend session. Attaching is
# one GET to the upstream (about a millisecond); this bound only matters for a stuck upstream.
ATTACH_WAIT_SECONDS: Final = 1.0
_QUEUE: Final = 64


@dataclass(eq=False, slots=True)
class Opening:
    """A backend session just opened for `server`; `attached` is set once a listener has its
    GET stream on it (or gave up trying)."""

    server: str
    backend_id: str = field(repr=False)  # an upstream's credential for the session: never logged
    attached: trio.Event = field(default_factory=trio.Event)


class OpeningsBus(Protocol):
    """Carries announcements to the other replicas of the gateway."""

    async def announce(self, sid: str, server: str, backend_id: str) -> None:
        """Tell the other replicas; return once each has answered (attached, or not watching)."""

    def state(self) -> str:
        """For /status: "subscribed" while it carries announcements, else "unavailable"."""


class BackendOpenings:
    def __init__(self, bus: OpeningsBus | None = None) -> None:
        self._watchers: dict[str, list[trio.MemorySendChannel[Opening]]] = {}
        self.bus = bus

    @contextmanager
    def watch(self, sid: str) -> Iterator[trio.MemoryReceiveChannel[Opening]]:
        """The backend sessions opened for gateway session `sid` from now on."""
        send, receive = trio.open_memory_channel[Opening](_QUEUE)
        self._watchers.setdefault(sid, []).append(send)
        try:
            yield receive
        finally:
            watchers = self._watchers.get(sid, [])
            if send in watchers:
                watchers.remove(send)
            if not watchers:
                self._watchers.pop(sid, None)
            send.close()

    def watched(self, sid: str) -> bool:
        return bool(self._watchers.get(sid))

    async def announce(
        self, sid: str, server: str, backend_id: str, *, wait: float = ATTACH_WAIT_SECONDS
    ) -> None:
        """Tell the watchers of `sid`, here and on the other replicas; return once they
        attached, or after `wait` seconds."""
        openings = self.deliver(sid, server, backend_id)
        with trio.move_on_after(wait):
            if self.bus is not None:
                await self.bus.announce(sid, server, backend_id)
            for opening in openings:
                await opening.attached.wait()

    def deliver(self, sid: str, server: str, backend_id: str) -> list[Opening]:
        """Hand the opening to this process's watchers of `sid`; the openings to wait on."""
        openings = []
        for send in list(self._watchers.get(sid, [])):
            opening = Opening(server, backend_id)
            try:
                send.send_nowait(opening)
            except (trio.WouldBlock, trio.ClosedResourceError):
                continue  # a watcher that is not keeping up re-reads the store instead
            openings.append(opening)
        return openings


__all__ = ["ATTACH_WAIT_SECONDS", "BackendOpenings", "Opening", "OpeningsBus"]
