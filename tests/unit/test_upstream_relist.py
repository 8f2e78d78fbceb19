"""Re-listing on request and the periodic backstop, on Trio's autojump clock: the coalescing
queue alone, then the supervisor with its upstreams faked at httpx's transport seam (the fake
of tests/support/fake_upstream.py, with slow listings and a record of when each one ran)."""

from __future__ import annotations

import httpx
import pytest
import trio

from mcp_gateway.config import GatewayConfig
from mcp_gateway.upstream import Supervisor
from mcp_gateway.upstream.relist import RelistOutcome, RelistQueue
from tests.support.fake_upstream import FakeUpstream, config, supervisor_for

# -- the queue ---------------------------------------------------------------------------------


class Listings:
    """A listing that takes `seconds` and records when each ran (start, end)."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds
        self.runs: list[tuple[float, float]] = []

    async def __call__(self) -> None:
        start = trio.current_time()
        await trio.sleep(self.seconds)
        self.runs.append((start, trio.current_time()))


async def test_a_burst_while_one_listing_runs_costs_one_more(autojump_clock: trio.abc.Clock) -> None:
    queue, listings = RelistQueue(), Listings()
    results: list[bool] = []

    async def ask() -> None:
        results.append(await queue.wait(queue.request()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run, listings)
        nursery.start_soon(ask)
        await trio.sleep(0.5)  # the first listing is in flight
        for _ in range(50):
            nursery.start_soon(ask)
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    assert results == [True] * 51
    assert listings.runs == [(0.0, 1.0), (1.0, 2.0)]  # the second started after the burst


async def test_each_waiter_waits_for_a_listing_that_started_after_its_request(
    autojump_clock: trio.abc.Clock,
) -> None:
    queue, listings = RelistQueue(), Listings()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run, listings)
        first = queue.request()
        await trio.sleep(0.5)
        second = queue.request()  # the first listing may have read the list before this change
        assert await queue.wait(first)
        assert trio.current_time() == 1.0
        assert await queue.wait(second)
        assert trio.current_time() == 2.0
        assert not queue.busy
        nursery.cancel_scope.cancel()


async def test_closing_releases_every_waiter_unlisted(autojump_clock: trio.abc.Clock) -> None:
    queue = RelistQueue()
    ticket = queue.request()  # nobody runs the queue: the session ends before listing

    async def close_later() -> None:
        await trio.sleep(1)
        queue.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_later)
        assert await queue.wait(ticket) is False
        assert trio.current_time() == 1.0
    assert await queue.wait(queue.request()) is False  # a closed queue answers at once


# -- the supervisor ----------------------------------------------------------------------------


class TimedUpstream(FakeUpstream):
    """Records the base session's tools/list calls (start times) and how many overlap."""

    def __init__(self, tools: list[str], list_seconds: float = 0.0) -> None:
        super().__init__(tools)
        self.list_seconds = list_seconds
        self.base_lists: list[float] = []
        self.listing_now = 0
        self.most_at_once = 0

    async def handle(self, request: httpx.Request) -> httpx.Response:
        base = not self.capabilities_of.get(request.headers.get("mcp-session-id", ""))
        if request.method == "POST" and b'"tools/list"' in request.content and base:
            self.base_lists.append(trio.current_time())
            self.listing_now += 1
            self.most_at_once = max(self.most_at_once, self.listing_now)
            try:
                await trio.sleep(self.list_seconds)
            finally:
                self.listing_now -= 1
        return await super().handle(request)


def with_interval(cfg: GatewayConfig, seconds: float) -> GatewayConfig:
    gateway = cfg.gateway.model_copy(update={"relist_interval_seconds": seconds})
    return cfg.model_copy(update={"gateway": gateway})


async def test_the_backstop_re_lists_every_interval_with_jitter_never_later(
    autojump_clock: trio.abc.Clock,
) -> None:
    fake = TimedUpstream(["one"])
    supervisor = supervisor_for(with_interval(config("a"), 60), {"a": fake})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(1200)
        nursery.cancel_scope.cancel()
    gaps = [later - earlier for earlier, later in zip(fake.base_lists, fake.base_lists[1:], strict=False)]
    assert len(gaps) >= 20
    assert all(45 <= gap <= 60 for gap in gaps), gaps
    assert len(set(gaps)) > 1  # jittered: upstreams that connected together spread out


