"""Re-listing an upstream on demand: the coalescing queue, and the handle others ask through.

An upstream announces a change of its lists (`notifications/{tools,prompts,resources}/
list_changed`) on the session that caused it: an SDK server sends it on that session's GET
stream or inside the answer of the call that made the change, not to the gateway's discovery
session. So whoever hears one — the broker's held backend streams, the answers of calls it
forwards, the router or Envoy for the calls they route — asks the supervisor to re-list that
upstream (`Supervisor.relist`, `Supervisor.request_relist`), and the usual fan-out to clients
follows if the listing really changed. docs/broker.md, "Re-listing on request", is the contract.

A burst of notifications must not become a burst of listings: each discovery session has one
`RelistQueue`, with at most one listing in flight and one queued; every request made while a
listing is queued joins that listing.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Final, NoReturn

import httpx
import trio

from mcp_gateway.upstream.catalog import KINDS

LIST_CHANGED_NOTIFICATIONS: Final = frozenset(k.changed_notification for k in KINDS)

# The broker's internal endpoint (broker/internal.py). Envoy's early header mutation removes
# every client `x-mcp-*` header before routing, so a request carrying this header reached the
# broker from inside the gateway (Envoy's Lua `httpCall`, the router), never from a client.
RELIST_PATH: Final = "/internal/relist"
INTERNAL_HEADER: Final = "x-mcp-internal"
INTERNAL_HEADER_VALUE: Final = "relist"


class RelistOutcome(enum.StrEnum):
    RELISTED = "relisted"  # a listing that started after the request has finished
    # No session to list on: the upstream is connecting or failed, or its session ended during
    # the listing. Nothing to wait for: its next session lists everything afresh.
    NOT_SERVING = "not-serving"
    UNKNOWN = "unknown"  # no such upstream, or it is disabled
    TIMED_OUT = "timed-out"  # the bound passed first; the listing still happens
    UNAVAILABLE = "unavailable"  # (`Relists` over HTTP only) the broker could not be asked


class RelistQueue:
    """The re-lists of one discovery session: at most one in flight and one queued.

    `request()` asks for a listing that starts after it and returns that listing's number;
    `wait(number)` returns once it finished (True) or the session ended first (False). Requests
    made while a listing is queued get the queued one's number: a burst of notifications costs
    the listing in flight plus one more, however long the burst.
    """

    def __init__(self, on_listed: Callable[[], None] | None = None) -> None:
        self._on_listed = on_listed
        self._wanted = trio.Event()  # set: a listing is queued
        self._started = 0  # numbers of the listings started and finished, in order
        self._finished = 0
        self._progress = trio.Event()  # set (and replaced) when a listing finishes or on close
        self.closed = False

    @property
    def busy(self) -> bool:
        """A listing is in flight or queued."""
        return self._wanted.is_set() or self._started > self._finished

    def request(self) -> int:
        self._wanted.set()
        return self._started + 1

    async def wait(self, ticket: int) -> bool:
        while self._finished < ticket and not self.closed:
            await self._progress.wait()
        return self._finished >= ticket

    async def run(self, listing: Callable[[], Awaitable[None]]) -> NoReturn:
        """List whenever asked, one at a time, until cancelled; a failed listing raises (the
        session it belongs to ends, and `close` releases the waiters)."""
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            self._started += 1
            await listing()
            self._finished = self._started
            self._wake()
            if self._on_listed is not None:
                self._on_listed()

    def close(self) -> None:
        """The session ended: nothing queued will run; every waiter returns now."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._progress.set()
        self._progress = trio.Event()


# The broker answers within the server's `timeoutSeconds` (at most 3600 s): the read timeout
# only guards against a broker that never answers.
HTTP_TIMEOUT: Final = httpx.Timeout(3_700.0, connect=5.0)

# The in-process form of the internal endpoint: `BrokerCore.relist` (re-list, then bring the
# broker's federation and its clients up to date).
LocalRelist = Callable[[str], Awaitable[RelistOutcome]]


class Relists:
    """How the rest of the gateway asks for a re-list of one upstream, with or without a broker
    in this process.

    `mcp-gateway serve` makes one and hands it to `serve_broker`, which serves it in process
    (`with relists.served_by(core.relist)`) while it runs: then `relist(name)` runs in this
    process. Otherwise (a router-only process, or after the broker stopped) it POSTs to the broker's internal endpoint at `broker_listen` instead, which
    answers once the re-list is done. Either way it returns when a listing of that upstream that
    started after the call has finished and the broker's lists show it (or the bound passed).
    """

    def __init__(self, broker_listen: str) -> None:
        host, _, port = broker_listen.rpartition(":")
        if host in ("0.0.0.0", "[::]", ""):  # a wildcard listener is reached on loopback
            host = "127.0.0.1"
        self._endpoint = f"http://{host}:{port}{RELIST_PATH}"
        self._local: LocalRelist | None = None

    @contextmanager
    def served_by(self, local: LocalRelist) -> Iterator[None]:
        """Answer `relist` in process with `local` for the duration of the block (the broker's
        lifetime), over HTTP before and after it."""
        self._local = local
        try:
            yield
        finally:
            self._local = None

    async def relist(self, server: str) -> RelistOutcome:
        """Bounded by the server's `timeoutSeconds` (the broker's bound, in process or not); a
        caller that cannot wait that long wraps it in a cancel scope of its own."""
        if self._local is not None:
            return await self._local(server)
        try:
            async with httpx.AsyncClient(timeout=HTTP_TIMEOUT, trust_env=False) as http:
                answer = await http.post(
                    self._endpoint,
                    params={"server": server},
                    headers={INTERNAL_HEADER: INTERNAL_HEADER_VALUE},
                )
            return RelistOutcome(answer.json()["outcome"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return RelistOutcome.UNAVAILABLE


__all__ = [
    "INTERNAL_HEADER",
    "INTERNAL_HEADER_VALUE",
    "LIST_CHANGED_NOTIFICATIONS",
    "RELIST_PATH",
    "RelistOutcome",
    "RelistQueue",
    "Relists",
]
