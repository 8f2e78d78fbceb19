"""The supervisor on Trio's autojump clock, with the network faked at httpx's transport seam
(tests/support/fake_upstream.py)."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest
import structlog
import trio

from mcp_gateway.config import GatewayConfig
from mcp_gateway.upstream import HttpUpstreamClient, Supervisor, Timing, UpstreamState
from tests.support.fake_upstream import TIMING, FakeUpstream, config, supervisor_for, tool_names


@pytest.fixture
def upstreams() -> dict[str, FakeUpstream]:
    return {
        "a": FakeUpstream(["one", "two"]),
        "b": FakeUpstream(["three"]),
        "c": FakeUpstream(["four"]),
    }


async def test_a_hanging_upstream_never_delays_another(
    upstreams: dict[str, FakeUpstream], autojump_clock: trio.abc.Clock
) -> None:
    upstreams["b"].mode = "hang"
    supervisor = supervisor_for(config("a", "b"), upstreams)
    changes = supervisor.changes()  # subscribed before anything can change
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await changes.receive()
        assert trio.current_time() < 0.01
        assert tool_names(supervisor) == {"a": ["one", "two"]}
        assert not supervisor.first_round_done()
        await supervisor.wait_first_round()
        assert trio.current_time() == pytest.approx(5, abs=0.01)  # b's own timeout, nobody else's
        status = {s.name: s for s in supervisor.status()}
        assert status["a"].state is UpstreamState.READY
        assert status["b"].state is UpstreamState.FAILED
        assert status["b"].reason == "no answer within 5s"
        nursery.cancel_scope.cancel()


async def test_a_dead_upstream_is_retried_with_capped_growing_backoff(
    upstreams: dict[str, FakeUpstream], autojump_clock: trio.abc.Clock
) -> None:
    upstreams["a"].mode = "down"
    supervisor = supervisor_for(config("a"), upstreams)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    times = upstreams["a"].attempts
    gaps = [b - a for a, b in itertools.pairwise(times)]
    ceilings = [1, 2, 4, 8, 8, 8]
    for gap, ceiling in zip(gaps, ceilings, strict=False):
        assert ceiling / 2 <= gap <= ceiling + 0.01
    assert max(gaps) <= 8.01
    assert supervisor.status()[0].consecutive_failures == len(times)


def _retried_with(retry: dict[str, float] | None) -> GatewayConfig:
    gateway = {"upstream_retry": retry} if retry is not None else {}
    return GatewayConfig.model_validate({**config("a").model_dump(by_alias=True), "gateway": gateway})


async def test_by_default_a_dead_upstream_is_retried_about_once_a_minute(
    upstreams: dict[str, FakeUpstream], autojump_clock: trio.abc.Clock
) -> None:
    upstreams["a"].mode = "down"
    timing = Timing(ping_interval=10, poll_interval=30)  # no backoff of its own: the config's
    supervisor = supervisor_for(_retried_with(None), upstreams, timing)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(3600)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in itertools.pairwise(upstreams["a"].attempts)]
    assert gaps[0] <= 0.26  # the first retry is quick: most failures are blips
    assert max(gaps) <= 60.01
    assert min(gaps[-20:]) >= 30  # at the cap, jitter keeps each delay within [30 s, 60 s]
    assert 60 <= len(gaps) <= 130  # an hour down: about one attempt a minute, not one per 3 s


async def test_the_retry_delays_are_the_configs_and_a_reload_changes_them(
    upstreams: dict[str, FakeUpstream], autojump_clock: trio.abc.Clock
) -> None:
    upstreams["a"].mode = "down"
    timing = Timing(ping_interval=10, poll_interval=30)
    supervisor = supervisor_for(
        _retried_with({"initial_seconds": 2, "max_seconds": 4, "jitter": 0}), upstreams, timing
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await trio.sleep(20)
        before = len(upstreams["a"].attempts)
        await supervisor.apply(_retried_with({"initial_seconds": 1, "max_seconds": 1, "jitter": 0}))
        await trio.sleep(10)
        nursery.cancel_scope.cancel()
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(upstreams["a"].attempts)]
    assert gaps[:5] == [2, 4, 4, 4, 4]
    # the delay running at the reload ends as it was; every later one is the new config's
    assert gaps[before:] == [1.0] * len(gaps[before:]) and len(gaps[before:]) >= 6


async def test_a_dead_upstream_is_logged_once_then_at_a_falling_rate(
    upstreams: dict[str, FakeUpstream], autojump_clock: trio.abc.Clock
) -> None:
    upstreams["a"].mode = "down"
    supervisor = supervisor_for(config("a"), upstreams)  # backoff capped at 8 s
    with structlog.testing.capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            await trio.sleep(8 * 150)
            upstreams["a"].mode = "up"
            await trio.sleep(9)
            upstreams["a"].go_down()
            await trio.sleep(1)
            nursery.cancel_scope.cancel()
    failures = [e for e in logs if e["event"] in ("upstream failed", "upstream still failing")]
    warned = [(e["event"], e["failures"]) for e in failures if e["log_level"] == "warning"]
    in_a_row = failures[-2]["failures"]  # before it came back
    assert in_a_row > 150 and len(failures) == in_a_row + 1  # each one logged, most at debug
    assert warned == [
        ("upstream failed", 1),
        *[("upstream still failing", n) for n in (2, 4, 8, 16, 32, 64)],
        *[("upstream still failing", n) for n in range(128, in_a_row + 1, 64)],
        ("upstream failed", 1),  # it came back and failed again: news again
    ]


async def test_an_upstream_that_dies_leaves_the_catalog_and_comes_back_on_its_own(
    upstreams: dict[str, FakeUpstream], autojump_clock: trio.abc.Clock
) -> None:
    supervisor = supervisor_for(config("a", "b"), upstreams)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        upstreams["a"].go_down()
        await trio.sleep(0.5)
        assert tool_names(supervisor) == {"b": ["three"]}
        status = supervisor.status_of("a")
        assert status is not None and status.state is UpstreamState.FAILED
        assert status.reason is not None and "ConnectError" in status.reason
        upstreams["a"].mode = "up"
        await trio.sleep(TIMING.backoff_cap + 0.1)
        assert tool_names(supervisor) == {"a": ["one", "two"], "b": ["three"]}
        nursery.cancel_scope.cancel()


async def test_list_changed_on_the_get_stream_triggers_a_relist(
    upstreams: dict[str, FakeUpstream], autojump_clock: trio.abc.Clock
) -> None:
    supervisor = supervisor_for(config("a"), upstreams)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        await trio.sleep(0.1)  # the GET stream is open
        changes = supervisor.changes()
        await upstreams["a"].tools_changed(["one", "two", "new"])
        await changes.receive()
        assert tool_names(supervisor) == {"a": ["one", "two", "new"]}
        nursery.cancel_scope.cancel()


async def test_apply_restarts_only_what_changed(
    upstreams: dict[str, FakeUpstream], autojump_clock: trio.abc.Clock
) -> None:
    supervisor = supervisor_for(config("a", "b"), upstreams)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        await supervisor.apply(config("a", "c", a={"timeoutSeconds": 7}))
        await supervisor.wait_first_round()
        assert upstreams["a"].initializes == 2  # changed → restarted
        assert upstreams["b"].initializes == 1  # removed → stopped, not restarted
        assert upstreams["c"].initializes == 1  # added → started
        assert sorted(tool_names(supervisor)) == ["a", "c"]
        await supervisor.apply(config("a", "c", a={"timeoutSeconds": 7}, c={"enabled": False}))
        assert upstreams["a"].initializes == 2  # unchanged → untouched
        status = supervisor.status_of("c")
        assert status is not None and status.state is UpstreamState.DISABLED
        assert sorted(tool_names(supervisor)) == ["a"]
        nursery.cancel_scope.cancel()


def test_status_shows_no_credential_that_a_url_carries() -> None:
    from mcp_gateway.upstream import UpstreamStatus

    def shown(url: str) -> object:
        status = UpstreamStatus(
            name="a", url=url, prefix="a_", state=UpstreamState.READY, reason=None, counts={},
            last_refresh=None, protocol_version=None, server_info=None, consecutive_failures=0,
        )
        return status.to_json()["url"]

    assert shown("https://user:pw@api.example.com:8443/mcp?key=abc") == "https://api.example.com:8443/mcp"
    assert shown("http://[::1]:9000/mcp") == "http://[::1]:9000/mcp"


async def test_a_crashing_client_fails_its_upstream_only(
    upstreams: dict[str, FakeUpstream], autojump_clock: trio.abc.Clock
) -> None:
    def factory(server: Any, http: Any, capabilities: Any = None) -> HttpUpstreamClient:
        if server.name == "b":
            raise KeyError("a bug in b's client")
        transport = httpx.MockTransport(upstreams[server.name].handle)
        return HttpUpstreamClient(
            server, http=httpx.AsyncClient(transport=transport), capabilities=capabilities
        )

    supervisor = Supervisor(config("a", "b"), timing=TIMING, client_factory=factory)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        await trio.sleep(30)
        assert tool_names(supervisor) == {"a": ["one", "two"]}
        status = supervisor.status_of("b")
        assert status is not None and status.state is UpstreamState.FAILED
        assert status.reason == "internal error: KeyError"
        nursery.cancel_scope.cancel()


async def test_a_failed_upstream_stays_failed_while_it_is_retried_until_an_attempt_succeeds(
    upstreams: dict[str, FakeUpstream], autojump_clock: trio.abc.Clock
) -> None:
    """/status and the state gauge do not flap between failed and connecting at every retry:
    after the first failure, a retry that hangs (5 s each) still shows failed, with the reason."""
    upstreams["a"].mode = "hang"
    supervisor = supervisor_for(config("a"), upstreams)
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        [first] = supervisor.status()
        assert first.state is UpstreamState.CONNECTING  # the first attempt
        await trio.sleep(8)  # the first attempt failed at 5 s; the second runs until ~10.5 s
        [retrying] = supervisor.status()
        assert retrying.consecutive_failures == 1  # the second attempt is under way
        assert retrying.state is UpstreamState.FAILED and retrying.reason == "no answer within 5s"
        upstreams["a"].mode = "up"
        await trio.sleep(20)
        [back] = supervisor.status()
        assert back.state is UpstreamState.READY
        nursery.cancel_scope.cancel()
