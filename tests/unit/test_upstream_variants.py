"""The supervisor's capability variants on Trio's autojump clock, with the network faked at
httpx's transport seam (the fake upstream of tests/support/fake_upstream.py, which can offer tools
only to sessions that declared a client capability)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from mcp_gateway.upstream import UpstreamState
from mcp_gateway.upstream.catalog import ALL_FEATURES, ROOTS, SAMPLING
from tests.support.fake_upstream import (
    FakeUpstream,
    config,
    supervisor_for,
    tool_names,
)


def variants_of(supervisor: Any, name: str) -> dict[frozenset[str], list[str]]:
    catalogs = {s.name: c for s, c in supervisor.catalog()}  # serving upstreams only
    variants = catalogs[name].variants if name in catalogs else ()
    return {v.requires: [t["name"] for t in v.items["tools"]] for v in variants}


async def settled(supervisor: Any, name: str) -> str:
    """Wait (on the autojump clock: instantly) until the upstream's variants are decided."""
    # Polled: deciding "none" publishes no catalog change to wait on.
    for _attempt in range(1000):
        state = supervisor.status_of(name).variants_state
        if state not in ("pending", "probing"):
            return str(state)
        await trio.sleep(0.01)
    raise AssertionError(f"variants of {name} still {state} after 10 s")


