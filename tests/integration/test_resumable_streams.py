"""Resumable GET streams through a real Envoy (docs/broker.md, "Resumable streams").

A client's GET /mcp stream is cut while the gateway publishes; it reconnects with
`Last-Event-ID` and gets exactly what it missed, then live messages. Messages are published
deterministically: a routed call adds a tool without telling anyone, then the broker's
`/internal/relist` returns only once every client stream of the broker was told (its log has the
list_changed), so the test never sleeps to synchronise.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import trio
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_gateway.upstream.relist import INTERNAL_HEADER, INTERNAL_HEADER_VALUE, RELIST_PATH
from tests.support.changing import BURST_DONE, changing_upstream
from tests.support.routing import (
    SDK_CLIENT_WARNINGS,
    Stack,
    call_body,
    gateway_stack,
    initialize_raw,
    session_headers,
    sse_result,
)

pytestmark = pytest.mark.integration

TOOLS_CHANGED = "notifications/tools/list_changed"
EVENT_ID = re.compile(r"([0-9a-f]{12})-([0-9]+)")


class Stream:
    """One GET /mcp of a session: the SSE events it read, as (id, message) pairs."""

    def __init__(self) -> None:
        self.events: list[tuple[str | None, dict[str, Any]]] = []
        self.priming: str | None = None  # the id of the event with empty data, if one came
        self.status = 0
        self._arrived = trio.Event()
        self.scope = trio.CancelScope()

    async def run(
        self,
        http: httpx.AsyncClient,
        url: str,
        session: dict[str, str],
        last_event_id: str | None = None,
        *,
        primed: bool = True,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """`task_status.started()` once the broker has subscribed this stream: at its priming
        event (`primed`), else at its `: stream open` comment."""
        headers = {**session, "accept": "text/event-stream"}
        if last_event_id is not None:
            headers["last-event-id"] = last_event_id
        with self.scope:
            async with http.stream("GET", url, headers=headers) as response:
                self.status = response.status_code
                event_id: str | None = None
                data: str | None = None
                async for line in response.aiter_lines():
                    if line.startswith("id:"):
                        event_id = line[3:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                    elif line == "" and (event_id is not None or data is not None):
                        if data:
                            self.events.append((event_id, json.loads(data)))
                            self._arrived.set()
                            self._arrived = trio.Event()
                        elif event_id is not None:
                            self.priming = event_id
                            task_status.started()  # the broker subscribed before it wrote this
                        event_id, data = None, None
                    elif line == ": stream open" and not primed:
                        task_status.started()

    def cut(self) -> None:
        """Close the connection, as a network failure would (no DELETE, nothing said)."""
        self.scope.cancel()

    async def wait_for(self, count: int, within: float = 5.0) -> None:
        with trio.fail_after(within):
            while len(self.events) < count:
                await self._arrived.wait()

    def ids(self) -> list[str]:
        return [event_id for event_id, _ in self.events if event_id is not None]

    def methods(self) -> list[str]:
        return [str(message.get("method")) for _, message in self.events]


def numbers(ids: list[str]) -> list[int]:
    """The sequence numbers of ids of one stream (they share the epoch)."""
    matches = [EVENT_ID.fullmatch(event_id) for event_id in ids]
    assert all(matches), ids
    assert len({m[1] for m in matches if m}) <= 1, f"ids of one stream with two epochs: {ids}"
    return [int(m[2]) for m in matches if m]


@asynccontextmanager
async def resumable_stack(tmp_path: Path, **sessions: Any) -> AsyncIterator[tuple[Stack, httpx.AsyncClient]]:
    async with (
        changing_upstream() as upstream,
        gateway_stack([("ch", upstream.url, "ch_")], tmp_path, sessions=sessions) as stack,
        httpx.AsyncClient(timeout=20) as http,
    ):
        yield stack, http


class Publisher:
    """Makes the gateway publish one tools/list_changed to every listening session, and returns
    once it has: a tool added upstream without a word, then the broker asked to re-list."""

    def __init__(self, stack: Stack, http: httpx.AsyncClient, session: dict[str, str]) -> None:
        self.stack, self.http, self.session = stack, http, session
        self.added = 0

    async def publish(self) -> None:
        self.added += 1
        body = call_body("ch_add_tool_quietly", {"name": f"t{self.added}"}, 100 + self.added)
        answer = sse_result(await self.http.post(self.stack.url, json=body, headers=self.session))
        assert answer["result"]["content"][0]["text"] == f"added t{self.added}"
        await self.relist()

    async def relist(self) -> None:
        relisted = await self.http.post(
            self.stack.broker.base + RELIST_PATH,
            params={"server": "ch"},
            headers={INTERNAL_HEADER: INTERNAL_HEADER_VALUE},
        )
        assert relisted.json()["outcome"] == "relisted"


async def metric(http: httpx.AsyncClient, stack: Stack, name: str) -> float:
    text = (await http.get(stack.broker.admin + "/metrics")).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def new_session(http: httpx.AsyncClient, stack: Stack) -> dict[str, str]:
    return session_headers(await initialize_raw(http, stack.url))


async def test_a_cut_stream_resumes_with_exactly_what_it_missed_then_live_ones(tmp_path: Path) -> None:
    async with resumable_stack(tmp_path) as (stack, http), trio.open_nursery() as nursery:
        session = await new_session(http, stack)
        publisher = Publisher(stack, http, session)
        first = Stream()
        await nursery.start(first.run, http, stack.url, session)
        assert first.status == 200 and first.priming is not None
        await publisher.publish()
        await first.wait_for(1)
        first.cut()

        for _ in range(3):  # while nobody listens
            await publisher.publish()

        last_seen = first.ids()[-1]
        again = Stream()
        await nursery.start(again.run, http, stack.url, session, last_seen)
        await again.wait_for(3)
        await publisher.publish()  # live, after the replay
        await again.wait_for(4)
        assert again.methods() == [TOOLS_CHANGED] * 4
        ids = numbers([first.priming, *first.ids(), *again.ids()])
        assert ids == list(range(ids[0], ids[0] + 6)), "ids unique, in order, no gap, no duplicate"
        assert again.priming is not None and numbers([again.priming]) == [ids[1]]
        assert await metric(http, stack, "mcp_gateway_stream_resumes_total") == 1
        assert await metric(http, stack, "mcp_gateway_stream_replayed_total") == 3
        nursery.cancel_scope.cancel()


async def test_a_stream_cut_before_its_first_message_resumes_from_the_priming_id(tmp_path: Path) -> None:
    async with resumable_stack(tmp_path) as (stack, http), trio.open_nursery() as nursery:
        session = await new_session(http, stack)
        publisher = Publisher(stack, http, session)
        first = Stream()
        await nursery.start(first.run, http, stack.url, session)
        first.cut()
        await publisher.publish()
        await publisher.publish()
        assert first.priming is not None
        again = Stream()
        await nursery.start(again.run, http, stack.url, session, first.priming)
        await again.wait_for(2)
        assert again.methods() == [TOOLS_CHANGED] * 2
        nursery.cancel_scope.cancel()


async def test_messages_from_an_upstreams_own_stream_are_kept_for_the_session_that_reconnects(
    tmp_path: Path,
) -> None:
    """Across the streams the gateway merges: a resource update the upstream sends on the
    client's backend session's GET stream (held by the broker while the client is away, for as
    long as the log lingers) is replayed with the broker's own list_changed, in order."""
    async with resumable_stack(tmp_path) as (stack, http), trio.open_nursery() as nursery:
        session = await new_session(http, stack)
        first = Stream()
        await nursery.start(first.run, http, stack.url, session)
        # The routed call opens the backend session; the broker attaches its GET stream before
        # the call goes out (sessions/openings.py).
        burst = call_body("ch_burst", {"name": "b1", "count": 1}, 5)
        assert sse_result(await http.post(stack.url, json=burst, headers=session))["result"]
        await first.wait_for(2)  # list_changed (after the re-list) and the marker, any order
        first.cut()
        burst = call_body("ch_burst", {"name": "b2", "count": 1}, 6)
        assert sse_result(await http.post(stack.url, json=burst, headers=session))["result"]
        # Returns once the re-list that shows b2 was announced: its list_changed is in the log.
        await Publisher(stack, http, session).relist()
        marker = f"{BURST_DONE}/b2"

        def heard_all(stream: Stream) -> bool:
            uris = [str(m.get("params", {}).get("uri", "")) for _, m in stream.events]
            return TOOLS_CHANGED in stream.methods() and any(uri.endswith(marker) for uri in uris)

        again = Stream()
        await nursery.start(again.run, http, stack.url, session, first.ids()[-1])
        with trio.fail_after(5):
            while not heard_all(again):
                await again.wait_for(len(again.events) + 1)
        assert await metric(http, stack, "mcp_gateway_stream_replayed_total") >= 1
        numbers(first.ids() + again.ids())  # one epoch
        assert numbers(again.ids())[0] == numbers(first.ids())[-1] + 1
        assert numbers(again.ids()) == list(range(numbers(again.ids())[0], numbers(again.ids())[-1] + 1))
        nursery.cancel_scope.cancel()


