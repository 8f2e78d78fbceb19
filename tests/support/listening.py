"""A client's GET /mcp stream, its messages collected, and the session it listens on.

    listener = Listener()
    await nursery.start(listener.run, http, url, session)
    await listener.wait_for(lambda message: message.get("method") == "...")
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import trio

from tests.support.servers import open_session as open_gateway_session


async def open_session(http: httpx.AsyncClient, url: str) -> dict[str, str]:
    """A gateway session over raw HTTP, with the headers its later requests carry."""
    return {**await open_gateway_session(http, url), "mcp-protocol-version": "2025-11-25"}


class Listener:
    """A client's GET stream, its messages collected."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._arrived = trio.Event()

    async def run(self, http: httpx.AsyncClient, url: str, session: dict[str, str], *, task_status: Any) -> None:
        async with http.stream("GET", url, headers={**session, "accept": "text/event-stream"}) as response:
            assert response.status_code == 200
            task_status.started()
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    self.messages.append(json.loads(line[5:]))
                    self._arrived.set()
                    self._arrived = trio.Event()

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool], within: float = 5.0) -> None:
        with trio.fail_after(within):
            while not any(predicate(m) for m in self.messages):
                await self._arrived.wait()

    def count(self, method: str) -> int:
        return sum(1 for m in self.messages if m.get("method") == method)

    def logs(self) -> list[Any]:
        return [m["params"]["data"] for m in self.messages if m.get("method") == "notifications/message"]

    async def wait_for_log(self, data: str, within: float = 3.0) -> None:
        with trio.fail_after(within):
            while data not in self.logs():
                await self._arrived.wait()
