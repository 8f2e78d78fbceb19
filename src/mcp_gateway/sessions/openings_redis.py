"""Backend-session announcements across gateway replicas, over Redis pub/sub.

With several replicas, the router that opens a client's backend session (Envoy picks any router
for each ext_proc stream) is often not in the process whose broker holds the client's stream. So
an opening is also published on `<prefix>open`; every other replica answers on `<prefix>ack`:
at once when it holds no stream of that session, after attaching when it does. The opener waits
(bounded by `BackendOpenings.announce`) for as many answers as Redis counted receivers, minus
itself; a replica that is slow or gone only costs that bound.

One subscriber connection per process, read by one worker thread (the sync redis-py client, as
`RedisSessionStore` uses); messages enter Trio through the run's token. Publishing takes a thread
hop, paid once per new backend session, never per call. Backend session ids travel in the
messages: they are in the same Redis already (the session store).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import structlog
import trio

from mcp_gateway.sessions.openings import ATTACH_WAIT_SECONDS, BackendOpenings, Opening
from mcp_gateway.spawn import BoundedTasks

if TYPE_CHECKING:
    import redis

_log = structlog.get_logger(__name__)

_POLL_SECONDS: Final = 0.5  # how often the reader thread looks at its stop flag
_UNKNOWN: Final = 1 << 30
# Answers (each waits up to ATTACH_WAIT_SECONDS for local listeners to attach) in flight at once;
# past it an announcement goes unanswered and its opener stops waiting at its own bound.
MAX_PENDING_ANSWERS: Final = 1024


@dataclass(eq=False)
class _Answers:
    expected: int
    received: int = 0
    done: trio.Event = field(default_factory=trio.Event)

    def one_more(self) -> None:
        self.received += 1
        if self.received >= self.expected:
            self.done.set()


class RedisOpeningsBus:
    def __init__(self, url: str, *, prefix: str = "mcpgw:openings:") -> None:
        import redis

        self._client: redis.Redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._open_channel = prefix + "open"
        self._ack_channel = prefix + "ack"
        self._origin = secrets.token_hex(8)  # this process, so it ignores its own messages
        self._waiting: dict[str, _Answers] = {}
        self._openings: BackendOpenings | None = None
        self._nursery: trio.Nursery | None = None
        self._answering: BoundedTasks | None = None
        self.subscribed = trio.Event()  # set while the subscription is up
        self._stop = threading.Event()  # tells the reader thread to end

    async def run(
        self,
        openings: BackendOpenings,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen for other replicas' announcements until cancelled. Started at once: while
        Redis cannot be reached (at start or later) the bus is quiet and `announce` returns at
        once; it subscribes again when Redis is back (`subscribed` is set meanwhile)."""
        import redis

        self._openings = openings
        token = trio.lowlevel.current_trio_token()
        stop = self._stop
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]

        def listening(now: bool) -> None:
            if now:
                self.subscribed.set()
            elif self.subscribed.is_set():
                self.subscribed = trio.Event()

        def read() -> None:
            away = False
            try:
                while not stop.is_set():
                    try:
                        if not pubsub.subscribed:
                            pubsub.subscribe(self._open_channel, self._ack_channel)
                            trio.from_thread.run_sync(listening, True, trio_token=token)
                            if away:
                                _log.info("openings bus: Redis back, subscribed again")
                            away = False
                        message = pubsub.get_message(timeout=_POLL_SECONDS)
                    except (redis.RedisError, OSError, ValueError) as error:
                        # OSError/ValueError: the connection was closed under us (shutting down).
                        if stop.is_set():
                            break
                        if not away:  # once per outage, not every retry
                            _log.warning(
                                "openings bus: Redis unavailable", error=type(error).__name__
                            )
                        away = True
                        trio.from_thread.run_sync(listening, False, trio_token=token)
                        pubsub.reset()
                        stop.wait(_POLL_SECONDS)
                        continue
                    if message is not None and message.get("type") == "message":
                        trio.from_thread.run_sync(
                            self._received, message["channel"], message["data"], trio_token=token
                        )
            except trio.RunFinishedError:
                pass
            finally:
                pubsub.close()

        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._answering = BoundedTasks(nursery, MAX_PENDING_ANSWERS)
                nursery.start_soon(lambda: trio.to_thread.run_sync(read, abandon_on_cancel=True))
                task_status.started()
        finally:
            stop.set()
            self._nursery = self._answering = None

    def state(self) -> str:
        running = self._nursery is not None and self.subscribed.is_set()
        return "subscribed" if running else "unavailable"

    async def announce(self, sid: str, server: str, backend_id: str) -> None:
        """Publish the opening; return once every other replica answered."""
        if self._nursery is None or not self.subscribed.is_set():
            return  # not running or Redis away: the other replicas re-read the store instead
        nonce = secrets.token_hex(8)
        message = {"origin": self._origin, "nonce": nonce, "sid": sid, "server": server}
        message["backend"] = backend_id
        # Answers may come before PUBLISH returns how many will: count them against "unknown".
        answers = _Answers(expected=_UNKNOWN)
        self._waiting[nonce] = answers
        try:
            receivers = await self._publish(self._open_channel, message)
            answers.expected = receivers - 1  # our own subscriber counts too
            if answers.received >= answers.expected:
                return
            await answers.done.wait()
        except _BusUnavailable:
            return  # the other replicas re-read the store instead
        finally:
            del self._waiting[nonce]

    def _received(self, channel: str, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("origin") == self._origin:
            return
        if channel == self._ack_channel:
            answers = self._waiting.get(str(message.get("nonce")))
            if answers is not None:
                answers.one_more()
        elif channel == self._open_channel and self._openings is not None:
            fields = [message.get(key) for key in ("sid", "server", "backend", "nonce")]
            if all(isinstance(value, str) for value in fields) and self._answering is not None:
                sid, server, backend_id, nonce = (str(value) for value in fields)
                openings = self._openings.deliver(sid, server, backend_id)
                refused = not self._answering.start_soon(self._answer, nonce, openings)
                total = self._answering.refused
                if refused and total & (total - 1) == 0:  # the 1st, 2nd, 4th, 8th...: not a flood
                    _log.warning("openings: too many answers in flight; announcements left unanswered",
                                 limit=MAX_PENDING_ANSWERS, refused=total)

    async def _answer(self, nonce: str, openings: list[Opening]) -> None:
        with trio.move_on_after(ATTACH_WAIT_SECONDS):
            for opening in openings:
                await opening.attached.wait()
        # Unanswered (Redis down), the opener stops waiting at its bound.
        with contextlib.suppress(_BusUnavailable):
            await self._publish(self._ack_channel, {"origin": self._origin, "nonce": nonce})

    async def _publish(self, channel: str, message: dict[str, Any]) -> int:
        import redis

        data = json.dumps(message, separators=(",", ":"))
        try:
            receivers = await trio.to_thread.run_sync(
                self._client.publish, channel, data, abandon_on_cancel=True
            )
        except redis.RedisError as error:
            _log.warning("openings bus: Redis publish failed", error=type(error).__name__)
            raise _BusUnavailable from error
        return int(receivers)

    async def aclose(self) -> None:
        self._stop.set()
        await trio.to_thread.run_sync(self._client.close)


class _BusUnavailable(Exception):
    pass


__all__ = ["RedisOpeningsBus"]
