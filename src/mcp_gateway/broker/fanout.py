"""Server→client messages to every open client stream, kept a while for clients that reconnect.

Each session that listens has one log: the messages published to it, numbered 1, 2, 3, ... and
bounded (`replay_events` messages, `replay_bytes` bytes; the oldest go first). Its client streams
(GET /mcp, /mcp/ws) read that log, each at its own cursor; publishing appends and wakes them,
never waits. A stream that falls further behind than the log holds skips what was dropped
(counted). The log outlives the session's last stream by `replay_linger_seconds`, still
collecting, so a client that reconnects with `Last-Event-ID: <epoch>-<n>` is given every message
after `n`, then the live ones, without gaps or duplicates (docs/broker.md, "Resumable streams").

A message published to every session is one `bytes` object that every log refers to: what a
publish costs per stream is a reference and a wake-up, as it was with one queue per stream.

Event ids are `<epoch>-<n>`: `epoch` is random per log (a session's log in this process; a log
made again after it lingered out, or on another replica, has another), `n` counts that session's
own messages. So an id tells nothing about other sessions or upstreams, and it is looked up only
in the log of the session the request authenticated as: another session's id, an id of a log that
is gone, or a malformed one simply opens a fresh stream.
"""

from __future__ import annotations

import re
import secrets
import sys
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum

import trio

# What a log holds with replay off: the slack for live delivery the per-stream queues had.
MIN_LOG_EVENTS = 16
DEFAULT_REPLAY_EVENTS = 128
DEFAULT_REPLAY_BYTES = 65_536
DEFAULT_LINGER_SECONDS = 30.0
_EVENT_ID = re.compile(r"([0-9a-f]{12})-(0|[1-9][0-9]{0,17})")


@dataclass(frozen=True)
class ReplayLimits:
    """How much of a session's stream is kept for a client that reconnects (0 events: none, and
    the streams carry no ids)."""

    events: int = DEFAULT_REPLAY_EVENTS
    bytes: int = DEFAULT_REPLAY_BYTES
    linger_seconds: float = DEFAULT_LINGER_SECONDS

    @property
    def enabled(self) -> bool:
        return self.events > 0 and self.linger_seconds > 0


class Resume(Enum):
    """What a stream's `Last-Event-ID` gave it."""

    FRESH = "fresh"  # no header: live messages only
    RESUMED = "resumed"  # every kept message after the id, then live ones
    GAP = "gap"  # the id is older than the log: what is kept, then live ones (some were lost)
    UNKNOWN = "unknown"  # malformed, another session's, a log that is gone: a fresh stream


class _Log:
    """One session's messages, numbered; `first` is the number of `events[0]`."""

    __slots__ = ("epoch", "events", "first", "size", "streams")

    def __init__(self) -> None:
        self.epoch = secrets.token_hex(6).encode()
        self.events: deque[bytes] = deque()
        self.first = 1
        self.size = 0
        self.streams: set[ClientStream] = set()

    @property
    def last(self) -> int:
        """The number of the newest message (0: none yet)."""
        return self.first + len(self.events) - 1

    def trim(self, max_events: int, max_bytes: int) -> None:
        """Drop the oldest messages past the bounds. The newest always stays, however large: it
        still has to reach the live streams."""
        events = self.events
        while len(events) > max_events or (self.size > max_bytes and len(events) > 1):
            self.size -= len(events.popleft())
            self.first += 1

    def after(self, cursor: int) -> tuple[int, list[bytes]]:
        """(number of the first message returned, the kept messages after `cursor`)."""
        events = self.events
        start = max(cursor + 1, self.first)
        count = self.first + len(events) - start
        if count == 1:  # the usual case: a live stream reads the one message just published
            return start, [events[-1]]
        if count <= 0:
            return start, []
        # Indexing a deque is cheap near its ends, and readers almost always want the newest few.
        return start, [events[i] for i in range(-count, 0)]


class ClientStream:
    """One client stream's view of its session's log: a cursor (the number of the last message
    handed out) and a wake-up."""

    __slots__ = ("_fanout", "_log", "_wake", "_woken", "closed", "cursor", "resume", "skipped")

    def __init__(self, fanout: Fanout, log: _Log, cursor: int, resume: Resume, skipped: int) -> None:
        self._fanout = fanout
        self._log = log
        self.cursor = cursor
        self.resume = resume
        self.skipped = skipped  # messages lost before this stream (Resume.GAP)
        self.closed = False
        self._wake, self._woken = trio.open_memory_channel[None](1)

    @property
    def event_id(self) -> bytes:
        """The id of the last message handed out: what a client resuming from here sends."""
        return self.id_of(self.cursor)

    @property
    def epoch(self) -> bytes:
        """What the ids of this stream's events start with (`<epoch>-<number>`)."""
        return self._log.epoch

    @property
    def backlog(self) -> int:
        """Messages kept for this stream that it has not read yet."""
        return max(0, self._log.last - self.cursor)

    def id_of(self, number: int) -> bytes:
        return self._log.epoch + b"-%d" % number

    def wake(self) -> None:
        # Not contextlib.suppress: this runs once per stream per message.
        try:  # noqa: SIM105
            self._wake.send_nowait(None)
        except (trio.WouldBlock, trio.ClosedResourceError):
            pass  # a wake-up is pending already, or the stream is ending

    def close(self) -> None:
        self.closed = True
        self._wake.close()

    def pending(self) -> list[tuple[int, bytes]]:
        """The messages after the cursor, numbered, and the cursor moved past them."""
        start, events = self.take()
        return [(start + offset, event) for offset, event in enumerate(events)]

    def take(self) -> tuple[int, list[bytes]]:
        """(number of the first, the messages after the cursor), and the cursor moved past them."""
        log, cursor = self._log, self.cursor
        if cursor + 1 == log.first + len(log.events) - 1:  # the usual case: just one, the newest
            self.cursor = cursor + 1
            return cursor + 1, [log.events[-1]]
        start, events = log.after(cursor)
        if events:
            if start > cursor + 1:
                self._skip_to(start)
            self.cursor = start + len(events) - 1
        return start, events

    async def receive_batch(self) -> tuple[int, list[bytes]]:
        """Wait for messages after the cursor: (number of the first, the messages), the cursor
        moved past them; EndOfChannel once the session ended and every message was handed out."""
        while True:
            start, events = self.take()
            if events:
                return start, events
            await self._wait()

    async def receive(self) -> bytes:
        """The next message, without its number (a reader that wants one at a time)."""
        while True:
            start, events = self._log.after(self.cursor)
            if events:
                self._skip_to(start)
                self.cursor = start
                return events[0]
            await self._wait()

    def _skip_to(self, start: int) -> None:
        if start > self.cursor + 1:  # the log dropped some before this stream read them
            self._fanout.dropped += start - self.cursor - 1

    async def _wait(self) -> None:
        if self.closed:
            raise trio.EndOfChannel
        try:
            await self._woken.receive()
        except trio.EndOfChannel:
            self.closed = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            try:
                batch = await self.receive_batch()
            except trio.EndOfChannel:
                return
            for message in batch[1]:
                yield message


