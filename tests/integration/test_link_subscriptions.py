"""Resource subscriptions to a stdio upstream, whose one link every client shares
(broker/link_subscriptions.py): updates reach only the clients subscribed, the link subscribes
once and unsubscribes when the last client leaves, and a restarted upstream is subscribed again.
The upstream is our Python SDK conformance fixture over stdio, whose
`test_update_watched_resource` notifies the subscribers of `test://watched-resource` and says how
many it notified."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from mcp_gateway.config import GatewayConfig
from tests.support.servers import Broker, initialize_body, running_broker

pytestmark = pytest.mark.integration
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
WATCHED = "mcp-gateway:fx_test://watched-resource"
FIXTURE_STDIO = [sys.executable, "-m", "mcp_gateway.samples.conformance_fixture", "--transport", "stdio"]


@asynccontextmanager
async def stdio_broker(**sessions: Any) -> AsyncIterator[Broker]:
    config = GatewayConfig.model_validate(
        {
            "servers": [{"name": "fixture", "transport": "stdio", "command": FIXTURE_STDIO, "prefix": "fx_"}],
            "gateway": {"broker_listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", "sessions": sessions},
        }
    )
    async with running_broker(config) as broker:
        yield broker


class Client:
    """One gateway session over raw HTTP, with its GET stream's messages collected."""

    def __init__(self, http: httpx.AsyncClient, broker: Broker) -> None:
        self.http, self.broker = http, broker
        self.headers: dict[str, str] = {}
        self.updates: list[str] = []
        self._arrived = trio.Event()
        self._ids = iter(range(1, 1000))

    async def open(self, nursery: trio.Nursery) -> Client:
        response = await self.http.post(self.broker.url, json=initialize_body(), headers=HEADERS)
        self.headers = {**HEADERS, "mcp-session-id": response.headers["mcp-session-id"], "mcp-protocol-version": "2025-11-25"}
        await nursery.start(self._listen)
        return self

    async def _listen(self, *, task_status: Any) -> None:
        headers = {**self.headers, "accept": "text/event-stream"}
        async with self.http.stream("GET", self.broker.url, headers=headers) as response:
            task_status.started()
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("method") == "notifications/resources/updated":
                        self.updates.append(message["params"]["uri"])
                        self._arrived.set()
                        self._arrived = trio.Event()

    async def rpc(self, method: str, **params: Any) -> dict[str, Any]:
        body = {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params}
        answer: dict[str, Any] = (await self.http.post(self.broker.url, json=body, headers=self.headers)).json()
        return answer

    async def update_watched(self) -> str:
        answer = await self.rpc("tools/call", name="fx_test_update_watched_resource", arguments={})
        return str(answer["result"]["content"][0]["text"])

    async def wait_for_updates(self, count: int) -> None:
        with trio.fail_after(5):
            while len(self.updates) < count:
                await self._arrived.wait()


async def test_updates_reach_only_subscribers_and_the_link_subscribes_once() -> None:
    async with stdio_broker() as broker, httpx.AsyncClient(timeout=20) as http, trio.open_nursery() as nursery:
        first, second, bystander = [await Client(http, broker).open(nursery) for _ in range(3)]
        assert (await first.rpc("resources/subscribe", uri=WATCHED))["result"] == {}
        assert (await second.rpc("resources/subscribe", uri=WATCHED))["result"] == {}
        # The upstream sees one subscriber: the link, for both clients.
        assert await bystander.update_watched() == "notified 1 subscriber(s)"
        await first.wait_for_updates(1)
        await second.wait_for_updates(1)
        assert first.updates == second.updates == [WATCHED]
        assert bystander.updates == []

        # One client leaving keeps the link subscribed for the other...
        assert (await first.rpc("resources/unsubscribe", uri=WATCHED))["result"] == {}
        assert await bystander.update_watched() == "notified 1 subscriber(s)"
        await second.wait_for_updates(2)
        assert first.updates == [WATCHED]
        # ...and the last one's session ending unsubscribes the link.
        assert (await http.delete(broker.url, headers=second.headers)).status_code in (200, 204)
        assert await bystander.update_watched() == "notified 0 subscriber(s)"
        nursery.cancel_scope.cancel()


async def test_a_resource_no_upstream_owns_is_refused_with_its_id_and_unsubscribing_is_idempotent() -> None:
    async with stdio_broker() as broker, httpx.AsyncClient(timeout=20) as http, trio.open_nursery() as nursery:
        client = await Client(http, broker).open(nursery)
        answer = await client.rpc("resources/subscribe", uri="mcp-gateway:zz_test://nobody")
        assert (answer["id"], answer["error"]["code"]) == (1, -32002)
        # Unsubscribing from what one never subscribed to is no error (and tells the link nothing).
        assert (await client.rpc("resources/unsubscribe", uri=WATCHED))["result"] == {}
        nursery.cancel_scope.cancel()


async def test_a_restarted_upstream_is_subscribed_again() -> None:
    async with stdio_broker() as broker, httpx.AsyncClient(timeout=20) as http, trio.open_nursery() as nursery:
        subscriber, other = await Client(http, broker).open(nursery), await Client(http, broker).open(nursery)
        assert (await subscriber.rpc("resources/subscribe", uri=WATCHED))["result"] == {}
        crashed = await other.rpc("tools/call", name="fx_test_exit_process", arguments={})
        assert crashed["result"]["content"][0]["text"].startswith("exiting")
        # The supervisor restarts the process; the broker subscribes the new link again.
        with trio.fail_after(15):
            while True:
                answer = await other.rpc("tools/call", name="fx_test_update_watched_resource", arguments={})
                if "result" in answer and answer["result"]["content"][0]["text"] == "notified 1 subscriber(s)":
                    break
                await trio.sleep(0.1)
        await subscriber.wait_for_updates(1)
        assert subscriber.updates == [WATCHED]
        nursery.cancel_scope.cancel()


async def test_a_session_that_expires_leaves_its_subscriptions_too() -> None:
    """The reaper lets go of what an expired session held, as DELETE does: the link, subscribed
    for it alone, is unsubscribed."""
    async with stdio_broker(ttl_seconds=1, reap_interval_seconds=0.1) as broker, \
            httpx.AsyncClient(timeout=20) as http, trio.open_nursery() as nursery:
        subscriber = await Client(http, broker).open(nursery)
        assert (await subscriber.rpc("resources/subscribe", uri=WATCHED))["result"] == {}
        with trio.fail_after(10):
            while True:  # each probe is a new session: the subscriber's expires meanwhile
                probe = await Client(http, broker).open(nursery)
                if await probe.update_watched() == "notified 0 subscriber(s)":
                    break
                await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
