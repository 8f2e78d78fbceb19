"""Server→client notifications to every open GET stream, without letting one slow client block.

Each stream gets its own bounded queue. Publishing never waits: a full queue means that client
is not reading, and the message is dropped for it alone (counted). The messages we fan out are
list_changed notifications, which only say "list again", so a client that already has one
queued loses nothing by missing the next.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import trio

DEFAULT_QUEUE_SIZE = 16


@dataclass(eq=False)
class _Subscriber:
    session_id: str
    send: trio.MemorySendChannel[bytes]


class Fanout:
    def __init__(self, queue_size: int = DEFAULT_QUEUE_SIZE) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[int, _Subscriber] = {}
        self._ids = itertools.count()
        self.delivered = 0
        self.dropped = 0

    @contextmanager
    def subscribe(self, session_id: str) -> Iterator[trio.MemoryReceiveChannel[bytes]]:
        """A queue of messages for one GET stream of `session_id`, removed on exit."""
        send, receive = trio.open_memory_channel[bytes](self._queue_size)
        key = next(self._ids)
        self._subscribers[key] = _Subscriber(session_id, send)
        try:
            yield receive
        finally:
            self._subscribers.pop(key, None)
            send.close()

    def publish(self, message: bytes, session_id: str | None = None) -> int:
        """Queue `message` for every stream (or the streams of one session); return deliveries."""
        delivered = 0
        for subscriber in list(self._subscribers.values()):
            if session_id is not None and subscriber.session_id != session_id:
                continue
            try:
                subscriber.send.send_nowait(message)
                delivered += 1
            except trio.WouldBlock:
                self.dropped += 1
            except trio.ClosedResourceError:
                pass  # the stream is ending
        self.delivered += delivered
        return delivered

    def close_session(self, session_id: str) -> None:
        """End every GET stream of a session (it was deleted): their readers see end of stream."""
        for key, subscriber in list(self._subscribers.items()):
            if subscriber.session_id == session_id:
                subscriber.send.close()
                self._subscribers.pop(key, None)

    @property
    def stream_count(self) -> int:
        return len(self._subscribers)
