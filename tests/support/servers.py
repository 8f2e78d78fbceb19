"""Sample MCP servers and the broker on loopback ephemeral ports, each owned by the test.

    async with sample_process("dynamic") as upstream:         # a real subprocess
        upstream.url                                           # http://127.0.0.1:PORT/mcp
        await upstream.kill()                                  # SIGKILL, for failure tests
    async with sample_process("dynamic", port=upstream.port):  # restart on the same port
    async with sample_in_process("echo") as url:               # same app, hypercorn on trio
    config = gateway_config([("dyn", url, "dyn_")], page_size=50)
    async with running_broker(config) as broker:               # serve_broker in this trio run
        broker.url, broker.base, await broker.reload(new_config)

`sample_process` runs `.venv/bin/mcp-gateway sample-server NAME --port 0` and reads the port the
sample prints once it is bound (no free-port race). `running_broker` uses FAST_TIMING so pings,
reconnects and keep-alives happen within a test's patience.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from mcp_gateway.broker.reload import ReloadState
from mcp_gateway.broker.routed_calls import RoutedCalls
from mcp_gateway.broker.service import serve_broker
from mcp_gateway.config import GatewayConfig
from mcp_gateway.samples import READY_LINE_PREFIX, serve_sample
from mcp_gateway.sessions import SessionTokens
from mcp_gateway.sessions.memory_store import MemorySessionStore
from mcp_gateway.sessions.openings import BackendOpenings
from mcp_gateway.sessions.request_state import RequestStateSeal
from mcp_gateway.sessions.store import SessionStore
from mcp_gateway.upstream import Timing
from mcp_gateway.upstream.relist import Relists
from tests.support.processes import stop_process

CLI = str(Path(sys.executable).with_name("mcp-gateway"))
FAST_TIMING = Timing(
    ping_interval=0.5,
    poll_interval=1.0,
    stream_reopen_delay=0.1,
    backoff_base=0.05,
    backoff_cap=0.5,
)
TEST_KEY = b"k" * 32


@dataclass
class SampleProcess:
    name: str
    process: trio.Process
    url: str
    port: int
    output: list[str] = field(default_factory=list)

    async def kill(self) -> None:
        self.process.kill()
        await self.process.wait()


@asynccontextmanager
async def sample_process(
    name: str, *, port: int = 0, env: Mapping[str, str] | None = None
) -> AsyncIterator[SampleProcess]:
    """Run a sample server as its own process until the block ends (then terminate, then kill)."""
    process = await trio.lowlevel.open_process(
        [CLI, "sample-server", name, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    try:
        url = await _read_ready_line(process)
        yield SampleProcess(name, process, url, int(url.rsplit(":", 1)[1].split("/")[0]))
    finally:
        with trio.CancelScope(shield=True):
            await stop_process(process)


async def _read_ready_line(process: trio.Process) -> str:
    assert process.stdout is not None
    buffered = b""
    with trio.fail_after(20):
        while b"\n" not in buffered:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"sample exited before listening (code {process.poll()})")
            buffered += chunk
    line = buffered.split(b"\n", 1)[0].decode()
    if not line.startswith(READY_LINE_PREFIX):
        raise RuntimeError(f"unexpected first line from sample: {line!r}")
    return line[len(READY_LINE_PREFIX) :].strip()


@asynccontextmanager
async def sample_in_process(name: str) -> AsyncIterator[str]:
    """Serve a sample app with hypercorn inside this trio run; yield its /mcp URL."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_sample, name)
        yield f"http://127.0.0.1:{port}/mcp"
        nursery.cancel_scope.cancel()


