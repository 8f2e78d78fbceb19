"""How the message-stream client (shared by the stdio and WebSocket upstreams) routes, times out
and recovers, against a scripted peer over an in-memory link: the fake is only the I/O seam;
framing goes through the real protocol core on both sides.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import trio
import trio.testing

from mcp_gateway.config import ServerConfig
from mcp_gateway.protocol import LATEST_STABLE
from mcp_gateway.upstream.backoff import Backoff
from mcp_gateway.upstream.errors import UpstreamError
from mcp_gateway.upstream.message_stream import LinkUser, MessageStreamClient

JsonObject = dict[str, Any]


class MemoryLink:
    """One end of an in-memory message link; `None` from receive() once the peer hung up."""

    def __init__(
        self, send: trio.MemorySendChannel[bytes | None], receive: trio.MemoryReceiveChannel[bytes | None]
    ) -> None:
        self._send = send
        self._receive = receive

    async def send(self, data: bytes) -> None:
        await self._send.send(data)

    async def receive(self) -> bytes | None:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return None


class ScriptedPeer:
    """The upstream's side of each link the client opens, driven by the test."""

    def __init__(self) -> None:
        self.links: trio.MemorySendChannel[tuple[MemoryLink, trio.Event]]
        self.accepted: trio.MemoryReceiveChannel[tuple[MemoryLink, trio.Event]]
        self.links, self.accepted = trio.open_memory_channel(10)

    async def next_link(self) -> PeerEnd:
        link, hang_up = await self.accepted.receive()
        return PeerEnd(link, hang_up)


class PeerEnd:
    def __init__(self, link: MemoryLink, hang_up: trio.Event) -> None:
        self.link = link
        self.hang_up = hang_up

    async def read(self) -> JsonObject:
        data = await self.link.receive()
        assert data is not None
        return dict(json.loads(data))

    async def write(self, message: JsonObject) -> None:
        await self.link.send(json.dumps(message).encode())


class ScriptedClient(MessageStreamClient):
    def __init__(self, peer: ScriptedPeer, **kwargs: Any) -> None:
        server = ServerConfig(name="scripted", transport="websocket", url="ws://127.0.0.1:1/mcp")
        kwargs.setdefault("backoff", Backoff(base=0.01, cap=0.01, jitter=0))
        super().__init__(server, **kwargs)
        self._peer = peer

    async def _open_link(self, use: LinkUser) -> None:
        to_peer_send, to_peer_receive = trio.open_memory_channel[bytes | None](100)
        to_client_send, to_client_receive = trio.open_memory_channel[bytes | None](100)
        hang_up = trio.Event()
        await self._peer.links.send((MemoryLink(to_client_send, to_peer_receive), hang_up))
        async with trio.open_nursery() as nursery:

            async def close_on_hang_up() -> None:
                await hang_up.wait()
                await to_client_send.aclose()

            nursery.start_soon(close_on_hang_up)
            await use(MemoryLink(to_peer_send, to_client_receive))
            nursery.cancel_scope.cancel()


async def handshake(peer_end: PeerEnd) -> None:
    initialize = await peer_end.read()
    assert initialize["method"] == "initialize"
    await peer_end.write(
        {
            "jsonrpc": "2.0",
            "id": initialize["id"],
            "result": {
                "protocolVersion": initialize["params"]["protocolVersion"],
                "capabilities": {},
                "serverInfo": {"name": "scripted", "version": "0"},
            },
        }
    )
    assert (await peer_end.read())["method"] == "notifications/initialized"