async def test_foreign_and_malformed_last_event_ids_open_a_normal_fresh_stream(tmp_path: Path) -> None:
    async with resumable_stack(tmp_path) as (stack, http), trio.open_nursery() as nursery:
        mine, theirs = await new_session(http, stack), await new_session(http, stack)
        publisher = Publisher(stack, http, mine)
        their_stream = Stream()
        await nursery.start(their_stream.run, http, stack.url, theirs)
        # A message for `theirs` only: the upstream's resource update on its backend session.
        burst = call_body("ch_burst", {"name": "private", "count": 0}, 5)
        assert sse_result(await http.post(stack.url, json=burst, headers=theirs))["result"]
        await their_stream.wait_for(1)
        their_id = their_stream.ids()[-1]
        epoch = EVENT_ID.fullmatch(their_id)[1]  # type: ignore[index]
        for header in (their_id, f"{epoch}-0", "garbage", f"{'f' * 12}-1", "1" * 4000, "-1", "ff-ff"):
            stream = Stream()
            await nursery.start(stream.run, http, stack.url, mine, header)
            assert stream.status == 200, header
            await publisher.publish()
            await stream.wait_for(1)
            assert stream.methods() == [TOOLS_CHANGED], f"{header!r} replayed {stream.events}"
            stream.cut()
        assert await metric(http, stack, 'mcp_gateway_stream_resumes_total{outcome="unknown"}') == 7
        nursery.cancel_scope.cancel()