async def test_the_backstop_is_off_at_zero(autojump_clock: trio.abc.Clock) -> None:
    fake = TimedUpstream(["one"])
    supervisor = supervisor_for(with_interval(config("a"), 0), {"a": fake})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(86_400)
        nursery.cancel_scope.cancel()
    assert fake.base_lists == [0.0]  # the connect's listing only


async def test_listings_never_overlap_whatever_asks(autojump_clock: trio.abc.Clock) -> None:
    """Slow listings (3 s, under the 5 s timeout), a 1 s backstop, list_changed on the discovery
    stream and re-list requests all at once: one listing at a time."""
    fake = TimedUpstream(["one"], list_seconds=3)
    supervisor = supervisor_for(with_interval(config("a"), 1), {"a": fake})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        for _ in range(10):
            await fake.tools_changed(["one", "two"])
            supervisor.request_relist("a")
            nursery.start_soon(supervisor.relist, "a")
            await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert fake.most_at_once == 1
    assert supervisor.status()[0].consecutive_failures == 0
    # Back to back at most: each listing starts once the one before it ended.
    gaps = [later - earlier for earlier, later in zip(fake.base_lists, fake.base_lists[1:], strict=False)]
    assert all(gap >= 3 for gap in gaps), gaps


async def test_relist_returns_once_the_catalog_shows_the_listing(
    autojump_clock: trio.abc.Clock,
) -> None:
    fake, other = TimedUpstream(["one"], list_seconds=1), TimedUpstream(["x"])
    supervisor = supervisor_for(config("a", "b", b={"enabled": False}), {"a": fake, "b": other})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        fake.tools = ["one", "two"]  # changed, and nobody told the discovery session
        assert await supervisor.relist("a") is RelistOutcome.RELISTED
        assert _tools(supervisor) == ["one", "two"]
        assert await supervisor.relist("nope") is RelistOutcome.UNKNOWN
        assert await supervisor.relist("b") is RelistOutcome.UNKNOWN  # disabled
        (status,) = [s for s in supervisor.status() if s.name == "a"]
        assert status.to_json()["relists"] == {"done": 1, "pending": False}
        nursery.cancel_scope.cancel()


async def test_relist_of_an_upstream_that_is_down_does_not_wait(
    autojump_clock: trio.abc.Clock,
) -> None:
    fake = TimedUpstream(["one"])
    fake.mode = "down"
    supervisor = supervisor_for(config("a"), {"a": fake})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        started = trio.current_time()
        assert await supervisor.relist("a") is RelistOutcome.NOT_SERVING
        assert trio.current_time() == started
        nursery.cancel_scope.cancel()


async def test_a_session_that_ends_mid_listing_releases_the_waiter(
    autojump_clock: trio.abc.Clock,
) -> None:
    fake = TimedUpstream(["one"], list_seconds=3)
    supervisor = supervisor_for(config("a"), {"a": fake})
    outcome: list[RelistOutcome] = []
    answered = trio.Event()

    async def ask() -> None:
        outcome.append(await supervisor.relist("a"))
        answered.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        asked = trio.current_time()
        nursery.start_soon(ask)
        await trio.sleep(1)
        fake.mode = "hang"  # the listing in flight never answers: the session fails at 5 s
        with trio.fail_after(10):
            await answered.wait()
        assert trio.current_time() - asked == pytest.approx(5, abs=0.01)  # the listing's timeout
        nursery.cancel_scope.cancel()
    assert outcome == [RelistOutcome.NOT_SERVING]


def _tools(supervisor: Supervisor) -> list[str]:
    ((_server, catalog),) = supervisor.catalog()
    return [str(tool["name"]) for tool in catalog.items["tools"]]


def test_relist_interval_is_a_setting_with_bounds() -> None:
    assert GatewayConfig().gateway.relist_interval_seconds == 300
    assert GatewayConfig.model_validate({"gateway": {"relist_interval_seconds": 0}}).gateway.relist_interval_seconds == 0
    for bad in (-1, 86_401):
        with pytest.raises(ValueError, match="relist_interval_seconds"):
            GatewayConfig.model_validate({"gateway": {"relist_interval_seconds": bad}})