async def test_an_upstream_without_conditional_tools_is_probed_once_then_left_alone(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = FakeUpstream(["one"])
    supervisor = supervisor_for(config("a"), {"a": upstream})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        assert await settled(supervisor, "a") == "none"
        await trio.sleep(60)  # six ping intervals
        assert (upstream.initializes, upstream.probes, upstream.deleted) == (1, 1, 1)
        assert variants_of(supervisor, "a") == {}
        assert supervisor.status_of("a").to_json()["capabilityVariants"] == {  # type: ignore[union-attr]
            "state": "none",
            "reason": None,
            "variants": [],
        }
        nursery.cancel_scope.cancel()


async def test_conditional_tools_are_held_per_feature_and_follow_list_changed(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = FakeUpstream(["one"])
    upstream.conditional = {"roots": ["rooted"]}
    supervisor = supervisor_for(config("a"), {"a": upstream})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        assert await settled(supervisor, "a") == "active"
        variants = variants_of(supervisor, "a")
        assert variants[frozenset({ROOTS})] == ["one", "rooted"]
        assert variants[frozenset({SAMPLING})] == ["one"]
        # Singles cover what the every-feature probe listed: it was closed, not held.
        assert ALL_FEATURES not in variants and len(variants) == 4
        assert (upstream.probes, upstream.deleted) == (5, 1)
        assert tool_names(supervisor) == {"a": ["one"]}  # the base listing is unchanged
        status = supervisor.status_of("a").to_json()  # type: ignore[union-attr]
        roots = [v for v in status["capabilityVariants"]["variants"] if v["requires"] == ["roots"]]
        assert roots == [{"requires": ["roots"], "counts": {"tools": 2}, "extra": {"tools": 1}}]

        changes = supervisor.changes()
        upstream.conditional = {"roots": ["rooted", "more"]}
        await upstream.tools_changed(["one"])
        while variants_of(supervisor, "a")[frozenset({ROOTS})] != ["one", "rooted", "more"]:
            await changes.receive()
        assert upstream.probes == 5  # re-listed on the held sessions, nothing re-opened
        nursery.cancel_scope.cancel()


async def test_a_tool_that_needs_two_features_keeps_the_every_feature_session(
    autojump_clock: trio.abc.Clock,
) -> None:
    class BothUpstream(FakeUpstream):
        async def handle(self, request: httpx.Request) -> httpx.Response:
            declared = self.capabilities_of.get(request.headers.get("mcp-session-id", ""), {})
            self.conditional = {"roots": ["both"]} if "sampling" in declared else {}
            return await super().handle(request)

    upstream = BothUpstream(["one"])
    supervisor = supervisor_for(config("a"), {"a": upstream})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        assert await settled(supervisor, "a") == "active"
        variants = variants_of(supervisor, "a")
        assert variants[ALL_FEATURES] == ["one", "both"]
        assert all(tools == ["one"] for f, tools in variants.items() if f != ALL_FEATURES)
        nursery.cancel_scope.cancel()


async def test_a_failing_variant_never_fails_the_base_session(
    autojump_clock: trio.abc.Clock,
) -> None:
    class RefusesCapabilities(FakeUpstream):
        async def handle(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST" and b'"roots"' in request.content:
                return httpx.Response(500)
            return await super().handle(request)

    upstream = RefusesCapabilities(["one"])
    supervisor = supervisor_for(config("a"), {"a": upstream})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        assert await settled(supervisor, "a") == "failed"
        await trio.sleep(60)
        status = supervisor.status_of("a")
        assert status is not None and status.state is UpstreamState.READY
        assert status.variants_reason and "500" in status.variants_reason
        assert tool_names(supervisor) == {"a": ["one"]}
        assert upstream.initializes == 1  # the base session was never restarted
        assert upstream.probes == 0  # refused before counting, retried with a backoff
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("enabled", [False, True])
async def test_the_switch_turns_variants_off_and_a_reload_applies_it(
    enabled: bool, autojump_clock: trio.abc.Clock
) -> None:
    upstream = FakeUpstream(["one"])
    upstream.conditional = {"roots": ["rooted"]}
    off = config("a").model_copy(
        update={"gateway": config("a").gateway.model_copy(update={"capability_variants": False})}
    )
    supervisor = supervisor_for(off if not enabled else config("a"), {"a": upstream})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        expected = "active" if enabled else "off"
        assert await settled(supervisor, "a") == expected
        await supervisor.apply(config("a") if not enabled else off)
        await supervisor.wait_first_round()
        assert await settled(supervisor, "a") == ("off" if enabled else "active")
        assert upstream.initializes == 2  # flipping the switch restarts the HTTP upstream
        nursery.cancel_scope.cancel()


async def test_variants_end_with_the_upstream_and_return_with_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    upstream = FakeUpstream(["one"])
    upstream.conditional = {"sampling": ["sampled"]}
    supervisor = supervisor_for(config("a"), {"a": upstream})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        assert await settled(supervisor, "a") == "active"
        upstream.go_down()
        await trio.sleep(1)
        status = supervisor.status_of("a")
        assert status is not None and status.state is not UpstreamState.READY
        assert (status.variants_state, status.variants) == ("pending", ())
        changes = supervisor.changes()
        upstream.mode = "up"
        while len(variants_of(supervisor, "a")) < 4:  # the base returns first, then each variant
            await changes.receive()
        assert variants_of(supervisor, "a")[frozenset({SAMPLING})] == ["one", "sampled"]
        nursery.cancel_scope.cancel()


async def test_server_requests_on_held_variant_sessions_are_answered_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    answers: list[dict[str, Any]] = []

    class Asking(FakeUpstream):
        async def handle(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                message = json.loads(request.content)
                if "method" not in message:
                    answers.append(message)
                    return httpx.Response(202)
            return await super().handle(request)

    upstream = Asking(["one"])
    upstream.conditional = {"roots": ["rooted"]}
    supervisor = supervisor_for(config("a"), {"a": upstream})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        assert await settled(supervisor, "a") == "active"
        await trio.sleep(0.1)  # every held session's GET stream is open
        assert len(upstream.streams) == 5  # the base session and four variants
        for index, stream in enumerate(upstream.streams):
            for method in ("roots/list", "elicitation/create", "sampling/createMessage"):
                ask = {"jsonrpc": "2.0", "id": f"{method}-{index}", "method": method}
                await stream.send(f"data: {json.dumps(ask)}\n\n".encode())
        await trio.sleep(1)
        by_id = {a["id"]: a for a in answers}
        assert len(by_id) == 15
        # Stream 0 is the base session's: it declared nothing and answers only pings.
        assert by_id["roots/list-0"]["error"]["code"] == -32601
        assert by_id["elicitation/create-0"]["error"]["code"] == -32601
        for index in range(1, 5):
            assert by_id[f"roots/list-{index}"]["result"] == {"roots": []}
            assert by_id[f"elicitation/create-{index}"]["result"] == {"action": "decline"}
        for index in range(5):
            assert by_id[f"sampling/createMessage-{index}"]["error"]["code"] == -32601
        nursery.cancel_scope.cancel()


async def test_a_listing_that_changed_under_the_probe_holds_nothing(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Flickering(FakeUpstream):
        """The first every-feature session sees a tool that is gone by the next listing."""

        flickered = False

        async def handle(self, request: httpx.Request) -> httpx.Response:
            declared = self.capabilities_of.get(request.headers.get("mcp-session-id", ""), {})
            ghost = len(declared) == 3 and not self.flickered and b"tools/list" in request.content
            self.conditional = {"roots": ["ghost"]} if ghost else {}
            self.flickered |= ghost
            return await super().handle(request)

    upstream = Flickering(["one"])
    supervisor = supervisor_for(config("a"), {"a": upstream})
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        await supervisor.wait_first_round()
        assert await settled(supervisor, "a") == "none"
        assert upstream.flickered
        assert variants_of(supervisor, "a") == {}
        # The probe, four single-feature sessions and the every-feature one: all ended.
        assert (upstream.probes, upstream.deleted) == (6, 6)
        nursery.cancel_scope.cancel()
