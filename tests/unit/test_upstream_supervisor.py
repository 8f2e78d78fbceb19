"""The supervisor on Trio's autojump clock, with the network faked at httpx's transport seam.

Each fake upstream speaks just enough Streamable HTTP (initialize, tools/list, ping, a GET
stream that can push list_changed) for the real UpstreamClient and Supervisor to run on it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from mcp_gateway.config import GatewayConfig
from mcp_gateway.upstream import Supervisor, Timing, UpstreamClient, UpstreamState
from mcp_gateway.upstream.supervisor import GATEWAY_CLIENT_INFO

TIMING = Timing(
    ping_interval=10, poll_interval=30, stream_reopen_delay=1, backoff_base=1, backoff_cap=8
)


class _Stream(httpx.AsyncByteStream):
    """An SSE body fed from a channel (a class, not an async generator, so nothing is left
    half-iterated when the reader is cancelled)."""

    def __init__(self, receive: trio.MemoryReceiveChannel[bytes]) -> None:
        self._receive = receive

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class FakeUpstream:
    def __init__(self, tools: list[str]) -> None:
        self.tools = tools
        self.mode = "up"  # "up" | "down" (connection refused) | "hang" (never answers)
        self.initializes = 0  # of discovery sessions declaring no client capabilities
        self.probes = 0  # of sessions declaring some (capability variants)
        self.sessions = 0
        self.deleted = 0
        # Tools offered only to sessions that declared this client capability.
        self.conditional: dict[str, list[str]] = {}
        self.capabilities_of: dict[str, dict[str, Any]] = {}  # by session id
        self.attempts: list[float] = []
        self.streams: list[trio.MemorySendChannel[bytes]] = []

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.mode == "down":
            if b'"roots"' not in request.content:  # not a capability-variant probe
                self.attempts.append(trio.current_time())
            raise httpx.ConnectError("connection refused", request=request)
        if self.mode == "hang":
            await trio.sleep_forever()
        if request.method == "GET":
            send, receive = trio.open_memory_channel[bytes](10)
            self.streams.append(send)
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, stream=_Stream(receive)
            )
        if request.method == "DELETE":
            self.deleted += 1
            return httpx.Response(200)
        message = json.loads(request.content)
        method = message.get("method")
        if "id" not in message:
            return httpx.Response(202)
        if method == "initialize":
            declared = message["params"]["capabilities"]
            if declared:
                self.probes += 1
            else:
                self.initializes += 1
                self.attempts.append(trio.current_time())
            self.sessions += 1
            self.capabilities_of[f"s{self.sessions}"] = declared
            result: dict[str, Any] = {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "fake", "version": "1"},
            }
            return _json(message["id"], result, {"mcp-session-id": f"s{self.sessions}"})
        if method == "tools/list":
            declared = self.capabilities_of.get(request.headers.get("mcp-session-id", ""), {})
            names = self.tools + [
                name
                for capability, extra in self.conditional.items()
                if capability in declared
                for name in extra
            ]
            tools = [{"name": n, "inputSchema": {"type": "object"}} for n in names]
            return _json(message["id"], {"tools": tools})
        return _json(message["id"], {})

    async def tools_changed(self, tools: list[str]) -> None:
        self.tools = tools
        note = b'data: {"jsonrpc":"2.0","method":"notifications/tools/list_changed"}\n\n'
        for stream in self.streams:
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send(note)

    def go_down(self) -> None:
        self.mode = "down"
        for stream in self.streams:
            stream.close()  # the open GET stream ends as if the process died
        self.streams.clear()


def _json(rid: Any, result: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(
        200, json={"jsonrpc": "2.0", "id": rid, "result": result}, headers=headers or {}
    )


def config(*names: str, **changes: Any) -> GatewayConfig:
    return GatewayConfig.model_validate(
        {
            "servers": [
                {
                    "name": n,
                    "url": f"http://{n}.test/mcp",
                    "prefix": f"{n}_",
                    "timeoutSeconds": 5,
                    **changes.get(n, {}),
                }
                for n in names
            ]
        }
    )


@pytest.fixture
def upstreams() -> dict[str, FakeUpstream]:
    return {
        "a": FakeUpstream(["one", "two"]),
        "b": FakeUpstream(["three"]),
        "c": FakeUpstream(["four"]),
    }


def supervisor_for(cfg: GatewayConfig, upstreams: dict[str, FakeUpstream]) -> Supervisor:
    def factory(server: Any, http: Any, capabilities: Any = None) -> UpstreamClient:
        fake = upstreams[server.name]
        transport = httpx.MockTransport(fake.handle)
        return UpstreamClient(
            server,
            http=httpx.AsyncClient(transport=transport),
            client_info=GATEWAY_CLIENT_INFO,
            capabilities=capabilities,
        )

    return Supervisor(cfg, timing=TIMING, client_factory=factory)


def tool_names(supervisor: Supervisor) -> dict[str, list[str]]:
    return {s.name: [t["name"] for t in c.items.get("tools", ())] for s, c in supervisor.catalog()}


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
    from mcp_gateway.upstream.supervisor import _public_url

    assert (
        _public_url("https://user:pw@api.example.com:8443/mcp?key=abc")
        == "https://api.example.com:8443/mcp"
    )
    assert _public_url("http://[::1]:9000/mcp") == "http://[::1]:9000/mcp"


async def test_a_crashing_client_fails_its_upstream_only(
    upstreams: dict[str, FakeUpstream], autojump_clock: trio.abc.Clock
) -> None:
    def factory(server: Any, http: Any, capabilities: Any = None) -> UpstreamClient:
        if server.name == "b":
            raise KeyError("a bug in b's client")
        transport = httpx.MockTransport(upstreams[server.name].handle)
        return UpstreamClient(
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