def gateway_config(
    servers: Sequence[tuple[str, str, str]],
    *,
    server_keys: Mapping[str, Mapping[str, Any]] | None = None,
    **gateway: Any,
) -> GatewayConfig:
    """A config of (name, url, prefix) servers; keyword arguments go to the `gateway:` section,
    `server_keys` (by server name) into the servers' own entries (an `oauth:`, say)."""
    extra = server_keys or {}
    document: dict[str, Any] = {
        "servers": [
            {"name": name, "url": url, "prefix": prefix, "timeoutSeconds": 5.0, **extra.get(name, {})}
            for name, url, prefix in servers
        ],
        "gateway": {"broker_listen": "127.0.0.1:0", "admin_listen": "127.0.0.1:0", **gateway},
    }
    return GatewayConfig.model_validate(document)


@dataclass
class Broker:
    port: int
    admin_port: int
    reloads: trio.MemorySendChannel[GatewayConfig]
    tokens: SessionTokens
    store: SessionStore
    reload_state: ReloadState
    # Sealed requestStates: the router of a test stack seals with this one too, as serve.py
    # hands one seal (from the session keys) to both.
    request_state: RequestStateSeal

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    @property
    def admin(self) -> str:
        """/status, /metrics, /healthz, /readyz: the broker's admin address, not the MCP one."""
        return f"http://127.0.0.1:{self.admin_port}"

    async def reload(self, config: GatewayConfig) -> None:
        await self.reloads.send(config)


@asynccontextmanager
async def running_broker(
    config: GatewayConfig,
    *,
    timing: Timing = FAST_TIMING,
    keepalive_seconds: float = 15.0,
    wait_ready: bool = True,
    relists: Relists | None = None,
    openings: BackendOpenings | None = None,
    routed_calls: RoutedCalls | None = None,
) -> AsyncIterator[Broker]:
    """serve_broker on an ephemeral port; waits for the first discovery round unless told not to."""
    send, receive = trio.open_memory_channel[GatewayConfig](1)
    tokens = SessionTokens([TEST_KEY])
    request_state = RequestStateSeal([TEST_KEY])
    store = MemorySessionStore()
    reload_state = ReloadState()
    async with trio.open_nursery() as nursery:
        ports = await nursery.start(
            lambda task_status: serve_broker(
                config,
                receive,
                tokens,
                store,
                reload_state=reload_state,
                timing=timing,
                keepalive_seconds=keepalive_seconds,
                relists=relists,
                openings=openings,
                routed_calls=routed_calls,
                request_state=request_state,
                task_status=task_status,
            )
        )
        broker = Broker(ports.mcp, ports.admin, send, tokens, store, reload_state, request_state)
        if wait_ready:
            await wait_until_ready(broker)
        yield broker
        nursery.cancel_scope.cancel()


async def wait_until_ready(broker: Broker) -> None:
    """Poll /readyz (an HTTP probe has nothing to wait on but the answer) for up to 10 s."""
    import httpx

    async with httpx.AsyncClient() as client:
        for _attempt in range(500):
            if (await client.get(f"{broker.admin}/readyz")).status_code == 200:
                return
            await trio.sleep(0.02)
    raise TimeoutError("broker not ready within 10 s")


JSON_AND_SSE = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def initialize_body(capabilities: Mapping[str, Any] | None = None, rid: Any = 1) -> dict[str, Any]:
    """An `initialize` request of revision 2025-11-25 with the given client capabilities."""
    return {
        "jsonrpc": "2.0",
        "id": rid,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": dict(capabilities or {}),
            "clientInfo": {"name": "test", "version": "1"},
        },
    }


async def open_session(
    http: Any, url: str, *, capabilities: Mapping[str, Any] | None = None, **headers: str
) -> dict[str, str]:
    """Initialize a gateway session over raw HTTP (an httpx client); return the headers that
    carry it (`headers` are sent along and kept, e.g. a virtual server's)."""
    sent = {**JSON_AND_SSE, **headers}
    response = await http.post(url, json=initialize_body(capabilities), headers=sent)
    assert response.status_code == 200, response.text
    return {**sent, "mcp-session-id": response.headers["mcp-session-id"]}