class Fanout:
    def __init__(self, limits: ReplayLimits | None = None) -> None:
        self.limits = limits or ReplayLimits()
        self._logs: dict[str, _Log] = {}
        # Sessions whose last stream closed, in the order they did, with when their log goes.
        self._idle: dict[str, float] = {}
        self._streams = 0
        self.delivered = 0
        self.dropped = 0

    @contextmanager
    def subscribe(self, session_id: str, last_event_id: str | None = None) -> Iterator[ClientStream]:
        """A stream of `session_id`'s messages, removed on exit: from after `last_event_id` when
        that names a message this session's log still has, else from now (`stream.resume` says
        which)."""
        self._expire()
        log = self._logs.get(session_id)
        if log is None:
            log = self._logs[session_id] = _Log()
        self._idle.pop(session_id, None)
        stream = ClientStream(self, log, *self._start(log, last_event_id))
        log.streams.add(stream)
        self._streams += 1
        try:
            yield stream
        finally:
            self._streams -= 1
            log.streams.discard(stream)
            stream.close()
            if not log.streams and self._logs.get(session_id) is log:
                if self.limits.enabled:
                    self._idle[session_id] = trio.current_time() + self.limits.linger_seconds
                else:
                    del self._logs[session_id]
            self._expire()

    def _start(self, log: _Log, last_event_id: str | None) -> tuple[int, Resume, int]:
        """(cursor, what the header gave, messages lost) for a new stream of `log`."""
        if last_event_id is None or not self.limits.enabled:
            return log.last, Resume.FRESH, 0
        match = _EVENT_ID.fullmatch(last_event_id.strip())
        if match is None or match[1].encode() != log.epoch or int(match[2]) > log.last:
            return log.last, Resume.UNKNOWN, 0
        cursor = int(match[2])
        lost = log.first - 1 - cursor
        if lost > 0:
            return cursor + lost, Resume.GAP, lost
        return cursor, Resume.RESUMED, 0

    def publish(
        self, message: bytes, session_id: str | None = None, *, only_if_listening: bool = False
    ) -> int:
        """Add `message` to every session's log (or one session's) and wake its streams; return
        the streams woken. `only_if_listening`: keep nothing for a session with no stream open
        now (a request to the client that must be answered now or refused)."""
        self._expire()
        targets: Iterable[_Log]
        if session_id is None:
            targets = self._logs.values()
        else:
            one = self._logs.get(session_id)
            if one is None or (only_if_listening and not one.streams):
                return 0
            targets = (one,)
        limits = self.limits
        # With replay off a log is only the live streams' slack: bounded by count alone, as the
        # per-stream queues were.
        max_events = limits.events if limits.enabled else MIN_LOG_EVENTS
        max_bytes = limits.bytes if limits.enabled else sys.maxsize
        delivered = 0
        size = len(message)
        for log in targets:
            # `_Log.append`, inlined: this loop runs once per listening session per broadcast.
            events = log.events
            events.append(message)
            log.size += size
            if len(events) > max_events or log.size > max_bytes:
                log.trim(max_events, max_bytes)
            streams = log.streams
            for stream in streams:
                stream.wake()
            delivered += len(streams)
        self.delivered += delivered
        return delivered

    def close_session(self, session_id: str) -> None:
        """End every stream of a session (it was deleted or expired) and forget its log: its
        readers get what is queued, then end of stream."""
        self._idle.pop(session_id, None)
        log = self._logs.pop(session_id, None)
        if log is not None:
            for stream in list(log.streams):
                stream.close()

    def _expire(self) -> None:
        """Forget the logs whose session has had no stream for `linger_seconds`."""
        if not self._idle:
            return
        now = trio.current_time()
        idle = self._idle
        while idle:
            session_id, deadline = next(iter(idle.items()))
            if deadline > now:
                break
            del idle[session_id]
            log = self._logs.get(session_id)
            if log is not None and not log.streams:
                del self._logs[session_id]

    @property
    def stream_count(self) -> int:
        return self._streams

    @property
    def log_count(self) -> int:
        """Sessions with a log: listening now, or lately (for /status)."""
        return len(self._logs)
