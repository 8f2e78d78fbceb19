"""The router's stack for tests: probe upstreams that report what reached them, and the broker,
the ext_proc router and a real Envoy in one Trio run (`gateway_stack`); raw-HTTP helpers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import hypercorn.config
import hypercorn.trio
import pytest
import trio
from mcp import types
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import ServerMessageMetadata

from mcp_gateway.broker.routed_calls import RoutedCalls
from mcp_gateway.config import GatewayConfig, VirtualServer
from mcp_gateway.router.service import serve_router
from mcp_gateway.sessions.openings import BackendOpenings
from tests.support.envoy import RunningEnvoy, running_envoy
from tests.support.servers import Broker, gateway_config, running_broker

PROTOCOL = "2025-11-25"

# The official SDK client (mcp 2.3.0) leaves its httpx2 SSE iterators to the garbage collector when
# a stream ends; Trio warns about each one. Only those generators, only in tests that use it.
SDK_CLIENT_WARNINGS = pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx2.:ResourceWarning",
    "ignore:Async generator 'httpcore2.:ResourceWarning",
)



# ---------------------------------------------------------------------------------------------
# A probe upstream: reports what reached it, so the tests can see the routed request itself.

# What the probes' `wait` tool saw, by label: it started, and it was cancelled (same Trio run).
WAIT_STARTED: dict[str, trio.Event] = {}
WAIT_CANCELLED: dict[str, trio.Event] = {}


def probe_server(name: str) -> MCPServer:
    server = MCPServer(name, version="1.0.0")

    @server.tool(description="Report the routing headers and a hash of the session this call used.")
    def observe(ctx: Context) -> str:
        headers = {k.lower(): v for k, v in (ctx.headers or {}).items()}
        session = headers.get("mcp-session-id", "")
        return json.dumps(
            {
                "server": name,
                "servername": headers.get("x-mcp-servername"),
                "toolname": headers.get("x-mcp-toolname"),
                "method": headers.get("x-mcp-method"),
                "forged": sorted(k for k in headers if k.startswith("x-mcp-") and k not in (
                    "x-mcp-servername", "x-mcp-toolname", "x-mcp-method")),
                "authorization": headers.get("authorization"),
                # A hash, not the id: this result reaches the client, a backend id must not.
                "session_hash": hashlib.sha256(session.encode()).hexdigest()[:16] if session else None,
            }
        )

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Wait until cancelled (at most 30 s); the test sees both ends.")
    async def wait(label: str) -> str:
        WAIT_STARTED[label].set()
        try:
            await trio.sleep(30)
        except trio.Cancelled:
            WAIT_CANCELLED[label].set()
            raise
        return "not cancelled"

    @server.tool(description="Ask the client for its roots (on this call's stream); return them.")
    async def roots(ctx: Context) -> str:
        related = ServerMessageMetadata(related_request_id=ctx.request_context.request_id)
        result = await ctx.request_context.session.send_request(
            types.ListRootsRequest(), types.ListRootsResult, metadata=related
        )
        return f"{name}:" + ",".join(str(root.uri) for root in result.roots)

    return server


async def serve_probe(name: str, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    await serve_sdk_server(probe_server(name), task_status=task_status)


def sdk_app(server: MCPServer, *, stateless: bool = False) -> Any:
    """An official-SDK server's Streamable HTTP app (`stateless`: the SDK's stateless mode);
    DNS-rebinding protection on for loopback hosts, as the SDK has it by default."""
    return server.streamable_http_app(
        stateless_http=stateless,
        transport_security=TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*"], allowed_origins=[]
        ),
    )


async def serve_sdk_server(
    server: MCPServer, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """An official-SDK server on hypercorn, loopback, port 0 (`task_status.started(port)`) until
    cancelled."""
    await serve_asgi(sdk_app(server), task_status=task_status)


async def serve_asgi(app: Any, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """An ASGI app on hypercorn, loopback, port 0 (`task_status.started(port)`) until cancelled."""
    settings = hypercorn.config.Config()
    settings.bind = ["127.0.0.1:0"]
    settings.accesslog = None
    settings.graceful_timeout = 0.5
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(hypercorn.trio.serve, app, settings)
        task_status.started(int(urls[0].rsplit(":", 1)[1]))


# ---------------------------------------------------------------------------------------------
# The stack


@dataclass
class Stack:
    envoy: RunningEnvoy
    broker: Broker
    config: GatewayConfig
    router_reloads: trio.MemorySendChannel[GatewayConfig]

    @property
    def url(self) -> str:
        return self.envoy.url


@asynccontextmanager
async def gateway_stack(
    servers: Sequence[tuple[str, str, str]],
    workdir: Path,
    virtual_servers: Sequence[VirtualServer] = (),
    server_keys: Mapping[str, Mapping[str, Any]] | None = None,
    **gateway: Any,
) -> AsyncIterator[Stack]:
    """Broker, router and Envoy for (name, url, prefix) servers; keyword arguments go to the
    config's `gateway:` section, `server_keys` (by name) into the servers' entries."""
    config = gateway_config(servers, server_keys=server_keys, router_listen="127.0.0.1:0", **gateway)
    config = config.model_copy(update={"virtual_servers": list(virtual_servers)})
    # As in `mcp-gateway serve`: the backend sessions the router opens are announced to the
    # broker, which holds their GET streams for listening clients.
    openings = BackendOpenings()
    # As there too: what Envoy reports of routed calls reaches the broker's /metrics.
    routed_calls = RoutedCalls()
    async with running_broker(config, openings=openings, routed_calls=routed_calls) as broker, \
            trio.open_nursery() as nursery:
        send, receive = trio.open_memory_channel[GatewayConfig](1)
        router_port = await nursery.start(
            partial(
                serve_router,
                openings=openings,
                routed_calls=routed_calls.record,
                request_states=broker.request_state,
            ),
            config, receive, broker.tokens, broker.store,
        )
        async with running_envoy(
            config, broker_port=broker.port, router_port=router_port, workdir=workdir
        ) as envoy:
            yield Stack(envoy, broker, config, send)
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def probes(*names: str) -> AsyncIterator[dict[str, str]]:
    async with trio.open_nursery() as nursery:
        urls = {}
        for name in names:
            port = await nursery.start(serve_probe, name)
            urls[name] = f"http://127.0.0.1:{port}/mcp"
        yield urls
        nursery.cancel_scope.cancel()


def text_of(result: Any) -> str:
    assert not result.is_error, result
    return str(result.content[0].text)


async def initialize_raw(client: httpx.AsyncClient, url: str, capabilities: dict[str, Any] | None = None) -> str:
    """The legacy handshake over raw HTTP; returns the gateway session id."""
    response = await client.post(
        url,
        json={
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL,
                "capabilities": capabilities or {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        headers={"accept": "application/json, text/event-stream"},
    )
    assert response.status_code == 200, response.text
    session = response.headers["mcp-session-id"]
    await client.post(
        url,
        json={"jsonrpc": "2.0", "method": "notifications/initialized"},
        headers=session_headers(session),
    )
    return session


def session_headers(session: str, **extra: str) -> dict[str, str]:
    return {
        "accept": "application/json, text/event-stream",
        "mcp-session-id": session,
        "mcp-protocol-version": PROTOCOL,
        **extra,
    }


def call_body(name: str, arguments: dict[str, Any] | None = None, request_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": arguments or {}}}


def sse_result(response: httpx.Response) -> dict[str, Any]:
    """The JSON-RPC message with an id from a JSON or SSE answer."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return dict(response.json())
    for line in response.text.splitlines():
        if line.startswith("data:"):
            message = json.loads(line[5:])
            if "id" in message:
                return dict(message)
    raise AssertionError(f"no result in {response.text!r}")