async def test_a_get_naming_an_upstream_and_its_event_id_is_still_the_brokers_stream(tmp_path: Path) -> None:
    """A Last-Event-ID from a routed call's answer (the upstream's own id), even with a forged
    routing header, reaches the broker only: Envoy strips client x-mcp-* headers and routes
    every GET /mcp to the broker, which does not know the id and opens its own fresh stream."""
    async with resumable_stack(tmp_path) as (stack, http), trio.open_nursery() as nursery:
        session = await new_session(http, stack)
        forged = {**session, "x-mcp-servername": "ch", "x-mcp-toolname": "add_tool"}
        stream = Stream()
        await nursery.start(stream.run, http, stack.url, forged, "6f1c2a9e-3b7d-4c55-9f0e-1a2b3c4d5e6f_0")
        assert stream.status == 200
        assert stream.priming is not None and EVENT_ID.fullmatch(stream.priming)  # the broker's own id
        await Publisher(stack, http, session).publish()
        await stream.wait_for(1)
        assert stream.methods() == [TOOLS_CHANGED]
        assert await metric(http, stack, 'mcp_gateway_stream_resumes_total{outcome="unknown"}') == 1
        nursery.cancel_scope.cancel()


async def test_the_replay_log_is_bounded_and_says_what_it_lost(tmp_path: Path) -> None:
    # A tools/list_changed is 62 bytes: 3 fit in 200.
    async with resumable_stack(tmp_path, replay_bytes=200) as (stack, http), trio.open_nursery() as nursery:
        session = await new_session(http, stack)
        publisher = Publisher(stack, http, session)
        first = Stream()
        await nursery.start(first.run, http, stack.url, session)
        first.cut()
        for _ in range(5):
            await publisher.publish()
        assert first.priming is not None
        again = Stream()
        await nursery.start(again.run, http, stack.url, session, first.priming)
        await again.wait_for(3)
        await publisher.publish()
        await again.wait_for(4)
        start = numbers([first.priming])[0]
        assert numbers(again.ids()) == [start + 3, start + 4, start + 5, start + 6]  # oldest 2 dropped
        assert await metric(http, stack, 'mcp_gateway_stream_resumes_total{outcome="gap"}') == 1
        assert await metric(http, stack, "mcp_gateway_stream_replay_lost_total") == 2
        nursery.cancel_scope.cancel()


