"""A fake Streamable HTTP upstream at httpx's transport seam, and a Supervisor built on such
fakes: just enough of the protocol (initialize, tools/list, ping, a GET stream that can push
list_changed) for the real HttpUpstreamClient and Supervisor to run on it, on Trio's autojump clock."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import trio

from mcp_gateway.config import GatewayConfig
from mcp_gateway.upstream import HttpUpstreamClient, Supervisor, Timing
from mcp_gateway.upstream.supervisor import GATEWAY_CLIENT_INFO

TIMING = Timing(
    ping_interval=10, poll_interval=30, stream_reopen_delay=1, backoff_base=1, backoff_cap=8
)


class SseBody(httpx.AsyncByteStream):
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
                200, headers={"content-type": "text/event-stream"}, stream=SseBody(receive)
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
            return json_answer(message["id"], result, {"mcp-session-id": f"s{self.sessions}"})
        if method == "tools/list":
            declared = self.capabilities_of.get(request.headers.get("mcp-session-id", ""), {})
            names = self.tools + [
                name
                for capability, extra in self.conditional.items()
                if capability in declared
                for name in extra
            ]
            tools = [{"name": n, "inputSchema": {"type": "object"}} for n in names]
            return json_answer(message["id"], {"tools": tools})
        return json_answer(message["id"], {})

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


def json_answer(rid: Any, result: Any, headers: dict[str, str] | None = None) -> httpx.Response:
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


def supervisor_for(
    cfg: GatewayConfig, upstreams: dict[str, FakeUpstream], timing: Timing = TIMING
) -> Supervisor:
    def factory(server: Any, http: Any, capabilities: Any = None) -> HttpUpstreamClient:
        fake = upstreams[server.name]
        transport = httpx.MockTransport(fake.handle)
        return HttpUpstreamClient(
            server,
            http=httpx.AsyncClient(transport=transport),
            client_info=GATEWAY_CLIENT_INFO,
            capabilities=capabilities,
        )

    return Supervisor(cfg, timing=timing, client_factory=factory)


def tool_names(supervisor: Supervisor) -> dict[str, list[str]]:
    return {s.name: [t["name"] for t in c.items.get("tools", ())] for s, c in supervisor.catalog()}