async def test_session_notifications_go_to_the_listener_even_while_a_call_takes_messages() -> None:
    peer = ScriptedPeer()
    client = ScriptedClient(peer)
    in_call: list[JsonObject] = []
    listened: list[JsonObject] = []

    async def on_call_message(message: JsonObject) -> None:
        in_call.append(message)

    async def on_listen(message: JsonObject) -> None:
        listened.append(message)

    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        end = await peer.next_link()
        await nursery.start(client.listen, on_listen)

        async def call() -> JsonObject:
            return await client.request("tools/call", {"name": "t"}, on_call_message)

        result: list[JsonObject] = []

        async def run_call() -> None:
            result.append(await call())

        nursery.start_soon(run_call)
        request = await end.read()
        await end.write({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        await end.write({"jsonrpc": "2.0", "method": "notifications/message",
                         "params": {"level": "info", "data": "working"}})
        await end.write({"jsonrpc": "2.0", "id": request["id"], "result": {"content": []}})
        with trio.fail_after(5):
            while not (result and listened):
                await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()

    assert [m["method"] for m in listened] == ["notifications/tools/list_changed"]
    assert [m["method"] for m in in_call] == ["notifications/message"]
    assert result == [{"content": []}]


async def test_with_two_calls_in_flight_a_server_request_goes_to_the_listener() -> None:
    peer = ScriptedPeer()
    client = ScriptedClient(peer)
    listened: list[JsonObject] = []
    results: list[JsonObject] = []

    async def on_listen(message: JsonObject) -> None:
        listened.append(message)
        await client.respond({"jsonrpc": "2.0", "id": message["id"], "result": {"roots": []}})

    async def ignore(message: JsonObject) -> None:
        raise AssertionError(f"not for a call: {message}")

    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        end = await peer.next_link()
        await nursery.start(client.listen, on_listen)
        for name in ("a", "b"):
            nursery.start_soon(
                lambda n=name: _append(results, client.request("tools/call", {"name": n}, ignore))
            )
        first, second = await end.read(), await end.read()
        await end.write({"jsonrpc": "2.0", "id": "srv-1", "method": "roots/list"})
        answer = await end.read()
        assert answer == {"jsonrpc": "2.0", "id": "srv-1", "result": {"roots": []}}
        for request in (first, second):
            await end.write({"jsonrpc": "2.0", "id": request["id"], "result": {}})
        with trio.fail_after(5):
            while len(results) < 2:
                await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [m["method"] for m in listened] == ["roots/list"]


async def _append(results: list[JsonObject], call: Any) -> None:
    results.append(await call)


async def test_a_server_request_nobody_takes_is_answered_for_the_client() -> None:
    peer = ScriptedPeer()
    client = ScriptedClient(peer)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        end = await peer.next_link()
        await end.write({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert await end.read() == {"jsonrpc": "2.0", "id": 1, "result": {}}
        await end.write({"jsonrpc": "2.0", "id": 2, "method": "sampling/createMessage", "params": {}})
        refused = await end.read()
        assert refused["id"] == 2 and refused["error"]["code"] == -32601
        nursery.cancel_scope.cancel()


async def test_an_unanswered_request_times_out_and_is_cancelled_upstream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = ScriptedPeer()
    client = ScriptedClient(peer)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        end = await peer.next_link()
        with pytest.raises(UpstreamError, match="timed out"):
            await client.request("tools/call", {"name": "slow"})
        request = await end.read()
        cancelled = await end.read()
        assert cancelled["method"] == "notifications/cancelled"
        assert cancelled["params"]["requestId"] == request["id"]
        nursery.cancel_scope.cancel()


async def test_a_dropped_link_fails_the_call_and_is_reopened_with_a_new_handshake() -> None:
    peer = ScriptedPeer()
    client = ScriptedClient(peer, capabilities={"roots": {}})
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        first = await peer.next_link()
        async with trio.open_nursery() as handshake_nursery:
            handshake_nursery.start_soon(handshake, first)
            await client.initialize()
        assert client.protocol_version == LATEST_STABLE

        async def doomed_call() -> None:
            with pytest.raises(UpstreamError, match="connection lost"):
                await client.request("tools/list")

        async with trio.open_nursery() as call_nursery:
            call_nursery.start_soon(doomed_call)
            await first.read()  # the call reached the upstream...
            first.hang_up.set()  # ...which then went away

        second = await peer.next_link()
        await handshake(second)  # the client handshakes on its own, before anything else
        await client.wait_connected(2)

        async def answer_next() -> None:
            request = await second.read()
            await second.write({"jsonrpc": "2.0", "id": request["id"], "result": {"tools": []}})

        nursery.start_soon(answer_next)
        assert await client.list_all("tools/list", "tools") == []
        assert client.connects == 2
        nursery.cancel_scope.cancel()


async def test_request_ids_in_flight_must_be_unique_and_responses_must_be_responses() -> None:
    peer = ScriptedPeer()
    client = ScriptedClient(peer)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        await peer.next_link()
        nursery.start_soon(lambda: client.request("ping", request_id="same"))
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(UpstreamError, match="already in flight"):
            await client.request("ping", request_id="same")
        with pytest.raises(UpstreamError, match="needs a response"):
            await client.respond({"jsonrpc": "2.0", "method": "notifications/initialized"})
        with pytest.raises(UpstreamError, match="params must be an object"):
            await client.request_raw({"jsonrpc": "2.0", "id": 9, "method": "x", "params": [1]})
        nursery.cancel_scope.cancel()


async def test_a_link_that_keeps_dying_backs_off_instead_of_reopening_hot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = ScriptedPeer()
    client = ScriptedClient(peer, backoff=Backoff(base=1.0, cap=4.0, jitter=0))
    opened: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(client.run)
        for _ in range(5):
            end = await peer.next_link()
            opened.append(trio.current_time())
            end.hang_up.set()  # dies right after it came up, like a crashing server
        nursery.cancel_scope.cancel()
    gaps = [round(later - earlier, 3) for earlier, later in itertools.pairwise(opened)]
    assert gaps == [1.0, 2.0, 4.0, 4.0]