async def test_with_replay_off_streams_carry_no_ids(tmp_path: Path) -> None:
    async with (
        resumable_stack(tmp_path, replay_events=0) as (stack, http),
        trio.open_nursery() as nursery,
    ):
        session = await new_session(http, stack)
        stream = Stream()
        await nursery.start(partial(stream.run, http, stack.url, session, "whatever", primed=False))
        await Publisher(stack, http, session).publish()
        await stream.wait_for(1)
        assert stream.events[0][0] is None and stream.priming is None
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------
# The official SDK client: its GET stream reconnects with Last-Event-ID by itself.


class CuttableProxy:
    """A TCP relay to Envoy whose open connections the test can cut (a network failure)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._scopes: set[trio.CancelScope] = set()

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._relay, listeners)

    async def _relay(self, client: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with (
                    client,
                    await trio.open_tcp_stream("127.0.0.1", self.target_port) as server,
                    trio.open_nursery() as nursery,
                ):
                    nursery.start_soon(self._pump, client, server, nursery.cancel_scope)
                    nursery.start_soon(self._pump, server, client, nursery.cancel_scope)
            finally:
                self._scopes.discard(scope)

    @staticmethod
    async def _pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
        try:
            async for chunk in source:
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()

    def cut(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()


async def open_streams(http: httpx.AsyncClient, stack: Stack) -> int:
    return int((await http.get(stack.broker.admin + "/status")).json()["openStreams"])


async def wait_streams(http: httpx.AsyncClient, stack: Stack, count: int) -> None:
    with trio.fail_after(5):
        while True:  # an HTTP probe: nothing to wait on but the answer
            if await open_streams(http, stack) == count:
                return
            await trio.sleep(0.02)


@SDK_CLIENT_WARNINGS
async def test_the_sdk_client_resumes_its_get_stream_and_misses_nothing(tmp_path: Path) -> None:
    heard: list[str] = []
    arrived = anyio.Event()

    async def on_message(message: Any) -> None:
        nonlocal arrived
        if getattr(message, "method", None) == TOOLS_CHANGED:
            heard.append(TOOLS_CHANGED)
            arrived.set()
            arrived = anyio.Event()

    async def heard_count(count: int) -> None:
        with trio.fail_after(8):  # the client waits 1 s before it reconnects
            while len(heard) < count:
                await arrived.wait()

    async with resumable_stack(tmp_path) as (stack, http), trio.open_nursery() as nursery:
        proxy = CuttableProxy(int(stack.url.rsplit(":", 1)[1].split("/")[0]))
        port = await nursery.start(proxy.run)
        url = f"http://127.0.0.1:{port}/mcp"
        async with Client(streamable_http_client(url), mode="legacy", message_handler=on_message) as client:
            await wait_streams(http, stack, 1)
            # Our own session publishes (the SDK transport does not hand its session id out).
            publisher = Publisher(stack, http, await new_session(http, stack))
            await publisher.publish()
            await heard_count(1)
            proxy.cut()
            await wait_streams(http, stack, 0)  # the broker saw the stream go
            await publisher.publish()
            await publisher.publish()
            await heard_count(3)  # replayed when it reconnected with Last-Event-ID
            await publisher.publish()
            await heard_count(4)
            assert heard == [TOOLS_CHANGED] * 4  # nothing twice
            assert await metric(http, stack, 'mcp_gateway_stream_resumes_total{outcome="resumed"}') == 1
            tools = [tool.name for tool in (await client.list_tools()).tools]
            assert {"ch_t1", "ch_t4"} <= set(tools)
        nursery.cancel_scope.cancel()
